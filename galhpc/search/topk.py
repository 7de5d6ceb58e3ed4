"""Exact top-k nearest catalogue rows for a few query vectors, block by block and rank by rank.

The search core knows nothing about files: it takes the queries and an iterator of
(first_row, block) arrays (one rank's shards, read in blocks) and keeps, per query, the k
best (squared distance, row) pairs seen so far.  Each block goes through the kernel layer
(`galhpc.kernels.nearest_code(..., k=k)`: blocked, O(block) memory; the scan runs in
float32 when queries and blocks are float32, else float64, and candidates are re-scored
exactly in float64), so a pair's distance has the same bits whatever block or rank it was
found in; merging sorts by (distance, row), so ties go to the lower row and the answer is
the same on any number of ranks and any blocking, equal to brute force.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from galhpc.kernels import nearest_code

NO_ROW = -1  # row of an empty slot (fewer than k rows searched); its distance is +inf


@dataclass
class TopK:
    """Per query, the k best rows found, nearest first.

    Attributes
    ----------
    rows : np.ndarray, int64, (Q, k)
        Catalogue rows (NO_ROW in empty slots).
    sq_distance : np.ndarray, float64, (Q, k)
        Squared Euclidean distances (+inf in empty slots).
    """

    rows: np.ndarray
    sq_distance: np.ndarray

    @classmethod
    def empty(cls, n_queries: int, k: int) -> TopK:
        """A result with every slot empty, the identity of `merge`.

        Parameters
        ----------
        n_queries : int
            Q, the number of queries.
        k : int
            Slots per query.

        Returns
        -------
        TopK
            (Q, k) rows all NO_ROW and squared distances all +inf.
        """
        return cls(np.full((n_queries, k), NO_ROW, np.int64), np.full((n_queries, k), np.inf))

    @property
    def distance(self) -> np.ndarray:
        """Euclidean distances (Q, k), float64."""
        return np.sqrt(self.sq_distance)


def merge(a: TopK, b: TopK, k: int) -> TopK:
    """The k best of two candidate sets per query, sorted by (distance, row).

    Empty slots (NO_ROW, +inf) sort last, so ties go to the lower row whatever the merge order.

    Parameters
    ----------
    a, b : TopK
        Candidates for the same Q queries, (Q, ka) and (Q, kb).
    k : int
        Slots kept per query (at most ka + kb).

    Returns
    -------
    TopK
        (Q, k) rows and squared distances, nearest first.
    """
    rows = np.concatenate([a.rows, b.rows], axis=1)
    dist = np.concatenate([a.sq_distance, b.sq_distance], axis=1)
    sort_rows = np.where(rows == NO_ROW, np.iinfo(np.int64).max, rows)
    order = np.lexsort((sort_rows, dist), axis=1)[:, :k]
    return TopK(np.take_along_axis(rows, order, axis=1), np.take_along_axis(dist, order, axis=1))


def search_blocks(queries: np.ndarray, blocks: Iterable[tuple[int, np.ndarray]], k: int, *,
                  exclude: np.ndarray | None = None, block_elements: int = 1 << 22) -> TopK:
    """Exact k nearest rows of the blocks to each query.

    Parameters
    ----------
    queries : np.ndarray, (Q, D) floating point
    blocks : iterable of (int, np.ndarray)
        (first_row, block (B, D)): catalogue rows first_row .. first_row + B - 1.
    k : int
        Neighbours per query.
    exclude : np.ndarray, int64, (Q,), optional
        A row never returned for each query (its own row when the query is a catalogue
        object; -1 for none).
    block_elements : int
        Queries x rows per distance block of the kernel (memory: 8 bytes each).

    Returns
    -------
    TopK
        (Q, k) rows and squared distances of this iterator's rows only.

    Raises
    ------
    ValueError
        Blocks whose width differs from the queries', or k < 1.
    """
    if k < 1:
        raise ValueError(f"search: k must be at least 1, got {k}")
    queries = np.asarray(queries)
    dtype = np.float32 if queries.dtype == np.float32 else np.float64
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=dtype))
    extra = 0 if exclude is None else 1
    best = TopK.empty(len(q), k + extra)
    for first_row, block in blocks:
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != q.shape[1]:
            raise ValueError(f"search: block at row {first_row} has shape {block.shape}, queries have "
                             f"{q.shape[1]} features")
        if len(block) == 0:
            continue
        scan = dtype if block.dtype == np.float32 else np.float64
        codes = torch.from_numpy(np.ascontiguousarray(block, dtype=scan))
        per_query = max(1, block_elements // len(codes))
        index, sq = nearest_code(q.to(codes.dtype), codes, k=k + extra, block_size=per_query, backend="torch")
        best = merge(best, TopK(index.numpy() + first_row, sq.numpy()), k + extra)
    if exclude is not None:
        best = _drop_rows(best, np.asarray(exclude, np.int64), k)
    return best


def _drop_rows(best: TopK, exclude: np.ndarray, k: int) -> TopK:
    """Remove each query's excluded row (keeping order) and cut to k."""
    hit = (best.rows == exclude[:, None]) & (best.rows != NO_ROW)  # a row appears at most once per query
    keep = ~hit
    keep[~hit.any(axis=1), -1] = False  # not found: drop the surplus last slot instead
    return TopK(best.rows[keep].reshape(len(best.rows), k), best.sq_distance[keep].reshape(len(best.rows), k))


def reduce_ranks(local: TopK, world, k: int) -> TopK:
    """The global top-k: every rank's local top-k gathered (in rank order) and merged.

    Parameters
    ----------
    local : TopK
        This rank's result over its own rows.
    world : galhpc.runtime.world.World
        The run's World (rank, size, allgather).
    k : int
        Neighbours per query.

    Returns
    -------
    TopK
        The same on every rank.
    """
    result = TopK.empty(len(local.rows), k)
    for part in world.allgather((local.rows, local.sq_distance)):
        result = merge(result, TopK(*part), k)
    return result
