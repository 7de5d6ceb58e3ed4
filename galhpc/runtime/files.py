"""Files written whole or not at all, the cleanup of dead writers' leftovers, and the one disk-full check.

`atomic_path(final)` yields a temporary path beside `final`, named
``.<name>.tmp.<host>.<pid>``; on success the file and its directory are fsynced and the
temporary is renamed over `final` (`os.replace`, atomic on POSIX); on any exception it is
removed.  So a reader never sees a half-written file under its final name, and a job
killed at any moment leaves at most a temporary that `remove_stale_temps` recognises:
its writer (host, pid) is gone.

`is_disk_full` is the one test of whether an error says the disk (or quota) is full;
`disk_full_error` the one error raised for it.  HDF5 files are opened and written through
`galhpc.formats.hdf5` (`open_h5_readonly`, `H5Output`), which builds on these.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from galhpc.runtime.errors import GalhpcError
from galhpc.runtime.world import SLURM_LIVE_STATES, slurm_job_state

log = logging.getLogger("galhpc.runtime.files")

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp\.(?P<host>.+)\.(?P<pid>\d+)$")
STALE_AFTER_S = 24 * 3600.0  # other hosts' temps older than this count as abandoned


def _host() -> str:
    return socket.gethostname().replace("/", "_")


def temp_path(final: str | Path) -> Path:
    """The temporary name this process writes `final` under: ``.<name>.tmp.<host>.<pid>`` beside it.

    Parameters
    ----------
    final : str or Path
        The file to be written.

    Returns
    -------
    Path
        In `final`'s directory.
    """
    final = Path(final)
    return final.with_name(f".{final.name}.tmp.{_host()}.{os.getpid()}")


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or, where the file system allows, a directory's) data to disk.

    Parameters
    ----------
    path : str or Path
        A file or directory.

    Raises
    ------
    OSError
        If it cannot be opened or flushed.
    """
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

    Parameters
    ----------
    tmp : str or Path
        The finished, closed temporary.
    final : str or Path
        The name it gets, in the same directory.
    fsync : bool
        Flush the file before and its directory after the rename.

    Returns
    -------
    Path
        `final`.
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
    Whatever the block raises, a KeyboardInterrupt (SIGINT) or SystemExit included; the
    temporary is removed and `final` is left as it was.
    """
    final = Path(final)
    tmp = temp_path(final)
    try:
        yield tmp
        publish(tmp, final, fsync=fsync)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err) and getattr(err, "filename", None) != str(final):
            raise disk_full_error(final) from err
        raise


@contextlib.contextmanager
def atomic_open(final: str | Path, mode: str = "w", *, fsync: bool = True, **kwargs: Any) -> Iterator[IO[Any]]:
    """`open(temp, mode)` for writing `final` atomically (see `atomic_path`); ``mode`` "w" or "wb".

    Parameters
    ----------
    final : str or Path
        The file to create or replace.
    mode : str
        ``"w"`` (text) or ``"wb"`` (bytes).
    fsync : bool
        As for `atomic_path`.
    **kwargs
        For `open` (``encoding``, ``newline``).

    Yields
    ------
    file object
        Open on the temporary; renamed over `final` when the block succeeds.
    """
    with atomic_path(final, fsync=fsync) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a small text file whole or not at all; returns `path`.

    Parameters
    ----------
    path : str or Path
        The file to create or replace.
    text : str
        Its whole content.

    Returns
    -------
    Path
        `path`.
    """
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` says the disk (or the quota) is full.

    Parameters
    ----------
    err : BaseException
        Any error: an `OSError` (its errno ENOSPC or EDQUOT), or one of HDF5, h5py or torch
        whose text says so (h5py reports failed flushes as RuntimeError).

    Returns
    -------
    bool
    """
    if getattr(err, "errno", None) in DISK_FULL_ERRNOS:
        return True
    text = str(err)
    return "No space left" in text or "errno = 28" in text or "Disk quota exceeded" in text


def disk_full_error(path: str | Path) -> OSError:
    """The one error for a full disk: ``OSError(ENOSPC)`` naming `path` (the final file, not a temporary).

    Parameters
    ----------
    path : str or Path
        The file that could not be written.

    Returns
    -------
    OSError
        errno ENOSPC, ``filename`` `path`.
    """
    return OSError(errno.ENOSPC, "no space left on device", str(path))


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs.

    A killed process its parent has not yet reaped (a zombie, e.g. an MPI rank whose mpirun was killed with it)
    has stopped running.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (not Linux), or gone meanwhile
        return True
    return state not in ("Z", "X")


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


class OutputInUseError(GalhpcError, OSError):
    """Another live run holds the output (`OutputLock`).

    An `OSError` (errno EBUSY, ``filename`` the output) whose one-line text names the
    output and the holder.
    """

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}" if self.filename is not None else str(self.strerror)


@dataclass(frozen=True)
class LockHolder:
    """Who wrote a lock: ``host:pid`` and, inside Slurm, ``slurm_job=ID restart=N``."""

    host: str
    pid: int | None
    job: str | None = None
    restart: int = 0

    @classmethod
    def here(cls) -> LockHolder:
        """The holder for the current process: host and pid, and inside Slurm its job id and restart count.

        Returns
        -------
        LockHolder
        """
        job = os.environ.get("SLURM_JOB_ID")
        restart = os.environ.get("SLURM_RESTART_COUNT", "0")
        return cls(_host(), os.getpid(), job, int(restart) if restart.isdigit() else 0)

    @classmethod
    def parse(cls, text: str) -> LockHolder:
        """Read a holder back from a lock file's text (`str` of a `LockHolder`).

        Parameters
        ----------
        text : str
            ``host:pid`` then optional ``slurm_job=ID restart=N`` fields.

        Returns
        -------
        LockHolder
            ``pid`` None when the text has no number there.
        """
        where, *fields = text.split()
        host, _, pid = where.rpartition(":")
        extra = dict(f.partition("=")[::2] for f in fields)
        restart = extra.get("restart", "0")
        return cls(host, int(pid) if pid.isdigit() else None, extra.get("slurm_job"),
                   int(restart) if restart.isdigit() else 0)

    def __str__(self) -> str:
        job = f" slurm_job={self.job} restart={self.restart}" if self.job else ""
        return f"{self.host}:{self.pid}{job}"


class OutputLock:
    """``<out>.lock``: which run owns an output, taken atomically (``O_EXCL``).

    A run takes it before touching anything of `out` and removes it when done.  The lock
    names its holder (`LockHolder`: ``host:pid``, and the Slurm job and its restart count
    inside one) and is refreshed every `heartbeat_s` while held.  A lock left by a run that
    is gone is taken over (logged with the reason):

    - an earlier run of this Slurm job (a smaller ``SLURM_RESTART_COUNT``: the job was
      requeued, maybe onto other nodes, and its earlier run died with its node);
    - another Slurm job that ``scontrol show job`` says has ended, or no longer knows;
    - this host, and its process no longer runs;
    - a lock not refreshed for `stale_s` (another host with no Slurm to ask, or a pid
      reused by another program).

    Anything else -- another step of the same job run included -- is refused with
    `OutputInUseError` naming the holder and the file.  Take-overs are serialised by a
    second file, ``<out>.lock.takeover`` (``O_EXCL``), so two runs never both take one.

    Parameters
    ----------
    out : str or Path
        The output file (the lock lies beside it).
    heartbeat_s, stale_s : float
        Refresh period of a held lock and the age of an abandoned one, in seconds
        (``GALHPC_LOCK_STALE_S`` overrides the default 600 s).
    """

    def __init__(self, out: str | Path, *, heartbeat_s: float = 60.0, stale_s: float | None = None) -> None:
        self.out = Path(out)
        self.path = self.out.with_name(self.out.name + ".lock")
        self.owner = str(LockHolder.here())
        self.heartbeat_s = heartbeat_s
        self.stale_s = float(os.environ.get("GALHPC_LOCK_STALE_S", 600.0)) if stale_s is None else stale_s
        self.held = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> OutputLock:
        """Take the lock; returns self.

        Returns
        -------
        OutputLock
            This lock, held and refreshed every `heartbeat_s`.

        Raises
        ------
        OutputInUseError
            A live run holds it (or one whose end cannot be told yet: another host,
            refreshed less than `stale_s` ago).
        """
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                judged = self._identity()
                holder = self._holder()
                if holder is None:  # released meanwhile, or its writer has not written its name yet
                    gone = self._empty_gone()
                    if gone is None:
                        time.sleep(0.05)
                        continue
                    holder = ""
                else:
                    gone = self._gone(LockHolder.parse(holder))
                if gone is None:
                    raise OutputInUseError(
                        errno.EBUSY, f"in use by {holder or 'an unknown run'} (lock {self.path}; remove it "
                        "only if that run is gone)", str(self.out)) from None
                self._take_over(holder, gone, judged)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(self.owner + "\n")
            self.held = True
            self._stop.clear()
            self._beat = threading.Thread(target=self._refresh, name="galhpc-output-lock", daemon=True)
            self._beat.start()
            return self
        raise OutputInUseError(errno.EBUSY, f"in use (lock {self.path} keeps changing hands)", str(self.out))

    def _identity(self) -> tuple[int, int, int] | None:
        """The lock file's (device, inode, change time in ns), or None when there is none.

        A lock made after another run removed the judged one differs in its change time
        even where the file system reuses the inode number at once.
        """
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino, st.st_ctime_ns

    def _take_over(self, holder: str, why: str, judged: tuple[int, int, int] | None) -> None:
        """Remove the lock of the gone `holder`, unless another run took it over first.

        `judged` is the `_identity` of the lock file judged gone, read before its text: a
        lock with another identity, or another text, is a new holder's (maybe one not yet
        named: its file is still empty) and stays.
        """
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - guard.stat().st_mtime > 60:  # a take-over killed half-way
                    os.unlink(guard)
            time.sleep(0.05)  # another run is taking over: look again
            return
        try:
            os.close(fd)
            if judged is not None and self._identity() == judged and (self._holder() or "") == holder:
                log.warning("taking over %s from %s: %s", self.path, holder, why)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            os.unlink(guard)

    def _refresh(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)

    def _holder(self) -> str | None:
        try:
            return self.path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _empty_gone(self) -> str | None:
        """Why an empty lock is abandoned (its writer died between creating and naming it), or None."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        return f"empty for {age:.0f} s" if age > 10 else None

    def _gone(self, holder: LockHolder) -> str | None:
        """Why the run `holder` is gone, or None when it may still run."""
        here = LockHolder.here()
        if holder.job and holder.job == here.job and holder.restart < here.restart:
            return f"an earlier run (restart {holder.restart}) of this Slurm job {holder.job}, requeued"
        if holder.job and holder.job != here.job:
            state = slurm_job_state(holder.job)
            if state is not None and state not in SLURM_LIVE_STATES:
                return f"Slurm job {holder.job} is {state or 'no longer known'}"
        if holder.host == here.host and holder.pid is not None:
            if holder.pid == here.pid:
                return None
            if not _pid_alive(holder.pid):
                return f"process {holder.pid} no longer runs"
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "released meanwhile"
        return f"not refreshed for {age:.0f} s" if age > self.stale_s else None

    def release(self) -> None:
        """Stop refreshing and remove the lock if this process holds it."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self.held and self._holder() == self.owner:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.held = False

    def live_holder(self) -> str | None:
        """Who holds this lock now and may still run (``host:pid ...``), or None.

        No lock, or one a run that is gone left (which `acquire` would take over).  Changes nothing.

        Returns
        -------
        str or None
            The holder's ``host:pid [slurm_job=ID restart=N]``.
        """
        holder = self._holder()
        if holder is None or self._gone(LockHolder.parse(holder)) is not None:
            return None
        return holder

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
