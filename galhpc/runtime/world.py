"""Who am I in the job, and how the ranks agree: one `World` (the process group), one table per launcher.

`detect_world()` reads the launcher's environment variables (rank, size, local rank);
`mpi_world()` also joins MPI.COMM_WORLD when the job has several ranks, and refuses a
launch whose launcher counts N > 1 tasks while MPI sees one rank (N copies of the same
job, each believing it is rank 0 of 1); the training backends build theirs over
torch.distributed or Horovod (`galhpc.train.distributed`).  Whatever the communication,
a `World` speaks one vocabulary: ``rank``, ``size``, ``local_rank``, ``is_root``,
``barrier()``, ``broadcast_object(obj, root=0)``, ``allgather_object(obj)``,
``allreduce_sum(value)`` and ``root_first()``; all are the identity on one process, and
mpi4py, torch.distributed and Horovod are imported only by the code that builds them.

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

import contextlib
import logging
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class World:
    """The process group: this process's place in the job and the collectives between its ranks.

    Training (through its backend) and the catalogue jobs both hold one.  The communication
    behind it is chosen once, when it is built: none (one process, every collective is the
    identity), mpi4py (`MpiComm`, `mpi_world`), torch.distributed (`TorchComm`, built by the
    torch backend) or Horovod (`HorovodComm`, built by the horovod backend).

    Parameters
    ----------
    rank, size, local_rank : int
        Rank in the job, number of ranks, rank on this node.
    launcher : str
        Name of the launcher table that matched (``"none"``: a plain process).
    comm : MpiComm, TorchComm or HorovodComm, optional
        The communication between the ranks; without one, collectives need ``size == 1``.
    mpi : bool
        The launcher's ranks are MPI ranks (mpirun, srun with PMI/PMIx).
    job_id : str, optional
        The launcher's job id (Slurm, submitit), for `rendezvous_port`.

    Raises
    ------
    LaunchError
        A rank outside ``[0, size)``.
    """

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0, launcher: str = "none", *,
                 comm: Any = None, mpi: bool = False, job_id: str | None = None) -> None:
        if not 0 <= rank < size:
            raise LaunchError(f"{launcher}: rank {rank} outside world size {size}")
        self.rank, self.size, self.local_rank, self.launcher = rank, size, local_rank, launcher
        self.comm, self.mpi, self.job_id = comm, mpi, job_id
        self.node = socket.gethostname()

    @property
    def is_root(self) -> bool:
        """Whether this is rank 0.

        Returns
        -------
        bool
        """
        return self.rank == 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, World):
            return NotImplemented
        return (self.rank, self.size, self.local_rank, self.launcher) == (
            other.rank, other.size, other.local_rank, other.launcher)

    def __hash__(self) -> int:
        return hash((self.rank, self.size, self.local_rank, self.launcher))

    def __repr__(self) -> str:
        return (f"World(rank={self.rank}, size={self.size}, local_rank={self.local_rank}, "
                f"launcher={self.launcher!r}, node={self.node!r})")

    def _comm(self) -> Any:
        """The communication, or None on one process; a multi-rank World without one is an error."""
        if self.size == 1:
            return None
        if self.comm is None:
            raise LaunchError(f"rank {self.rank} of {self.size} ({self.launcher}) has no communicator: "
                              "build the World with galhpc.runtime.world.mpi_world() or a training backend")
        return self.comm

    def barrier(self) -> None:
        """Wait until every rank arrives (no-op on one process).

        Returns
        -------
        None
        """
        comm = self._comm()
        if comm is not None:
            comm.barrier()

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Rank `root`'s `obj` on every rank.

        Parameters
        ----------
        obj : picklable object
            The value to send (read on rank `root` only; the others may pass None).
        root : int
            The rank whose value every rank receives.

        Returns
        -------
        object
            Rank `root`'s `obj` (a copy on the other ranks; `obj` itself on one process).
        """
        comm = self._comm()
        return obj if comm is None else comm.broadcast_object(obj, root)

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank.

        Parameters
        ----------
        obj : picklable object
            This rank's value.

        Returns
        -------
        list
            ``size`` values, the one of rank r at index r.
        """
        comm = self._comm()
        return [obj] if comm is None else comm.allgather_object(obj)

    def allreduce_sum(self, value: Any) -> Any:
        """Sum over ranks of a number, numpy array or torch tensor (same shape and dtype on every rank).

        Parameters
        ----------
        value : int, float, numpy.ndarray or torch.Tensor
            This rank's term.  A tensor on the communication's device may be summed in place:
            pass a copy to keep it.

        Returns
        -------
        int, float, numpy.ndarray or torch.Tensor
            The sum, of the type of `value` (a tensor keeps its device and dtype); `value`
            itself on one process.
        """
        comm = self._comm()
        return value if comm is None else comm.allreduce_sum(value)

    @contextlib.contextmanager
    def root_first(self, error: type[Exception] = LaunchError) -> Iterator[None]:
        """Run the block on rank 0 first, then on the other ranks (which wait for it).

        For work one rank must do before the others can go on: take a lock, prepare an
        output, write a file the others then read.  The usual shape shares rank 0's result::

            with world.root_first():
                made = make() if world.is_root else None
            made = world.broadcast_object(made)

        Parameters
        ----------
        error : exception class
            What the other ranks raise when the block failed on rank 0 (message ``"rank 0: ..."``).

        Returns
        -------
        context manager
            Yields None once on every rank.

        Raises
        ------
        error
            On the ranks other than 0, when the block raised on rank 0 (rank 0 re-raises its own).
        """
        if self._comm() is None:
            yield
            return
        if self.is_root:
            try:
                yield
            except Exception as err:
                self.broadcast_object(f"rank 0: {err}")
                raise
            self.broadcast_object(None)
            return
        failed = self.broadcast_object(None)
        if failed is not None:
            raise error(failed)
        yield


LOCAL = World()  # one process: every collective is the identity


class Comm:
    """A World's communication between its ranks; one subclass per library.

    The four collectives are `World`'s, called by it only when it has several ranks, with
    `root` explicit; a subclass supplies them as ``_barrier``, ``_broadcast_object``,
    ``_allgather_object`` and ``_allreduce_sum``.
    """

    def barrier(self) -> None:
        """Wait for every rank.

        Returns
        -------
        None
        """
        self._barrier()

    def broadcast_object(self, obj: Any, root: int) -> Any:
        """`World.broadcast_object` between several ranks.

        Parameters
        ----------
        obj, root
            As in `World.broadcast_object`.

        Returns
        -------
        object
            Rank `root`'s `obj`.
        """
        return self._broadcast_object(obj, root)

    def allgather_object(self, obj: Any) -> list[Any]:
        """`World.allgather_object` between several ranks.

        Parameters
        ----------
        obj : picklable object
            As in `World.allgather_object`.

        Returns
        -------
        list
            One value per rank, in rank order.
        """
        return self._allgather_object(obj)

    def allreduce_sum(self, value: Any) -> Any:
        """`World.allreduce_sum` between several ranks.

        Parameters
        ----------
        value
            As in `World.allreduce_sum`.

        Returns
        -------
        int, float, numpy.ndarray or torch.Tensor
            The sum, of the type of `value`.
        """
        return self._allreduce_sum(value)

    def _barrier(self) -> None:
        raise NotImplementedError

    def _broadcast_object(self, obj: Any, root: int) -> Any:
        raise NotImplementedError

    def _allgather_object(self, obj: Any) -> list[Any]:
        raise NotImplementedError

    def _allreduce_sum(self, value: Any) -> Any:
        raise NotImplementedError


class MpiComm(Comm):
    """A World's communication over an mpi4py communicator (``MPI.COMM_WORLD``).

    Every collective first waits for all ranks in a sleeping poll of ``Ibarrier`` rather than
    MPI's busy wait, so ranks done early do not take CPU from those still working when cores
    are shared.  Sums are gathered on the host and added in rank order.

    Parameters
    ----------
    comm : mpi4py communicator
        Anything with ``Ibarrier``, ``bcast(obj, root=)`` and ``allgather``.
    """

    poll_seconds = 0.01

    def __init__(self, comm: Any) -> None:
        self.comm = comm

    def _arrive(self) -> None:
        request = self.comm.Ibarrier()
        while not request.Test():
            time.sleep(self.poll_seconds)

    def _barrier(self) -> None:
        self._arrive()

    def _broadcast_object(self, obj: Any, root: int) -> Any:
        self._arrive()
        return self.comm.bcast(obj, root=root)

    def _allgather_object(self, obj: Any) -> list[Any]:
        self._arrive()
        return self.comm.allgather(obj)

    def _allreduce_sum(self, value: Any) -> Any:
        parts = self.allgather_object(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
        total = sum(parts[1:], parts[0])
        if hasattr(value, "detach"):
            import torch

            return torch.as_tensor(total, dtype=value.dtype, device=value.device)
        return total


def _as_tensor(value: Any, device: Any) -> Any:
    """`value` (number, numpy array or tensor) as a tensor on `device` (float64 for a float)."""
    import torch

    if torch.is_tensor(value):
        return value if value.device == device else value.to(device)
    if isinstance(value, bool | int):
        return torch.tensor(int(value), dtype=torch.int64, device=device)
    if isinstance(value, float):
        return torch.tensor(value, dtype=torch.float64, device=device)
    return torch.as_tensor(value).to(device)


def _like(value: Any, total: Any) -> Any:
    """The summed tensor `total` as the type of `value` (number, numpy array, or a tensor on its device)."""
    import torch

    if torch.is_tensor(value):
        return total if total.device == value.device else total.to(value.device)
    if isinstance(value, bool | int):
        return int(total.item())
    if isinstance(value, float):
        return float(total.item())
    return total.cpu().numpy()


class TorchComm(Comm):
    """A World's communication over the default torch.distributed process group (gloo or NCCL).

    The collectives are ``barrier``, ``broadcast_object_list``, ``all_gather_object`` and
    ``all_reduce`` (in place for a tensor already on `device`).

    Parameters
    ----------
    dist : module
        ``torch.distributed``, its default group already initialised.
    device : torch.device
        Where the collectives' tensors live: this rank's GPU under NCCL, the CPU under gloo.
    """

    def __init__(self, dist: Any, device: Any) -> None:
        self._dist, self.device = dist, device

    def _barrier(self) -> None:
        self._dist.barrier()

    def _broadcast_object(self, obj: Any, root: int) -> Any:
        holder = [obj]
        self._dist.broadcast_object_list(holder, src=root, device=self.device if self.device.type == "cuda" else None)
        return holder[0]

    def _allgather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self._dist.get_world_size()
        self._dist.all_gather_object(out, obj)
        return out

    def _allreduce_sum(self, value: Any) -> Any:
        tensor = _as_tensor(value, self.device)
        self._dist.all_reduce(tensor, op=self._dist.ReduceOp.SUM)
        return _like(value, tensor)


class HorovodComm(Comm):
    """A World's communication through Horovod (``horovod.torch``, after ``hvd.init()``).

    The collectives are ``hvd.barrier``, ``hvd.broadcast_object``, ``hvd.allgather_object``
    and ``hvd.allreduce`` with ``op=hvd.Sum`` (on the CPU for a number or array).  The object
    collectives pass one name on every rank: Horovod's default name is the object's type,
    which differs between the sender's value and the receivers' None, and the ranks would
    then wait on different broadcasts forever.

    Parameters
    ----------
    hvd : module
        ``horovod.torch``.
    """

    def __init__(self, hvd: Any) -> None:
        self._hvd = hvd

    def _barrier(self) -> None:
        self._hvd.barrier()

    def _broadcast_object(self, obj: Any, root: int) -> Any:
        return self._hvd.broadcast_object(obj, root_rank=root, name="galhpc.broadcast_object")

    def _allgather_object(self, obj: Any) -> list[Any]:
        return self._hvd.allgather_object(obj, name="galhpc.allgather_object")

    def _allreduce_sum(self, value: Any) -> Any:
        import torch

        tensor = value if torch.is_tensor(value) else _as_tensor(value, torch.device("cpu"))
        return _like(value, self._hvd.allreduce(tensor, op=self._hvd.Sum))


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

    Parameters
    ----------
    env : mapping, optional
        The launcher's variables, read by `detect_world` (default ``os.environ``).

    Returns
    -------
    World
        `detect_world`'s, with an `MpiComm` when the job has several ranks.

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
    return World(comm.Get_rank(), comm.Get_size(), launch.local_rank, launch.launcher, comm=MpiComm(comm), mpi=True,
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
    """The first host of a Slurm hostlist: 'gpu[007-010,12],login1' -> 'gpu007'.

    Parameters
    ----------
    nodelist : str
        A Slurm hostlist (``SLURM_JOB_NODELIST``).

    Returns
    -------
    str
        Its first host name.

    Raises
    ------
    LaunchError
        A list that cannot be parsed.
    """
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match or not match.group(1):
        raise LaunchError(f"cannot parse Slurm node list {nodelist!r}")
    prefix, ranges = match.groups()
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def ranks_on_node(env: Mapping[str, str] | None = None) -> int:
    """Count the job's ranks on this node, from the launcher's variables (1 when none says).

    Parameters
    ----------
    env : mapping, optional
        Where to look for the local-size variables (default ``os.environ``).

    Returns
    -------
    int
        Ranks on this node, >= 1.
    """
    env = os.environ if env is None else env
    for var in _LOCAL_SIZE_VARS:
        if env.get(var, "").isdigit():
            return max(1, int(env[var]))
    return 1


def cgroup_cpu_limit(root: str | os.PathLike[str] = "/sys/fs/cgroup") -> float | None:
    """CPUs this process's cgroup may use (its CFS quota ÷ period), or None when unlimited.

    Reads cgroup v2 ``cpu.max`` ("max 100000" or "200000 100000"), else v1
    ``cpu/cpu.cfs_quota_us`` and ``cpu/cpu.cfs_period_us`` under `root`.

    Parameters
    ----------
    root : path
        Where the cgroup's CPU controller files are.

    Returns
    -------
    float or None
        CPUs (may be fractional), or None without a quota.
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
        As in `detect_world`.
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
