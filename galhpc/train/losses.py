"""The loss terms of training: checked for NaN/inf in windows of steps, averaged over ranks, written to losses.csv.

The trainer keeps each step's terms on the device (`pending_terms`) and reads a window of
them back with one host synchronisation (`check_finite`); each finished epoch becomes one
row of the history, which `write_losses` writes as ``losses.csv``.  Nothing here draws: the
loss-curve figure is the report's (`galhpc.report.figures`).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from galhpc.runtime.errors import NonFiniteLossError
from galhpc.runtime.files import atomic_open
from galhpc.runtime.world import World
from galhpc.train.state import Position

LOSSES_CSV = "losses.csv"


@dataclass
class PendingTerms:
    """The loss terms of one step, still on the device, and where the step stood.

    Attributes
    ----------
    names : tuple of str
        The terms' names, ``"total"`` last.
    values : torch.Tensor
        (len(names),) float32 on the device.
    step, epoch, batch : int
        Where the step stood (for the error message).
    """

    names: tuple[str, ...]
    values: torch.Tensor
    step: int
    epoch: int
    batch: int


def pending_terms(terms: dict[str, torch.Tensor], total: torch.Tensor, position: Position) -> PendingTerms:
    """The step's terms and total stacked on the device (no host synchronisation).

    Parameters
    ----------
    terms : dict of str to torch.Tensor
        The model's named scalar loss terms.
    total : torch.Tensor
        The scalar loss minimised.
    position : Position
        Where the step stands.

    Returns
    -------
    PendingTerms
    """
    values = torch.stack([v.detach().float().reshape(()) for v in [*terms.values(), total]])
    return PendingTerms((*terms, "total"), values, position.step, position.epoch, position.batch)


def check_finite(pending: list[PendingTerms]) -> list[dict[str, float]]:
    """Loss terms of the pending steps as floats, with one host synchronisation.

    Parameters
    ----------
    pending : list of PendingTerms
        Steps in step order.

    Returns
    -------
    list of dict of str to float
        One dict of terms per step, in step order.

    Raises
    ------
    NonFiniteLossError
        Naming the first step with a non-finite term, the term and all terms of that step.
    """
    if not pending:
        return []
    floats = torch.cat([p.values for p in pending]).tolist()  # the one sync
    rows, at = [], 0
    for p in pending:
        values = dict(zip(p.names, floats[at: at + len(p.names)], strict=False))
        at += len(p.names)
        for name, value in values.items():
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"loss term {name!r} is {value} at step {p.step} (epoch {p.epoch}, "
                    f"batch {p.batch}); all terms: {values}"
                )
        rows.append(values)
    return rows


def mean_over_ranks(world: World, values: dict[str, float]) -> dict[str, float]:
    """Mean of scalar metrics over the ranks of `world` (`allreduce_sum` / size).

    Parameters
    ----------
    world : World
        The process group; every rank passes the same keys.
    values : dict of str to float
        This rank's values.

    Returns
    -------
    dict of str to float
        The means, in sorted key order on several ranks; `values` as given on one.
    """
    if world.size == 1:
        return dict(values)
    keys = sorted(values)
    total = world.allreduce_sum(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64))
    return dict(zip(keys, (total / world.size).tolist(), strict=True))


def write_losses(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``out_dir/losses.csv`` from the full history (so a resume never duplicates rows).

    Parameters
    ----------
    out_dir : Path
        The run's folder.
    history : list of dict
        One row per finished epoch; the columns are every key of any row, in first-seen order.
    """
    if not history:
        return
    columns = list(dict.fromkeys(key for row in history for key in row))
    with atomic_open(out_dir / LOSSES_CSV, "w", fsync=False, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
