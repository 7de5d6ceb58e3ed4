"""The report's inputs, loaded once and frozen: one small object per file it reads.

`ReportInputs.load` composes them: the checkpoint (`CheckpointInputs`: model, config,
loss history), a random sample of the catalogue (`galhpc.report.sampling.ClusterSample`),
the store it was encoded from (`StoreInputs`, optional), the held-out objects
(`HeldOutInputs`: from a separate held-out store, else the trainer's holdout split of the
store) and a sample of a generated catalogue (`galhpc.report.sampling.SynthSample`,
optional).  Sections read these objects and declare which of them they need
(`galhpc.report.sections.base.Requirement`); none of them changes after loading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from galhpc.config import TrainConfig
from galhpc.data.loader import holdout_mask
from galhpc.io.store import open_store
from galhpc.models.base import GalaxyModel
from galhpc.report import heldout, model_calls, sampling
from galhpc.report.heldout import EncodedObjects
from galhpc.report.options import ReportOptions
from galhpc.report.sampling import ClusterSample, SynthSample
from galhpc.runtime.errors import DataError


@dataclass(frozen=True, eq=False)
class CheckpointInputs:
    """The model of a checkpoint, its run config and its training loss history."""

    model: GalaxyModel
    path: str = ""
    config: Any = None  # galhpc.config.Config of the run, None for a model given directly
    losses: tuple[dict[str, Any], ...] | None = None  # rows of losses.csv (else the checkpoint's history)

    @classmethod
    def load(cls, checkpoint: str | Path) -> CheckpointInputs:
        """Load the model and read its loss history (`galhpc.report.losses.read_loss_history`).

        Parameters
        ----------
        checkpoint : str or Path
            A checkpoint written by galhpc-train (losses.csv beside it).

        Returns
        -------
        CheckpointInputs
        """
        from galhpc.checkpoint import checkpoint_config, load_model, read_checkpoint
        from galhpc.report.losses import read_loss_history

        payload = read_checkpoint(checkpoint)
        cfg = checkpoint_config(payload, checkpoint)
        model = load_model(checkpoint, payload=payload)
        rows = read_loss_history(checkpoint, payload)
        return cls(model=model, path=str(checkpoint), config=cfg, losses=tuple(rows) if rows else None)


@dataclass(frozen=True, eq=False)
class StoreInputs:
    """The store a catalogue was encoded from (--store), located for the catalogue sample."""

    path: str
    member_rows: np.ndarray  # (N,) store row of each catalogue-sample row, -1 where absent
    labels: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) per catalogue-sample row
    reconstruct_columns: tuple[str, ...] = ()  # store columns the model's `reconstruct` needs (per-object PSFs)

    @classmethod
    def load(cls, path: str | Path, clusters: ClusterSample, model: GalaxyModel) -> StoreInputs:
        """Find the catalogue sample's objects in the store and read their labels.

        Parameters
        ----------
        path : str or Path
            HDF5 store.
        clusters : ClusterSample
            The catalogue sample; its object ids are looked up (its rows as the first guess).
        model : GalaxyModel
            Its `reconstruct_columns` are read with the images (`columns`).

        Returns
        -------
        StoreInputs
        """
        rows = sampling.store_rows_for_ids(path, clusters.object_id, guess_rows=clusters.rows)
        return cls(path=str(path), member_rows=rows, labels=sampling.read_store_labels(path, rows),
                   reconstruct_columns=tuple(model.reconstruct_columns or ()))

    @property
    def present(self) -> np.ndarray:
        """(N,) bool: which catalogue-sample rows are in the store."""
        return self.member_rows >= 0

    def images(self, rows: np.ndarray) -> np.ndarray:
        """Images of store `rows`.

        Parameters
        ----------
        rows : (M,) int
            Store rows, unique, in any order.

        Returns
        -------
        numpy.ndarray
            (M, C, H, W) float32, in the order of `rows`.
        """
        return sampling.read_store_images(self.path, rows)

    def columns(self, rows: np.ndarray) -> dict[str, np.ndarray] | None:
        """The columns the model's `reconstruct` needs at store `rows`, or None when it needs none.

        Parameters
        ----------
        rows : (M,) int
            Store rows, unique.

        Returns
        -------
        dict of str to numpy.ndarray, or None
            Each column row-aligned with `rows` (`galhpc.report.heldout.store_columns`).
        """
        if not self.reconstruct_columns:
            return None
        return heldout.store_columns(self.path, self.reconstruct_columns, rows)


@dataclass(frozen=True, eq=False)
class HeldOutInputs:
    """Held-out objects read, encoded and clustered, and the condition they are grouped by."""

    objects: EncodedObjects
    groups: np.ndarray  # (N,) class label, float condition value (binned later) or cluster component
    group_name: str = "component"

    @classmethod
    def of(cls, model: GalaxyModel, objects: EncodedObjects) -> HeldOutInputs:
        """Group held-out objects by the model's sampling condition when their labels carry it.

        Parameters
        ----------
        model : GalaxyModel
        objects : EncodedObjects

        Returns
        -------
        HeldOutInputs
            Grouped by the class (or float) condition column of a conditional generator when
            the store has it, else by cluster component.
        """
        condition = model_calls.class_condition(model)
        column = condition[0] if condition is not None else model_calls.float_condition(model)
        if column is not None and column in objects.labels:
            return cls(objects, objects.labels[column], column)
        return cls(objects, objects.components, "component")

    @property
    def images(self) -> np.ndarray:
        """(N, C, H, W) float32 held-out stamps."""
        return self.objects.images

    @property
    def object_id(self) -> np.ndarray:
        """(N,) int64 object ids."""
        return self.objects.object_id

    @property
    def recons(self) -> np.ndarray:
        """(N, C, H, W) `model.reconstruct` of `images`, in their space."""
        return self.objects.recons

    @cached_property
    def pixel_noise(self) -> tuple[np.ndarray | None, np.ndarray]:
        """The store's per-pixel σ map (or None) and valid-pixel map of `images`, read once for every section.

        See `galhpc.report.heldout.pixel_noise`.
        """
        return heldout.pixel_noise(self.objects.store, self.objects.rows, self.images.shape)


@dataclass(frozen=True, eq=False)
class ReportInputs:
    """Everything the sections read, loaded once (`load`) and never changed."""

    checkpoint: CheckpointInputs
    clusters: ClusterSample
    store: StoreInputs | None = None
    holdout: HeldOutInputs | None = None
    synth: SynthSample | None = None
    paths: Mapping[str, str | None] = field(default_factory=dict)  # the files as given, by role
    held_out_source: str | None = None  # where the held-out objects came from, in words

    @property
    def model(self) -> GalaxyModel:
        """The checkpoint's model."""
        return self.checkpoint.model

    @property
    def labels(self) -> Mapping[str, np.ndarray]:
        """Store labels per catalogue-sample row (empty without a store)."""
        return self.store.labels if self.store is not None else {}

    @classmethod
    def load(cls, checkpoint: str | Path, clusters: str | Path, store: str | Path | None, synth: str | Path | None,
             opt: ReportOptions, rng: np.random.Generator, holdout_store: str | Path | None = None) -> ReportInputs:
        """Check the inputs, then read the model and bounded samples of every file.

        Held-out objects come from `holdout_store` when given (a separate store: every object
        counts as held out, read and encoded directly, no catalogue needed), else from `store`
        (the trainer's holdout split of the sampled catalogue rows).

        Parameters
        ----------
        checkpoint : str or Path
        clusters : str or Path
            Encode catalogue of the checkpoint.
        store, synth, holdout_store : str or Path, optional
            Training store, generate catalogue and separate held-out store (HDF5).
        opt : ReportOptions
            Sample sizes (max_objects, n_holdout, n_morph, n_show), seed, batch size.
        rng : numpy.random.Generator
            Draws the samples, in this order: catalogue rows, held-out rows, synth rows.

        Returns
        -------
        ReportInputs

        Raises
        ------
        DataError
            An input of the wrong galhpc kind, a catalogue of another checkpoint, or a
            held-out store that is the training store.
        """
        check_inputs(checkpoint, clusters, store, synth, holdout_store)
        ckpt = CheckpointInputs.load(checkpoint)
        model, cfg = ckpt.model, ckpt.config
        cs = sampling.read_clusters(clusters, opt.max_objects, rng)
        store_inputs = StoreInputs.load(store, cs, model) if store is not None else None
        objects, source = None, None
        if holdout_store is not None:
            check_separate(holdout_store, cfg.train.store)
            rows = sampling.sample_rows(sampling.store_size(holdout_store), opt.n_holdout, rng)
            if len(rows):
                objects = heldout.encode_rows(model, holdout_store, rows, cs.n_components, opt.seed, opt.batch_size)
            source = f"separate held-out store {holdout_store}: all its objects count as held out"
        elif store_inputs is not None:
            member_rows = store_inputs.member_rows
            candidates, source = held_out(member_rows, np.flatnonzero(member_rows >= 0), store, cfg.train)
            chosen = np.sort(rng.choice(candidates, size=min(opt.n_holdout, len(candidates)), replace=False))
            if len(chosen):
                # clustered as the catalogue says (galhpc-encode's post-hoc GMM for models without a mixture)
                objects = heldout.encode_rows(model, store, member_rows[chosen], cs.n_components, opt.seed,
                                              opt.batch_size, components=cs.component[chosen])
        synth_sample = sampling.read_synth(synth, max(opt.n_morph, opt.n_show * 64), rng) if synth is not None else None
        paths = {"checkpoint": str(checkpoint), "clusters": str(clusters), "store": _text(store),
                 "holdout_store": _text(holdout_store), "synth": _text(synth)}
        return cls(checkpoint=ckpt, clusters=cs, store=store_inputs,
                   holdout=HeldOutInputs.of(model, objects) if objects is not None else None,
                   synth=synth_sample, paths=paths, held_out_source=source)

    def describe(self, opt: ReportOptions) -> dict[str, Any]:
        """The "inputs" entry of metrics.json: files, model, sample sizes and sources.

        Parameters
        ----------
        opt : ReportOptions

        Returns
        -------
        dict
            JSON-ready, in the order index.html shows it.
        """
        cfg = self.checkpoint.config
        info: dict[str, Any] = dict(self.paths) | {
            "model": self.model.name, "latent_dim": cfg.model.latent_dim if cfg is not None else None,
            "catalogue_objects": self.clusters.n_total, "sampled_objects": len(self.clusters.rows), "seed": opt.seed,
        }
        if self.store is not None:
            info["sampled_objects_in_store"] = int(self.store.present.sum())
        if self.held_out_source is not None:
            info["held_out_source"] = self.held_out_source
        info["held_out_images"] = 0 if self.holdout is None else len(self.holdout.objects.rows)
        if self.synth is not None:
            info["synth_objects"] = self.synth.n_total
        return info


def _text(path: str | Path | None) -> str | None:
    return str(path) if path else None


def check_inputs(checkpoint: str | Path, clusters: str | Path, store: str | Path | None, synth: str | Path | None,
                 holdout_store: str | Path | None) -> None:
    """Refuse, before any work, an input of the wrong galhpc kind or a catalogue of another checkpoint.

    Parameters
    ----------
    checkpoint : str or Path
    clusters : str or Path
        Must be an encode catalogue made with `checkpoint`.
    store, synth, holdout_store : str or Path, optional
        Stores (`store`, `holdout_store`) and a generate catalogue made with `checkpoint` (`synth`).

    Raises
    ------
    galhpc.runtime.errors.GalhpcError
        From `galhpc.formats.kinds.check_kind` (wrong kind) or
        `galhpc.checkpoint.check_catalogue_checkpoint` (another checkpoint).
    """
    from galhpc.checkpoint import check_catalogue_checkpoint
    from galhpc.formats.kinds import ENCODE_CATALOGUE, GENERATE_CATALOGUE, STORE, check_kind
    from galhpc.io.catalog import open_catalog

    for path, kind, role in ((store, STORE, "galhpc-report --store"),
                             (holdout_store, STORE, "galhpc-report --holdout-store"),
                             (synth, GENERATE_CATALOGUE, "galhpc-report --synth")):
        if path is not None:
            check_kind(path, kind, role)
    for path, kind, role in ((clusters, ENCODE_CATALOGUE, "galhpc-report --clusters"),
                             (synth, GENERATE_CATALOGUE, "galhpc-report --synth")):
        if path is not None:
            with open_catalog(path, kinds=(kind,), role=role) as cat:
                check_catalogue_checkpoint(checkpoint, cat.meta, path)


LEAK_CHECK_STAMPS = 256  # shared object ids whose pixels are compared (a leak shows in the first few)


def check_separate(holdout_store: str | Path, training_store: str | None) -> None:
    """Refuse a `--holdout-store` the checkpoint trained on: the same file, or the same stamps.

    Stamps count as the same when an object id of the held-out store is also in the
    training store with identical pixels (two stores of different simulations may reuse ids;
    a store prepped from the same catalogue as the training one repeats the pixels too).

    Parameters
    ----------
    holdout_store : str or Path
    training_store : str or None
        ``train.store`` of the checkpoint's config (not checked when it is not a file here).

    Raises
    ------
    DataError
        If both paths name one existing file, or the held-out store repeats training stamps.
    """
    if not (training_store and Path(training_store).is_file() and Path(holdout_store).is_file()):
        return
    if Path(holdout_store).samefile(training_store):
        raise DataError(f"{holdout_store}: --holdout-store is the checkpoint's training store (train.store); "
                        "give it as --store to use the trainer's holdout split")
    with open_store(holdout_store) as held, open_store(training_store) as train:
        held_ids = np.asarray(held.read_columns(["object_id"])["object_id"])
        train_ids = np.asarray(train.read_columns(["object_id"])["object_id"])
        shared, held_rows, train_rows = np.intersect1d(held_ids, train_ids, return_indices=True)
        if not len(shared):
            return
        pick = slice(0, LEAK_CHECK_STAMPS)
        a = held.read_columns(["images"], held_rows[pick])["images"]
        b = train.read_columns(["images"], train_rows[pick])["images"]
    if a.shape != b.shape:
        return
    same = (a == b).reshape(len(a), -1).all(axis=1)
    if same.any():
        checked = min(len(shared), LEAK_CHECK_STAMPS)
        raise DataError(f"{holdout_store}: --holdout-store repeats stamps of the checkpoint's training store "
                        f"{training_store}: object_id {', '.join(map(str, shared[pick][same][:5]))} "
                        f"({int(same.sum())} of {checked} shared ids checked have identical pixels); "
                        "the model trained on them, so they cannot score it as held out")


def held_out(member_rows: np.ndarray, in_store: np.ndarray, store: str | Path, train: TrainConfig
             ) -> tuple[np.ndarray, str]:
    """Sampled catalogue rows whose store row the trainer held out.

    Parameters
    ----------
    member_rows : (N,) int
        Store row of each catalogue-sample row (-1 where absent).
    in_store : (M,) int
        Indices of the catalogue-sample rows found in the store.
    store : str or Path
    train : TrainConfig
        The checkpoint's training config: its holdout fraction and seed give the split.

    Returns
    -------
    candidates : numpy.ndarray
        Indices into the catalogue sample: those held out, or every one in the store when
        the trainer held none out.
    source : str
        Which of the two, in words.
    """
    if train.holdout_fraction > 0:
        mask = holdout_mask(sampling.store_size(store), train.holdout_fraction, train.seed)
        held = in_store[mask[member_rows[in_store]]]
        if len(held):
            return held, f"trainer holdout split (fraction {train.holdout_fraction}, seed {train.seed})"
    return in_store, "random catalogue objects in the store (the trainer held none out)"
