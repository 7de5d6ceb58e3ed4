"""Read a training store (written by `galhpc-prep`) read-only: images, ids, labels.

The layout is in docs/schema.md ("Training store").  A published store is never modified,
so it is opened without HDF5 file locks.  Rows are returned in the order asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from galhpc.data.sources import DataError
from galhpc.data.store import StoreInfo, describe_store, locate_column
from galhpc.io.catalog import open_h5_readonly
from galhpc.io.reader import Reader


class Store(Reader):
    """A training store opened read-only; see `open_store`."""

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
        """Per-object columns: `images`, `object_id`, label names, and per-object extras
        (`truth`, `masks`, per-pixel `sigma` and `mask`, per-object `psf`).
        """
        names = ["images", "object_id", *self.info.label_names]
        for name, obj in self._file.items():
            if name not in names and isinstance(obj, h5py.Dataset):
                found = locate_column(self._file, name, self.info.n)
                if found is not None and found[1]:
                    names.append(name)
        return names

    def _dataset(self, name: str) -> h5py.Dataset:
        if name in ("images", "object_id"):
            return self._file[name]
        found = locate_column(self._file, name, self.info.n)
        if found is None or not found[1]:
            raise KeyError(f"{self.path}: no per-object column {name!r}; columns: {', '.join(self.columns)}")
        return self._file[found[0]]

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
        KeyError
            For an unknown column.
        IndexError
            For a row outside [0, N).
        """
        ds = self._dataset(column)
        if rows is None:
            return ds[()]
        rows = np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.info.n):
            raise IndexError(f"rows must lie in [0, {self.info.n}) for {self.path}")
        unique, inverse = np.unique(rows, return_inverse=True)
        values = np.concatenate([ds[unique[i:i + 4096]] for i in range(0, len(unique), 4096)]) if len(unique) \
            else np.empty((0, *ds.shape[1:]), ds.dtype)
        return values[inverse]

    def table(self, rows: Sequence[int] | np.ndarray | None = None):
        """`object_id` and every 1-D label column as an astropy Table (string labels decoded).

        Returns
        -------
        astropy.table.Table
            One row per object (or per `rows`), the store's prep config in ``meta``.
        """
        from astropy.table import Table

        table = Table(meta={"config": self.info.config, "path": str(self.path)})
        for name in ["object_id", *self.info.label_names]:
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
        ``store.read("object_id")`` -> (N,) int64; ``store.table()`` -> astropy Table of
        the ids and label columns.  A context manager.

    Raises
    ------
    galhpc.data.sources.DataError
        If the file is missing, not HDF5, or has no ``images``/``object_id``.
    """
    return Store(path)
