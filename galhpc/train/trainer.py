"""The training loop: any registered model, any backend, checkpoints that resume exactly.

`train(cfg)` runs `cfg.train.epochs` epochs over the training split of `cfg.train.store`
with the loss weights of the s3VDC schedule, and writes into `cfg.train.out_dir`:

- `ckpt.pt`: model, optimizer, position (epoch, batch in epoch, step), running epoch
  sums, history, RNG states and the config; written atomically by rank 0 after every
  `checkpoint_every` epochs, after the mixture initialisation and on a stop signal;
- `losses.csv`: per-epoch means of every loss term (averaged over ranks), the KL weight,
  the learning rate and the held-out reconstruction MSE (`galhpc.train.losses`; the
  figure of it is the report's).

The pieces live beside it: `galhpc.train.state` (checkpoint payload, position, RNG states),
`galhpc.train.losses` (loss terms, their rank means, losses.csv), `galhpc.train.inputs`
(the store checked against the model) and `galhpc.train.distributed` (the backend, which
wraps model and optimizer and holds the process group every collective goes through).

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
import errno
import itertools
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galhpc.checkpoint import assemble_model, save_checkpoint
from galhpc.config import RunConfig
from galhpc.models.base import GalaxyModel, StepState
from galhpc.runtime import progress
from galhpc.runtime.batching import run_batched
from galhpc.runtime.errors import ConfigError, NonFiniteLossError
from galhpc.runtime.files import OutputInUseError, OutputLock, remove_stale_temps
from galhpc.runtime.precision import autocast, check_precision, grad_scaler
from galhpc.runtime.signals import EXIT_PREEMPTED, StopFlag, stop_signals
from galhpc.runtime.transfer import device_prefetch
from galhpc.runtime.world import World, configure_threads
from galhpc.train.distributed import Backend, make_backend
from galhpc.train.inputs import (
    bad_input_error,
    check_init_batches,
    check_store_recipe,
    check_store_shape,
    store_pixel_datasets,
)
from galhpc.train.losses import PendingTerms, check_finite, mean_over_ranks, pending_terms, write_losses
from galhpc.train.preemption import mark_stopped
from galhpc.train.schedule import INIT_MIXTURE, Schedule, learning_rate
from galhpc.train.state import Position, checkpoint_payload, restore, step_seed

log = logging.getLogger("galhpc.train.trainer")

EXIT_INTERRUPTED = EXIT_PREEMPTED  # 75, EX_TEMPFAIL
CHECKPOINT_NAME = "ckpt.pt"


class TrainingInterrupted(SystemExit):
    """Raised after a stop signal once the checkpoint is saved; exits with status 75.

    Parameters
    ----------
    checkpoint, step
        As in `galhpc.train.preemption.mark_stopped`.
    """

    def __init__(self, checkpoint: Path, step: int) -> None:
        super().__init__(EXIT_INTERRUPTED)
        self.checkpoint, self.step = checkpoint, step


@dataclass
class TrainResult:
    """What `train` returns.

    Attributes
    ----------
    checkpoint : Path
        ``out_dir/ckpt.pt``.
    out_dir : Path
        The run's folder.
    epochs, steps : int
        Epochs finished and optimizer steps taken.
    history : list of dict
        One row per epoch (the rows of losses.csv).
    stick_breaking_k : int or None
        The stick-breaking mixture's consistent K, when fitted.
    """

    checkpoint: Path
    out_dir: Path
    epochs: int
    steps: int
    history: list[dict[str, Any]]
    stick_breaking_k: int | None = None


# -- pieces -------------------------------------------------------------------------------


def build_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """Adam over every parameter; its lr is set before each step by `lr_at`.

    Parameters
    ----------
    model : torch.nn.Module
        The model to train.
    cfg : RunConfig
        ``train.lr`` and ``train.weight_decay``.

    Returns
    -------
    torch.optim.Adam
    """
    return torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def lr_at(step: int, total_steps: int, steps_per_epoch: int, cfg: RunConfig, backend: Backend) -> float:
    """The learning rate of optimizer step `step`: exponential decay times the backend's scaling.

    Parameters
    ----------
    step : int
        Optimizer step.
    total_steps : int
        Steps of the whole run.
    steps_per_epoch : int
        Batches per epoch on this rank (for ``train.warmup_epochs``).
    cfg : RunConfig
        ``train.lr``, ``train.lr_final`` and ``train.warmup_epochs``.
    backend : Backend
        Its `lr_scale` (the number of ranks, after a warm-up).

    Returns
    -------
    float
        The learning rate.
    """
    warmup_steps = int(round(cfg.train.warmup_epochs * steps_per_epoch))
    decayed = learning_rate(step, total_steps, cfg.train.lr, cfg.train.lr_final)
    return decayed * backend.lr_scale(step, warmup_steps)


# -- the loop -----------------------------------------------------------------------------


def encode_means(model: GalaxyModel, loader: Any, n_batches: int) -> np.ndarray:
    """Encoded means of the first `n_batches` batches of `loader` (eval mode, no autograd).

    Parameters
    ----------
    model : GalaxyModel
        The model.
    loader : iterable of batches
        E.g. a `StoreLoader`.
    n_batches : int
        Batches to encode.

    Returns
    -------
    numpy.ndarray
        (N, L) float64.
    """
    parts = run_batched(model, lambda x, _: model.encode(x).mu.double().cpu().numpy(), loader,
                        max_batches=n_batches)
    return np.concatenate(parts)


def holdout_mse(model: GalaxyModel, loader: Any, max_batches: int | None) -> tuple[float, int]:
    """Sum of squared errors of model.reconstruct(x) against x, and the pixel count.

    The reconstruction is in x's own space (e.g. PSF-convolved for a PSF model), on this
    rank's holdout shard; pixels the batch's "mask" flags (non-zero) are left out of both.

    Parameters
    ----------
    model : GalaxyModel
        The model.
    loader : iterable of batches
        This rank's holdout `StoreLoader`.
    max_batches : int or None
        Batches to evaluate (None: all).

    Returns
    -------
    (float, int)
        Sum of squared errors and number of pixels counted.
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
    """One training run; `run()` does the epochs.  Built by `train()`.

    Parameters
    ----------
    cfg : RunConfig
        The run's config.
    backend : Backend
        Wraps model and optimizer; its `world` is the process group every collective goes through.
    resume : bool
        Resume from ``out_dir/ckpt.pt`` when it exists.
    """

    def __init__(self, cfg: RunConfig, backend: Backend, resume: bool) -> None:
        from galhpc.data.loader import StoreLoader
        from galhpc.data.store import flux_calibration, read_store_info, store_pixel_scale

        self.cfg, self.backend = cfg, backend
        self.world: World = backend.world
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
            t.store, t.batch_size, split="train", rank=self.world.rank, size=self.world.size,
            augment=t.augment, shuffle=True, drop_last=True, **common,
        )
        holdout_columns = list(dict.fromkeys([*self.model.batch_columns, *self.model.reconstruct_columns,
                                              *pixel_maps])) or None
        self.holdout = None if t.holdout_fraction == 0 else StoreLoader(
            t.store, t.batch_size, split="holdout", rank=self.world.rank, size=self.world.size,
            augment=False, shuffle=False, drop_last=False, **{**common, "label_columns": holdout_columns},
        )
        check_store_shape(t.store, cfg.model.channels, cfg.model.image_size)
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{t.store}: the training split on rank {self.world.rank} has fewer images than one batch "
                f"of {t.batch_size}; lower train.batch_size"
            )
        # train.steps: whole epochs covering that many optimiser steps
        self.n_epochs = t.epochs if t.steps is None else max(1, math.ceil(t.steps / self.steps_per_epoch))
        self.total_steps = self.n_epochs * self.steps_per_epoch
        if t.steps is not None and self.total_steps != t.steps:
            log.info("train.steps %d: %d whole epochs of %d batches, %d optimiser steps", t.steps, self.n_epochs,
                     self.steps_per_epoch, self.total_steps)
        needed = self.schedule.steps_needed(self.steps_per_epoch)
        if needed is not None and self.total_steps < needed:
            log.warning("%s: this run takes %d optimiser steps (%d epochs of %d batches of %d from the training "
                        "split) but the schedule's phases need %d; the KL annealing will not finish: raise "
                        "train.steps (or epochs), or shorten the schedule", t.store, self.total_steps,
                        self.n_epochs, self.steps_per_epoch, t.batch_size, needed)
        self.pixel_scale = store_pixel_scale(t.store, cfg.model.image_size)  # (arcsec/pixel or None, provenance)
        self.store_prep = read_store_info(t.store).config  # how FITS inputs are prepared at inference
        self.flux_calibration = flux_calibration(t.store)  # galhpc-generate's survey units without the store
        self.layout = {"world_size": self.world.size, "batch_size": t.batch_size, "seed": t.seed,
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
        self.model.use_group(self.world)
        self.step_model = backend.wrap_model(self.model)
        self.optimizer = backend.wrap_optimizer(self.optimizer, self.model)
        backend.broadcast_state(self.model, self.optimizer)
        self.loss_fn = self.step_model.loss
        if t.compile:
            self.loss_fn = torch.compile(self.step_model.loss, backend=t.compile)

    # -- checkpoints and files (rank 0) --
    def save(self) -> None:
        """Write the checkpoint (rank 0; the other ranks return at once)."""
        if self.world.is_root:
            payload = checkpoint_payload(self.model, self.optimizer, self.cfg, self.pos, self.layout, self.scaler)
            payload["pixel_scale"], payload["pixel_scale_source"] = self.pixel_scale  # for galhpc-generate
            payload["store_prep"] = self.store_prep  # for inference on FITS cutouts (checkpoint.inference_prep)
            payload["flux_calibration"] = self.flux_calibration  # for galhpc-generate (catalog.photometry)
            save_checkpoint(self.ckpt_path, payload)
            log.info("checkpoint %s (epoch %d, batch %d, step %d)", self.ckpt_path, self.pos.epoch,
                     self.pos.batch, self.pos.step)

    def stop_agreed(self, flag: StopFlag) -> bool:
        """Whether any rank received a stop signal (the same answer on every rank).

        Parameters
        ----------
        flag : StopFlag
            This rank's stop flag.

        Returns
        -------
        bool
        """
        if self.world.size == 1:
            return flag.requested
        return self.world.allreduce_sum(float(flag.requested)) > 0

    # -- steps --
    def flush_terms(self) -> list[dict[str, float]]:
        """Check the pending steps' loss terms (one host sync) and add them to the epoch sums.

        Returns
        -------
        list of dict of str to float
            One dict per step, in step order.

        Raises
        ------
        NonFiniteLossError
            A NaN or inf term.
        """
        rows = check_finite(self.pending)
        for values in rows:
            for k, v in values.items():
                self.pos.sums[k] = self.pos.sums.get(k, 0.0) + v
        self.pending = []
        return rows

    def train_step(self, batch: dict[str, Any]) -> None:
        """One optimizer step on a batch already on the device.

        Its loss terms join `pending`, checked (and summed) every `train.nan_check_every`
        steps before the update of the step that fills the window.

        Parameters
        ----------
        batch : dict
            ``image`` (B, C, H, W) and the model's columns, on the device.

        Raises
        ------
        NonFiniteLossError, DataError
            A non-finite loss term (a `DataError` naming the objects when the batch has NaN pixels).
        """
        pos, epoch, t = self.pos, self.pos.epoch, self.cfg.train
        tick = self.tick()
        weights = self.schedule.weights(*tick)
        lr = lr_at(pos.step, self.total_steps, self.steps_per_epoch, self.cfg, self.backend)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(step_seed(self.cfg.train.seed, pos.step, self.world.rank))
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
        """Where the schedule stands for the next step.

        Returns
        -------
        (int, int, int)
            Tick, batch within it, batches per tick; a tick is an epoch, or one step with
            the schedule's ``unit: steps``.
        """
        if self.schedule.per_step:
            return self.pos.step, 0, 1
        return self.pos.epoch, self.pos.batch, self.steps_per_epoch

    def after_step(self) -> None:
        """Step-counted schedules: the events due after the step just taken."""
        if self.schedule.per_step and INIT_MIXTURE in self.schedule.events_after(self.pos.step - 1):
            self.init_mixture()

    def end_epoch(self, seconds: float) -> None:
        """Close an epoch: its row of the history (rank means), losses.csv, schedule events, checkpoint.

        Parameters
        ----------
        seconds : float
            Wall time of the epoch, in seconds.
        """
        pos, t = self.pos, self.cfg.train
        means = {k: v / max(self.steps_per_epoch, 1) for k, v in pos.sums.items()}
        with autocast(self.device, t.precision):
            sse, count = (0.0, 0) if self.holdout is None else holdout_mse(
                self.model, self.holdout, t.eval_batches)
        means["holdout_sse"], means["holdout_pixels"] = sse, float(count)
        means = mean_over_ranks(self.world, means)
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
        if self.world.is_root:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # under the run's lock no other run writes here: a killed run's temporaries, of any host
            remove_stale_temps(self.out_dir, max_age_s=0.0)
            write_losses(self.out_dir, pos.history)
        mixture_done = not self.schedule.per_step and self.schedule.events_after(pos.epoch - 1)
        if pos.epoch % t.checkpoint_every == 0 or pos.epoch == self.n_epochs or mixture_done:
            self.save()

    def init_from_data(self) -> None:
        """The model's data-driven initialisation (`GalaxyModel.init_from_data`).

        From the first unaugmented, unsharded training batches, the same on every rank; the
        broadcast of the initial state that follows makes the ranks agree exactly.
        """
        from galhpc.data.loader import StoreLoader

        t = self.cfg.train
        loader = StoreLoader(t.store, t.batch_size, split="train", holdout_fraction=t.holdout_fraction,
                             rank=0, size=1, augment=False, seed=t.seed, shuffle=True, drop_last=False)
        loader.set_epoch(0)
        batches = list(itertools.islice(device_prefetch(iter(loader), self.device), self.model.data_init_batches))
        log.info("initialising %s from %d training stamps", self.model.name, sum(len(b["image"]) for b in batches))
        check_init_batches(batches, t.store, self.model.data_init_batches, self.model.name)
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
                             rank=0, size=1, augment=False, seed=t.seed, shuffle=True, drop_last=False)
        loader.set_epoch(0)
        with autocast(self.device, t.precision):
            embeddings = encode_means(self.model, loader, s.gmm_init_batches)
        log.info("initialising the mixture from %d embeddings", len(embeddings))
        self.model.init_mixture(embeddings, seed=t.seed)
        self.backend.broadcast_state(self.model, None)
        if self.world.is_root:
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
        """Train the remaining epochs.

        Returns
        -------
        TrainResult

        Raises
        ------
        TrainingInterrupted
            After a stop signal on any rank, once the checkpoint is saved.
        NonFiniteLossError, DataError
            A non-finite loss.
        """
        with stop_signals("the current step, then a checkpoint") as flag:
            while self.pos.epoch < self.n_epochs:
                started = time.perf_counter()
                self.loader.set_epoch(self.pos.epoch)
                batches = device_prefetch(self.loader.iter_from(self.pos.batch), self.device)
                bar = progress(batches, self.world.rank, total=self.steps_per_epoch, initial=self.pos.batch,
                               desc=f"epoch {self.pos.epoch + 1}/{self.n_epochs}", leave=False)
                for batch in bar:
                    self.train_step(batch)
                    self.pos.batch += 1
                    self.pos.step += 1
                    self.after_step()
                    if self.stop_agreed(flag):
                        self.flush_terms()
                        self.pos.sums = mean_over_ranks(self.world, self.pos.sums)  # every rank's share, once
                        self.save()
                        if self.world.is_root:  # before any rank leaves (a launcher may then kill the rest)
                            mark_stopped(self.ckpt_path, self.pos.step)
                        self.world.barrier()
                        log.warning("stopped by %s at step %d; resume with the same command",
                                    flag.signal_name or "a signal on another rank", self.pos.step)
                        raise TrainingInterrupted(self.ckpt_path, self.pos.step)
                self.flush_terms()
                self.end_epoch(time.perf_counter() - started)
        if not self.ckpt_path.exists() and self.world.is_root:
            self.save()
        self.world.barrier()
        return TrainResult(self.ckpt_path, self.out_dir, self.pos.epoch, self.pos.step, self.pos.history,
                           self.pos.stick_breaking_k)


def train(cfg: RunConfig, *, backend: Backend | None = None, resume: bool = True) -> TrainResult:
    """Train `cfg.model` on `cfg.train.store`; see the module docstring for files and signals.

    Parameters
    ----------
    cfg : RunConfig
        The run's config.
    backend : Backend, optional
        Default: `make_backend` of ``train.backend`` and ``train.device``.
    resume : bool
        Resume from ``out_dir/ckpt.pt`` when it exists.

    Returns
    -------
    TrainResult
    """
    configure_threads(cfg.train.threads, asked_by="train.threads")
    backend = backend or make_backend(cfg.train.backend, cfg.train.device)
    with output_lock(Path(cfg.train.out_dir) / CHECKPOINT_NAME, backend.world):
        return Trainer(cfg, backend, resume).run()


@contextlib.contextmanager
def output_lock(ckpt_path: Path, world: World) -> Iterator[None]:
    """Rank 0 holds ``<ckpt_path>.lock`` for the block; every rank fails if rank 0 cannot take it.

    Parameters
    ----------
    ckpt_path : Path
        The run's checkpoint.
    world : World
        The process group.

    Returns
    -------
    context manager

    Raises
    ------
    OutputInUseError
        Another live run holds the lock (on rank 0 naming it; on the other ranks naming rank 0).
    """
    lock, refused = OutputLock(ckpt_path), None
    if world.is_root:
        try:
            lock.acquire()
        except OutputInUseError as err:
            refused = err
    agreed = world.broadcast_object(refused is None)
    if refused is not None:
        raise refused
    if not agreed:
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

