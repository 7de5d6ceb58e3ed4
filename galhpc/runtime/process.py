"""Process-level helpers used at the edges: logging, progress, devices, threads, an MPI rank's start.

Progress is shown as a bar on a terminal and as log lines elsewhere.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from galhpc.runtime.world import World, configure_threads, mpi_world

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def setup_logging(rank: int = 0, level: str | int = "INFO") -> logging.Logger:
    """Log to stderr with the rank in every line; ranks > 0 log warnings only.

    Replaces the handlers of the ``galhpc`` logger (calling it again does not duplicate
    lines) and stops propagation to the root logger.

    Parameters
    ----------
    rank : int, optional
        This process's rank, written in every line.
    level : str or int, optional
        Level on rank 0 (e.g. "INFO", "DEBUG" or a logging constant); other ranks get WARNING.

    Returns
    -------
    logging.Logger
        The configured ``galhpc`` logger.
    """
    logger = logging.getLogger("galhpc")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level if rank == 0 else logging.WARNING)
    logger.propagate = False
    return logger


def start_mpi_rank(threads: int | None) -> World:
    """Set up this rank of an MPI command: join the job's World, log with its rank, set torch's threads.

    Parameters
    ----------
    threads : int or None
        torch CPU threads for this rank; None: the node's CPUs shared by its ranks
        (`galhpc.runtime.world.configure_threads`).

    Returns
    -------
    World
        `mpi_world()`: this rank, with MPI.COMM_WORLD as communicator when the job has several.

    Raises
    ------
    LaunchError
        As `mpi_world`: mpi4py missing under a multi-rank launch, or MPI not seeing the
        launcher's ranks.
    """
    world = mpi_world()
    setup_logging(world.rank)
    configure_threads(threads, world)
    return world


LOG_STEP_PERCENT = 10  # away from a terminal: one log line per this much of the total
LOG_EVERY_S = 60.0  # ... or per this many seconds when the total is not known
LOG_MIN_INTERVAL_S = 5.0  # and never more often: a short loop (a quick epoch) logs nothing of its own


def progress(iterable: Iterable[T] | None = None, rank: int = 0, **kwargs: Any):
    """Progress of a long loop, for a person: a tqdm bar on a terminal, log lines in a log file.

    Shown on rank 0 only.  When stderr is a terminal: a tqdm bar.  Otherwise (a batch
    job's output file, where a bar's carriage returns would fill the log with fragments
    glued to the log lines): one INFO line of logger ``galhpc.progress`` per
    `LOG_STEP_PERCENT` % of ``total`` (per `LOG_EVERY_S` seconds without a total), with
    the count, rate and time left, at most one per `LOG_MIN_INTERVAL_S` seconds.
    ``GALHPC_PROGRESS=0`` shows neither (e.g. in tests); ``bar`` or ``log`` chooses one
    whatever stderr is.

    Parameters
    ----------
    iterable : iterable, optional
        Iterate over the result; with None call `update(n)` on it instead.
    rank : int
        This process's rank; ranks > 0 show nothing.
    **kwargs
        tqdm's: ``total``, ``desc``, ``unit``, ``initial`` are used by the log lines too;
        the rest only by the bar.

    Returns
    -------
    tqdm.tqdm or object
        A tqdm bar, or an object with its ``update``, ``set_postfix``, ``close``, context
        manager and iteration.
    """
    mode = os.environ.get("GALHPC_PROGRESS", "")
    if rank != 0 or mode == "0":
        return _NoBar(iterable)
    on_terminal = mode == "bar" or (mode != "log" and sys.stderr is not None and sys.stderr.isatty())
    if not on_terminal:
        return _LogProgress(iterable, **kwargs)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # optional: no bar without tqdm
        return _LogProgress(iterable, **kwargs)
    return tqdm(iterable, dynamic_ncols=True, **kwargs)


class _LogProgress:
    """`progress` away from a terminal: whole log lines at every `LOG_STEP_PERCENT` % of the total."""

    def __init__(self, iterable: Iterable[T] | None = None, *, total: float | None = None, desc: str = "",
                 unit: str = "it", initial: float = 0, **_bar_only: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc or "progress", unit
        self.n = self.initial = initial
        self.postfix = ""
        self.log = logging.getLogger("galhpc.progress")
        self.began = self.last_time = time.monotonic()
        self.last_step = self._step()

    def _step(self) -> int:
        return int(100 * self.n / self.total // LOG_STEP_PERCENT) if self.total else 0

    def __iter__(self):
        for item in self.iterable if self.iterable is not None else ():
            yield item
            self.update(1)

    def __enter__(self) -> _LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.total:
            step = self._step()
            if step > self.last_step and now - self.last_time >= LOG_MIN_INTERVAL_S:
                self.last_step = step
                self._line(now)
        elif now - self.last_time >= LOG_EVERY_S:
            self._line(now)

    def _line(self, now: float) -> None:
        self.last_time = now
        elapsed = now - self.began
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        done = f"{self.n:g}/{self.total:g} {self.unit} ({100 * self.n / self.total:.0f} %)" if self.total \
            else f"{self.n:g} {self.unit}"
        left = f", {(self.total - self.n) / rate:.0f} s left" if self.total and rate > 0 else ""
        self.log.info("%s: %s, %.3g %s/s%s%s", self.desc, done, rate, self.unit, left, self.postfix)

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        items = dict(*args, **kwargs)
        self.postfix = " [" + ", ".join(f"{k}={v}" for k, v in items.items()) + "]" if items else ""

    def close(self) -> None:
        pass


class _NoBar:
    """The part of tqdm's interface galhpc uses, showing nothing (ranks > 0, ``GALHPC_PROGRESS=0``)."""

    def __init__(self, iterable: Iterable[T] | None) -> None:
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable if self.iterable is not None else ())

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The torch device a process runs on: "auto" takes CUDA when visible, else the CPU.

    Parameters
    ----------
    name : str, optional
        "auto", "cuda", "cpu" or any torch device string (e.g. "mps", "cuda:1").
    local_rank : int, optional
        This process's rank on its node; with "cuda" (or "auto" on a GPU node) it picks
        GPU ``local_rank % device_count`` so that the node's ranks share its GPUs.

    Returns
    -------
    torch.device
        The device.

    Raises
    ------
    RuntimeError
        If "cuda" is asked for and no CUDA device is visible.
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but no CUDA device is visible")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op CPU threads, or leave torch's default.

    Parameters
    ----------
    threads : int or None
        Threads for torch.set_num_threads; None or 0 leaves the current setting.
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
