"""Held-out objects read straight from a store and encoded by the model.

The input of the report's held-out sections and of `evaluate_checkpoint` (no catalogue needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from galhpc.formats import store as store_format
from galhpc.io.store import open_store
from galhpc.models.base import GalaxyModel
from galhpc.report import model_calls, sampling
from galhpc.runtime.batching import run_batched
from galhpc.runtime.errors import DataError

DEFAULT_CLUSTERS = 10  # K of a model without a mixture when neither the caller nor a catalogue gives one


@dataclass
class EncodedObjects:
    """Store objects as the model sees and encodes them (row-aligned)."""

    rows: np.ndarray  # (N,) store rows
    object_id: np.ndarray  # (N,) int64
    images: np.ndarray  # (N, C, H, W) float32
    mu: np.ndarray  # (N, L) float32
    recons: np.ndarray  # (N, C, H, W): model.reconstruct
    labels: dict[str, np.ndarray]  # name -> (N,)
    components: np.ndarray  # (N,) int64
    n_clusters: int
    cluster_source: str
    store: str  # the store they were read from


def store_columns(store: str | Path, names: tuple[str, ...], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The store columns a model's `reconstruct` needs (e.g. per-object `psf`) at unique store `rows`.

    Each row-aligned: a per-object dataset (root or labels/) read at the rows, a shared one
    (e.g. one PSF (h, w)) repeated per row.

    Parameters
    ----------
    store : str or Path
    names : tuple of str
        The model's `reconstruct_columns`.
    rows : (N,) int
        Unique store rows, in any order.

    Returns
    -------
    dict of str to numpy.ndarray
        Name -> (N, ...) values.

    Raises
    ------
    DataError
        If the store has no such column.
    """
    with open_store(store) as reader:
        for name in names:
            if name not in reader:
                raise DataError(f"{store}: the model needs the store column {name!r} to reconstruct its inputs, "
                                "but the store has none")
        return reader.read_columns(names, rows)


def model_clusters(model: GalaxyModel, mu: np.ndarray, n_clusters: int | None, seed: int,
                   batch_size: int = 4096) -> tuple[np.ndarray, int, str]:
    """The model's clusters of latents `mu`.

    Argmax of its own mixture's γ for a mixture model (K = its number of components), else
    sklearn's GaussianMixture with `n_clusters` (default `DEFAULT_CLUSTERS`) fitted on `mu`
    with `seed`, as galhpc-encode fits one post hoc.

    Parameters
    ----------
    model : GalaxyModel
    mu : (N, L) float
    n_clusters : int or None
        K of a model without a mixture.
    seed : int
    batch_size : int

    Returns
    -------
    components : numpy.ndarray
        (N,) int64.
    k : int
    source : str
        How they were found, in words.
    """
    import torch

    if model.has_mixture:
        gamma = torch.cat(run_batched(model, lambda z, _: model.cluster_probs(z).cpu(), mu, batch_size=batch_size,
                                      dtype=torch.float32))
        return gamma.argmax(1).numpy().astype(np.int64), int(gamma.shape[1]), "argmax of the model's mixture γ"
    from galhpc.report.truth import pca_gmm_clusters  # the same GaussianMixture as the baseline's

    k = int(n_clusters or DEFAULT_CLUSTERS)
    return pca_gmm_clusters(mu, k, seed), k, f"GaussianMixture(K={k}) fitted on the held-out μ (no mixture prior)"


def encode_rows(model: GalaxyModel, store: str | Path, rows: np.ndarray, n_clusters: int | None = None,
                seed: int = 0, batch_size: int = 256, components: np.ndarray | None = None) -> EncodedObjects:
    """Read store `rows` (unique), encode, reconstruct and cluster them with `model`.

    Parameters
    ----------
    model : GalaxyModel
    store : path
        HDF5 store with `images`, `object_id` and optional `labels/<name>`.
    rows : (N,) int
        Unique store rows, in any order (the outputs keep it).
    n_clusters : int, optional
        K for a model without a mixture (see `model_clusters`); with `components`, their K.
    seed : int
    batch_size : int
    components : (N,) int, optional
        The objects' clusters where already known (a catalogue's `component`), else
        `model_clusters` finds them.

    Returns
    -------
    EncodedObjects
    """
    rows = np.asarray(rows, np.int64)
    images = sampling.read_store_images(store, rows)
    with open_store(store) as reader:
        object_id = reader.read(store_format.OBJECT_ID, rows).astype(np.int64)
    columns = store_columns(store, model.reconstruct_columns, rows) if model.reconstruct_columns else None
    mu, _ = model_calls.encode(model, images, batch_size)
    recons = model_calls.reconstruct(model, images, batch_size, columns)
    if components is None:
        components, k, source = model_clusters(model, mu, n_clusters, seed)
    else:
        components, k, source = np.asarray(components, np.int64), int(n_clusters or 0), "clusters.h5 component"
    return EncodedObjects(rows, object_id, images, mu, recons, sampling.read_store_labels(store, rows),
                          components, k, source, str(store))


SIMULATED_SOURCES = ("galsim", "galsim_stars")  # prep source kinds whose label columns are truth


def _recorded_sources(store: str | Path) -> list[dict]:
    """The source entries of the store's recorded prep config; [] when none is readable.

    The recorded text, not a config with defaults filled in: a default source is no record.
    """
    with open_store(store) as reader:
        sources = reader.info.prep_record.get("sources") or []
    return [source for source in sources if isinstance(source, dict)]


def observed_sources(store: str | Path) -> tuple[bool, str]:
    """Whether the store's recorded prep config has a source of observed stamps.

    Observed stamps (fits, survey_image, real, ...) carry catalogue measurements (positions,
    fluxes, radii), which are no truth to recover; simulated ones (`SIMULATED_SOURCES`) carry
    truth.  A store that records no sources is not called observed.

    Parameters
    ----------
    store : str or Path

    Returns
    -------
    observed : bool
    kinds : str
        The source kinds as text ("not recorded" when none).
    """
    kinds = [str(source.get("kind")) for source in _recorded_sources(store)]
    return any(k not in SIMULATED_SOURCES for k in kinds), ", ".join(kinds) or "not recorded"


def catalogue_columns(store: str | Path) -> set[str]:
    """Label columns the store's sources copied from a catalogue (their `passthrough`).

    Measurements and bookkeeping (positions, radii, a held-out flag), never truth.

    Parameters
    ----------
    store : str or Path

    Returns
    -------
    set of str
    """
    return {str(name) for source in _recorded_sources(store) for name in (source.get("passthrough") or [])}


def noise_sigma(store: str | Path, rows: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, str]:
    """Per-pixel noise σ of the stamps at store `rows`, in the units of the stored images.

    The first found of

    1. a store column `noise_sigma` (`labels/noise_sigma`, or a root dataset, per object or shared);
    2. a store attribute `noise_sigma`;
    3. `labels/border_noise`, when the store's recipe has no intensity step (`arcsinh`,
       `minmax`): prep measures it before those steps, so only then is it in stored units;
    4. the border noise measured on the stored stamps themselves
       (`galhpc.data.preprocess.border_noise`: least-σ border patch).

    Parameters
    ----------
    store : str or Path
    rows : (N,) int
        Unique store rows.
    images : (N, C, H, W) float
        The stamps at those rows (for 4.).

    Returns
    -------
    sigma : numpy.ndarray
        (N,) float64.
    source : str
        Where it came from, in words.
    """
    from galhpc.data.preprocess import border_noise

    rows = np.asarray(rows, np.int64)
    with open_store(store) as reader:
        found = reader.locate("noise_sigma")
        if found is not None:
            values = reader.read_columns(["noise_sigma"], rows)["noise_sigma"]
            return np.asarray(values, np.float64).reshape(len(rows)), f"store column {found[0]}"
        attrs = reader.attrs
        if "noise_sigma" in attrs:
            return np.full(len(rows), float(attrs["noise_sigma"])), "store attribute noise_sigma"
        recipe = reader.info.prep_record.get("recipe")
        if "border_noise" in reader.info.label_names and recipe is not None and not {"arcsinh", "minmax"} & set(recipe):
            values = reader.read("border_noise", rows)
            return np.asarray(values, np.float64), "labels/border_noise (the store's recipe has no intensity step)"
    measured = np.array([border_noise(img) for img in np.asarray(images)], np.float64)
    return measured, "border noise measured on the stored stamps"


def pixel_noise(store: str | Path, rows: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray | None, np.ndarray]:
    """The store's per-pixel σ map and valid-pixel map of the stamps at `rows`, where it has them.

    What the survey presets' likelihood counts (`galhpc.models.pixels`): prep's per-pixel
    `sigma` (from the source's ERR/VAR/WHT maps) and `mask` (non-zero = a bad, saturated or
    neighbour pixel, left out).

    Parameters
    ----------
    store : str or Path
    rows : (N,) int
        Unique store rows.
    shape : tuple of int
        The stamps' shape, (N, H, W) or (N, C, H, W), which the maps are given.

    Returns
    -------
    sigma : numpy.ndarray or None
        `shape` float64 σ in stored units, or None when the store has no `sigma` dataset.
    valid : numpy.ndarray
        `shape` bool, True where a pixel counts (all True without a `mask`).
    """
    rows = np.asarray(rows, np.int64)
    with open_store(store) as reader:
        names = [name for name in ("sigma", "mask") if reader.locate(name) is not None]
        maps = reader.read_columns(names, rows) if names else {}

    def fit(a: np.ndarray) -> np.ndarray:  # a map per stamp, or per band of each stamp -> the stamps' shape
        a = np.asarray(a)
        return a.reshape(shape) if a.size == int(np.prod(shape)) else np.broadcast_to(a[:, None], shape)

    sigma = fit(maps["sigma"]).astype(np.float64) if "sigma" in maps else None
    valid = ~(fit(maps["mask"]) > 0) if "mask" in maps else np.ones(shape, bool)
    return sigma, valid


def evaluate_checkpoint(checkpoint: str | Path, store: str | Path, n: int = 1000, seed: int = 0,
                        n_clusters: int | None = None, batch_size: int = 256) -> dict[str, Any]:
    """Truth recovery of a checkpoint on `n` random objects of a held-out store.

    Against PCA (same latent size) and PCA+GMM (same K): `truth.truth_recovery` plus its
    inputs.  Every object of `store` counts as held out: give a store the model never trained on.

    Parameters
    ----------
    checkpoint : path
        ckpt.pt written by galhpc-train.
    store : path
        Held-out store with `labels/<name>` truth columns.
    n : int
        Objects drawn uniformly without replacement (all if the store has fewer).
    seed : int
        Seed of the draw, folds, PCA and GaussianMixture.
    n_clusters : int, optional
        K for a model without a mixture prior (default `DEFAULT_CLUSTERS`).
    batch_size : int

    Returns
    -------
    dict
        `truth_recovery`'s dict plus "checkpoint", "store", "model_name", "cluster_source".
    """
    from galhpc.checkpoint import load_model
    from galhpc.report import truth

    model = load_model(checkpoint)
    model.eval()
    rng = np.random.default_rng(seed)
    rows = sampling.sample_rows(sampling.store_size(store), n, rng)
    enc = encode_rows(model, store, rows, n_clusters, seed, batch_size)
    result = truth.truth_recovery(enc.mu, enc.components, enc.images.reshape(len(rows), -1), enc.labels,
                                  n_clusters=enc.n_clusters, seed=seed, recons=enc.recons.reshape(len(rows), -1))
    return {"checkpoint": str(checkpoint), "store": str(store), "model_name": model.name,
            "cluster_source": enc.cluster_source} | result
