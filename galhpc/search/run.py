"""The `galhpc-search` job.

Queries -> per-rank exact top-k over its shards -> global top-k -> table and mosaic (written by rank 0).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galhpc.formats import catalog as C
from galhpc.formats import store as S
from galhpc.formats import table as T
from galhpc.io.store import open_store
from galhpc.io.table import write_table
from galhpc.search.output import table_units, write_mosaic
from galhpc.search.query import Queries, queries_from_ids, queries_from_images, queries_from_positions
from galhpc.search.source import CatalogColumns, SearchInputError
from galhpc.search.topk import NO_ROW, TopK, reduce_ranks, search_blocks

log = logging.getLogger("galhpc.search")

DEFAULT_BLOCK_ROWS = 65536


@dataclass
class SearchResult:
    """What a search found: the queries, their global top-k, the result table and the time it took (s)."""

    queries: Queries
    topk: TopK
    table: dict[str, np.ndarray]
    seconds: float


def result_table(catalog: CatalogColumns, queries: Queries, topk: TopK) -> dict[str, np.ndarray]:
    """The result table: one row per (query, neighbour) found.

    Parameters
    ----------
    catalog : CatalogColumns
        The searched catalogue.
    queries : Queries
        The Q queries.
    topk : TopK
        Their neighbours' rows and distances, (Q, k); `NO_ROW` for an empty slot.

    Returns
    -------
    dict of str to numpy.ndarray
        Columns query, query_label, query_id, rank (1 = nearest), id, row, distance
        (Euclidean, in the latent space), component (-1 when the catalogue has none), then
        the neighbour's store columns the catalogue carries (`CatalogColumns.carried`: ra,
        dec, ...); each (n,), empty slots left out.
    """
    n_q, k = topk.rows.shape
    rows = topk.rows.reshape(-1)
    valid = rows != NO_ROW
    ids = np.full(len(rows), -1, np.int64)
    component = np.full(len(rows), -1, np.int64)
    if valid.any():
        ids[valid] = (catalog.read(C.OBJECT_ID, rows[valid]) if C.OBJECT_ID in catalog.columns else rows[valid])
        if C.COMPONENT in catalog.columns:
            component[valid] = catalog.read(C.COMPONENT, rows[valid])
    carried = {name: catalog.read(name, rows[valid]) for name in catalog.carried}
    return {
        T.QUERY: np.repeat(np.arange(n_q), k)[valid],
        T.QUERY_LABEL: np.repeat(np.asarray(queries.labels), k)[valid],
        T.QUERY_ID: np.repeat(queries.object_id, k)[valid],
        T.RANK: np.tile(np.arange(1, k + 1), n_q)[valid],
        T.NEIGHBOUR_ID: ids[valid],
        T.ROW: rows[valid],
        T.DISTANCE: topk.distance.reshape(-1)[valid],
        C.COMPONENT: component[valid],
        **carried,
    }


def store_stamps(store: Path, rows: np.ndarray) -> np.ndarray:
    """Images of the store at `rows`, NaN stamps where there is no row.

    Parameters
    ----------
    store : Path
        The training store.
    rows : numpy.ndarray
        Shape (n,) int, any order, repeats allowed; `NO_ROW` for an empty slot.

    Returns
    -------
    numpy.ndarray
        Shape (n, H, W) or (n, C, H, W) float32.
    """
    with open_store(store) as reader:
        out = np.full((len(rows), *reader.info.image_shape), np.nan, np.float32)
        valid = rows != NO_ROW
        if valid.any():
            out[valid] = reader.read(S.IMAGES, rows[valid])
    return out


def search_catalog(catalog_path: str | Path, *, k: int = 10, ids: list[int] | None = None,
                   images: list[Path] | None = None, ra: list[float] | None = None, dec: list[float] | None = None,
                   tolerance: float = 1.0, checkpoint: Path | None = None, column: str = C.MU,
                   block_rows: int = DEFAULT_BLOCK_ROWS, world=None, work: Path | None = None) -> SearchResult:
    """Exact top-k search of a catalogue for queries given by object id, sky position or image.

    Parameters
    ----------
    catalog_path : path of an encoded catalogue (master file)
    k : neighbours per query
    ids : catalogue object ids to search for (each one's own row is left out of its results)
    images : FITS/HDF5 images encoded with the catalogue's checkpoint
    ra, dec : sky positions (degrees): each queries the catalogue object nearest to it
        (`queries_from_positions`), itself left out of its results
    tolerance : largest accepted distance (arcsec) between a position and its object
    checkpoint : overrides the checkpoint named in the catalogue's /meta
    column : latent column searched ("mu")
    block_rows : catalogue rows read and searched at a time (memory ~ block_rows x L x 4 bytes)
    world : the run's World (default: this process, or the MPI ranks that started it)
    work : stem for FITS queries prepared into a store

    Returns
    -------
    SearchResult
        The same on every rank (queries, global top-k, the table; the table is filled on every rank).

    Raises
    ------
    SearchInputError
        No queries, an unknown id, no object near a position, a bad catalogue or checkpoint.
    """
    from galhpc.runtime.world import mpi_world

    world = world or mpi_world()
    with CatalogColumns(catalog_path) as catalog:
        if not ids and not images and not ra and not dec:
            raise SearchInputError("galhpc-search: give query object ids (--id), sky positions (--ra/--dec) or query "
                                   "images (--image)")
        started = time.perf_counter()

        def make_queries() -> Queries | SearchInputError:
            try:
                parts = []
                if ids:
                    parts.append(queries_from_ids(catalog, ids, column))
                if ra or dec:
                    parts.append(queries_from_positions(catalog, list(ra or []), list(dec or []), tolerance, column))
                if images:
                    parts.append(queries_from_images(catalog, images, Path(work or catalog_path), checkpoint))
                return _concat(parts)
            except SearchInputError as err:
                return err
            except Exception as err:  # handed to every rank, so none waits forever in bcast
                return SearchInputError(f"queries: {err}")

        queries = world.broadcast_object(make_queries() if world.is_root else None)
        if isinstance(queries, SearchInputError):
            raise queries
        local = search_blocks(queries.vectors, catalog.rank_blocks(column, world.rank, world.size, block_rows), k,
                              exclude=queries.row)
        topk = reduce_ranks(local, world, k)
        seconds = time.perf_counter() - started
        log.info("rank %d/%d: %d queries, k=%d over %d rows in %.2f s", world.rank, world.size, len(queries.labels), k,
                 len(catalog), seconds)
        return SearchResult(queries, topk, result_table(catalog, queries, topk), seconds)


def _concat(parts: list[Queries]) -> Queries:
    return Queries(np.concatenate([p.vectors for p in parts]).astype(np.float32),
                   np.concatenate([p.object_id for p in parts]), np.concatenate([p.row for p in parts]),
                   [label for p in parts for label in p.labels], _stack_images(parts))


def _stack_images(parts: list[Queries]) -> np.ndarray | None:
    with_images = [p for p in parts if p.images is not None]
    if not with_images:
        return None
    shape = with_images[0].images.shape[1:]
    return np.concatenate([p.images if p.images is not None else np.full((len(p.labels), *shape), np.nan, np.float32)
                           for p in parts])


def write_outputs(result: SearchResult, catalog_path: str | Path, out: Path, mosaic: Path | None,
                  store: Path | None = None, max_mosaic_queries: int = 12, checkpoint: Path | None = None) -> None:
    """Write the search's outputs (rank 0 only): the table at `out` and, if asked, the mosaic.

    The mosaic's stamps come from the catalogue's store (`store`, else its /meta
    ``input``); FITS cutouts are prepared as galhpc-encode did, with the prep of the
    checkpoint's training store, into a temporary store.

    Parameters
    ----------
    result : SearchResult
        `search_catalog`'s.
    catalog_path : str or Path
        The searched catalogue.
    out : Path
        The table (.h5, .fits or .csv).
    mosaic : Path or None
        The PNG, or None for none.
    store : Path, optional
        The stamps' store (default: the catalogue's /meta ``input``).
    max_mosaic_queries : int
        Most queries (rows) in the mosaic.
    checkpoint : Path, optional
        Overrides the catalogue's checkpoint (to prepare FITS input).

    Raises
    ------
    SearchInputError
        If the mosaic's store cannot be found or prepared.
    """
    import glob

    from galhpc.inference.encode import as_store, is_store_path

    with CatalogColumns(catalog_path) as catalog:
        attrs = {"catalog": str(catalog_path), "k": str(result.topk.rows.shape[1]), "metric": "euclidean on mu"}
        write_table(out, result.table, attrs, units=table_units(result.table, catalog.meta))
        log.info("wrote %s (%d rows)", out, len(result.table[T.ROW]))
        if mosaic is None:
            return
        named = str(store or catalog.meta.get("input", ""))
        if named and not is_store_path(named) and glob.glob(named):  # FITS cutouts
            ckpt = catalog.checkpoint_path(checkpoint)
            if ckpt is None:
                raise SearchInputError(f"{catalog_path}: the mosaic of FITS input {named} needs the catalogue's "
                                       "checkpoint to prepare it (pass --checkpoint, or --store a prepared store)")
            with as_store(named, ckpt, out) as prepared:
                _write_mosaic(result, prepared, mosaic, max_mosaic_queries)
            return
        found = catalog.input_path("input", store)
        if found is None:
            raise SearchInputError(f"{catalog_path}: the mosaic needs the store the catalogue was encoded from; "
                                   f"{named!r} is not a file (pass --store)")
        _write_mosaic(result, found, mosaic, max_mosaic_queries)


def _write_mosaic(result: SearchResult, store: Path, mosaic: Path, max_mosaic_queries: int) -> None:
    """The PNG of the first queries and their neighbours, stamps read from `store`."""
    q = result.queries
    n = min(len(q.labels), max_mosaic_queries)
    neighbours = store_stamps(store, result.topk.rows[:n].reshape(-1))
    neighbours = neighbours.reshape(n, result.topk.rows.shape[1], *neighbours.shape[1:])
    query_stamps = store_stamps(store, q.row[:n])
    if q.images is not None:
        from_images = q.row[:n] == NO_ROW
        query_stamps[from_images] = q.images[:n][from_images].reshape(from_images.sum(), *query_stamps.shape[1:])
    table = result.table
    found = {(qi, r): i for qi, r, i in zip(table[T.QUERY], table[T.RANK], table[T.NEIGHBOUR_ID], strict=False)}
    captions = np.array([[f"id {found[(i, r + 1)]} d={result.topk.distance[i, r]:.2f}" if (i, r + 1) in found else ""
                          for r in range(result.topk.rows.shape[1])] for i in range(n)])
    write_mosaic(mosaic, query_stamps, neighbours, q.labels[:n], captions)
    log.info("wrote %s", mosaic)
