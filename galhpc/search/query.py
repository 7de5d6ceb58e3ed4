"""Query vectors for the search: catalogue objects by id, or images encoded with the
catalogue's own checkpoint (so they land in the same latent space)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from galhpc.search.source import CatalogColumns, SearchInputError

log = logging.getLogger("galhpc.search.query")


@dataclass
class Queries:
    """What is searched for.

    Attributes
    ----------
    vectors : np.ndarray, float32, (Q, L)
        Latent vectors (the catalogue's `mu` space).
    object_id : np.ndarray, int64, (Q,)
        Catalogue object id of each query, -1 for an image query.
    row : np.ndarray, int64, (Q,)
        Catalogue row of each query (excluded from its own results), -1 for an image query.
    labels : list[str]
        A short name per query (for the table and the mosaic).
    images : np.ndarray or None, float32, (Q, C, H, W)
        The query stamps of image queries (catalogue queries read theirs from the store).
    """

    vectors: np.ndarray
    object_id: np.ndarray
    row: np.ndarray
    labels: list[str]
    images: np.ndarray | None = None


def queries_from_ids(catalog: CatalogColumns, object_ids: list[int], column: str = "mu") -> Queries:
    """The latents of catalogue objects, looked up by object id."""
    ids = np.asarray(object_ids, np.int64)
    rows = catalog.rows_of_ids(ids)
    vectors = catalog.read(column, rows).astype(np.float32)
    return Queries(vectors, ids, rows, [f"id {i}" for i in ids])


def queries_from_images(catalog: CatalogColumns, paths: list[Path], work: Path, checkpoint: Path | None = None,
                        batch_size: int = 256) -> Queries:
    """Encode FITS cutouts or HDF5 stores of images with the catalogue's checkpoint.

    Parameters
    ----------
    catalog : CatalogColumns
        Its /meta names the checkpoint (and its SHA-256, checked).
    paths : list of Path
        HDF5 stores (/images (N, H, W) or (N, C, H, W)) or FITS files / directories / globs,
        the latter first prepared with the checkpoint's prep recipe into `work`.input.h5.
    work : Path
        Stem for prepared FITS inputs.
    checkpoint : Path, optional
        Overrides the checkpoint recorded in the catalogue (same SHA-256 required).

    Returns
    -------
    Queries
        mu of every image, in file order.

    Raises
    ------
    SearchInputError
        No checkpoint known, a checkpoint that is not the catalogue's, images of the wrong shape.
    """
    from galhpc.catalog.encode import is_store_path, store_from_fits
    from galhpc.data.store import StoreReader
    from galhpc.checkpoint import load_model

    ckpt = catalog.checkpoint_path(checkpoint)
    if ckpt is None:
        raise SearchInputError(f"{catalog.path}: image queries need the catalogue's checkpoint; "
                               f"{str(checkpoint or catalog.meta.get('checkpoint', ''))!r} is not a file "
                               "(pass --checkpoint)")
    model, cfg, _ = load_model(ckpt, map_location="cpu")
    vectors, images, labels = [], [], []
    for i, path in enumerate(paths):
        store = path if is_store_path(path) else store_from_fits(path, cfg.prep, work.with_name(f"{work.name}.q{i}"))
        reader = StoreReader(store)
        try:
            reader.check_fits(model.name, cfg.model.channels, cfg.model.image_size)
            stamps, _ = reader.read(0, reader.n)
        except Exception as err:
            raise SearchInputError(f"query images {path}: {err}") from err
        finally:
            reader.close()
        with torch.inference_mode():
            for lo in range(0, len(stamps), batch_size):
                vectors.append(model.encode(torch.from_numpy(stamps[lo:lo + batch_size])).mu.float().numpy())
        images.append(stamps)
        labels += [f"{path.name}[{j}]" for j in range(len(stamps))]
    n = len(labels)
    return Queries(np.concatenate(vectors), np.full(n, -1, np.int64), np.full(n, -1, np.int64), labels,
                   np.concatenate(images))
