"""Real 2-process training: Horovod (mpirun, horovodrun) and torch.distributed (torchrun, mpirun).

Each launch runs tests/distributed_worker.py on 2 ranks, every rank on half of each
batch; both ranks must hold identical parameters afterwards, equal to one process
trained on the whole batches, with the same first-step gradient.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker  # noqa: E402

from galhpc.train.distributed import _free_port  # noqa: E402

WORKER = str(Path(__file__).with_name("distributed_worker.py"))
HAVE_HOROVOD = importlib.util.find_spec("horovod") is not None
needs_horovod = pytest.mark.skipif(not HAVE_HOROVOD, reason="Horovod is not installed (scripts/setup.sh builds it)")
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "HOROVOD_RANK", "SLURM_JOB_ID")

pytestmark = pytest.mark.slow


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith(("OMPI_COMM", "PMI_"))}
    env.update(
        OMP_NUM_THREADS="1",
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_btl_vader_single_copy_mechanism="none",  # no ptrace/CMA in containers
    )
    return env


MPIRUN = ["mpirun", "-n", "2", "--oversubscribe", "--bind-to", "none"]


def launch_command(launcher: str, backend: str, out: Path) -> list[str]:
    args = [WORKER, backend, str(out)]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                f"--master_port={_free_port()}", *args]
    if launcher == "mpirun":
        return [*MPIRUN, sys.executable, *args]
    if launcher == "horovodrun":
        return ["horovodrun", "-np", "2", "--gloo", sys.executable, *args]
    raise ValueError(launcher)


@pytest.fixture(scope="module")
def reference() -> dict:
    torch.set_num_threads(1)
    return distributed_worker.reference_run()


@pytest.mark.parametrize(
    ("launcher", "backend", "expected_backend", "controller"),
    [
        ("torchrun", "auto", "torch", None),
        ("mpirun", "torch", "torch", None),
        pytest.param("mpirun", "auto", "horovod", "mpi", marks=needs_horovod),
        pytest.param("horovodrun", "horovod", "horovod", "gloo", marks=needs_horovod),
        # torchrun's ranks are no MPI ranks: Horovod meets over gloo (galhpc.train.horovod_gloo)
        pytest.param("torchrun", "horovod", "horovod", "gloo", marks=needs_horovod),
    ],
)
def test_two_ranks_on_half_batches_match_one_process(tmp_path, reference, launcher, backend, expected_backend,
                                                     controller):
    proc = subprocess.run(
        launch_command(launcher, backend, tmp_path), env=clean_env(), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, f"{launcher} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert_ranks_match_reference(tmp_path, reference, expected_backend, controller)


def assert_ranks_match_reference(out: Path, reference: dict, expected_backend: str,
                                 controller: str | None = None) -> list[dict]:
    """The two ranks' results under `out` equal one process on whole batches; returns them."""
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r["backend"] for r in ranks] == [expected_backend] * 2
    assert [r["controller"] for r in ranks] == [controller] * 2
    assert [r["left_behind"] for r in ranks] == [{}, {}]  # interface/rendezvous variables only for the start
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    for result in ranks:
        assert result["wrapped_keys"] == sorted(reference["params"])  # checkpoints keep the plain keys
        torch.testing.assert_close(result["grads"], reference["grads"], rtol=1e-5, atol=1e-6)
        for name, value in reference["params"].items():
            torch.testing.assert_close(result["params"][name], value, rtol=1e-5, atol=1e-6)
        assert result["metrics"]["rank"] == pytest.approx(0.5)
        assert result["metrics"]["loss"] == pytest.approx((ranks[0]["last_loss"] + ranks[1]["last_loss"]) / 2)
        assert result["lr_scale"] == [1.0, 1.25, 1.5, 1.75, 2.0, 2.0]
        words = result["vocabulary"]  # the process group's collectives over this backend's communication
        assert words["allgather_object"] == [{"rank": 0}, {"rank": 1}]
        assert (words["broadcast_object"], words["broadcast_object_root1"]) == ("from rank 0", 1)
        assert (words["allreduce_int"], words["allreduce_float"]) == (3, 1.0)
        assert words["allreduce_array"] == [2.0, 1.0] and words["allreduce_tensor"] == [4.0, 1.0]
        assert words["root_first_seen"] is True
    assert [r["vocabulary"]["root_first_failed"] for r in ranks] == ["ValueError: boom", "LaunchError: rank 0: boom"]
    for name in reference["params"]:
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
    return ranks
