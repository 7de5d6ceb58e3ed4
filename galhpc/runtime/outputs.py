"""Check a command's outputs before it reads any input, so no work is lost to a late check.

Every galhpc command calls `check_output` for each file or folder it will write, first
thing: the name's suffix must be one the command writes, the folder must exist (or, for
commands that create it, its nearest existing ancestor) and be writable, and no live run
may hold the output (`galhpc.runtime.files.OutputLock`).  A command that finds out only
after hours of work that ``results/`` does not exist loses those hours.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from galhpc.runtime.errors import GalhpcError
from galhpc.runtime.files import OutputInUseError, OutputLock

HDF5_SUFFIXES = (".h5", ".hdf5")


class OutputError(GalhpcError, ValueError):
    """An output a command cannot write: unknown suffix, missing or unwritable folder."""


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_output(path: str | Path, role: str, *, suffixes: Sequence[str] | None = None, folder: bool = False,
                 create: bool = False, lock: bool = True) -> Path:
    """Refuse an output that cannot be written, in one line naming it.

    Parameters
    ----------
    path : str or Path
        The output file, or folder when `folder`.
    role : str
        The option naming it, e.g. ``"galhpc-rarity --out"``.
    suffixes : sequence of str, optional
        Suffixes (lower case, with the dot) the command writes; None: any.
    folder : bool
        The output is a folder (it may exist; it must then be a writable folder).
    create : bool
        The command creates missing folders above the output: then the nearest existing
        ancestor must be a writable folder; otherwise the output's folder must exist.
    lock : bool
        Refuse an output a live run holds (``<path>.lock``).

    Returns
    -------
    Path
        `path` as a Path, checked to be writable.

    Raises
    ------
    OutputError
        An unknown suffix, a missing folder (unless `create`), a folder that is a file, or
        one this process may not write into.
    OutputInUseError
        A live run holds ``<path>.lock``.
    """
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise OutputError(f"{role} {path}: unknown suffix {path.suffix or '(none)'!r}; use one of "
                          f"{', '.join(suffixes)}")
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"{role} {path}: exists and is not a folder")
    if not folder and path.is_dir():
        raise OutputError(f"{role} {path}: is a folder, not a file name")
    parent = path if folder and path.is_dir() else path.parent
    if create:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    elif not parent.exists():
        raise OutputError(f"{role} {path}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise OutputError(f"{role} {path}: {parent} is not a folder")
    if not _writable(parent):
        raise OutputError(f"{role} {path}: folder {parent} is not writable by this user")
    if lock:
        holder = OutputLock(path).live_holder()
        if holder is not None:
            raise OutputInUseError(errno.EBUSY,
                                   f"in use by {holder} (lock {path}.lock; remove it only if that run is gone)",
                                   str(path))
    return path
