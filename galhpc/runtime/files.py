"""Files written whole or not at all, the cleanup of dead writers' leftovers, and read-only HDF5 opens.

`atomic_path(final)` yields a temporary path beside `final`, named
``.<name>.tmp.<host>.<pid>``; on success the file and its directory are fsynced and the
temporary is renamed over `final` (`os.replace`, atomic on POSIX); on any exception it is
removed.  So a reader never sees a half-written file under its final name, and a job
killed at any moment leaves at most a temporary that `remove_stale_temps` recognises:
its writer (host, pid) is gone.

`open_h5_readonly` opens a store or catalogue for reading without HDF5 file locks, so
readers do not fail on file systems without locking (Lustre, GPFS, NFS) nor block one
another.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp\.(?P<host>.+)\.(?P<pid>\d+)$")
STALE_AFTER_S = 24 * 3600.0  # other hosts' temps older than this count as abandoned


def _host() -> str:
    return socket.gethostname().replace("/", "_")


def temp_path(final: str | Path) -> Path:
    """The temporary name this process writes `final` under: ``.<name>.tmp.<host>.<pid>`` beside it."""
    final = Path(final)
    return final.with_name(f".{final.name}.tmp.{_host()}.{os.getpid()}")


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or, where the file system allows, a directory's) data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system allows fsync on directories
        fsync_path(path)


def publish(tmp: str | Path, final: str | Path, *, fsync: bool = True) -> Path:
    """Rename a finished temporary over `final`, flushing file and directory to disk first/after.

    For writers that cannot use `atomic_path`'s ``with`` block (a file kept open across calls).
    """
    final = Path(final)
    if fsync:
        fsync_path(tmp)
    os.replace(tmp, final)
    if fsync:
        _fsync_dir(final.parent)
    return final


@contextlib.contextmanager
def atomic_path(final: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write `final` to; rename it into place when the block succeeds.

    Parameters
    ----------
    final : str or Path
        The file to create or replace, in an existing directory.
    fsync : bool
        Flush the file and its directory to disk before and after the rename (default).

    Yields
    ------
    Path
        ``.<name>.tmp.<host>.<pid>`` in `final`'s directory.  The block must have closed it.

    Raises
    ------
    Whatever the block raises; the temporary is removed and `final` is left as it was.
    """
    final = Path(final)
    tmp = temp_path(final)
    try:
        yield tmp
        publish(tmp, final, fsync=fsync)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(final: str | Path, mode: str = "w", *, fsync: bool = True, **kwargs: Any) -> Iterator[IO[Any]]:
    """`open(temp, mode)` for writing `final` atomically (see `atomic_path`); ``mode`` "w" or "wb"."""
    with atomic_path(final, fsync=fsync) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a small text file whole or not at all; returns `path`."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temps(directory: str | Path, name: str | None = None, *,
                       max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove temporaries (`atomic_path` names) whose writer is gone; returns what was removed.

    Parameters
    ----------
    directory : str or Path
        Where the temporaries lie.
    name : str, optional
        Only temporaries of this final file name (default: all).
    max_age_s : float
        A temporary written on another host is removed only when older than this (its
        writer's liveness cannot be checked from here); this host's are removed as soon
        as their process no longer runs.

    Returns
    -------
    list of Path
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed, host, now = [], _host(), time.time()
    for path in directory.iterdir():
        match = _TEMP_RE.match(path.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        if match["host"] == host:
            stale = int(match["pid"]) != os.getpid() and not _pid_alive(int(match["pid"]))
        else:
            try:
                stale = now - path.stat().st_mtime > max_age_s
            except FileNotFoundError:
                continue
        if stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path)
    return removed


def open_h5_readonly(path: str | Path) -> Any:
    """Open a store or catalogue for reading, without HDF5 file locks.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    h5py.File
        Opened with mode "r" and ``locking=False``; use it as a context manager.

    Raises
    ------
    FileNotFoundError, OSError
        From h5py: a missing or non-HDF5 file (the message names the path).
    """
    import h5py

    return h5py.File(path, "r", locking=False)
