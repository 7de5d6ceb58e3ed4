"""Who runs the catalogue job: one process, or the ranks of an MPI launch.

Catalogue jobs are embarrassingly parallel, so ranks only meet a few times (agree on
the work list, share a fitted GMM, report success).  `World` is that small interface;
mpi4py is imported only when the process was started by an MPI launcher, so plain
`python`/`galhpc-encode` runs as one rank without touching MPI.
"""

from __future__ import annotations

import os
import time
from typing import Any

# Environment variables that MPI launchers (OpenMPI, MPICH/Hydra, PMIx, Slurm srun) set.
_LAUNCHER_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


class World:
    """A single process: every collective is the identity."""

    rank: int = 0
    size: int = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def bcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        return value

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        return [value]


class MPIWorld(World):
    """The ranks of MPI.COMM_WORLD (mpi4py).

    Before each collective, ranks wait for each other in a sleeping poll instead of MPI's
    busy wait, so a rank that is done early (or waits for rank 0's GMM fit) does not take
    CPU from the ranks still working when cores are shared.
    """

    poll_seconds = 0.01

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    def _arrive(self) -> None:
        request = self.comm.Ibarrier()
        while not request.Test():
            time.sleep(self.poll_seconds)

    def bcast(self, value: Any) -> Any:
        self._arrive()
        return self.comm.bcast(value, root=0)

    def allgather(self, value: Any) -> list[Any]:
        self._arrive()
        return self.comm.allgather(value)


def launched_by_mpi(environ: dict[str, str] | None = None) -> bool:
    """True when an MPI launcher started this process (so mpi4py must be used)."""
    env = os.environ if environ is None else environ
    return any(var in env for var in _LAUNCHER_SIZE_VARS)


def current_world() -> World:
    """MPI.COMM_WORLD under an MPI launcher, else a one-rank world (no mpi4py import)."""
    if not launched_by_mpi():
        return World()
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise RuntimeError(
            "this process was started by an MPI launcher but mpi4py is not importable "
            f"({err}); install it with `pip install mpi4py` against the MPI that runs the job"
        ) from err
    return MPIWorld(MPI.COMM_WORLD)


def local_rank(environ: dict[str, str] | None = None) -> int:
    """This process's rank on its node (for picking a GPU), from the launcher's environment."""
    env = os.environ if environ is None else environ
    for var in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMIX_LOCAL_RANK", "SLURM_LOCALID"):
        if var in env:
            return int(env[var])
    return 0


def threads_per_rank(environ: dict[str, str] | None = None) -> int:
    """CPU threads for torch when the user gave none: the node's cores shared by its ranks."""
    env = os.environ if environ is None else environ
    ranks_here = 1
    for var in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMIX_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        if env.get(var, "").isdigit():
            ranks_here = int(env[var])
            break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, ranks_here))
