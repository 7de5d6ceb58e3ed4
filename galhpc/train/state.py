"""What a training checkpoint holds beyond the model: the position, the RNG states, the payload.

`checkpoint_payload` builds the dict that `galhpc.checkpoint.save_checkpoint` writes (model,
optimizer and scaler states, config, `Position`, history, RNG states); `restore` puts one
back into a model and optimizer, refusing a checkpoint of another run.  With the per-step
seeds of `step_seed`, a resumed run takes the same steps as an uninterrupted one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galhpc.checkpoint import CheckpointError, checkpoint_config, read_checkpoint
from galhpc.config import RunConfig
from galhpc.models.base import GalaxyModel


@dataclass
class Position:
    """Where training stands: the next batch to run is `batch` of `epoch`; `step` steps done.

    Attributes
    ----------
    epoch, batch, step : int
        The epoch and batch within it to run next; optimizer steps taken.
    sums : dict of str to float
        Running sums of this epoch's loss terms (this rank's).
    history : list of dict
        One row per finished epoch (the rows of losses.csv).
    stick_breaking_k : int or None
        The stick-breaking mixture's consistent K, once fitted.
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    stick_breaking_k: int | None = None


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the noise drawn in one step on one rank (independent of how the run was split).

    Parameters
    ----------
    seed : int
        The run's ``train.seed``.
    step : int
        Optimizer step.
    rank : int
        This rank.

    Returns
    -------
    int
        A seed in [0, 2**63 - 1).
    """
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


def rng_states() -> dict[str, Any]:
    """The random states of this process: torch (CPU and every GPU), numpy and Python.

    Returns
    -------
    dict
        ``torch``, ``numpy``, ``python`` and, with CUDA, ``cuda`` (for `restore_rng_states`).
    """
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put back the random states `rng_states` returned (CUDA's only where CUDA is available).

    Parameters
    ----------
    states : dict
        As `rng_states` returns it.
    """
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def checkpoint_payload(model: GalaxyModel, optimizer: torch.optim.Optimizer, cfg: RunConfig, pos: Position,
                       layout: dict[str, Any], scaler: torch.amp.GradScaler | None = None) -> dict:
    """The training checkpoint's contents (what `restore` reads back).

    Parameters
    ----------
    model : GalaxyModel
        The unwrapped model.
    optimizer : torch.optim.Optimizer
        Its optimizer.
    cfg : RunConfig
        The run's config (stored as YAML).
    pos : Position
        Where training stands.
    layout : dict
        What the data order depends on (ranks, batch size, seed, holdout split, steps per
        epoch, precision), compared on a mid-epoch resume.
    scaler : torch.amp.GradScaler, optional
        The fp16 loss scaler.

    Returns
    -------
    dict
        ``layout``, ``model_name``, ``model_state``, ``optimizer_state``, ``scaler_state``,
        ``config``, ``position``, ``history``, ``stick_breaking_k`` and ``rng``.
    """
    return {
        "layout": dict(layout),
        "model_name": cfg.model.name,
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "scaler_state": scaler.state_dict() if scaler is not None else {},
        "config": cfg.to_yaml(),
        "position": {"epoch": pos.epoch, "batch": pos.batch, "step": pos.step, "sums": dict(pos.sums)},
        "history": list(pos.history),
        "stick_breaking_k": pos.stick_breaking_k,
        "rng": rng_states(),
    }


def restore(path: Path, cfg: RunConfig, model: GalaxyModel, optimizer: torch.optim.Optimizer,
            layout: dict[str, Any], scaler: torch.amp.GradScaler | None = None) -> Position:
    """Load a checkpoint of this run into model and optimizer.

    Refuses one of another model or schedule, and a mid-epoch one whose batches meant other
    rows (other number of ranks, batch size, seed or holdout split): its position would not
    say where this run stands.  At an epoch boundary a new number of ranks is fine (elastic
    re-launch).

    Parameters
    ----------
    path : Path
        The checkpoint (``ckpt.pt``).
    cfg : RunConfig
        This run's config.
    model : GalaxyModel
        Loaded in place.
    optimizer : torch.optim.Optimizer
        Loaded in place.
    layout : dict
        This run's data layout (see `checkpoint_payload`).
    scaler : torch.amp.GradScaler, optional
        Loaded in place when the checkpoint has a scaler state.

    Returns
    -------
    Position
        Where the checkpointed run stood; the RNG states are restored too.

    Raises
    ------
    CheckpointError
        Another model or schedule, no training state, or a mid-epoch checkpoint of another layout.
    """
    payload = read_checkpoint(path)
    saved = checkpoint_config(payload, path)
    for section in ("model", "schedule"):
        if getattr(saved, section) != getattr(cfg, section):
            raise CheckpointError(
                f"{path} was written with another {section} config ({getattr(saved, section)}) than this run's "
                f"({getattr(cfg, section)}); use another out_dir or --no-resume"
            )
    if "position" not in payload or "optimizer_state" not in payload:
        raise CheckpointError(f"{path} is not a resumable training checkpoint (no position/optimizer state)")
    if payload["position"]["batch"] > 0 and payload.get("layout") != layout:
        raise CheckpointError(
            f"{path} stopped mid-epoch with data layout {payload.get('layout')}, but this run has {layout}; "
            "resume with the same ranks, batch size, seed and holdout split, or use --no-resume"
        )
    model.load_state_dict(payload["model_state"])
    optimizer.load_state_dict(payload["optimizer_state"])
    if scaler is not None and payload.get("scaler_state"):
        scaler.load_state_dict(payload["scaler_state"])
    restore_rng_states(payload["rng"])
    p = payload["position"]
    return Position(p["epoch"], p["batch"], p["step"], dict(p["sums"]), list(payload["history"]),
                    payload.get("stick_breaking_k"))
