"""Read a training store (written by `galhpc-prep`) read-only: images, ids, labels, per-object extras.

`Store` is the one reader of a store outside training (the report, the search, the
fidelity checks); the trainer's batches come from `galhpc.data.loader`.  The layout and
its names are `galhpc.formats.store` (docs/schema.md, "Training store").  A published
store is never modified, so it is opened without HDF5 file locks.  Rows are returned in
the order asked for (`galhpc.formats.hdf5.read_rows`: each row read once, in increasing
order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from galhpc.data.store import StoreInfo, describe_store, locate_column
from galhpc.formats import store as fmt
from galhpc.formats.hdf5 import open_h5_readonly, read_rows
from galhpc.io.reader import Reader
from galhpc.runtime.errors import DataError

SCAN_ROWS = 1 << 20  # rows per block of `iter_column`


class Store(Reader):
    """A training store opened read-only; see `open_store`.

    Parameters
    ----------
    path : str or Path
        The store's HDF5 file.

    Raises
    ------
    DataError
        If the file is missing, not HDF5, or not a store (`describe_store`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"store not found: {self.path}")
        try:
            self._file = open_h5_readonly(self.path)
        except OSError as err:
            raise DataError(f"{self.path} is not a readable HDF5 store: {err}") from err
        try:
            self.info: StoreInfo = describe_store(self._file, self.path)
        except BaseException:
            self._file.close()
            raise

    def __len__(self) -> int:
        return self.info.n

    def __repr__(self) -> str:
        return f"<galhpc Store {self.path}: {self.info.n} images {self.info.image_shape}>"

    @property
    def columns(self) -> list[str]:
        """Per-object columns.

        `images`, `object_id`, label names, and per-object extras (`truth`, `masks`, per-pixel `sigma` and
        `mask`, per-object `psf`).

        Returns
        -------
        list of str
        """
        names = [*fmt.CORE, *self.info.label_names]
        for name, obj in self._file.items():
            if name not in names and isinstance(obj, h5py.Dataset):
                found = locate_column(self._file, name, self.info.n)
                if found is not None and found[1]:
                    names.append(name)
        return names

    @property
    def attrs(self) -> dict[str, Any]:
        """The store's root attributes (prep ``config`` YAML, ``noise_sigma``, ``bunit``, ...).

        Returns
        -------
        dict of str to Any
            Values as h5py reads them.
        """
        return dict(self._file.attrs)

    def locate(self, name: str) -> tuple[str, bool] | None:
        """Where column `name` lives and whether it is per object (`galhpc.data.store.locate_column`).

        Parameters
        ----------
        name : str
            A label, a root dataset (``truth``, ``psf``, ``noise_sigma``), ``images`` or ``object_id``.

        Returns
        -------
        tuple of (str, bool) or None
            (dataset path, per object), or None when the store has no such column.
        """
        if name in fmt.CORE:
            return name, True
        return locate_column(self._file, name, self.info.n)

    def __contains__(self, name: str) -> bool:
        return self.locate(name) is not None

    def _dataset(self, name: str) -> h5py.Dataset:
        found = self.locate(name)
        if found is None or not found[1]:
            raise KeyError(f"{self.path}: no per-object column {name!r}; columns: {', '.join(self.columns)}")
        return self._file[found[0]]

    def _rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.info.n):
            raise IndexError(f"rows must lie in [0, {self.info.n}) for {self.path}")
        return rows

    def read(self, column: str, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Values of `column` at `rows` (any order, repeats allowed; None: every row).

        Parameters
        ----------
        column : str
            ``"images"`` ((N, H, W) or (N, C, H, W) float32, preprocessed pixels),
            ``"object_id"`` ((N,) int64), a label name, or a per-object extra.
        rows : array_like of int, optional
            Row indices in [0, N).

        Returns
        -------
        numpy.ndarray
            Shape (len(rows), ...) in the stored dtype.

        Raises
        ------
        IndexError
            For a row outside [0, N).
        KeyError
            If the store has no per-object column `column`.
        """
        ds = self._dataset(column)
        if rows is None:
            return ds[()]
        return read_rows(ds, self._rows(rows))

    def read_columns(self, names: Iterable[str], rows: Sequence[int] | np.ndarray | None = None,
                     ) -> dict[str, np.ndarray]:
        """Columns `names` at `rows`, row-aligned.

        A per-object column read at the rows, a shared one (one PSF (h, w), one ``noise_sigma``) repeated
        for every row.

        Parameters
        ----------
        names : iterable of str
            Per-object or shared columns (`locate`).
        rows : array_like of int, optional
            Row indices in [0, N), any order, repeats allowed (None: every row).

        Returns
        -------
        dict of str to numpy.ndarray
            Each name's values, shape (len(rows), ...) in the stored dtype (a shared column
            as a read-only broadcast view).

        Raises
        ------
        KeyError
            For a column the store does not have.
        IndexError
            For a row outside [0, N).
        """
        rows = np.arange(self.info.n) if rows is None else self._rows(rows)
        out = {}
        for name in names:
            found = self.locate(name)
            if found is None:
                raise KeyError(f"{self.path}: no column {name!r}; columns: {', '.join(self.columns)}")
            ds = self._file[found[0]]
            out[name] = read_rows(ds, rows) if found[1] else np.broadcast_to(ds[()], (len(rows), *ds.shape))
        return out

    def iter_column(self, column: str, block_rows: int = SCAN_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """Stream a per-object column in row order, `block_rows` rows at a time.

        Parameters
        ----------
        column : str
            A name of `columns`.
        block_rows : int
            Most rows per block.

        Yields
        ------
        start : int
            Store row of the block's first row.
        values : numpy.ndarray
            Shape (rows, ...) in the stored dtype.
        """
        ds = self._dataset(column)
        for start in range(0, ds.shape[0], block_rows):
            yield start, ds[start:start + block_rows]

    def table(self, rows: Sequence[int] | np.ndarray | None = None):
        """`object_id` and every 1-D label column as an astropy Table (string labels decoded).

        Parameters
        ----------
        rows : array_like of int, optional
            Rows to include (default: every row).

        Returns
        -------
        astropy.table.Table
            One row per object (or per `rows`), the store's prep config in ``meta``.
        """
        from astropy.table import Table

        table = Table(meta={"config": self.info.config, "path": str(self.path)})
        for name in [fmt.OBJECT_ID, *self.info.label_names]:
            values = self.read(name, rows)
            if values.ndim != 1:
                continue
            table[name] = np.char.decode(values, "utf-8") if values.dtype.kind == "S" else values
        return table

    def close(self) -> None:
        """Close the store's file."""
        self._file.close()


def open_store(path: str | Path) -> Store:
    """Open a training store (`galhpc-prep` output) read-only, without file locks.

    Parameters
    ----------
    path : str or Path
        The store's HDF5 file.

    Returns
    -------
    Store
        ``len(store)`` objects; ``store.info`` (N, image shape, label names, prep config);
        ``store.read("images", rows)`` -> (n, H, W) or (n, C, H, W) float32;
        ``store.read_columns(["object_id", "ra"], rows)`` -> dict of (n,) arrays;
        ``store.table()`` -> astropy Table of the ids and label columns.  A context manager.

    Raises
    ------
    galhpc.runtime.errors.DataError
        If the file is missing, not HDF5, or has no ``images``/``object_id``.
    """
    return Store(path)
