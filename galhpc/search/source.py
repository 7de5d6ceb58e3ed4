"""A catalogue's columns for the search: one rank's shards read in blocks, and chosen rows.

Until the project's catalogue reader (`galhpc.open_catalog`) is on main, this is the one
small place that reads catalogue files: the master's virtual datasets are used only as the
map of which shard file holds which rows; the shard files are then opened directly,
read-only and without HDF5 file locks, one at a time.  A plain HDF5 file of real
per-object datasets is a catalogue of one shard, itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from galhpc.runtime.errors import DataError
from galhpc.runtime.files import open_h5_readonly


class SearchInputError(DataError):
    """A catalogue, column, query or output the search cannot use."""


@dataclass(frozen=True)
class Piece:
    """Catalogue rows [start, stop) are rows [offset, offset + stop - start) of `dataset` in `path`."""

    start: int
    stop: int
    path: Path
    dataset: str
    offset: int


def _open(path: Path) -> h5py.File:
    try:
        return open_h5_readonly(path)
    except OSError as err:
        raise SearchInputError(f"{path}: cannot open as HDF5: {err}") from err


class CatalogColumns:
    """Row-aligned columns of an encoded catalogue (master + shards, or one plain file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with _open(self.path) as f:
            self.columns = sorted(name for name, item in f.items() if isinstance(item, h5py.Dataset))
            if "mu" not in f and "z" not in f:
                raise SearchInputError(f"{self.path}: no latent column mu or z; is it an encoded catalogue?")
            first = "mu" if "mu" in f else "z"
            self.n = int(f[first].shape[0])
            self.meta = dict(f["meta"].attrs) if "meta" in f else {}
            self.groups = {name: {k: v[()] for k, v in f[name].items()} for name in ("gmm",) if name in f}
            self._pieces = {name: self._map(f[name]) for name in self.columns if f[name].shape[:1] == (self.n,)}

    def __len__(self) -> int:
        return self.n

    def _map(self, ds: h5py.Dataset) -> list[Piece]:
        if not ds.is_virtual:
            return [Piece(0, self.n, self.path, ds.name, 0)]
        pieces = []
        for source in ds.virtual_sources():
            lo, hi = source.vspace.get_select_bounds()
            whole = source.src_space.get_select_type() == h5py.h5s.SEL_ALL
            src_lo = (0,) if whole else source.src_space.get_select_bounds()[0]
            file = self.path if source.file_name == "." else self.path.parent / source.file_name
            pieces.append(Piece(lo[0], hi[0] + 1, file, source.dset_name, src_lo[0]))
        return sorted(pieces, key=lambda p: p.start)

    def pieces(self, column: str) -> list[Piece]:
        if column not in self._pieces:
            raise SearchInputError(f"{self.path}: no per-object column {column!r} (has {', '.join(self.columns)})")
        return self._pieces[column]

    def rank_blocks(self, column: str, rank: int, size: int, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first_row, rows) blocks of `column` from every `size`-th shard starting at `rank`."""
        for piece in self.pieces(column)[rank::size]:
            with _open(piece.path) as f:
                ds = f[piece.dataset]
                for lo in range(piece.start, piece.stop, block_rows):
                    hi = min(lo + block_rows, piece.stop)
                    try:
                        yield lo, ds[piece.offset + lo - piece.start:piece.offset + hi - piece.start]
                    except OSError as err:
                        raise SearchInputError(f"{piece.path}: reading {column} rows {lo}..{hi - 1} failed: {err}") from err

    def read(self, column: str, rows: np.ndarray) -> np.ndarray:
        """`column` at catalogue `rows` (any order, repeats allowed)."""
        rows = np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise SearchInputError(f"{self.path}: rows outside 0..{self.n - 1} asked for")
        pieces = self.pieces(column)
        out = None
        for piece in pieces:
            inside = (rows >= piece.start) & (rows < piece.stop)
            if not inside.any():
                continue
            unique, back = np.unique(rows[inside] - piece.start + piece.offset, return_inverse=True)
            with _open(piece.path) as f:
                values = f[piece.dataset][unique]
            if out is None:
                out = np.empty((len(rows), *values.shape[1:]), values.dtype)
            out[inside] = values[back]
        if out is None:
            with _open(pieces[0].path) as f:
                ds = f[pieces[0].dataset]
                out = np.empty((0, *ds.shape[1:]), ds.dtype)
        return out

    def rows_of_ids(self, object_ids: np.ndarray, block_rows: int = 1 << 20) -> np.ndarray:
        """Catalogue row of each object id (first occurrence), scanning `object_id` in blocks.

        Raises
        ------
        SearchInputError
            An id that no row holds.
        """
        wanted = np.asarray(object_ids, np.int64)
        found = np.full(len(wanted), -1, np.int64)
        if "object_id" not in self._pieces:
            return self._rows_as_ids(wanted)
        for lo, ids in self.rank_blocks("object_id", 0, 1, block_rows):
            missing = found < 0
            if not missing.any():
                break
            order = np.argsort(ids, kind="stable")
            pos = np.searchsorted(ids[order], wanted[missing])
            pos = np.minimum(pos, len(ids) - 1)
            hit = ids[order][pos] == wanted[missing]
            idx = np.flatnonzero(missing)[hit]
            found[idx] = lo + order[pos[hit]]
        if (found < 0).any():
            raise SearchInputError(f"{self.path}: object id(s) {wanted[found < 0][:10].tolist()} not in the catalogue")
        return found

    def _rows_as_ids(self, wanted: np.ndarray) -> np.ndarray:
        if wanted.size and (wanted.min() < 0 or wanted.max() >= self.n):
            raise SearchInputError(f"{self.path}: no object_id column and ids outside 0..{self.n - 1}")
        return wanted
