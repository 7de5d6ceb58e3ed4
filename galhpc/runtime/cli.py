"""One wrapper for every galhpc command: errors become one line and an exit status.

A command's `main(argv)` parses its arguments and calls a library function inside
`run_cli`; a `GalhpcError` or `OSError` (anywhere below) is printed as
``galhpc-X: error: <one line>`` on stderr with exit status 1 instead of a traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from galhpc.runtime.errors import GalhpcError

EXIT_ERROR = 1
# HDF5's own lock call failed: its message for a refused flock and for a file system
# without locks.  The word "lock" alone is no sign: galhpc's `<out>.lock` names hold it.
_HDF5_LOCK_CALL = re.compile(r"unable to lock file|file locking disabled", re.IGNORECASE)
_HDF5_FILE_NAME = re.compile(r"\bname = '([^']*)'")
PERMISSION_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)

_LOCKING_HINT = ("HDF5 file locking failed (the file system does not support it, or another process holds "
                 "the file): export HDF5_USE_FILE_LOCKING=FALSE")


def describe_error(err: BaseException) -> str:
    """One line naming the problem and, for an OSError, the file.

    An `OSError` is classified by its errno and by which call failed: a full disk
    (ENOSPC), HDF5's file-lock call (ENOLCK, or h5py's "unable to lock file": with the
    ``HDF5_USE_FILE_LOCKING`` hint), a permission problem (EACCES, EPERM, EROFS: the
    file and "permission denied" or "read-only file system"), anything else as
    ``<file>: <reason>``.

    Parameters
    ----------
    err : BaseException
        A `GalhpcError` or `OSError` (anything else is shown as ``Type: message``).

    Returns
    -------
    str
        A single line (newlines of the message are joined with ``; ``).
    """
    if isinstance(err, GalhpcError):
        text = str(err)
    elif isinstance(err, OSError):
        text = str(err)
        where = err.filename if err.filename is not None else ""
        if not where and (named := _HDF5_FILE_NAME.search(text)):  # h5py names the file only in its text
            where = named.group(1)
        if err.errno == errno.ENOSPC:
            text = f"no space left on device: {where}" if where else "no space left on device"
        elif err.errno == errno.ENOLCK or _HDF5_LOCK_CALL.search(text):
            text = f"{where}: {_LOCKING_HINT} ({err.strerror or text})" if where else f"{_LOCKING_HINT} ({text})"
        elif err.errno in PERMISSION_ERRNOS:
            reason = "read-only file system" if err.errno == errno.EROFS else "permission denied"
            text = f"{where}: {reason} (as user {_user()})" if where else f"{reason}: {text}"
        elif err.strerror and where:
            text = f"{where}: {err.strerror}"
    else:
        text = f"{type(err).__name__}: {err}"
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


def run_cli(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's body; a GalhpcError or OSError becomes one line and status 1.

    Parameters
    ----------
    prog : str
        The command's name, the prefix of the error line (e.g. ``"galhpc-encode"``).
    body : callable
        The command's work; returns an exit status (None means 0).

    Returns
    -------
    int
        The body's status, or `EXIT_ERROR` (1) after an error line on stderr.
    """
    try:
        status = body()
    except (GalhpcError, OSError) as err:
        logging.getLogger("galhpc.cli").debug("%s failed", prog, exc_info=True)
        print(f"{prog}: error: {describe_error(err)}", file=sys.stderr)
        return EXIT_ERROR
    return 0 if status is None else int(status)


class DeprecatedAlias(argparse.Action):
    """An old flag spelling kept for one release: stores into the new flag's dest, warns.

    Add it with ``help=argparse.SUPPRESS`` and ``dest`` of the new flag, and
    ``new=`` the new spelling.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        """Store `values` into the new flag's dest and warn that `option_string` is deprecated.

        Parameters
        ----------
        parser : argparse.ArgumentParser
            The parser (its prog prefixes the warning).
        namespace : argparse.Namespace
            Where the value is stored, as ``namespace.<dest>``.
        values : Any
            The converted argument value(s).
        option_string : str, optional
            The old spelling that was used.
        """
        logging.getLogger("galhpc.cli").warning("%s is deprecated, use %s (the old spelling goes in the next release)",
                                                option_string, self.new)
        print(f"{parser.prog}: warning: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs: Any) -> None:
    """Accept `old` as a hidden, deprecated spelling of the flag `new` (same `dest`).

    Using `old` stores into `dest` and warns on stderr and in the log (`DeprecatedAlias`).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The command's parser (the alias is added to it, hidden from --help).
    old : str
        The deprecated option string, e.g. ``"--n-samples"``.
    new : str
        The current spelling, named in the warning.
    dest : str
        The new flag's destination attribute.
    **kwargs
        Further `add_argument` keywords (type, nargs, ...), as the new flag has them.
    """
    parser.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, help=argparse.SUPPRESS, **kwargs)
