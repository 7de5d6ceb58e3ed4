"""HDF5 opened the one way galhpc opens it: read-only without file locks, written safely on a full disk.

`open_h5_readonly` opens a store, catalogue or table for reading without HDF5 file locks,
so readers do not fail on file systems without locking (Lustre, GPFS, NFS) nor block one
another; a file this process already holds open with locks (HDF5 refuses mixed flags on
one file) is opened the way it is already open.  `H5Output` creates an HDF5 file for
writing through a Python file object that never lets a write failure reach HDF5: on a
full disk HDF5 would otherwise be left half-closed and crash the process (a segmentation
fault in its dataset close); the failure is raised instead as one `OSError` naming the
file.  Writers write private temporaries (`galhpc.runtime.files.atomic_path`), so they take
no HDF5 file lock either.

`read_rows_any_order` is the one "rows in any order -> sorted unique read -> inverse"
step of every reader that reads chosen rows (`galhpc.io.store.Store`,
`galhpc.io.catalog.Catalog`): HDF5 point selections must be increasing, and a row asked
for twice is read once.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from galhpc.runtime.files import disk_full_error, is_disk_full

READ_BLOCK_ROWS = 4096  # rows per h5py point selection: larger selections grow slow


def open_h5_readonly(path: str | Path) -> h5py.File:
    """Open an HDF5 file for reading, without HDF5 file locks.

    Parameters
    ----------
    path : str or Path
        A store, catalogue master or shard, or table.

    Returns
    -------
    h5py.File
        Opened with mode "r" and ``locking=False`` (with the locks it already holds when
        this process has the file open with them); use it as a context manager.

    Raises
    ------
    FileNotFoundError, OSError
        From h5py: a missing or non-HDF5 file (the message names the path).
    """
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as err:
        if "locking flag" not in str(err):
            raise
        return h5py.File(path, "r")


def read_sorted_rows(dataset: h5py.Dataset, rows: np.ndarray, block: int = READ_BLOCK_ROWS) -> np.ndarray:
    """``dataset[rows]`` for sorted, unique `rows`, read `block` rows per h5py selection.

    Parameters
    ----------
    dataset : h5py.Dataset
        Shape (N, ...).
    rows : numpy.ndarray
        Shape (n,) int, increasing, in [0, N).
    block : int
        Rows per point selection (h5py's point selections slow down as they grow).

    Returns
    -------
    numpy.ndarray
        Shape (n, ...) of the dataset's dtype.
    """
    rows = np.asarray(rows, np.int64)
    if len(rows) == 0:
        return np.empty((0, *dataset.shape[1:]), dataset.dtype)
    if len(rows) == dataset.shape[0]:
        return dataset[...]
    return np.concatenate([dataset[rows[i:i + block]] for i in range(0, len(rows), block)])


def read_rows_any_order(read_sorted: Callable[[np.ndarray], np.ndarray],
                        rows: Sequence[int] | np.ndarray) -> np.ndarray:
    """Rows in any order, repeats allowed: read each once in increasing order, return them as asked.

    Parameters
    ----------
    read_sorted : callable
        ``read_sorted(unique)`` -> the values (len(unique), ...) of the sorted, unique row
        indices `unique` (int64).
    rows : array_like of int
        Shape (n,): the rows wanted, in any order.

    Returns
    -------
    numpy.ndarray
        Shape (n, ...): row i holds the values of ``rows[i]``.
    """
    rows = np.asarray(rows, np.int64)
    unique, inverse = np.unique(rows, return_inverse=True)
    values = read_sorted(unique)
    if len(unique) == len(rows) and (rows[1:] > rows[:-1]).all():
        return values  # asked for in increasing order, without repeats
    return values[inverse]


def read_rows(dataset: h5py.Dataset, rows: Sequence[int] | np.ndarray) -> np.ndarray:
    """``dataset[rows]`` for `rows` in any order, repeats allowed (`read_rows_any_order`).

    Parameters
    ----------
    dataset : h5py.Dataset
        Shape (N, ...).
    rows : array_like of int
        Shape (n,), each in [0, N).

    Returns
    -------
    numpy.ndarray
        Shape (n, ...) of the dataset's dtype, in the order asked for.
    """
    return read_rows_any_order(lambda unique: read_sorted_rows(dataset, unique), rows)


class _GuardedRaw(io.RawIOBase):
    """A file for h5py's file-object driver: the first failed write is kept, not handed to HDF5.

    After it, writes and truncations are skipped (reported as done), so HDF5 finishes and
    closes cleanly; `H5Output.close` then raises the kept error.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.error: OSError | None = None
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self._fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def readinto(self, buffer: Any) -> int:
        return os.readv(self._fd, [buffer])

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size, done = len(view), 0
        while self.error is None and done < size:
            try:
                done += os.write(self._fd, view[done:])
            except OSError as err:
                self.error = err
        if done < size:
            os.lseek(self._fd, size - done, os.SEEK_CUR)
        return size

    def truncate(self, size: int | None = None) -> int:
        size = self.tell() if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as err:
                self.error = err
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class H5Output:
    """A new HDF5 file being written (usually a temporary of `atomic_path`), safe on a full disk.

    Parameters
    ----------
    path : str or Path
        The file to create (truncated if it exists).
    **kwargs
        For `h5py.File` (``libver``, ``rdcc_nbytes``, ...).

    Attributes
    ----------
    file : h5py.File
        Opened with mode "w" through a guarded file object (`_GuardedRaw`).
    """

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        self.path = Path(path)
        self._raw = _GuardedRaw(self.path)
        try:
            self.file = h5py.File(self._raw, "w", **kwargs)
        except BaseException:  # an interrupt included: the file just created goes too
            self._raw.close()
            self.path.unlink(missing_ok=True)
            raise

    def check(self) -> None:
        """Raise the kept write failure now (e.g. after each batch), if there is one.

        Raises
        ------
        OSError
            ENOSPC as `disk_full_error` (naming `path`), else the failure itself.
        """
        if self._raw.error is not None:
            err = self._raw.error
            raise disk_full_error(self.path) if is_disk_full(err) else OSError(err.errno, err.strerror, str(self.path))

    def close(self) -> None:
        """Close the HDF5 file and the file beneath; raise a kept write failure (see `check`)."""
        try:
            if self.file.id.valid:
                self.file.close()
        finally:
            self._raw.close()
        self.check()

    def abort(self) -> None:
        """Close after a failure without raising (the caller removes the file)."""
        with contextlib.suppress(Exception):
            if self.file.id.valid:
                self.file.close()
        self._raw.close()

    def __enter__(self) -> Any:
        return self.file

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
