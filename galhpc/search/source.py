"""A catalogue's columns for the search: one rank's shards read in blocks, and chosen rows.

Reads through the project's catalogue reader (`galhpc.open_catalog`: shards read directly,
verified, few files open, no HDF5 file locks); this adds the rank's share of the shards,
the lookup of rows by object id and the catalogue's small groups (the post-hoc `/gmm`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from galhpc.formats import catalog as C
from galhpc.formats.kinds import STORE, check_kind
from galhpc.io.catalog import open_catalog
from galhpc.io.reader import Reader
from galhpc.runtime.errors import DataError

GROUPS = (C.GMM_GROUP,)  # small real groups of the master read whole


class SearchInputError(DataError):
    """A catalogue, column, query or output the search cannot use."""


class CatalogColumns(Reader):
    """Row-aligned columns of an encoded catalogue (master + shards, or one plain file).

    Raises
    ------
    SearchInputError
        A file without a latent column `mu` or `z`.
    CatalogError, OSError
        From `open_catalog`: not a catalogue, missing or unreadable shards.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.catalog = open_catalog(self.path, role="a search over latents (--catalog)")
        self.columns = list(self.catalog.columns)
        if C.MU not in self.columns and C.Z not in self.columns:
            raise SearchInputError(f"{self.path}: no latent column mu or z; is it an encoded catalogue?")
        self.n = len(self.catalog)
        self.meta = dict(self.catalog.meta)
        self.groups = {name: self.catalog.read_group(name) for name in GROUPS if name in self.catalog.groups}

    def __len__(self) -> int:
        return self.n

    def close(self) -> None:
        """Close the catalogue's shard files (the `with` protocol of `galhpc.io.reader.Reader`)."""
        self.catalog.close()

    @property
    def carried(self) -> list[str]:
        """The store columns the catalogue carries (its /meta ``passthrough`` list, e.g. ra, dec, mag_r), in that order.

        For a catalogue without that record, ra and dec when it has both.  Search and rarity tables copy
        them for every object they name.
        """
        named = json.loads(self.meta.get("passthrough", "null") or "null")
        if named is None:
            named = ["ra", "dec"]
        return [name for name in named if name in self.columns and len(self.catalog.shape(name)) == 1]

    def input_path(self, key: str, override: str | Path | None = None) -> Path | None:
        """A file the catalogue was made from: `override`, else the path its /meta `key` names.

        Parameters
        ----------
        key : str
            ``"checkpoint"`` or ``"input"`` (the store).
        override : str or Path, optional
            The user's choice (``--checkpoint``, ``--store``).

        Returns
        -------
        Path or None
            None when neither names an existing file.

        Raises
        ------
        FileKindError
            The store (``"input"``) is another kind of galhpc file, e.g. a catalogue.
        """
        named = override or self.meta.get(key)
        path = Path(named) if named and Path(named).is_file() else None
        if key == "input" and path is not None:
            check_kind(path, STORE, f"the store of {self.path} (--store)")
        return path

    def checkpoint_path(self, override: str | Path | None = None) -> Path | None:
        """The catalogue's checkpoint (`input_path`), checked against the one it was encoded with.

        Parameters
        ----------
        override : str or Path, optional
            The user's ``--checkpoint``.

        Returns
        -------
        Path or None
            None when neither the override nor /meta ``checkpoint`` is an existing file.

        Raises
        ------
        CheckpointError
            Its SHA-256 differs from /meta ``checkpoint_sha256``: latents of another model
            (`galhpc.checkpoint.check_catalogue_checkpoint`).
        """
        path = self.input_path("checkpoint", override)
        if path is not None:
            from galhpc.checkpoint import check_catalogue_checkpoint

            check_catalogue_checkpoint(path, self.meta, self.path)
        return path

    def _check(self, column: str) -> None:
        if column not in self.columns:
            raise SearchInputError(f"{self.path}: no per-object column {column!r} (has {', '.join(self.columns)})")

    def rank_blocks(self, column: str, rank: int, size: int, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Blocks of `column` from every `size`-th shard starting at `rank`, in row order.

        Parameters
        ----------
        column : str
            A per-object column.
        rank, size : int
            This rank and the number of ranks.
        block_rows : int
            Most rows per block (a block never spans two shards).

        Yields
        ------
        first_row : int
            Catalogue row of the block's first row.
        rows : numpy.ndarray
            Shape (n, ...) of the column's dtype.
        """
        self._check(column)
        for shard in self.catalog.shards[rank::size]:
            for lo in range(shard.start, shard.stop, block_rows):
                yield lo, self.catalog.read(column, slice(lo, min(lo + block_rows, shard.stop)))

    def read(self, column: str, rows: np.ndarray) -> np.ndarray:
        """`column` at catalogue `rows` (any order, repeats allowed).

        Parameters
        ----------
        column : str
            A per-object column.
        rows : numpy.ndarray
            Shape (n,) int, in [0, N).

        Returns
        -------
        numpy.ndarray
            Shape (n, ...) of the column's dtype.

        Raises
        ------
        SearchInputError
            For an unknown column or a row outside the catalogue.
        """
        self._check(column)
        rows = np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise SearchInputError(f"{self.path}: rows outside 0..{self.n - 1} asked for")
        return self.catalog.read(column, rows)

    def rows_of_ids(self, object_ids: np.ndarray, block_rows: int = 1 << 20) -> np.ndarray:
        """Catalogue row of each object id (first occurrence), scanning `object_id` in blocks.

        Parameters
        ----------
        object_ids : numpy.ndarray
            Shape (n,) int64.
        block_rows : int
            Rows of `object_id` read at a time.

        Returns
        -------
        numpy.ndarray
            Shape (n,) int64 (an id itself when the catalogue has no `object_id` column).

        Raises
        ------
        SearchInputError
            An id that no row holds.
        """
        wanted = np.asarray(object_ids, np.int64)
        if C.OBJECT_ID not in self.columns:
            if wanted.size and (wanted.min() < 0 or wanted.max() >= self.n):
                raise SearchInputError(f"{self.path}: no object_id column and ids outside 0..{self.n - 1}")
            return wanted
        found = np.full(len(wanted), -1, np.int64)
        for lo, ids in self.rank_blocks(C.OBJECT_ID, 0, 1, block_rows):
            missing = np.flatnonzero(found < 0)
            if not len(missing):
                break
            order = np.argsort(ids, kind="stable")
            pos = np.minimum(np.searchsorted(ids[order], wanted[missing]), len(ids) - 1)
            hit = ids[order][pos] == wanted[missing]
            found[missing[hit]] = lo + order[pos[hit]]
        if (found < 0).any():
            raise SearchInputError(f"{self.path}: object id(s) {wanted[found < 0][:10].tolist()} not in the catalogue")
        return found
