"""The training loop: any registered model, any backend, checkpoints that resume exactly.

`train(cfg)` runs `cfg.train.epochs` epochs over the training split of `cfg.train.store`
with the loss weights of the s3VDC schedule, and writes into `cfg.train.out_dir`:

- `ckpt.pt`: model, optimizer, position (epoch, batch in epoch, step), running epoch
  sums, history, RNG states and the config; written atomically by rank 0 after every
  `checkpoint_every` epochs, after the mixture initialisation and on a stop signal;
- `losses.csv` / `losses.png`: per-epoch means of every loss term (averaged over
  ranks), the KL weight, the learning rate and the held-out reconstruction MSE.

Exactness of resume: the noise of each step is drawn from a generator seeded by
(seed, step, rank), batches come from `StoreLoader.iter_from`, and the optimizer and
running sums are restored, so a resumed run takes the same steps as an uninterrupted one.

One run per output folder: rank 0 holds ``ckpt.pt.lock`` (`galhpc.runtime.files.OutputLock`)
from before the checkpoint is read until the run ends, so a second run on the same
`out_dir` is refused before it reads or writes anything, and a run that is gone (killed,
its node lost, its job requeued elsewhere) is taken over.

Signals: SIGTERM or SIGUSR1 let the current step finish, then rank 0 saves a checkpoint
and every rank leaves with `TrainingInterrupted` (a SystemExit with status 75,
EX_TEMPFAIL: "try again"), which a job script can answer by requeueing.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import itertools
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from galhpc.checkpoint import CheckpointError, assemble_model, checkpoint_config, read_checkpoint, save_checkpoint
from galhpc.config import RunConfig
from galhpc.models.base import GalaxyModel, StepState
from galhpc.runtime import progress
from galhpc.runtime.batching import run_batched
from galhpc.runtime.errors import ConfigError, DataError, NonFiniteLossError
from galhpc.runtime.files import OutputInUseError, OutputLock, atomic_open, atomic_path, remove_stale_temps
from galhpc.runtime.precision import autocast, check_precision, grad_scaler
from galhpc.runtime.signals import EXIT_PREEMPTED, StopFlag, stop_signals
from galhpc.runtime.transfer import device_prefetch
from galhpc.runtime.world import configure_threads
from galhpc.train.distributed import Backend, make_backend
from galhpc.train.preemption import mark_stopped
from galhpc.train.schedule import INIT_MIXTURE, Schedule, learning_rate

log = logging.getLogger("galhpc.train.trainer")

EXIT_INTERRUPTED = EXIT_PREEMPTED  # 75, EX_TEMPFAIL
CHECKPOINT_NAME = "ckpt.pt"


class TrainingInterrupted(SystemExit):
    """Raised after a stop signal once the checkpoint is saved; exits with status 75."""

    def __init__(self, checkpoint: Path, step: int) -> None:
        super().__init__(EXIT_INTERRUPTED)
        self.checkpoint, self.step = checkpoint, step


@dataclass
class Position:
    """Where training stands: the next batch to run is `batch` of `epoch`; `step` steps done."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)  # running sums of this epoch's terms
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch
    stick_breaking_k: int | None = None


@dataclass
class TrainResult:
    checkpoint: Path
    out_dir: Path
    epochs: int
    steps: int
    history: list[dict[str, Any]]
    stick_breaking_k: int | None = None


# -- pieces -------------------------------------------------------------------------------


def build_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """Adam over every parameter; its lr is set before each step by `lr_at`."""
    return torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def lr_at(step: int, total_steps: int, steps_per_epoch: int, cfg: RunConfig, backend: Backend) -> float:
    """The learning rate of optimizer step `step`: exponential decay times the backend's scaling."""
    warmup_steps = int(round(cfg.train.warmup_epochs * steps_per_epoch))
    decayed = learning_rate(step, total_steps, cfg.train.lr, cfg.train.lr_final)
    return decayed * backend.lr_scale(step, warmup_steps)


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the noise drawn in one step on one rank (independent of how the run was split)."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


@dataclass
class PendingTerms:
    """The loss terms of one step, still on the device, and where the step stood."""

    names: tuple[str, ...]
    values: torch.Tensor  # (len(names),) float32 on the device
    step: int
    epoch: int
    batch: int


def bad_input_error(batch: dict[str, Any], store: str | Path, err: NonFiniteLossError) -> None:
    """After a non-finite loss: raise a `DataError` naming the store and objects if the batch has NaN/inf pixels."""
    images = batch["image"]
    bad = ~torch.isfinite(images.flatten(1)).all(dim=1)
    if bool(bad.any()):
        ids = [int(i) for i in torch.as_tensor(batch["object_id"]).cpu()[bad.cpu()][:10]]
        raise DataError(f"{store}: NaN/inf pixels in object_id {', '.join(map(str, ids))} "
                        f"({int(bad.sum())} object(s) of the batch) gave a non-finite loss: {err}") from err


def check_store_shape(store: str | Path, channels: int, image_size: int) -> None:
    """Refuse a store whose images are not the model's (C, H, W), before torch sees them.

    Raises
    ------
    DataError
        One line with the store's image shape and the model's size.
    """
    from galhpc.data.store import read_store_info

    shape = tuple(read_store_info(store).image_shape)
    shape = (1, *shape) if len(shape) == 2 else shape
    if shape != (channels, image_size, image_size):
        raise DataError(f"{store}: images are {'x'.join(map(str, shape))} (C x H x W) but the model takes "
                        f"{channels}x{image_size}x{image_size} (model.channels x model.image_size^2); "
                        "use a store prepared at the model's size, or set model.image_size")


def store_pixel_datasets(store: str | Path) -> list[str]:
    """The per-pixel maps (`sigma`, `mask`) the store holds beside its images, which batches
    then carry for the likelihoods (galhpc.models.pixels).
    """
    from galhpc.formats.hdf5 import open_h5_readonly
    from galhpc.models.pixels import PIXEL_DATASETS

    with open_h5_readonly(store) as f:
        return [name for name in PIXEL_DATASETS if name in f and f[name].shape == f["images"].shape]


def check_store_recipe(store: str | Path, model: GalaxyModel) -> None:
    """Refuse, in one line, a store whose prep recipe the model's likelihood does not assume
    (`GalaxyModel.store_mismatch`, e.g. a Gaussian likelihood on a store without the `flux` step).

    Raises
    ------
    DataError
        Naming the store and what its recipe lacks.
    """
    from galhpc.config import config_from_yaml_text
    from galhpc.data.store import read_store_info
    from galhpc.formats.hdf5 import open_h5_readonly

    info = read_store_info(store)
    try:
        recipe = list(config_from_yaml_text(info.config).prep.recipe) if info.config else []
    except ConfigError:
        recipe = []
    with open_h5_readonly(store) as f:
        columns = set(info.label_names) | {name for name in f if isinstance(f[name], h5py.Dataset)}
    why = model.store_mismatch(recipe, columns)
    if why is not None:
        raise DataError(f"{store}: model {model.name!r} cannot train on this store: {why}")


def pending_terms(terms: dict[str, torch.Tensor], total: torch.Tensor, position: Position) -> PendingTerms:
    """The step's terms and total stacked on the device (no host synchronisation)."""
    values = torch.stack([v.detach().float().reshape(()) for v in [*terms.values(), total]])
    return PendingTerms((*terms, "total"), values, position.step, position.epoch, position.batch)


def check_finite(pending: list[PendingTerms]) -> list[dict[str, float]]:
    """Loss terms of the pending steps as floats, with one host synchronisation.

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


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# -- files --------------------------------------------------------------------------------


def write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite losses.csv and losses.png from the full history (so a resume never duplicates rows)."""
    if not history:
        return
    columns = list(dict.fromkeys(key for row in history for key in row))
    with atomic_open(out_dir / "losses.csv", "w", fsync=False, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    plot_history(out_dir / "losses.png", history)


def plot_history(path: Path, history: list[dict[str, Any]]) -> None:
    """losses.png from the history; skipped with a warning when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        log.warning("matplotlib is not installed: %s not drawn (losses.csv has the same numbers)", path)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"epoch", "phase", "lr", "kl_weight", "seconds", "stick_breaking_k"}
    names = [k for k in history[0] if k not in skip and isinstance(history[0][k], (int, float))]
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        values = [row.get(name, float("nan")) for row in history]
        axes[0].plot(epochs, values, marker="o", ms=3, label=name)
    if all(v > 0 for n in names for v in (row.get(n, 1.0) for row in history)):
        axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_title("loss terms (epoch means)")
    axes[0].legend(fontsize=8)
    axes[1].plot(epochs, [row["kl_weight"] for row in history], label="KL weight")
    axes[1].plot(epochs, [row["lr"] / history[0]["lr"] for row in history], label="lr / initial lr")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_title("schedule")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, fsync=False) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def checkpoint_payload(model: GalaxyModel, optimizer: torch.optim.Optimizer, cfg: RunConfig, pos: Position,
                       layout: dict[str, Any], scaler: torch.amp.GradScaler | None = None) -> dict:
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
    rows (other world size, batch size, seed or holdout split): its position would not say
    where this run stands.  At an epoch boundary a new world size is fine (elastic re-launch).
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


# -- the loop -----------------------------------------------------------------------------


def encode_means(model: GalaxyModel, loader: Any, n_batches: int) -> np.ndarray:
    """Encoded means (N, L) float64 of the first `n_batches` batches of `loader` (eval mode, no autograd)."""
    parts = run_batched(model, lambda x, _: model.encode(x).mu.double().cpu().numpy(), loader,
                        max_batches=n_batches)
    return np.concatenate(parts)


def holdout_mse(model: GalaxyModel, loader: Any, max_batches: int | None) -> tuple[float, int]:
    """Sum of squared errors of model.reconstruct(x) against x (the reconstruction in x's own
    space, e.g. PSF-convolved for a PSF model) and the pixel count, on this rank's holdout
    shard; pixels the batch's "mask" flags (non-zero) are left out of both.
    """
    from galhpc.models.pixels import valid_pixels

    def sse(x: torch.Tensor, batch: Any) -> tuple[float, float]:
        weight = valid_pixels(batch or {}, x)
        err = (model.reconstruct(x, batch).float() - x).pow(2)
        if weight is None:
            return float(err.sum()), float(x.numel())
        return float((err * weight).sum()), float(weight.sum())

    totals = run_batched(model, sse, loader, max_batches=max_batches)
    return sum(t[0] for t in totals), int(sum(t[1] for t in totals))


class Trainer:
    """One training run; `run()` does the epochs.  Built by `train()`."""

    def __init__(self, cfg: RunConfig, backend: Backend, resume: bool) -> None:
        from galhpc.data.loader import StoreLoader
        from galhpc.data.store import flux_calibration, read_store_info, store_pixel_scale

        self.cfg, self.backend = cfg, backend
        self.out_dir = Path(cfg.train.out_dir)
        self.ckpt_path = self.out_dir / CHECKPOINT_NAME
        self.schedule = Schedule(cfg.schedule)
        self.device = backend.device
        t = cfg.train
        check_precision(t.precision, "train.precision")
        if t.precision == "fp16" and backend.name == "horovod":
            raise ConfigError("train.precision fp16 is not supported with the horovod backend (its gradient "
                              "allreduce would race the loss scaler's unscale); use bf16 or the torch backend")
        if t.nan_check_every < 1:
            raise ConfigError(f"train.nan_check_every must be >= 1, got {t.nan_check_every}")
        torch.manual_seed(t.seed)  # identical initial weights on every rank (then broadcast)
        self.model = assemble_model(cfg.model).to(self.device)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        check_store_recipe(t.store, self.model)  # before the loader asks for the columns it lacks
        self.scaler = grad_scaler(t.precision, self.device)
        self.pending: list[PendingTerms] = []
        pixel_maps = store_pixel_datasets(t.store)  # per-pixel sigma / mask the likelihoods use
        columns = list(dict.fromkeys([*self.model.batch_columns, *pixel_maps])) or None
        common = dict(holdout_fraction=t.holdout_fraction, seed=t.seed, label_columns=columns)
        self.loader = StoreLoader(
            t.store, t.batch_size, split="train", rank=backend.rank, world_size=backend.world_size,
            augment=t.augment, shuffle=True, drop_last=True, **common,
        )
        holdout_columns = list(dict.fromkeys([*self.model.batch_columns, *self.model.reconstruct_columns,
                                              *pixel_maps])) or None
        self.holdout = None if t.holdout_fraction == 0 else StoreLoader(
            t.store, t.batch_size, split="holdout", rank=backend.rank, world_size=backend.world_size,
            augment=False, shuffle=False, drop_last=False, **{**common, "label_columns": holdout_columns},
        )
        check_store_shape(t.store, cfg.model.channels, cfg.model.image_size)
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{t.store}: the training split on rank {backend.rank} has fewer images than one batch "
                f"of {t.batch_size}; lower train.batch_size"
            )
        # train.steps: whole epochs covering that many optimiser steps
        self.n_epochs = t.epochs if t.steps is None else max(1, math.ceil(t.steps / self.steps_per_epoch))
        self.total_steps = self.n_epochs * self.steps_per_epoch
        needed = self.schedule.steps_needed(self.steps_per_epoch)
        if needed is not None and self.total_steps < needed:
            log.warning("%s: this run takes %d optimiser steps (%d epochs of %d batches of %d from the training "
                        "split) but the schedule's phases need %d; the KL annealing will not finish: raise "
                        "train.steps (or epochs), or shorten the schedule", t.store, self.total_steps,
                        self.n_epochs, self.steps_per_epoch, t.batch_size, needed)
        self.pixel_scale = store_pixel_scale(t.store, cfg.model.image_size)  # (arcsec/pixel or None, provenance)
        self.store_prep = read_store_info(t.store).config  # how FITS inputs are prepared at inference
        self.flux_calibration = flux_calibration(t.store)  # galhpc-generate's survey units without the store
        self.layout = {"world_size": backend.world_size, "batch_size": t.batch_size, "seed": t.seed,
                       "holdout_fraction": t.holdout_fraction, "steps_per_epoch": self.steps_per_epoch,
                       "precision": t.precision}
        self.optimizer = build_optimizer(self.model, cfg)
        self.pos = Position()
        if resume and self.ckpt_path.exists():
            self.pos = restore(self.ckpt_path, cfg, self.model, self.optimizer, self.layout, self.scaler)
            log.info("resuming from %s at epoch %d, batch %d (step %d)",
                     self.ckpt_path, self.pos.epoch, self.pos.batch, self.pos.step)
        if self.pos.step == 0 and self.model.data_init_batches > 0:
            self.init_from_data()
        self.model.use_collective(backend)
        self.step_model = backend.wrap_model(self.model)
        self.optimizer = backend.wrap_optimizer(self.optimizer, self.model)
        backend.broadcast_state(self.model, self.optimizer)
        self.loss_fn = self.step_model.loss
        if t.compile:
            self.loss_fn = torch.compile(self.step_model.loss, backend=t.compile)

    # -- checkpoints and files (rank 0) --
    def save(self) -> None:
        if self.backend.is_root:
            payload = checkpoint_payload(self.model, self.optimizer, self.cfg, self.pos, self.layout, self.scaler)
            payload["pixel_scale"], payload["pixel_scale_source"] = self.pixel_scale  # for galhpc-generate
            payload["store_prep"] = self.store_prep  # for inference on FITS cutouts (checkpoint.inference_prep)
            payload["flux_calibration"] = self.flux_calibration  # for galhpc-generate (catalog.photometry)
            save_checkpoint(self.ckpt_path, payload)
            log.info("checkpoint %s (epoch %d, batch %d, step %d)", self.ckpt_path, self.pos.epoch,
                     self.pos.batch, self.pos.step)

    def stop_agreed(self, flag: StopFlag) -> bool:
        """True on every rank when any rank received a stop signal."""
        if self.backend.world_size == 1:
            return flag.requested
        return self.backend.average({"stop": float(flag.requested)})["stop"] > 0

    # -- steps --
    def flush_terms(self) -> list[dict[str, float]]:
        """Check the pending steps' loss terms (one host sync), add them to the epoch sums
        and return them (one dict per step, in step order).
        """
        rows = check_finite(self.pending)
        for values in rows:
            for k, v in values.items():
                self.pos.sums[k] = self.pos.sums.get(k, 0.0) + v
        self.pending = []
        return rows

    def train_step(self, batch: dict[str, Any]) -> None:
        """One optimizer step on a batch already on the device; its loss terms join
        `pending`, checked (and summed) every `train.nan_check_every` steps before the
        update of the step that fills the window.
        """
        pos, epoch, t = self.pos, self.pos.epoch, self.cfg.train
        tick = self.tick()
        weights = self.schedule.weights(*tick)
        lr = lr_at(pos.step, self.total_steps, self.steps_per_epoch, self.cfg, self.backend)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(step_seed(self.cfg.train.seed, pos.step, self.backend.rank))
        state = StepState(epoch=epoch, step=pos.step, phase=self.schedule.phase(tick[0])[0], weights=weights)
        image = batch.get("image")
        if t.channels_last and torch.is_tensor(image) and image.ndim == 4:
            batch = {**batch, "image": image.contiguous(memory_format=torch.channels_last)}
        with autocast(self.device, t.precision):
            out = self.loss_fn(batch, state)
        self.pending.append(pending_terms(out.terms, out.total, pos))
        if len(self.pending) >= t.nan_check_every:
            try:
                self.flush_terms()
            except NonFiniteLossError as err:
                bad_input_error(batch, self.cfg.train.store, err)  # NaN pixels: name the store and objects
                raise
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def tick(self) -> tuple[int, int, int]:
        """Where the schedule stands for the next step: (tick, batch within it, batches per
        tick); a tick is an epoch, or one step with the schedule's `unit: steps`.
        """
        if self.schedule.per_step:
            return self.pos.step, 0, 1
        return self.pos.epoch, self.pos.batch, self.steps_per_epoch

    def after_step(self) -> None:
        """Step-counted schedules: the events due after the step just taken."""
        if self.schedule.per_step and INIT_MIXTURE in self.schedule.events_after(self.pos.step - 1):
            self.init_mixture()

    def end_epoch(self, seconds: float) -> None:
        pos, t = self.pos, self.cfg.train
        means = {k: v / max(self.steps_per_epoch, 1) for k, v in pos.sums.items()}
        with autocast(self.device, t.precision):
            sse, count = (0.0, 0) if self.holdout is None else holdout_mse(
                self.model, self.holdout, t.eval_batches)
        means["holdout_sse"], means["holdout_pixels"] = sse, float(count)
        means = self.backend.average(means)
        pixels = means.pop("holdout_pixels")
        holdout = means.pop("holdout_sse") / pixels if pixels else float("nan")
        last = (pos.step - 1, 0, 1) if self.schedule.per_step else (pos.epoch, self.steps_per_epoch - 1,
                                                                       self.steps_per_epoch)
        phase = self.schedule.phase(last[0])[0]
        row = {"epoch": pos.epoch, "phase": phase, **means, "holdout_mse": holdout,
               "kl_weight": self.schedule.weights(*last)["kl"],
               "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2)}
        pos.history.append(row)
        log.info("epoch %d (%s): %s", pos.epoch, phase,
                 ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
        for event in ([] if self.schedule.per_step else self.schedule.events_after(pos.epoch)):
            if event == INIT_MIXTURE:
                self.init_mixture()
        pos.epoch, pos.batch, pos.sums = pos.epoch + 1, 0, {}
        if self.backend.is_root:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # under the run's lock no other run writes here: a killed run's temporaries, of any host
            remove_stale_temps(self.out_dir, max_age_s=0.0)
            write_history(self.out_dir, pos.history)
        mixture_done = not self.schedule.per_step and self.schedule.events_after(pos.epoch - 1)
        if pos.epoch % t.checkpoint_every == 0 or pos.epoch == self.n_epochs or mixture_done:
            self.save()

    def init_from_data(self) -> None:
        """The model's data-driven initialisation (`GalaxyModel.init_from_data`) from the first
        unaugmented, unsharded training batches, the same on every rank; the broadcast of
        the initial state that follows makes the ranks agree exactly.
        """
        from galhpc.data.loader import StoreLoader

        t = self.cfg.train
        loader = StoreLoader(t.store, t.batch_size, split="train", holdout_fraction=t.holdout_fraction,
                             rank=0, world_size=1, augment=False, seed=t.seed, shuffle=True, drop_last=False)
        loader.set_epoch(0)
        batches = list(itertools.islice(device_prefetch(iter(loader), self.device), self.model.data_init_batches))
        log.info("initialising %s from %d training stamps", self.model.name, sum(len(b["image"]) for b in batches))
        self.model.init_from_data(batches)

    def init_mixture(self) -> None:
        """s3VDC mini-batch GMM initialisation (if the model has a mixture), and the stick-breaking K.

        Every rank encodes the same unsharded, unaugmented batches and fits the same GMM
        with the same seed; rank 0's result is then broadcast so all ranks agree exactly.
        """
        if not self.model.has_mixture:
            return
        from galhpc.data.loader import StoreLoader
        from galhpc.mixture.bayesian import fit_stick_breaking_bgm

        s, t = self.cfg.schedule, self.cfg.train
        loader = StoreLoader(t.store, t.batch_size, split="train", holdout_fraction=t.holdout_fraction,
                             rank=0, world_size=1, augment=False, seed=t.seed, shuffle=True, drop_last=False)
        loader.set_epoch(0)
        with autocast(self.device, t.precision):
            embeddings = encode_means(self.model, loader, s.gmm_init_batches)
        log.info("initialising the mixture from %d embeddings", len(embeddings))
        self.model.init_mixture(embeddings, seed=t.seed)
        self.backend.broadcast_state(self.model, None)
        if self.backend.is_root:
            try:
                result = fit_stick_breaking_bgm(embeddings, s.dp_max_components, seed=t.seed, n_batches=s.dp_batches)
            except ValueError as err:
                log.warning("stick-breaking K skipped: %s", err)
            else:
                self.pos.stick_breaking_k = result.k
                if self.pos.history:  # a step-counted schedule may init inside the first epoch
                    self.pos.history[-1]["stick_breaking_k"] = result.k
                log.info("stick-breaking: batches found %s components; consistent K = %d "
                         "(the model uses %s)", result.counts, result.k, getattr(self.model, "n_clusters", "?"))

    def run(self) -> TrainResult:
        t = self.cfg.train
        with stop_signals("the current step, then a checkpoint") as flag:
            while self.pos.epoch < self.n_epochs:
                started = time.perf_counter()
                self.loader.set_epoch(self.pos.epoch)
                batches = device_prefetch(self.loader.iter_from(self.pos.batch), self.device)
                bar = progress(batches, self.backend.rank, total=self.steps_per_epoch, initial=self.pos.batch,
                               desc=f"epoch {self.pos.epoch + 1}/{self.n_epochs}", leave=False)
                for batch in bar:
                    self.train_step(batch)
                    self.pos.batch += 1
                    self.pos.step += 1
                    self.after_step()
                    if self.stop_agreed(flag):
                        self.flush_terms()
                        self.pos.sums = self.backend.average(self.pos.sums)  # every rank's share, once
                        self.save()
                        if self.backend.is_root:  # before any rank leaves (a launcher may then kill the rest)
                            mark_stopped(self.ckpt_path, self.pos.step)
                        self.backend.barrier()
                        log.warning("stopped by %s at step %d; resume with the same command",
                                    flag.signal_name or "a signal on another rank", self.pos.step)
                        raise TrainingInterrupted(self.ckpt_path, self.pos.step)
                self.flush_terms()
                self.end_epoch(time.perf_counter() - started)
        if not self.ckpt_path.exists() and self.backend.is_root:
            self.save()
        self.backend.barrier()
        return TrainResult(self.ckpt_path, self.out_dir, self.pos.epoch, self.pos.step, self.pos.history,
                           self.pos.stick_breaking_k)


def train(cfg: RunConfig, *, backend: Backend | None = None, resume: bool = True) -> TrainResult:
    """Train `cfg.model` on `cfg.train.store`; see the module docstring for files and signals."""
    configure_threads(cfg.train.threads, asked_by="train.threads")
    backend = backend or make_backend(cfg.train.backend, cfg.train.device)
    with output_lock(Path(cfg.train.out_dir) / CHECKPOINT_NAME, backend):
        return Trainer(cfg, backend, resume).run()


@contextlib.contextmanager
def output_lock(ckpt_path: Path, backend: Backend) -> Iterator[None]:
    """Rank 0 holds ``<ckpt_path>.lock`` for the block; every rank fails if rank 0 cannot take it.

    Raises
    ------
    OutputInUseError
        Another live run holds the lock (on rank 0 naming it; on the other ranks naming rank 0).
    """
    lock, refused = OutputLock(ckpt_path), None
    if backend.is_root:
        try:
            lock.acquire()
        except OutputInUseError as err:
            refused = err
    agreed = backend.broadcast(torch.tensor([0.0 if refused else 1.0], dtype=torch.float64, device=backend.device))
    if refused is not None:
        raise refused
    if agreed.item() == 0.0:
        raise OutputInUseError(errno.EBUSY, "in use by another run (rank 0 names it)", str(ckpt_path))
    try:
        yield
    finally:
        lock.release()


def train_from_config(config: str | Path, overrides: dict[str, Any] | None = None, *, resume: bool = True,
                      settings: Sequence[str] = ()) -> TrainResult:
    """`galhpc-train`: load a run config, apply `train` overrides, train on the launcher's backend.

    Parameters
    ----------
    config : str or Path
        YAML run config.
    overrides : dict, optional
        Keys of the config's `train` section (None values are ignored), e.g. ``{"epochs": 3}``.
    resume : bool
        Resume from ``out_dir/ckpt.pt`` when it exists.
    settings : sequence of str
        ``--set KEY=VALUE`` overrides of any section (`galhpc.config.apply_settings`).

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError, CheckpointError, DataError, NonFiniteLossError, LaunchError
        One-line errors that `galhpc.runtime.cli.run_cli` reports.
    """
    import dataclasses

    from galhpc.config import load_config

    cfg = load_config(config, settings)
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(cfg.train)})
    if unknown:
        raise ConfigError(f"{config}: unknown train override(s) {unknown}")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))
    backend = make_backend(cfg.train.backend, cfg.train.device)
    try:
        result = train(cfg, backend=backend, resume=resume)
    finally:
        backend.shutdown()
    log.info("done: %d epochs, %d steps; checkpoint %s", result.epochs, result.steps, result.checkpoint)
    return result

