"""Query vectors for the search: catalogue objects by id or sky position, or encoded images.

Images are encoded with the catalogue's own checkpoint, so they land in the same latent space.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from galhpc.formats import catalog as C
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


def queries_from_ids(catalog: CatalogColumns, object_ids: list[int], column: str = C.MU) -> Queries:
    """The latents of catalogue objects, looked up by object id.

    Parameters
    ----------
    catalog : CatalogColumns
        An encoded catalogue with an `object_id` column.
    object_ids : list of int
        Object ids to search for, in query order.
    column : str, optional
        Latent column to read ("mu").

    Returns
    -------
    Queries
        (Q, L) float32 vectors, the ids, their catalogue rows and labels "id <n>".

    Raises
    ------
    SearchInputError
        If an id is not in the catalogue (raised by `CatalogColumns.rows_of_ids`).
    """
    ids = np.asarray(object_ids, np.int64)
    rows = catalog.rows_of_ids(ids)
    vectors = catalog.read(column, rows).astype(np.float32)
    return Queries(vectors, ids, rows, [f"id {i}" for i in ids])


ARCSEC_PER_RADIAN = 180.0 / np.pi * 3600.0


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Cartesian unit vectors of sky positions.

    Parameters
    ----------
    ra, dec : numpy.ndarray
        (N,) right ascension and declination in degrees.

    Returns
    -------
    numpy.ndarray
        (N, 3) float64 (x, y, z) on the unit sphere.
    """
    ra, dec = np.radians(np.asarray(ra, np.float64)), np.radians(np.asarray(dec, np.float64))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)


FEW_QUERIES = 32  # up to this many positions: a direct scan of each block beats building its KD-tree


def _nearest_direct(points: np.ndarray, queries: np.ndarray, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """(chord length, index) of the nearest of `points` (B, 3) to each of `queries` (Q, 3).

    Computed from coordinate differences (exact like the KD-tree's; ties to the lower index).
    """
    best = np.full(len(queries), np.inf)
    index = np.zeros(len(queries), np.int64)
    for lo in range(0, len(points), chunk):
        part = points[lo:lo + chunk]
        d2 = sum((part[:, None, axis] - queries[None, :, axis]) ** 2 for axis in range(3))  # (b, Q)
        at = d2.argmin(axis=0)
        chord = np.sqrt(d2[at, np.arange(len(queries))])
        closer = chord < best
        best[closer], index[closer] = chord[closer], lo + at[closer]
    return best, index


def nearest_rows(catalog: CatalogColumns, ra: np.ndarray, dec: np.ndarray,
                 block_rows: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """The catalogue row nearest on the sky to each position, streaming `ra` and `dec` block by block.

    The catalogue's columns are read shard by shard (memory: one block), each block searched
    on unit vectors by chord length (monotonic in angle): a direct scan for up to FEW_QUERIES
    positions, else a KD-tree of the block (scipy cKDTree).

    Parameters
    ----------
    catalog : CatalogColumns
        A catalogue with `ra`, `dec` columns (degrees); rows with a NaN coordinate are skipped.
    ra, dec : np.ndarray, float64, (Q,)
        Query positions in degrees.
    block_rows : int
        Catalogue rows searched at a time.

    Returns
    -------
    rows : np.ndarray, int64, (Q,)
        Nearest row (exact ties: the lower row in a direct scan, either with the KD-tree),
        -1 when no row has coordinates.
    separation : np.ndarray, float64, (Q,)
        Its angular distance in arcsec (inf when none).

    Raises
    ------
    SearchInputError
        The catalogue has no `ra`/`dec` columns.
    """
    from scipy.spatial import cKDTree

    missing = [c for c in ("ra", "dec") if c not in catalog.columns]
    if missing:
        raise SearchInputError(f"{catalog.path}: no {'/'.join(missing)} column, so it cannot be searched by sky "
                               "position; encode it from a store with ra/dec labels")
    queries = unit_vectors(ra, dec)
    best_row = np.full(len(queries), -1, np.int64)
    best_chord = np.full(len(queries), np.inf)
    for (lo, ra_block), (_, dec_block) in zip(catalog.rank_blocks("ra", 0, 1, block_rows),
                                              catalog.rank_blocks("dec", 0, 1, block_rows), strict=False):
        known = np.flatnonzero(np.isfinite(ra_block) & np.isfinite(dec_block))
        if not len(known):
            continue
        points = unit_vectors(ra_block[known], dec_block[known])
        if len(queries) <= FEW_QUERIES:
            chord, index = _nearest_direct(points, queries)
        else:
            chord, index = cKDTree(points).query(queries)
        closer = chord < best_chord
        best_chord[closer] = chord[closer]
        best_row[closer] = lo + known[index[closer]]
    separation = 2.0 * np.arcsin(np.clip(best_chord / 2.0, 0.0, 1.0)) * ARCSEC_PER_RADIAN
    return best_row, np.where(best_row < 0, np.inf, separation)


def queries_from_positions(catalog: CatalogColumns, ra: list[float], dec: list[float], tolerance: float = 1.0,
                           column: str = C.MU) -> Queries:
    """The latents of the catalogue objects nearest to sky positions, each within `tolerance`.

    Parameters
    ----------
    catalog : CatalogColumns
        An encoded catalogue with `ra`, `dec` columns (degrees).
    ra, dec : list of float
        Query positions (ICRS degrees), the same number of each.
    tolerance : float
        Largest accepted angular distance in arcsec (default 1).
    column : str
        Latent column ("mu").

    Returns
    -------
    Queries
        One per position, labelled by its position and the separation found.

    Raises
    ------
    SearchInputError
        Unequal numbers of ra and dec, a position outside the sky, no ra/dec columns, or no
        object within `tolerance` of a position (naming the nearest one and its distance).
    """
    if len(ra) != len(dec):
        raise SearchInputError(f"galhpc-search: {len(ra)} --ra but {len(dec)} --dec; give them in pairs")
    ra_q, dec_q = np.asarray(ra, np.float64), np.asarray(dec, np.float64)
    if not (np.isfinite(ra_q).all() and np.isfinite(dec_q).all() and (np.abs(dec_q) <= 90).all()):
        raise SearchInputError("galhpc-search: --dec must lie in [-90, 90] degrees and --ra/--dec be finite")
    rows, separation = nearest_rows(catalog, ra_q, dec_q)
    for r, d, row, sep in zip(ra_q, dec_q, rows, separation, strict=False):
        if not sep <= tolerance:
            if row < 0:
                nearest = "no object has coordinates"
            else:
                oid = int(catalog.read(C.OBJECT_ID, [row])[0]) if C.OBJECT_ID in catalog.columns else int(row)
                nearest = f"the nearest, object {oid}, is {sep:.3g} arcsec away"
            raise SearchInputError(f"{catalog.path}: no object within {tolerance:g} arcsec of ra {r:.6f} dec {d:.6f} "
                                   f"({nearest}; widen --tolerance)")
    ids = catalog.read(C.OBJECT_ID, rows) if C.OBJECT_ID in catalog.columns else rows.copy()
    labels = [f"ra {r:.5f} dec {d:+.5f} ({s:.2f}\")" for r, d, s in zip(ra_q, dec_q, separation, strict=False)]
    return Queries(catalog.read(column, rows).astype(np.float32), ids.astype(np.int64), rows, labels)


def queries_from_images(catalog: CatalogColumns, paths: list[Path], work: Path, checkpoint: Path | None = None,
                        batch_size: int = 256) -> Queries:
    """Encode FITS cutouts or HDF5 stores of images with the catalogue's checkpoint.

    Parameters
    ----------
    catalog : CatalogColumns
        Its /meta names the checkpoint (and its SHA-256, checked).
    paths : list of Path
        HDF5 stores (/images (N, H, W) or (N, C, H, W)) or FITS files / directories / globs,
        the latter first prepared with the prep recipe of the checkpoint's training store
        (`galhpc.checkpoint.inference_prep`) into a temporary store, removed after reading.
    work : Path
        Where the temporary stores are made (a hidden directory beside it).
    checkpoint : Path, optional
        Overrides the checkpoint recorded in the catalogue (same SHA-256 required).
    batch_size : int, optional
        Stamps encoded per forward pass (default 256).

    Returns
    -------
    Queries
        mu of every image, in file order.

    Raises
    ------
    SearchInputError
        No checkpoint known, a checkpoint that is not the catalogue's, a query file that
        cannot be prepared or encoded (one line naming it).
    """
    from galhpc.checkpoint import checkpoint_config, inference_prep, load_model, read_checkpoint
    from galhpc.inference.encode import fits_as_store, is_store_path

    ckpt = catalog.checkpoint_path(checkpoint)
    if ckpt is None:
        raise SearchInputError(f"{catalog.path}: image queries need the catalogue's checkpoint; "
                               f"{str(checkpoint or catalog.meta.get('checkpoint', ''))!r} is not a file "
                               "(pass --checkpoint)")
    payload = read_checkpoint(ckpt)
    cfg = checkpoint_config(payload, ckpt)
    model = load_model(ckpt, payload=payload)
    vectors, images, labels = [], [], []
    for i, path in enumerate(paths):
        try:
            if is_store_path(path):
                stamps = _store_stamps(path, model.name, cfg.model.channels, cfg.model.image_size)
            else:
                prep = inference_prep(payload, cfg, ckpt)
                with fits_as_store(path, prep, work.with_name(f"{work.name}.q{i}")) as store:
                    try:
                        stamps = _store_stamps(store, model.name, cfg.model.channels, cfg.model.image_size)
                    except Exception as err:  # name the query file, not the temporary store
                        raise SearchInputError(str(err).replace(f"{store}: ", "")) from err
            with torch.inference_mode():
                for lo in range(0, len(stamps), batch_size):
                    vectors.append(model.encode(torch.from_numpy(stamps[lo:lo + batch_size])).mu.float().numpy())
        except Exception as err:  # one line naming the query file, whatever failed
            raise SearchInputError(f"query images {path}: {err}") from err
        images.append(stamps)
        labels += [f"{path.name}[{j}]" for j in range(len(stamps))]
    n = len(labels)
    return Queries(np.concatenate(vectors), np.full(n, -1, np.int64), np.full(n, -1, np.int64), labels,
                   np.concatenate(images))


def _store_stamps(store: Path, model_name: str, channels: int, image_size: int) -> np.ndarray:
    """Every image of a store, (N, C, H, W) float32, checked against the model's input shape."""
    from galhpc.data.store import StoreReader

    reader = StoreReader(store)
    try:
        reader.check_fits(model_name, channels, image_size)
        return reader.read(0, reader.n)[0]
    finally:
        reader.close()
