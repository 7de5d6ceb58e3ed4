"""Horovod's gloo controller under launchers that are not ``horovodrun``.

``horovodrun --gloo`` starts an HTTP rendezvous server, gives every worker its slot
(rank, local rank, cross rank and their sizes) and starts the workers over ssh.  Under
``srun`` (no PMI), ``torchrun`` or submitit the launcher has already started the ranks,
and nobody runs that server: ``hvd.init()`` would then fall back to MPI, which sees one
rank per process, and every task would train alone as rank 0 of 1.

`gloo_rendezvous` does horovodrun's part from inside the ranks, with Horovod's own
server (`horovod.runner.http.http_server.RendezvousServer`):

1. every rank writes its host name to a `torch.distributed.TCPStore` at the job's
   rendezvous address (``MASTER_ADDR``:``MASTER_PORT``, or the first node of the Slurm
   step and `galhpc.runtime.world.rendezvous_port`; torchrun's own agent store when
   torchrun runs the job);
2. rank 0 builds the slot plan from the ranks' real hosts (ranks on one host numbered in
   rank order, as `horovod.runner.common.util.hosts.get_host_assignments` numbers them),
   starts the rendezvous server on a free port and publishes port and plan;
3. every rank returns the ``HOROVOD_*`` variables horovodrun would have given it
   (``HOROVOD_CONTROLLER=gloo``, ``HOROVOD_GLOO_RENDEZVOUS_ADDR``/``PORT``, its slot).

The server lives in rank 0's process until `GlooRendezvous.close` (after ``hvd.shutdown``).
The rendezvous host is rank 0's node (`galhpc.train.distributed`: ``MASTER_ADDR``, else
the node Slurm's distribution puts rank 0 on).
"""

from __future__ import annotations

import datetime
import json
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from galhpc.runtime.errors import LaunchError
from galhpc.runtime.world import World

log = logging.getLogger("galhpc.train.horovod_gloo")

_KEY = "galhpc/horovod-gloo"


@dataclass(frozen=True)
class Slot:
    """One rank's place in a Horovod job (the fields of Horovod's ``SlotInfo``)."""

    hostname: str
    rank: int
    local_rank: int
    local_size: int
    cross_rank: int
    cross_size: int


def slot_plan(hosts: list[str]) -> list[Slot]:
    """Horovod slots for ranks whose hosts are `hosts` (``hosts[r]``: the host of rank r).

    Parameters
    ----------
    hosts : list of str
        Host name of each rank, in rank order; a host's ranks need not be contiguous
        (``srun --distribution=cyclic``).

    Returns
    -------
    list of Slot
        One per rank.  The local rank is the rank's place among its host's ranks (rank
        order); the cross rank is the host's place among the hosts that have a rank of
        that local rank (hosts ordered by their first rank); sizes count them.
    """
    order = list(dict.fromkeys(hosts))  # hosts by first rank
    by_host = {host: [r for r, h in enumerate(hosts) if h == host] for host in order}
    local_rank = {r: i for ranks in by_host.values() for i, r in enumerate(ranks)}
    crossing: dict[int, list[str]] = {}
    for host in order:
        for i in range(len(by_host[host])):
            crossing.setdefault(i, []).append(host)
    return [Slot(host, r, local_rank[r], len(by_host[host]), crossing[local_rank[r]].index(host),
                 len(crossing[local_rank[r]]))
            for r, host in enumerate(hosts)]


def slot_env(slot: Slot, size: int, addr: str, port: int) -> dict[str, str]:
    """The variables horovodrun gives a gloo worker (``horovod.runner.gloo_run``).

    Parameters
    ----------
    slot : Slot
        This rank's place (host, local and cross ranks and sizes).
    size : int
        Number of ranks.
    addr : str
        Host of the rendezvous server.
    port : int
        Its port.

    Returns
    -------
    dict of str to str
        ``HOROVOD_*`` variables for ``hvd.init()``.
    """
    return {
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": addr,
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_HOSTNAME": slot.hostname,
        "HOROVOD_RANK": str(slot.rank),
        "HOROVOD_SIZE": str(size),
        "HOROVOD_LOCAL_RANK": str(slot.local_rank),
        "HOROVOD_LOCAL_SIZE": str(slot.local_size),
        "HOROVOD_CROSS_RANK": str(slot.cross_rank),
        "HOROVOD_CROSS_SIZE": str(slot.cross_size),
    }


def needs_gloo_rendezvous(world: World, env: Mapping[str, str]) -> bool:
    """Whether Horovod's ranks here must meet through `gloo_rendezvous`.

    True for several ranks started by a launcher whose ranks are not MPI ranks (srun
    without PMI, torchrun, submitit), or by any launcher when ``HOROVOD_CONTROLLER=gloo``
    is asked for, unless a rendezvous server is already given (horovodrun).

    Parameters
    ----------
    world : World
        This rank's place, from the launcher (`galhpc.runtime.world.detect_world`).
    env : mapping
        Environment variables.

    Returns
    -------
    bool
    """
    if world.size == 1 or world.launcher == "horovodrun" or "HOROVOD_GLOO_RENDEZVOUS_ADDR" in env:
        return False
    return not world.mpi or env.get("HOROVOD_CONTROLLER") == "gloo"


class GlooRendezvous:
    """What `gloo_rendezvous` leaves running: the TCP store and, on rank 0, Horovod's server.

    Attributes
    ----------
    env : dict of str to str
        The ``HOROVOD_*`` variables for ``hvd.init()`` on this rank.
    """

    def __init__(self, env: dict[str, str], store: Any, server: Any = None) -> None:
        self.env, self._store, self._server = env, store, server

    def close(self) -> None:
        """Stop rank 0's rendezvous server (after ``hvd.shutdown``); idempotent."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._store = None


def _store(world: World, addr: str, port: int, env: Mapping[str, str], timeout_s: float) -> Any:
    from torch.distributed import TCPStore

    agent = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun serves MASTER_PORT itself
    try:
        return TCPStore(addr, port, world.size, is_master=world.is_root and not agent,
                        timeout=datetime.timedelta(seconds=timeout_s), wait_for_workers=False)
    except (RuntimeError, OSError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "EADDRINUSE" in str(err) or "address already in use" in str(err).lower():
            raise LaunchError(f"Horovod over gloo: the rendezvous port {addr}:{port} is taken on rank 0's node "
                              "(another step of this job, or another program): export MASTER_PORT=<a free port> "
                              "for this step") from err
        raise LaunchError(f"Horovod over gloo: rank {world.rank} cannot reach the rendezvous store at {addr}:{port} "
                          f"({text}): export MASTER_ADDR/MASTER_PORT naming rank 0's node and a free port") from err


def gloo_rendezvous(world: World, addr: str, port: int, env: Mapping[str, str], *,
                    timeout_s: float = 600.0) -> GlooRendezvous:
    """Meet the job's other ranks and return this rank's Horovod gloo variables.

    Parameters
    ----------
    world : World
        This rank's place (`galhpc.runtime.world.detect_world`); rank 0 runs the servers.
    addr, port : str, int
        Rendezvous host (where rank 0 runs) and the TCP store's port there.  Horovod's
        HTTP server listens on another, free port of the same host.
    env : mapping
        The environment (``TORCHELASTIC_USE_AGENT_STORE`` is read).
    timeout_s : float
        How long a rank waits for the others, in seconds.

    Returns
    -------
    GlooRendezvous
        ``.env`` to export around ``hvd.init()``; ``close()`` after ``hvd.shutdown()``.

    Raises
    ------
    LaunchError
        The store cannot be reached or served, or the other ranks do not arrive in time.
    """
    log.info("horovod over gloo: rank %d meets the others at %s:%d (waits up to %.0f s)", world.rank, addr, port,
             timeout_s)
    store = _store(world, addr, port, env, timeout_s)
    # one namespace per attempt: torchrun --max-restarts keeps its agent store across attempts
    attempt = f"{env.get('SLURM_RESTART_COUNT', '0')}.{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    prefix = f"{_KEY}/{world.job_id or 'job'}/{env.get('SLURM_STEP_ID', '0')}/{attempt}"
    server = None
    try:
        store.set(f"{prefix}/host/{world.rank}", socket.gethostname())
        if world.is_root:
            keys = [f"{prefix}/host/{r}" for r in range(world.size)]
            store.wait(keys)
            hosts = [store.get(k).decode() for k in keys]
            server, server_port = _start_server(slot_plan(hosts), world.size)
            store.set(f"{prefix}/plan", json.dumps({"port": server_port, "hosts": hosts}))
        plan = json.loads(store.get(f"{prefix}/plan"))
    except RuntimeError as err:  # torch's store timeouts and lost connections
        if server is not None:
            server.stop()
        raise LaunchError(f"Horovod over gloo: rank {world.rank} of {world.size} did not meet the others at "
                          f"{addr}:{port} within {timeout_s:.0f} s ({err})") from err
    slot = slot_plan(plan["hosts"])[world.rank]
    log.info("horovod over gloo: rank %d on %s (local %d/%d, cross %d/%d), rendezvous %s:%d",
             world.rank, slot.hostname, slot.local_rank, slot.local_size, slot.cross_rank, slot.cross_size,
             addr, plan["port"])
    return GlooRendezvous(slot_env(slot, world.size, addr, plan["port"]), store, server)


def _start_server(plan: list[Slot], size: int) -> tuple[Any, int]:
    """Horovod's rendezvous server, started on a free port and given `plan`."""
    from horovod.runner.common.util.hosts import SlotInfo
    from horovod.runner.http.http_server import RendezvousServer

    server = RendezvousServer()
    port = server.start()
    server.init([SlotInfo(hostname=s.hostname, rank=s.rank, local_rank=s.local_rank, cross_rank=s.cross_rank,
                          size=size, local_size=s.local_size, cross_size=s.cross_size) for s in plan])
    return server, port
