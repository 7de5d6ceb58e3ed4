"""Read bounded random samples of catalogue and store HDF5 files (the report's only file input).

Catalogues are read with `galhpc.io.catalog` (shards directly, verified); stores with h5py.

Catalogues may hold 10^8 rows, so nothing here reads a whole per-object dataset except
narrow integer columns in fixed-size chunks (occupancy, object-id matching).  Sampled
row indices are sorted, as h5py's fancy indexing requires.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from galhpc.io.catalog import open_catalog
from galhpc.runtime.errors import CatalogError
from galhpc.runtime.files import open_h5_readonly

CHUNK_ROWS = 1 << 20
LABEL_DATASETS = ("component", "label")  # cluster label per object; `label` in older galhpc-encode outputs


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


def read_rows(dataset: h5py.Dataset, rows: np.ndarray, block: int = 4096) -> np.ndarray:
    """dataset[rows] for sorted unique `rows`, in blocks (h5py point selections grow slow).

    Parameters
    ----------
    dataset : h5py.Dataset
    rows : (N,) int
        Sorted, unique.
    block : int
        Rows per h5py selection.

    Returns
    -------
    numpy.ndarray
        (N, ...) of the dataset's dtype.
    """
    rows = np.asarray(rows, np.int64)
    if len(rows) == 0:
        return np.empty((0, *dataset.shape[1:]), dataset.dtype)
    if len(rows) == dataset.shape[0]:
        return dataset[...]
    return np.concatenate([dataset[rows[i : i + block]] for i in range(0, len(rows), block)])


def iter_column(dataset: h5py.Dataset, chunk: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    """A 1-D dataset streamed in chunks of `chunk` rows.

    Parameters
    ----------
    dataset : h5py.Dataset
    chunk : int

    Yields
    ------
    numpy.ndarray
        (<= chunk,) consecutive rows.
    """
    for start in range(0, dataset.shape[0], chunk):
        yield dataset[start : start + chunk]


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
        for name in ("object_id", "mu", label_name or LABEL_DATASETS[0]):
            if name not in cat:
                raise CatalogError(f"{path}: no dataset {name!r}; is this a galhpc-encode output?")
        n_total = len(cat)
        rows = sample_rows(n_total, max_rows, rng)

        def optional(name: str) -> np.ndarray | None:
            return cat.read(name, rows) if name in cat else None

        gamma = optional("gamma")
        component = cat.read(label_name, rows).astype(np.int64)
        n_components = gamma.shape[1] if gamma is not None else int(component.max(initial=-1)) + 1
        occupancy = np.zeros(n_components, np.int64)
        for _, chunk in cat.iter_blocks(label_name, CHUNK_ROWS):
            chunk = chunk.astype(np.int64)
            occupancy += np.bincount(chunk[chunk >= 0], minlength=n_components)[:n_components]
        return ClusterSample(
            rows=rows,
            object_id=cat.read("object_id", rows).astype(np.int64),
            mu=cat.read("mu", rows).astype(np.float32),
            component=component,
            n_total=n_total,
            n_components=n_components,
            occupancy=occupancy,
            logvar=None if (lv := optional("logvar")) is None else lv.astype(np.float32),
            gamma=None if gamma is None else gamma.astype(np.float32),
            recon_mse=optional("recon_mse"),
            meta={k: str(v) for k, v in cat.meta.items()},
        )


def store_size(path: str | Path) -> int:
    """Number of objects (rows of `images`) in a store.

    Parameters
    ----------
    path : str or Path
        An HDF5 store.

    Returns
    -------
    int
        Rows of its `images` dataset.
    """
    with open_h5_readonly(path) as f:
        return f["images"].shape[0]


def store_rows_for_ids(path: str | Path, object_ids: np.ndarray, guess_rows: np.ndarray | None = None) -> np.ndarray:
    """Rows of the store holding `object_ids` (-1 where absent).

    Catalogue row i is store row i when the catalogue was encoded from the store, so
    `guess_rows` is checked first; otherwise the store's `object_id` is scanned in chunks.

    Parameters
    ----------
    path : str or Path
    object_ids : (N,) int
    guess_rows : (N,) int, optional
        Store rows to try first (the catalogue's rows).

    Returns
    -------
    numpy.ndarray
        (N,) int64.
    """
    object_ids = np.asarray(object_ids, np.int64)
    with open_h5_readonly(path) as f:
        ids = f["object_id"]
        if (guess_rows is not None and len(guess_rows) and guess_rows.max() < ids.shape[0]
                and np.array_equal(read_rows(ids, guess_rows).astype(np.int64), object_ids)):
            return np.asarray(guess_rows, np.int64)
        order = np.argsort(object_ids)
        sorted_ids = object_ids[order]
        found = np.full(len(object_ids), -1, np.int64)
        start = 0
        for chunk in iter_column(ids):
            chunk = chunk.astype(np.int64)
            pos = np.searchsorted(sorted_ids, chunk)
            pos_ok = pos < len(sorted_ids)
            hit = np.zeros(len(chunk), bool)
            hit[pos_ok] = sorted_ids[pos[pos_ok]] == chunk[pos_ok]
            found[order[pos[hit]]] = start + np.flatnonzero(hit)
            start += len(chunk)
        return found


def read_unique_rows(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """dataset[rows] for unique `rows` in any order (read sorted, returned in the given order).

    Parameters
    ----------
    dataset : h5py.Dataset
    rows : (N,) int
        Unique.

    Returns
    -------
    numpy.ndarray
        (N, ...) in the order of `rows`.
    """
    rows = np.asarray(rows, np.int64)
    order = np.argsort(rows)
    out = read_rows(dataset, rows[order])
    return out[np.argsort(order)]


def read_store_images(path: str | Path, rows: np.ndarray) -> np.ndarray:
    """Images at unique store `rows`.

    Parameters
    ----------
    path : str or Path
    rows : (N,) int
        Unique, any order.

    Returns
    -------
    numpy.ndarray
        (N, C, H, W) float32 in the order of `rows`.
    """
    with open_h5_readonly(path) as f:
        return as_nchw(read_unique_rows(f["images"], rows))


def read_store_labels(path: str | Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Every 1-D `labels/<name>` column of the store at unique `rows`.

    Parameters
    ----------
    path : str or Path
    rows : (N,) int
        Unique store rows; -1 gives NaN (float columns) or -1 (integer columns).

    Returns
    -------
    dict of str to numpy.ndarray
        Name -> (N,) values; bool columns as int8.
    """
    rows = np.asarray(rows, np.int64)
    present = rows >= 0
    labels = {}
    with open_h5_readonly(path) as f:
        if "labels" not in f:
            return labels
        for name, ds in f["labels"].items():
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.dtype.kind not in "biuf":
                continue
            values = read_unique_rows(ds, rows[present])
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
        if "images" not in cat:
            raise CatalogError(f"{path}: no dataset 'images'; is this a galhpc-generate output?")
        rows = sample_rows(len(cat), max_rows, rng)
        component = cat.read("component", rows).astype(np.int64) if "component" in cat else np.full(len(rows), -1)
        return SynthSample(as_nchw(cat.read("images", rows)), component, len(cat))
