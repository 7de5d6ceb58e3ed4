"""Process-level helpers used at the edges: logging, progress bars, devices, threads, the start of an MPI rank."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from galhpc.runtime.world import World, configure_threads, mpi_world

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def setup_logging(rank: int = 0, level: str | int = "INFO") -> logging.Logger:
    """Log to stderr with the rank in every line; ranks > 0 log warnings only."""
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


def progress(iterable: Iterable[T] | None = None, rank: int = 0, **kwargs: Any):
    """A tqdm bar shown on rank 0 only; GALHPC_PROGRESS=0 hides it (e.g. in tests).

    Iterate over it, or call `update(n)` on it when `iterable` is None.
    """
    hidden = rank != 0 or os.environ.get("GALHPC_PROGRESS") == "0"
    try:
        from tqdm.auto import tqdm
    except ImportError:  # optional: no bar without tqdm
        return _NoBar(iterable)
    return tqdm(iterable, disable=hidden, dynamic_ncols=True, **kwargs)


class _NoBar:
    """The part of tqdm's interface galhpc uses, showing nothing (tqdm is not installed)."""

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
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but no CUDA device is visible")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
