"""Who am I in the job: one `World`, built from one table per launcher.

`detect_world()` reads the launcher's environment variables (rank, size, local rank);
`mpi_world()` also joins MPI.COMM_WORLD when the job has several ranks, and refuses a
launch whose launcher counts N > 1 tasks while MPI sees one rank (N copies of the same
job, each believing it is rank 0 of 1).  Collectives (barrier, bcast, allgather,
allreduce) are the identity on one process; mpi4py is imported only for a multi-rank
`mpi_world()`.

Launcher table, first match wins (a `torchrun` or `mpirun` inside an sbatch script also
inherits the batch step's SLURM_PROCID=0, so launcher-specific variables come first and
Slurm's count is believed only under `srun`, which alone sets SLURM_STEP_NUM_TASKS):

==============  ==========================  ================================  =========================
launcher        rank                        size                              local rank
==============  ==========================  ================================  =========================
torchrun        RANK                        WORLD_SIZE                        LOCAL_RANK
horovodrun      HOROVOD_RANK                HOROVOD_SIZE                      HOROVOD_LOCAL_RANK
openmpi         OMPI_COMM_WORLD_RANK        OMPI_COMM_WORLD_SIZE              OMPI_COMM_WORLD_LOCAL_RANK
pmix            PMIX_RANK                   PMIX_SIZE | SLURM_STEP_NUM_TASKS  PMIX_LOCAL_RANK | SLURM_LOCALID
pmi             PMI_RANK                    PMI_SIZE                          MPI_LOCALRANKID
submitit        SUBMITIT_LOCAL_GLOBALID     SUBMITIT_LOCAL_NTASKS             SUBMITIT_LOCAL_LOCALID
slurm           SLURM_PROCID                SLURM_STEP_NUM_TASKS              SLURM_LOCALID
==============  ==========================  ================================  =========================

(submitit on Slurm runs its tasks with srun: the slurm row.)
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from galhpc.runtime.errors import LaunchError


@dataclass(frozen=True)
class LauncherTable:
    """The environment variables one launcher sets for each process it starts."""

    name: str
    rank: str
    size: tuple[str, ...]  # first one present wins
    local_rank: tuple[str, ...]
    mpi: bool  # the ranks are MPI.COMM_WORLD (mpi4py sees them all)
    job_id: str | None = None  # variable holding the job's id (for the rendezvous port)


LAUNCHERS: tuple[LauncherTable, ...] = (
    LauncherTable("torchrun", "RANK", ("WORLD_SIZE",), ("LOCAL_RANK",), mpi=False),
    LauncherTable("horovodrun", "HOROVOD_RANK", ("HOROVOD_SIZE",), ("HOROVOD_LOCAL_RANK",), mpi=False),
    LauncherTable("openmpi", "OMPI_COMM_WORLD_RANK", ("OMPI_COMM_WORLD_SIZE",), ("OMPI_COMM_WORLD_LOCAL_RANK",),
                  mpi=True),
    LauncherTable("pmix", "PMIX_RANK", ("PMIX_SIZE", "SLURM_STEP_NUM_TASKS"), ("PMIX_LOCAL_RANK", "SLURM_LOCALID"),
                  mpi=True, job_id="SLURM_JOB_ID"),
    LauncherTable("pmi", "PMI_RANK", ("PMI_SIZE",), ("MPI_LOCALRANKID",), mpi=True),
    LauncherTable("submitit", "SUBMITIT_LOCAL_GLOBALID", ("SUBMITIT_LOCAL_NTASKS",), ("SUBMITIT_LOCAL_LOCALID",),
                  mpi=False, job_id="SUBMITIT_LOCAL_JOB_ID"),
    LauncherTable("slurm", "SLURM_PROCID", ("SLURM_STEP_NUM_TASKS",), ("SLURM_LOCALID",), mpi=False,
                  job_id="SLURM_JOB_ID"),
)

# Variables giving the number of this job's ranks on this node, first present wins.
_LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_LOCAL_SIZE",
                    "SLURM_NTASKS_PER_NODE")


def _int_env(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise LaunchError(f"environment variable {name}={env[name]!r} is not an integer") from None


class Collective(Protocol):
    """What a model is handed to agree with the other data-parallel ranks (tensors in place or returned)."""

    def allreduce_sum(self, tensor: Any) -> Any: ...

    def broadcast(self, tensor: Any) -> Any: ...


class World:
    """This process's place in the job and the collectives between its ranks.

    Parameters
    ----------
    rank, size, local_rank : int
        Rank in the job, number of ranks, rank on this node.
    launcher : str
        Name of the launcher table that matched (``"none"``: a plain process).
    comm : mpi4py communicator, optional
        The ranks' communicator; without one, collectives need ``size == 1`` and are the identity.
    mpi : bool
        The launcher's ranks are MPI ranks (mpirun, srun with PMI/PMIx).
    job_id : str, optional
        The launcher's job id (Slurm, submitit), for `rendezvous_port`.
    """

    poll_seconds = 0.01

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0, launcher: str = "none", *,
                 comm: Any = None, mpi: bool = False, job_id: str | None = None) -> None:
        if not 0 <= rank < size:
            raise LaunchError(f"{launcher}: rank {rank} outside world size {size}")
        self.rank, self.size, self.local_rank, self.launcher = rank, size, local_rank, launcher
        self.comm, self.mpi, self.job_id = comm, mpi, job_id
        self.node = socket.gethostname()

    @property
    def world_size(self) -> int:
        return self.size

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, World):
            return NotImplemented
        return (self.rank, self.size, self.local_rank, self.launcher) == (
            other.rank, other.size, other.local_rank, other.launcher)

    def __repr__(self) -> str:
        return (f"World(rank={self.rank}, size={self.size}, local_rank={self.local_rank}, "
                f"launcher={self.launcher!r}, node={self.node!r})")

    def _comm(self) -> Any:
        """The communicator, or None on one process; a multi-rank World without one is an error."""
        if self.comm is None and self.size > 1:
            raise LaunchError(f"rank {self.rank} of {self.size} ({self.launcher}) has no communicator: "
                              "build the World with galhpc.runtime.world.mpi_world()")
        return self.comm

    def _arrive(self, comm: Any) -> None:
        """Wait for every rank in a sleeping poll rather than MPI's busy wait, so ranks done
        early do not take CPU from those still working when cores are shared.
        """
        request = comm.Ibarrier()
        while not request.Test():
            time.sleep(self.poll_seconds)

    def barrier(self) -> None:
        """Wait until every rank arrives (no-op on one process)."""
        comm = self._comm()
        if comm is not None:
            self._arrive(comm)

    def bcast(self, value: Any) -> Any:
        """Rank 0's `value` (any picklable object) on every rank."""
        comm = self._comm()
        if comm is None:
            return value
        self._arrive(comm)
        return comm.bcast(value, root=0)

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        comm = self._comm()
        if comm is None:
            return [value]
        self._arrive(comm)
        return comm.allgather(value)

    def allreduce(self, value: Any) -> Any:
        """Sum over ranks of a number, numpy array or torch tensor (same shape on every rank).

        Returns
        -------
        The sum, of the type of `value` (a torch tensor keeps its device and dtype).
        """
        comm = self._comm()
        if comm is None:
            return value
        self._arrive(comm)
        parts = comm.allgather(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
        total = sum(parts[1:], parts[0])
        if hasattr(value, "detach"):
            import torch

            return torch.as_tensor(total, dtype=value.dtype, device=value.device)
        return total

    # the Collective interface, for models handed a World
    def allreduce_sum(self, tensor: Any) -> Any:
        return self.allreduce(tensor)

    def broadcast(self, tensor: Any) -> Any:
        comm = self._comm()
        if comm is None:
            return tensor
        value = self.bcast(tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else tensor)
        if hasattr(tensor, "detach"):
            import torch

            return torch.as_tensor(value, dtype=tensor.dtype, device=tensor.device)
        return value


LOCAL = World()  # one process: every collective is the identity


def detect_world(env: Mapping[str, str] | None = None) -> World:
    """Rank, size and local rank from the launcher's environment (no communicator).

    Parameters
    ----------
    env : mapping, optional
        Environment variables (default ``os.environ``).

    Returns
    -------
    World
        ``launcher`` names the table row that matched; ``"none"`` and size 1 for a plain process.

    Raises
    ------
    LaunchError
        A variable that is not an integer, or a rank outside the size.
    """
    env = os.environ if env is None else env
    for table in LAUNCHERS:
        size_var = next((v for v in table.size if v in env), None)
        if table.rank not in env:
            continue
        if size_var is None and table.name == "slurm" and env.get("SLURM_PROCID", "0") != "0" and "SLURM_NTASKS" in env:
            size_var = "SLURM_NTASKS"  # a rank > 0 was started by srun even if the step count is missing
        if size_var is None:
            continue
        local_var = next((v for v in table.local_rank if v in env), None)
        return World(_int_env(env, table.rank), _int_env(env, size_var),
                     _int_env(env, local_var) if local_var else 0, table.name, mpi=table.mpi,
                     job_id=env.get(table.job_id) if table.job_id else None)
    return World(job_id=env.get("SLURM_JOB_ID"))


def mpi_world(env: Mapping[str, str] | None = None) -> World:
    """The job's World with MPI.COMM_WORLD as communicator; one process: no mpi4py import.

    Raises
    ------
    LaunchError
        mpi4py missing under a multi-rank launch, or MPI.COMM_WORLD not holding the
        launcher's ranks (e.g. ``srun`` without ``--mpi=pmix``, or PMI variables with no
        MPI launcher): one line naming the fix.
    """
    launch = detect_world(env)
    if launch.size == 1:
        return launch
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise LaunchError(f"{launch.launcher} started {launch.size} tasks but mpi4py is not importable ({err}): "
                          "install it against the MPI that runs the job (`pip install mpi4py`)") from err
    comm = MPI.COMM_WORLD
    if comm.Get_size() != launch.size:
        raise LaunchError(
            f"{launch.launcher} started {launch.size} tasks but MPI sees {comm.Get_size()} rank(s), so each task "
            f"would redo the whole job: launch with `mpirun -n {launch.size}` or `srun --mpi=pmix` "
            "(`srun --mpi=list` shows what Slurm offers)")
    return World(comm.Get_rank(), comm.Get_size(), launch.local_rank, launch.launcher, comm=comm, mpi=True,
                 job_id=launch.job_id)


def rendezvous_port(job_id: str | int, step_id: str | int | None = None) -> int:
    """The TCP port every rank of a job step agrees on without talking.

    ``20000 + (job + 7919 * step) mod 20000``: step 0 (or none) gives ``20000 + job mod
    20000``; two steps of one job running at once on one node get different ports.  Array
    jobs ('1234_5') use the array's id.

    Parameters
    ----------
    job_id : str or int
        ``SLURM_JOB_ID`` (or another launcher's job id).
    step_id : str or int, optional
        ``SLURM_STEP_ID``; non-numeric ids (``batch``, ``extern``) count as 0.

    Returns
    -------
    int
        A port in [20000, 40000).
    """
    step = int(step_id) if step_id is not None and str(step_id).isdigit() else 0
    return 20000 + (int(str(job_id).split("_")[0]) + 7919 * step) % 20000


# Slurm job states in which the job's processes may still run (or will run again).
SLURM_LIVE_STATES = frozenset({"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "REQUEUED",
                               "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"})


def slurm_job_state(job_id: str, timeout_s: float = 30.0) -> str | None:
    """Slurm's state of job `job_id`, as ``scontrol show job`` gives it.

    Parameters
    ----------
    job_id : str
        A Slurm job id (``SLURM_JOB_ID``).
    timeout_s : float
        How long to wait for the controller, in seconds.

    Returns
    -------
    str or None
        The job's state (``"RUNNING"``, ``"COMPLETED"``, ``"NODE_FAIL"``, ...); ``""`` when
        the controller no longer knows the job (ended more than ``MinJobAge`` ago); None
        when Slurm cannot be asked (no ``scontrol``, no controller, a timeout).
    """
    try:
        done = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True,
                              timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return "" if "Invalid job id" in done.stderr else None
    match = re.search(r"\bJobState=(\S+)", done.stdout)
    return match.group(1) if match else None


def first_host(nodelist: str) -> str:
    """The first host of a Slurm hostlist: 'gpu[007-010,12],login1' -> 'gpu007'."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match or not match.group(1):
        raise LaunchError(f"cannot parse Slurm node list {nodelist!r}")
    prefix, ranges = match.groups()
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def ranks_on_node(env: Mapping[str, str] | None = None) -> int:
    """This job's ranks on this node, from the launcher's variables (1 when none says)."""
    env = os.environ if env is None else env
    for var in _LOCAL_SIZE_VARS:
        if env.get(var, "").isdigit():
            return max(1, int(env[var]))
    return 1


def cgroup_cpu_limit(root: str | os.PathLike[str] = "/sys/fs/cgroup") -> float | None:
    """CPUs this process's cgroup may use (its CFS quota ÷ period), or None when unlimited.

    Reads cgroup v2 ``cpu.max`` ("max 100000" or "200000 100000"), else v1
    ``cpu/cpu.cfs_quota_us`` and ``cpu/cpu.cfs_period_us`` under `root`.
    """
    root = Path(root)
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
    except OSError:
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not period:
        return None
    return int(quota) / int(period)


def threads_per_rank(env: Mapping[str, str] | None = None, *, affinity: int | None = None,
                     cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup") -> tuple[int, str]:
    """CPU threads for one rank when the user gave none, and why.

    The CPUs this process may run on (``os.sched_getaffinity``), capped by the cgroup's CPU
    quota, are shared by the job's ranks on the node (`ranks_on_node`); under Slurm
    ``SLURM_CPUS_PER_TASK`` (the CPUs allocated to each task) caps it again.  Never below 1,
    so oversubscribed ranks run one thread each instead of fighting over cores.

    Parameters
    ----------
    env : mapping, optional
        Environment variables (default ``os.environ``).
    affinity : int, optional
        CPUs in the affinity mask (default: ``len(os.sched_getaffinity(0))``).
    cgroup_root : path, optional
        Where the cgroup's CPU controller files are.

    Returns
    -------
    (int, str)
        Threads per rank (>= 1) and the one-line reason, for the log.
    """
    env = os.environ if env is None else env
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cpus, why = float(affinity), [f"{affinity} CPU(s) in the affinity mask"]
    quota = cgroup_cpu_limit(cgroup_root)
    if quota is not None and quota < cpus:
        cpus = quota
        why.append(f"cgroup quota {quota:g} CPU(s)")
    ranks = ranks_on_node(env)
    threads = max(1, int(cpus) // ranks)
    why.append(f"{ranks} rank(s) on this node")
    per_task = env.get("SLURM_CPUS_PER_TASK", "")
    if per_task.isdigit() and int(per_task) < threads:
        threads = max(1, int(per_task))
        why.append(f"SLURM_CPUS_PER_TASK={per_task}")
    return threads, ", ".join(why)


def configure_threads(threads: int | None, world: World | None = None, *, asked_by: str = "--threads") -> int:
    """Set torch's CPU threads for this rank: `threads`, or `threads_per_rank` when None; logged.

    Parameters
    ----------
    threads : int or None
        Threads the user asked for.
    world : World, optional
        This rank (for the log line); logged on rank 0 only.
    asked_by : str
        Where `threads` came from, for the log line: a flag (``--threads``) or a config
        key (``train.threads``).

    Returns
    -------
    int
        The threads set.
    """
    import torch

    if threads:
        why = f"as asked ({asked_by})"
    else:
        threads, why = threads_per_rank()
    torch.set_num_threads(threads)
    if world is None or world.is_root:
        logging.getLogger("galhpc.runtime.world").info("torch CPU threads per rank: %d (%s)", threads, why)
    return threads
