"""galhpc.runtime.world: one launcher table, and launches MPI cannot see refused with one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from thread_world import on_ranks

from galhpc.runtime.errors import LaunchError
from galhpc.runtime.world import LOCAL, World, detect_world, mpi_world, rendezvous_port

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "HOROVOD_", "OMPI_", "PMI", "PMIX", "SLURM_", "SUBMITIT_",
                 "MPI_LOCAL")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(LAUNCHER_VARS) or k.startswith(("OMPI_ALLOW", "OMPI_MCA"))}
    env.update(PYTHONPATH=str(ROOT), GALHPC_PROGRESS="0", OMP_NUM_THREADS="1", **extra)
    return env


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PMIX_RANK": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"},
         World(3, 4, 1, "pmix")),
        ({"SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_LOCALID": "1",
          "SUBMITIT_LOCAL_JOB_ID": "99"}, World(1, 2, 1, "submitit")),
        # srun's rank 1 even when the step count is missing: only srun starts ranks > 0
        ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, World(1, 2, 0, "slurm")),
    ],
)
def test_launcher_tables(env, expected):
    world = detect_world(env)
    assert world == expected and world.mpi == (expected.launcher == "pmix")


def test_one_port_rule_for_every_launcher():
    assert rendezvous_port(4242) == 24242 and rendezvous_port("7_3") == 20007
    # two steps of one job at once on one node: different ports; the batch step counts as 0
    assert rendezvous_port(4242, "batch") == rendezvous_port(4242, 0) == 24242 != rendezvous_port(4242, "1")
    assert detect_world({"SUBMITIT_LOCAL_GLOBALID": "0", "SUBMITIT_LOCAL_NTASKS": "2",
                         "SUBMITIT_LOCAL_JOB_ID": "123"}).job_id == "123"


def test_one_process_collectives_are_the_identity():
    x = np.arange(3.0)
    t = torch.ones(2)
    assert LOCAL.allreduce_sum(x) is x and LOCAL.allreduce_sum(t) is t and LOCAL.allreduce_sum(3) == 3
    assert LOCAL.broadcast_object({"a": 1}) == {"a": 1} and LOCAL.allgather_object(5) == [5]
    LOCAL.barrier()
    ran = []
    with LOCAL.root_first():
        ran.append(LOCAL.rank)
    assert ran == [0] and (LOCAL.rank, LOCAL.size, LOCAL.local_rank, LOCAL.is_root) == (0, 1, 0, True)
    with pytest.raises(LaunchError, match="no communicator"):
        World(0, 2, 0, "torchrun").allgather_object(1)


def test_root_first_runs_the_block_on_rank_0_before_the_others():
    order = []

    def body(world):
        with world.root_first():
            order.append(world.rank)
        return world.allgather_object(world.rank)

    assert on_ranks(3, body) == [[0, 1, 2]] * 3
    assert order[0] == 0 and sorted(order) == [0, 1, 2]


def test_root_first_failing_on_rank_0_stops_every_rank():
    ran = []

    def body(world):
        with world.root_first(error=ValueError):
            ran.append(world.rank)
            if world.is_root:
                raise KeyError("no lock")

    errors = on_ranks(3, body)
    assert ran == [0] and isinstance(errors[0], KeyError)
    assert [str(e) for e in errors[1:]] == ["rank 0: 'no lock'"] * 2 and all(type(e) is ValueError for e in errors[1:])


def test_mpi_comm_sums_numbers_arrays_and_tensors_and_broadcasts_from_any_root():
    def body(world):
        return (world.allreduce_sum(world.rank + 1), world.allreduce_sum(np.array([1.0, world.rank])).tolist(),
                world.allreduce_sum(torch.tensor([world.rank], dtype=torch.int32)).dtype,
                world.broadcast_object(f"r{world.rank}", root=1))

    assert on_ranks(2, body) == [(3, [2.0, 1.0], torch.int32, "r1")] * 2


def test_one_process_needs_no_mpi4py(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert mpi_world({}) == World()


REFUSE = "from galhpc.runtime.cli import run_cli; from galhpc.runtime.world import mpi_world; " \
         "import sys; sys.exit(run_cli('probe', lambda: print(mpi_world().size)))"


@pytest.mark.parametrize(
    ("extra", "fix"),
    [
        # srun without --mpi=pmix: Slurm counts 2 tasks, each MPI process is alone
        ({"SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
          "SLURM_JOB_ID": "77"}, "srun --mpi=pmix"),
        # PMI variables but no MPI launcher behind them
        ({"PMI_SIZE": "2", "PMI_RANK": "0"}, "mpirun -n 2"),
    ],
)
def test_launch_that_mpi_cannot_see_is_refused_in_one_line(extra, fix):
    """Before: each task ran the whole job as rank 0 of 1.  Now: exit 1, one line naming the fix."""
    done = subprocess.run([sys.executable, "-c", REFUSE], env=clean_env(**extra), capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("probe: error:"), done.stderr
    assert "2 tasks but MPI sees 1 rank" in lines[0] and fix in lines[0]


def test_encode_under_srun_without_pmi_is_refused(tmp_path):
    """The real command: galhpc-encode started by srun without PMI stops before touching its output."""
    env = clean_env(SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2", SLURM_PROCID="0", SLURM_JOB_ID="5")
    done = subprocess.run([sys.executable, "-m", "galhpc.cli.encode", "--checkpoint", str(tmp_path / "c.pt"),
                           "--store", str(tmp_path / "s.h5"), "--out", str(tmp_path / "o.h5")],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1
    assert "galhpc-encode: error: slurm started 2 tasks but MPI sees 1 rank" in done.stderr
    assert "Traceback" not in done.stderr and not list(tmp_path.iterdir())


PROBE = """
import os, sys
import numpy as np, torch
from galhpc.runtime.world import mpi_world
w = mpi_world()
total = w.allreduce_sum(np.array([w.rank + 1.0]))
t = w.allreduce_sum(torch.tensor([float(w.rank)]))
b = w.broadcast_object(torch.tensor([10.0 + w.rank]))
first = f"{sys.argv[1]}/first"
with w.root_first():
    if w.is_root:
        open(first, "w").write("0")
    seen = os.path.exists(first)
row = (w.rank, w.size, w.launcher, float(total[0]), float(t[0]), float(b[0]), w.broadcast_object(w.rank),
       w.allgather_object(w.rank), w.allreduce_sum(w.rank + 1), seen)
open(f"{sys.argv[1]}/rank{w.rank}.txt", "w").write(" ".join(map(str, row)))
"""


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun")
def test_mpirun_world_collectives(tmp_path):
    done = subprocess.run(["mpirun", "-n", "2", "--oversubscribe", sys.executable, "-c", PROBE, str(tmp_path)],
                          env=clean_env(OMPI_MCA_mpi_yield_when_idle="1"), capture_output=True, text=True,
                          timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert rows == ["0 2 openmpi 3.0 1.0 10.0 0 [0, 1] 3 True", "1 2 openmpi 3.0 1.0 10.0 0 [0, 1] 3 True"]
