"""Read bounded random samples of catalogue and store HDF5 files (the report's only file input).

Catalogues are read with `galhpc.io.catalog` (shards directly, verified); stores with
`galhpc.io.store` (rows in any order, each read once).

Catalogues may hold 10^8 rows, so nothing here reads a whole per-object dataset except
narrow integer columns in fixed-size chunks (occupancy, object-id matching).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from galhpc.formats import catalog as C
from galhpc.formats import store as S
from galhpc.io.catalog import open_catalog
from galhpc.io.store import open_store
from galhpc.runtime.errors import CatalogError

CHUNK_ROWS = 1 << 20
LABEL_DATASETS = (C.COMPONENT, "label")  # cluster label per object; `label` in older galhpc-encode outputs


def sample_rows(n_total: int, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices: all rows if there are at most `max_rows`, else a uniform sample.

    Parameters
    ----------
    n_total : int
    max_rows : int
    rng : numpy.random.Generator
        Draws the sample (not used when every row is taken).

    Returns
    -------
    numpy.ndarray
        (min(n_total, max_rows),) int64, increasing.
    """
    if n_total <= max_rows:
        return np.arange(n_total)
    return np.sort(rng.choice(n_total, size=max_rows, replace=False))


def as_nchw(images: np.ndarray) -> np.ndarray:
    """Images as (N, C, H, W) float32: (N, H, W) gets a channel axis, (N, C, H, W) is kept.

    Parameters
    ----------
    images : (N, H, W) or (N, C, H, W) array

    Returns
    -------
    numpy.ndarray
    """
    images = np.asarray(images, np.float32)
    return images[:, None] if images.ndim == 3 else images


@dataclass
class ClusterSample:
    """A random sample of rows of a clusters.h5 catalogue, plus exact whole-file occupancy."""

    rows: np.ndarray
    object_id: np.ndarray
    mu: np.ndarray
    component: np.ndarray
    n_total: int
    n_components: int
    occupancy: np.ndarray
    logvar: np.ndarray | None = None
    gamma: np.ndarray | None = None
    recon_mse: np.ndarray | None = None
    meta: dict[str, str] = field(default_factory=dict)


def read_clusters(path: str | Path, max_rows: int, rng: np.random.Generator) -> ClusterSample:
    """Sample `max_rows` rows of clusters.h5; occupancy is counted over every row in chunks.

    Read through `galhpc.io.catalog` (shard files directly, every shard verified first), so
    a catalogue with a missing shard is refused rather than read as rows of fill values.
    The cluster label is the `component` dataset (argmax γ), or `label` as older galhpc-encode
    versions named it.

    Parameters
    ----------
    path : str or Path
        An encode catalogue.
    max_rows : int
    rng : numpy.random.Generator
        Draws the sample (`sample_rows`).

    Returns
    -------
    ClusterSample

    Raises
    ------
    CatalogError
        If the catalogue lacks `object_id`, `mu` or a cluster label.
    """
    with open_catalog(path) as cat:
        label_name = next((n for n in LABEL_DATASETS if n in cat), None)
        for name in (C.OBJECT_ID, C.MU, label_name or LABEL_DATASETS[0]):
            if name not in cat:
                raise CatalogError(f"{path}: no dataset {name!r}; is this a galhpc-encode output?")
        n_total = len(cat)
        rows = sample_rows(n_total, max_rows, rng)

        def optional(name: str) -> np.ndarray | None:
            return cat.read(name, rows) if name in cat else None

        gamma = optional(C.GAMMA)
        component = cat.read(label_name, rows).astype(np.int64)
        n_components = gamma.shape[1] if gamma is not None else int(component.max(initial=-1)) + 1
        occupancy = np.zeros(n_components, np.int64)
        for _, chunk in cat.iter_blocks(label_name, CHUNK_ROWS):
            chunk = chunk.astype(np.int64)
            occupancy += np.bincount(chunk[chunk >= 0], minlength=n_components)[:n_components]
        return ClusterSample(
            rows=rows,
            object_id=cat.read(C.OBJECT_ID, rows).astype(np.int64),
            mu=cat.read(C.MU, rows).astype(np.float32),
            component=component,
            n_total=n_total,
            n_components=n_components,
            occupancy=occupancy,
            logvar=None if (lv := optional(C.LOGVAR)) is None else lv.astype(np.float32),
            gamma=None if gamma is None else gamma.astype(np.float32),
            recon_mse=optional(C.RECON_MSE),
            meta={k: str(v) for k, v in cat.meta.items()},
        )


def store_size(path: str | Path) -> int:
    """Number of objects N of a training store.

    Parameters
    ----------
    path : str or Path
        A store written by galhpc-prep.

    Returns
    -------
    int
        Rows of its `images` (and of every per-object column).
    """
    with open_store(path) as store:
        return len(store)


def store_rows_for_ids(path: str | Path, object_ids: np.ndarray, guess_rows: np.ndarray | None = None) -> np.ndarray:
    """Rows of the store holding `object_ids` (-1 where absent).

    Catalogue row i is store row i when the catalogue was encoded from the store, so
    `guess_rows` is checked first; otherwise the store's `object_id` is scanned in chunks.

    Parameters
    ----------
    path : str or Path
        The store.
    object_ids : numpy.ndarray
        Shape (n,) int64.
    guess_rows : numpy.ndarray, optional
        Shape (n,) int: the rows they are probably at.

    Returns
    -------
    numpy.ndarray
        Shape (n,) int64.
    """
    object_ids = np.asarray(object_ids, np.int64)
    with open_store(path) as store:
        if (guess_rows is not None and len(guess_rows) and guess_rows.max() < len(store)
                and np.array_equal(store.read(S.OBJECT_ID, guess_rows).astype(np.int64), object_ids)):
            return np.asarray(guess_rows, np.int64)
        order = np.argsort(object_ids)
        sorted_ids = object_ids[order]
        found = np.full(len(object_ids), -1, np.int64)
        for start, chunk in store.iter_column(S.OBJECT_ID, CHUNK_ROWS):
            chunk = chunk.astype(np.int64)
            pos = np.searchsorted(sorted_ids, chunk)
            pos_ok = pos < len(sorted_ids)
            hit = np.zeros(len(chunk), bool)
            hit[pos_ok] = sorted_ids[pos[pos_ok]] == chunk[pos_ok]
            found[order[pos[hit]]] = start + np.flatnonzero(hit)
        return found


def read_store_images(path: str | Path, rows: np.ndarray) -> np.ndarray:
    """Images of the store at `rows`.

    Parameters
    ----------
    path : str or Path
        The store.
    rows : numpy.ndarray
        Shape (n,) int, any order.

    Returns
    -------
    numpy.ndarray
        Shape (n, C, H, W) float32.
    """
    with open_store(path) as store:
        return as_nchw(store.read(S.IMAGES, rows))


def read_store_labels(path: str | Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Every 1-D numeric label column of the store at `rows` (rows of -1 give NaN / -1).

    Parameters
    ----------
    path : str or Path
        The store.
    rows : numpy.ndarray
        Shape (n,) int, any order; -1 for an object the store lacks.

    Returns
    -------
    dict of str to numpy.ndarray
        Shape (n,) each (booleans as int8).
    """
    rows = np.asarray(rows, np.int64)
    present = rows >= 0
    labels = {}
    with open_store(path) as store:
        for name, values in store.read_columns(store.info.label_names, rows[present]).items():
            if values.ndim != 1 or values.dtype.kind not in "biuf":
                continue
            if values.dtype.kind == "b":
                values = values.astype(np.int8)
            fill = np.full(len(rows), np.nan if values.dtype.kind == "f" else -1, values.dtype)
            fill[present] = values
            labels[name] = fill
    return labels


@dataclass
class SynthSample:
    """A random sample of a synth.h5 catalogue: images (n, C, H, W) and their components."""

    images: np.ndarray
    component: np.ndarray
    n_total: int


def read_synth(path: str | Path, max_rows: int, rng: np.random.Generator) -> SynthSample:
    """Sample `max_rows` images of synth.h5 (through `galhpc.io.catalog`, shards verified).

    Parameters
    ----------
    path : str or Path
        A generate catalogue.
    max_rows : int
        Images read at most.
    rng : numpy.random.Generator
        Chooses the rows.

    Returns
    -------
    SynthSample
        Component -1 where the catalogue has none.

    Raises
    ------
    CatalogError
        If the catalogue has no images.
    """
    with open_catalog(path) as cat:
        if C.IMAGES not in cat:
            raise CatalogError(f"{path}: no dataset {C.IMAGES!r}; is this a galhpc-generate output?")
        rows = sample_rows(len(cat), max_rows, rng)
        component = cat.read(C.COMPONENT, rows).astype(np.int64) if C.COMPONENT in cat else np.full(len(rows), -1)
        return SynthSample(as_nchw(cat.read(C.IMAGES, rows)), component, len(cat))
