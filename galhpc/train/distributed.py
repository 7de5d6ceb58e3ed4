"""Data-parallel backends: they start the communication and wrap model and optimizer.

A `Backend` starts the ranks' communication once and holds the resulting process group
(`world`, a `galhpc.runtime.world.World`: rank, size, barrier, broadcast_object,
allgather_object, allreduce_sum, root_first), through which the trainer does everything
collective.  The backend itself only wraps the model and optimizer for gradient
averaging, broadcasts the initial state, picks the device and says by how much to scale
the learning rate.  Three implementations:

- `SingleProcess`: one rank, nothing to synchronise (its world is a one-process `World`).
- `HorovodBackend`: `hvd.init`, `hvd.DistributedOptimizer` (gradients averaged in
  `optimizer.step()`), `broadcast_parameters` and the optimizer state from rank 0; over
  MPI (mpirun, srun with PMIx, horovodrun) or gloo (horovodrun --gloo, and plain srun,
  torchrun or submitit through `galhpc.train.horovod_gloo`).
- `TorchDistributedBackend`: `torch.distributed` process group (NCCL on GPU, gloo on
  CPU) and `DistributedDataParallel`; rank and size come from the launcher's
  environment variables (`galhpc.runtime.world.detect_world`).

Horovod and mpi4py are imported only when a backend that needs them is built.

`make_backend("auto")` picks from the environment:
1. one rank in the launch environment (plain `python`, `bash jobs/train.sh`) -> single;
2. launched by `horovodrun` (HOROVOD_RANK set) -> horovod;
3. launched by `mpirun`/`mpiexec` (OMPI_COMM_WORLD_* or PMI_* set) and `horovod.torch`
   importable -> horovod;
4. otherwise (torchrun, srun, mpirun without Horovod) -> torch.distributed.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import importlib.util
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from galhpc.runtime import pick_device
from galhpc.runtime.errors import LaunchError
from galhpc.runtime.world import HorovodComm, TorchComm, World, detect_world, first_host, rendezvous_port
from galhpc.train.horovod_gloo import GlooRendezvous, gloo_rendezvous, needs_gloo_rendezvous
from galhpc.train.rendezvous import RendezvousError, rendezvous_hosts, socket_interface_env

log = logging.getLogger("galhpc.train.distributed")

BACKEND_NAMES = ("auto", "single", "torch", "horovod")


def warmup_lr_scale(size: int, step: int, warmup_steps: int) -> float:
    """Learning-rate multiplier for data-parallel training (Goyal et al. 2017).

    The global batch is `size` times the per-rank batch, so the learning rate is scaled
    by `size`, reached linearly over `warmup_steps` optimizer steps from the single-rank
    value (large jumps in lr at step 0 destabilise training).

    Parameters
    ----------
    size : int
        Number of data-parallel ranks.
    step : int
        Optimizer step (0-based).
    warmup_steps : int
        Steps of the linear ramp (<= 0: the full scale at once).

    Returns
    -------
    float
        1 on one rank, rising linearly to `size`.
    """
    if size <= 1:
        return 1.0
    if warmup_steps <= 0 or step >= warmup_steps:
        return float(size)
    return 1.0 + (size - 1) * step / warmup_steps


class Backend:
    """One process's data-parallel set-up: its process group, its device, the model and optimizer wrappers.

    Attributes
    ----------
    world : World
        The process group, for everything collective (rank, size, barrier, broadcast_object,
        allgather_object, allreduce_sum, root_first).
    network : dict of str to str
        The interface/rendezvous variables exported while the group started.
    """

    name = "base"
    scale_lr: bool = True
    _device: torch.device = torch.device("cpu")
    world: World
    network: dict[str, str]

    def __init__(self) -> None:
        self.network = {}
        self.world = World()

    @property
    def device(self) -> torch.device:
        """The device this rank computes on.

        Returns
        -------
        torch.device
        """
        return self._device

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """The module to call in the training step (gradients averaged across ranks).

        Call `.loss(batch, state)` on the result; save `model.state_dict()` of the
        unwrapped model (the wrapper's state_dict is the same, without prefixes).

        Parameters
        ----------
        model : torch.nn.Module
            The model on `device`, with a ``loss(batch, state)`` method.

        Returns
        -------
        torch.nn.Module
            `model` itself on one process.
        """
        return model

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        """The optimizer to step (Horovod's averages gradients in ``step()``).

        Parameters
        ----------
        optimizer : torch.optim.Optimizer
            The optimizer over `model`'s parameters (possibly with a resumed state).
        model : torch.nn.Module
            The unwrapped model.

        Returns
        -------
        torch.optim.Optimizer
            `optimizer` itself unless the backend needs a wrapper.
        """
        return optimizer

    def broadcast_state(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Make every rank start from rank 0's parameters and optimizer state.

        The parameters go by the backend's own broadcast (nothing on one process); the
        optimizer's whole state dict is sent as one object (`_broadcast_optimizer_state`).

        Parameters
        ----------
        model : torch.nn.Module
            The unwrapped model; its state dict's tensors are overwritten in place.
        optimizer : torch.optim.Optimizer, optional
            Its state is replaced by rank 0's on the other ranks.
        """
        self._broadcast_parameters(model)
        if optimizer is not None:
            _broadcast_optimizer_state(self.world, optimizer)

    def _broadcast_parameters(self, model: nn.Module) -> None:
        """Rank 0's parameters and buffers into `model`, in place, on every rank."""

    def lr_scale(self, step: int, warmup_steps: int) -> float:
        """Multiplier the trainer applies to its scheduled learning rate.

        Parameters
        ----------
        step : int
            Optimizer step.
        warmup_steps : int
            Steps of the linear warm-up to the full scale.

        Returns
        -------
        float
            `warmup_lr_scale` of the world's size; 1 with `scale_lr` off.
        """
        return warmup_lr_scale(self.world.size, step, warmup_steps) if self.scale_lr else 1.0

    def shutdown(self) -> None:
        """Stop the communication this backend started (nothing on one process)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.world.rank}, size={self.world.size}, device={self.device})"


class SingleProcess(Backend):
    """One rank, nothing to synchronise.

    Parameters
    ----------
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ... (`galhpc.runtime.pick_device`).
    """

    name = "single"

    def __init__(self, device: str = "auto") -> None:
        super().__init__()
        self._device = pick_device(device)


def _zero_grad_with_set_to_none(optimizer: torch.optim.Optimizer):
    """`zero_grad(set_to_none=...)` for a Horovod DistributedOptimizer.

    Its own zero_grad (Horovod 0.28) takes no argument; this one keeps Horovod's guard
    against zeroing mid-reduction.
    """
    torch_optimizer_class = type(optimizer).__mro__[1]  # the class Horovod subclassed

    def zero_grad(set_to_none: bool = True) -> None:
        if optimizer._handles:
            raise AssertionError("optimizer.zero_grad() called between loss.backward() and optimizer.step()")
        torch_optimizer_class.zero_grad(optimizer, set_to_none=set_to_none)

    return zero_grad


class HorovodBackend(Backend):
    """Horovod: gradients averaged by `hvd.DistributedOptimizer` inside `optimizer.step()`.

    Launch with ``horovodrun -np N``, ``mpirun -np N`` or ``srun --mpi=pmix`` (MPI
    controller), or with a launcher whose ranks are not MPI ranks -- plain ``srun``,
    ``torchrun``, submitit -- where the ranks meet through Horovod's gloo rendezvous
    (`galhpc.train.horovod_gloo`; also under MPI launchers with ``HOROVOD_CONTROLLER=gloo``).

    Parameters
    ----------
    device : str
        ``"auto"`` (this rank's local GPU if any), ``"cpu"``, ``"cuda"``, ...
    scale_lr : bool
        Scale the learning rate by the number of ranks (`warmup_lr_scale`).
    timeout_s : float
        How long the gloo rendezvous waits for every rank, in seconds.
    env : mapping, optional
        As in `detect_world`.

    Raises
    ------
    LaunchError
        Horovod is not importable, the ranks do not meet, or Horovod sees another number
        of ranks than the launcher started (e.g. ``srun --mpi=pmi2`` with an MPI built
        without PMI2: every task would train alone as rank 0 of 1).
    """

    name = "horovod"

    def __init__(self, device: str = "auto", scale_lr: bool = True, timeout_s: float = 600.0,
                 env: Mapping[str, str] | None = None) -> None:
        try:
            import horovod.torch as hvd
        except ImportError as err:
            raise LaunchError(
                "the horovod backend needs Horovod built with PyTorch support: run scripts/setup.sh "
                f"or see docs/hpc.md ({err})"
            ) from err
        super().__init__()
        env = os.environ if env is None else env
        self._hvd = hvd
        world = detect_world(env)
        self._gloo: GlooRendezvous | None = None
        if needs_gloo_rendezvous(world, env):  # srun without PMI, torchrun, submitit: no horovodrun server
            addr, port = _rendezvous(world, env)
            self._gloo = gloo_rendezvous(world, addr, port, env, timeout_s=timeout_s)
            self.network = dict(self._gloo.env)
        rendezvous_addr = self.network.get("HOROVOD_GLOO_RENDEZVOUS_ADDR") or env.get("HOROVOD_GLOO_RENDEZVOUS_ADDR")
        if rendezvous_addr and "HOROVOD_GLOO_IFACE" not in env and env.get("GLOO_SOCKET_IFNAME"):
            self.network["HOROVOD_GLOO_IFACE"] = env["GLOO_SOCKET_IFNAME"].split(",")[0]  # the user's choice for gloo
        elif rendezvous_addr:  # gloo controller: bind to the interface towards the job's hosts
            self.network.update(_interface_env(rendezvous_addr, {**env, **self.network}, ("HOROVOD_GLOO_IFACE",)))
        with _exported(self.network):
            hvd.init()
        self.controller = "gloo" if hvd.gloo_enabled() else "mpi"
        seen = hvd.size()
        if world.size > 1 and seen != world.size:
            hvd.shutdown()
            raise LaunchError(
                f"{world.launcher} started {world.size} tasks but Horovod ({self.controller}) sees {seen} "
                f"rank(s), so each task would train alone: launch with `mpirun -n {world.size}`, `srun --mpi=pmix` "
                "or horovodrun, or set HOROVOD_CONTROLLER=gloo")
        self.world = World(hvd.rank(), hvd.size(), hvd.local_rank(), world.launcher, comm=HorovodComm(hvd),
                           mpi=world.mpi, job_id=world.job_id)
        self.scale_lr = scale_lr
        self._device = pick_device(device, self.world.local_rank)
        if self._device.type == "cuda":
            torch.cuda.set_device(self._device)
        log.info("horovod: %d ranks over %s via %s", self.world.size, self.controller, world.launcher)

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        """``hvd.DistributedOptimizer`` over `optimizer` (gradients averaged in ``step()``), keeping its state.

        Parameters
        ----------
        optimizer, model
            As in `Backend.wrap_optimizer`; `model` names the gradients Horovod averages.

        Returns
        -------
        torch.optim.Optimizer
            The wrapped optimizer.
        """
        wrapped = self._hvd.DistributedOptimizer(
            optimizer, named_parameters=model.named_parameters(), op=self._hvd.Average
        )
        # DistributedOptimizer is a new optimizer over the same parameter groups: carry over
        # any state already loaded (a resumed run), which it would otherwise drop.
        state = optimizer.state_dict()
        if state["state"]:
            wrapped.load_state_dict(state)
        wrapped.zero_grad = _zero_grad_with_set_to_none(wrapped)
        return wrapped

    def _broadcast_parameters(self, model: nn.Module) -> None:
        """``hvd.broadcast_parameters`` of `model`'s state dict from rank 0."""
        self._hvd.broadcast_parameters(model.state_dict(), root_rank=0)

    def shutdown(self) -> None:
        """``hvd.shutdown()``, then stop rank 0's gloo rendezvous server if one was started."""
        self._hvd.shutdown()
        if self._gloo is not None:
            self._gloo.close()


class _LossForward(nn.Module):
    """Routes `forward` to `model.loss`, so DDP's gradient hooks see the loss computation."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any, state: Any) -> Any:
        return self.model.loss(batch, state)


class DDPModel(nn.Module):
    """What `TorchDistributedBackend.wrap_model` returns.

    `loss(batch, state)` runs through DistributedDataParallel (gradients are all-reduced
    during backward); every other attribute (encode, decode, sample, state_dict) is the
    wrapped model's own, so checkpoints hold the same keys as a single-process run.
    """

    def __init__(self, model: nn.Module, ddp: nn.Module) -> None:
        super().__init__()
        self.ddp = ddp
        object.__setattr__(self, "module", model)  # not a second registered child

    def loss(self, batch: Any, state: Any) -> Any:
        """The wrapped model's ``loss``, through DDP (gradients all-reduced during backward).

        Parameters
        ----------
        batch : dict
            The batch, as the model's ``loss`` takes it.
        state : StepState
            The step's schedule state.

        Returns
        -------
        LossOutput
            The model's.
        """
        return self.ddp(batch, state)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's ``forward`` (not through DDP).

        Parameters
        ----------
        *args, **kwargs
            As the model takes them.

        Returns
        -------
        object
            The model's output.
        """
        return self.module(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's state dict, so that a checkpoint holds the keys of a single-process run.

        Parameters
        ----------
        *args, **kwargs
            Passed on to ``torch.nn.Module.state_dict`` (``destination``, ``prefix``, ``keep_vars``).

        Returns
        -------
        dict
            Parameter and buffer tensors by name, with no ``ddp.`` prefix.
        """
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """Load a single-process run's state dict into the wrapped model.

        Parameters
        ----------
        *args, **kwargs
            Passed on to ``torch.nn.Module.load_state_dict``: the state dict, then ``strict`` and ``assign``.

        Returns
        -------
        NamedTuple
            ``missing_keys`` and ``unexpected_keys``.
        """
        return self.module.load_state_dict(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["module"], name)


def _broadcast_optimizer_state(world: World, optimizer: torch.optim.Optimizer) -> None:
    """Rank 0's optimizer state dict on every rank, sent as one object.

    Not ``hvd.broadcast_optimizer_state``: that one needs the same state layout on every
    rank (it fills a fresh optimizer's state by a zero-gradient step), which a resumed rank 0
    whose unused parameters have no state yet does not have -- the ranks would then wait on
    different broadcasts forever.
    """
    state = world.broadcast_object(optimizer.state_dict() if world.is_root else None)
    if not world.is_root:
        optimizer.load_state_dict(state)


def _rendezvous(world: World, env: Mapping[str, str]) -> tuple[str, int]:
    """Address and port of rank 0's TCP store for `init_process_group`."""
    addr, port = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
    if addr is None and world.launcher in ("slurm", "pmix"):
        # Slurm node names need not resolve (NodeName vs NodeHostname): one node is loopback.
        nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or 1)
        addr = "127.0.0.1" if nodes == 1 else _slurm_rank0_host(env)
    if port is None and (world.job_id or env.get("SLURM_JOB_ID")):
        port = str(rendezvous_port(world.job_id or env["SLURM_JOB_ID"], env.get("SLURM_STEP_ID")))
    if addr is None and world.launcher == "submitit":
        addr = "127.0.0.1"  # submitit's local executor: every task on this machine
    if addr is None and world.mpi:
        return _mpi_rendezvous(world, port)
    if addr is None or port is None:
        raise LaunchError(
            f"launcher {world.launcher!r} gave rank {world.rank} of {world.size} but no "
            "MASTER_ADDR/MASTER_PORT: export them (see docs/hpc.md)"
        )
    return addr, int(port)


def _slurm_rank0_host(env: Mapping[str, str]) -> str:
    """The node of rank 0 of a multi-node srun step.

    Block and cyclic distributions start on the step's first node; with
    ``--distribution=arbitrary`` task r runs on line r of ``SLURM_HOSTFILE``.
    """
    hostfile = env.get("SLURM_HOSTFILE")
    if env.get("SLURM_DISTRIBUTION", "").startswith("arbitrary") and hostfile:
        try:
            with open(hostfile) as lines:
                first = next((line.split()[0].split("*")[0] for line in lines if line.strip()), None)
        except OSError as err:
            raise LaunchError(f"srun --distribution=arbitrary: cannot read SLURM_HOSTFILE {hostfile}: "
                              f"{err.strerror}") from err
        if first:
            return first_host(first)
    return first_host(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", ""))


def _interface_env(master: str, env: Mapping[str, str], names: tuple[str, ...] | None = None) -> dict[str, str]:
    """The interface variables for gloo/NCCL (or `names`) towards the job's hosts, unless set.

    gloo binds to the address of this host's name otherwise, which may be loopback
    (Debian's 127.0.1.1) or a network the other nodes cannot reach.  A failed lookup only
    warns: the libraries' own choice then stands (an empty dict).
    """
    try:
        hosts = rendezvous_hosts(master, env)
        chosen = socket_interface_env(hosts, env, names) if names else socket_interface_env(hosts, env)
    except RendezvousError as err:
        log.warning("network interface left to the libraries' defaults: %s", err)
        return {}
    if chosen:
        log.info("network interface towards %s: %s", ", ".join(hosts),
                 ", ".join(f"{k}={v}" for k, v in chosen.items()))
    return chosen


@contextlib.contextmanager
def _exported(variables: Mapping[str, str]) -> Iterator[None]:
    """`variables` in ``os.environ`` while a communication library starts, then as before.

    gloo, NCCL and Horovod read them once, when the process group or ``hvd.init()`` is
    created; left behind, they would leak into later groups and child processes of this
    process (a job launched from a test, another rendezvous).
    """
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _rendezvous_errors(addr: str, port: int, rank: int) -> Iterator[None]:
    """A rendezvous port already taken on rank 0's node becomes one LaunchError line."""
    try:
        yield
    except RuntimeError as err:  # torch's DistNetworkError / DistStoreError
        if "EADDRINUSE" in str(err) or "address already in use" in str(err).lower():
            raise LaunchError(
                f"rank {rank}: the rendezvous port {addr}:{port} is taken (another step of this job on the same "
                "node, or another program): export MASTER_PORT=<a free port> for this step") from err
        raise


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _mpi_rendezvous(world: World, port: str | None) -> tuple[str, int]:
    """Under mpirun without MASTER_ADDR: rank 0 names its host and a free port over MPI."""
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise LaunchError(f"mpirun without MASTER_ADDR needs mpi4py to agree on one ({err})") from err
    comm = MPI.COMM_WORLD
    if comm.Get_size() != world.size:  # e.g. PMI variables with no MPI launcher behind them
        raise LaunchError(f"{world.launcher} started {world.size} tasks but MPI sees {comm.Get_size()} rank(s), "
                          "so the ranks cannot agree on a rendezvous: export MASTER_ADDR/MASTER_PORT, or launch "
                          f"with `mpirun -n {world.size}` or `srun --mpi=pmix`")
    choice = (socket.gethostname(), int(port) if port else _free_port()) if comm.Get_rank() == 0 else None
    return comm.bcast(choice, root=0)


class TorchDistributedBackend(Backend):
    """torch.distributed + DistributedDataParallel: NCCL on GPU, gloo on CPU.

    Parameters
    ----------
    device, scale_lr
        As in `HorovodBackend`.
    find_unused_parameters : bool
        DDP's option: models whose loss leaves some parameters out in some steps need it.
    timeout_s : float
        How long ``init_process_group`` and later collectives wait, in seconds.
    env : mapping, optional
        As in `detect_world`.

    Raises
    ------
    LaunchError
        No torch.distributed, no rendezvous address, or a rendezvous port already taken.
    """

    name = "torch"

    def __init__(
        self,
        device: str = "auto",
        scale_lr: bool = True,
        find_unused_parameters: bool = True,
        timeout_s: float = 600.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        import torch.distributed as dist

        super().__init__()
        if not dist.is_available():
            raise LaunchError("this torch build has no torch.distributed")
        env = os.environ if env is None else env
        self._dist = dist
        self.scale_lr = scale_lr
        self.find_unused_parameters = find_unused_parameters
        launch = detect_world(env)
        rank, size = launch.rank, launch.size
        self._device = pick_device(device, launch.local_rank)
        if self._device.type == "cuda":
            torch.cuda.set_device(self._device)
        self.process_group_backend = "nccl" if self._device.type == "cuda" else "gloo"
        self._owns_group = not dist.is_initialized()
        if self._owns_group:
            addr, port = _rendezvous(launch, env)
            self.network = _interface_env(addr, env)
            log.info(
                "torch.distributed: %s, %d ranks via %s, store %s:%d",
                self.process_group_backend, size, launch.launcher, addr, port,
            )
            with _exported(self.network), _rendezvous_errors(addr, port, rank):
                dist.init_process_group(
                    self.process_group_backend,
                    init_method=f"tcp://{addr}:{port}",
                    rank=rank,
                    world_size=size,
                    timeout=datetime.timedelta(seconds=timeout_s),
                )
        else:
            rank, size = dist.get_rank(), dist.get_world_size()
        self.world = World(rank, size, launch.local_rank, launch.launcher, comm=TorchComm(dist, self._device),
                           mpi=launch.mpi, job_id=launch.job_id)

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """`DDPModel`: ``loss`` runs through DistributedDataParallel (gradients all-reduced in backward).

        Parameters
        ----------
        model : torch.nn.Module
            As in `Backend.wrap_model`.

        Returns
        -------
        DDPModel
            Calls ``loss`` through DDP; every other attribute is `model`'s own.
        """
        from torch.nn.parallel import DistributedDataParallel

        ids = [self._device.index] if self._device.type == "cuda" else None
        ddp = DistributedDataParallel(
            _LossForward(model), device_ids=ids, find_unused_parameters=self.find_unused_parameters
        )
        return DDPModel(model, ddp)

    def _broadcast_parameters(self, model: nn.Module) -> None:
        """``dist.broadcast`` from rank 0 of each tensor of `model`'s state dict, in place."""
        for tensor in model.state_dict().values():
            self._dist.broadcast(tensor, src=0)

    def shutdown(self) -> None:
        """Stop the process group's threads now, not at interpreter exit.

        DDP wrappers keep the group alive; a gloo thread that outlives them into interpreter
        finalisation aborts the process (seen as a flaky exit 134 after a good run).  So: wait
        for collectives in flight, free unreachable wrappers, then destroy the group.
        """
        if self._owns_group and self._dist.is_initialized():
            self._dist.barrier()
            gc.collect()
            self._dist.destroy_process_group()


def horovod_available() -> bool:
    """Whether ``horovod.torch`` can be imported here (without importing it).

    Returns
    -------
    bool
    """
    return importlib.util.find_spec("horovod") is not None and importlib.util.find_spec("horovod.torch") is not None


def auto_backend_name(env: Mapping[str, str] | None = None) -> str:
    """The backend `make_backend("auto")` builds here (rule in the module docstring).

    Parameters
    ----------
    env : mapping, optional
        Environment variables that `detect_world` reads (default ``os.environ``).

    Returns
    -------
    str
        ``"single"``, ``"horovod"`` or ``"torch"``.
    """
    env = os.environ if env is None else env
    world = detect_world(env)
    if world.size == 1:
        return "single"
    if world.launcher == "horovodrun":
        return "horovod"
    if world.mpi and horovod_available():
        return "horovod"
    return "torch"


def make_backend(name: str = "auto", device: str = "auto", scale_lr: bool = True) -> Backend:
    """The backend a config or flag names ('auto' picks from the environment).

    Parameters
    ----------
    name : str
        One of `BACKEND_NAMES`.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    scale_lr : bool
        Scale the learning rate by the number of ranks.

    Returns
    -------
    Backend
        Started: its `world` is the job's process group.

    Raises
    ------
    ValueError
        An unknown name.
    LaunchError
        A backend that cannot start here.
    """
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown distributed backend {name!r}; choose one of {list(BACKEND_NAMES)}")
    if name == "auto":
        name = auto_backend_name()
        log.info("backend auto -> %s", name)
    if name == "single":
        backend: Backend = SingleProcess(device)
    elif name == "horovod":
        backend = HorovodBackend(device, scale_lr=scale_lr)
    else:
        backend = TorchDistributedBackend(device, scale_lr=scale_lr)
    return backend
