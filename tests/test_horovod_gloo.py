"""Horovod's gloo rendezvous under launchers that are not horovodrun (galhpc/train/horovod_gloo.py),
the refusal of a Horovod world smaller than the launcher's, and no rendezvous variable left behind."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from galhpc.runtime.world import World
from galhpc.train.horovod_gloo import Slot, needs_gloo_rendezvous, slot_plan

HAVE_HOROVOD = importlib.util.find_spec("horovod") is not None


@pytest.mark.skipif(not HAVE_HOROVOD, reason="Horovod's own host assignment is the oracle")
@pytest.mark.parametrize("slots", [[1], [2], [1, 1], [2, 2], [4, 1, 3], [3, 3, 3, 1]])
def test_block_distribution_gives_horovods_own_assignment(slots):
    from horovod.runner.common.util.hosts import HostInfo, get_host_assignments

    infos = [HostInfo(f"node{i}", n) for i, n in enumerate(slots)]
    expected = get_host_assignments(infos, sum(slots))
    hosts = [f"node{i}" for i, n in enumerate(slots) for _ in range(n)]
    got = slot_plan(hosts)
    assert [(s.hostname, s.rank, s.local_rank, s.local_size, s.cross_rank, s.cross_size) for s in got] == [
        (e.hostname, e.rank, e.local_rank, e.local_size, e.cross_rank, e.cross_size) for e in expected]


def test_cyclic_distribution_numbers_each_hosts_ranks_in_rank_order():
    # srun --distribution=cyclic: ranks 0, 2 on node0 and 1, 3 on node1
    assert slot_plan(["node0", "node1", "node0", "node1"]) == [
        Slot("node0", 0, 0, 2, 0, 2), Slot("node1", 1, 0, 2, 1, 2),
        Slot("node0", 2, 1, 2, 0, 2), Slot("node1", 3, 1, 2, 1, 2)]


@pytest.mark.parametrize(("world", "env", "expected"), [
    (World(0, 2, 0, "slurm"), {}, True),                      # plain srun: no PMI
    (World(0, 2, 0, "torchrun"), {}, True),
    (World(0, 2, 0, "submitit"), {}, True),
    (World(0, 2, 0, "pmix", mpi=True), {}, False),            # srun --mpi=pmix: MPI controller
    (World(0, 2, 0, "openmpi", mpi=True), {"HOROVOD_CONTROLLER": "gloo"}, True),
    (World(0, 2, 0, "horovodrun"), {"HOROVOD_GLOO_RENDEZVOUS_ADDR": "n0"}, False),  # horovodrun's server
    (World(0, 2, 0, "slurm"), {"HOROVOD_GLOO_RENDEZVOUS_ADDR": "n0"}, False),
    (World(), {}, False),                                     # one process
])
def test_when_galhpc_runs_the_rendezvous(world, env, expected):
    assert needs_gloo_rendezvous(world, env) is expected


def run_backend(name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = ("import os, sys\n"
            "from galhpc.runtime.cli import run_cli\n"
            "from galhpc.train.distributed import make_backend\n"
            "def main():\n"
            f"    b = make_backend({name!r}, device='cpu')\n"
            "    left = sorted(k for k in os.environ if k.startswith(('GLOO_', 'NCCL_', 'HOROVOD_')))\n"
            "    print('world', b.rank, b.world_size, 'exported', b.network, 'left', left)\n"
            "    b.shutdown()\n"
            "sys.exit(run_cli('backend', main))\n")
    return subprocess.run([sys.executable, "-c", code], env={**launch_free_env(), **env}, capture_output=True,
                          text=True, timeout=120)


def launch_free_env() -> dict[str, str]:
    """This process's environment without any launcher's or rendezvous variables."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("OMPI_", "PMI", "SLURM_", "HOROVOD_", "GLOO_", "NCCL_", "MASTER_"))}


@pytest.mark.skipif(not HAVE_HOROVOD, reason="needs Horovod")
def test_a_launcher_world_that_horovod_sees_as_one_rank_is_refused():
    """PMI variables of 2 tasks (srun --mpi=pmi2) with an MPI that starts a singleton: today
    every task would train alone as rank 0 of 1 and both would write the same checkpoint."""
    done = run_backend("horovod", {"PMI_RANK": "0", "PMI_SIZE": "2", "SLURM_JOB_ID": "7"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pmi started 2 tasks but Horovod (mpi) sees 1 rank(s)" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.skipif(not HAVE_HOROVOD, reason="needs Horovod")
def test_the_gloo_controller_on_pmi_variables_mpi_cannot_see_is_refused_not_hung():
    done = run_backend("horovod", {"PMI_RANK": "0", "PMI_SIZE": "2", "HOROVOD_CONTROLLER": "gloo"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pmi started 2 tasks but MPI sees 1 rank(s)" in done.stderr, done.stderr


def test_torch_process_group_leaves_no_interface_variable_behind():
    from galhpc.train.distributed import _free_port

    done = run_backend("torch", {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                                 "MASTER_PORT": str(_free_port())})
    assert done.returncode == 0, done.stderr
    assert "exported {'GLOO_SOCKET_IFNAME': 'lo', 'NCCL_SOCKET_IFNAME': 'lo'} left []" in done.stdout, done.stdout


@pytest.mark.skipif(not HAVE_HOROVOD, reason="needs Horovod")
def test_torchrun_restart_meets_in_a_fresh_rendezvous(tmp_path):
    """torchrun --max-restarts keeps its agent store across attempts: rank 1 dies in attempt 0,
    and attempt 1 must not read attempt 0's (dead) rendezvous server port."""
    from galhpc.train.distributed import _free_port

    worker = tmp_path / "worker.py"
    worker.write_text(
        "import os, torch\n"
        "from galhpc.train.distributed import make_backend\n"
        "b = make_backend('horovod', device='cpu')\n"
        "if os.environ['TORCHELASTIC_RESTART_COUNT'] == '0' and b.rank == 1:\n"
        "    os._exit(3)\n"
        "total = b.allreduce_sum(torch.ones(1))\n"
        "attempt = os.environ['TORCHELASTIC_RESTART_COUNT']\n"
        f"open(f'{tmp_path}/rank{{b.rank}}.txt', 'w')"
        ".write(f'attempt {attempt} rank {b.rank} sum {int(total.item())}')\n"
        "b.shutdown()\n")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--max-restarts=1",
                           f"--master_port={_free_port()}", str(worker)],
                          env={**launch_free_env(), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)] == [
        "attempt 1 rank 0 sum 2", "attempt 1 rank 1 sum 2"], done.stdout
