"""Training loss history for the loss-curve figure: the trainer's losses.csv, or the checkpoint's."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

INDEX_COLUMNS = ("step", "epoch")
NOT_PLOTTED = ("phase", "seconds", "time", "wall_seconds")  # bookkeeping, not training curves


def _numeric(values: list[Any]) -> np.ndarray | None:
    try:
        return np.array([float(v) if v not in ("", None) else np.nan for v in values])
    except (TypeError, ValueError):
        return None


def loss_table(rows: list[dict[str, Any]]) -> tuple[dict[str, np.ndarray], str, np.ndarray | None]:
    """Numeric columns of a loss log, the x axis first, and its phases.

    Parameters
    ----------
    rows : list of dict
        Rows of losses.csv (strings) or of a checkpoint's history (numbers).

    Returns
    -------
    columns : dict of str to numpy.ndarray
        (T,) float per plotted column; the x axis ("step", "epoch", else "row") first.
    x_name : str
    phases : numpy.ndarray or None
        (T,) str phase of each row, None without a phase column.

    Raises
    ------
    ValueError
        If `rows` is empty.
    """
    if not rows:
        raise ValueError("the loss history is empty")
    names = list(rows[0])
    x_name = next((n for n in INDEX_COLUMNS if n in names), None)
    columns: dict[str, np.ndarray] = {}
    x = _numeric([r.get(x_name) for r in rows]) if x_name else np.arange(len(rows), dtype=float)
    columns[x_name or "row"] = x
    for name in names:
        if name in INDEX_COLUMNS or name in NOT_PLOTTED:
            continue
        values = _numeric([r.get(name) for r in rows])
        if values is not None and np.isfinite(values).any():
            columns[name] = values
    phases = np.array([str(r.get("phase")) for r in rows]) if "phase" in names else None
    return columns, x_name or "row", phases


def read_loss_history(checkpoint: str | Path, payload: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Rows of `losses.csv` beside the checkpoint, else the checkpoint's `history` list.

    Parameters
    ----------
    checkpoint : str or Path
    payload : dict
        The loaded checkpoint.

    Returns
    -------
    list of dict or None
        None when neither holds any row.
    """
    csv_path = Path(checkpoint).parent / "losses.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        return rows or None
    history = payload.get("history") or payload.get("loss_history")
    if isinstance(history, list) and history and isinstance(history[0], dict):
        return history
    return None
