"""Training and catalogues across nodes of an emulated Slurm cluster (tests/multinode_cluster.py).

Every node is its own network namespace, hostname and /tmp; pytest's base temporary
folder is the shared file system.  Ranks on different nodes talk over the cluster's
bridge (10.77.0.0/24), never over loopback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker  # noqa: E402
from multinode_cluster import MultiNodeSlurm, namespaces_missing  # noqa: E402
from test_distributed_multiprocess import assert_ranks_match_reference  # noqa: E402
from test_slurm import sbatch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY")
JOB_ENV = "--export=ALL,OMP_NUM_THREADS=1,OMPI_MCA_btl_vader_single_copy_mechanism=none,GALHPC_PROGRESS=0"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = namespaces_missing()
    if reason is not None:
        pytest.skip(f"no emulated multi-node cluster: {reason}")
    slurm = MultiNodeSlurm(tmp_path_factory.mktemp("multinode"), nodes=2, cpus=2,
                           shared=(tmp_path_factory.getbasetemp(),))
    slurm.start()
    yield slurm
    slurm.stop()


def run_job(cluster: MultiNodeSlurm, workdir: Path, *args: str, timeout: float = 300) -> str:
    """sbatch, wait for the end; returns the job's output, asserting it COMPLETED."""
    job = sbatch(cluster, workdir, JOB_ENV, *args)
    state = cluster.wait_job(job, ENDED, timeout=timeout)
    log = (workdir / f"job-{job}.out").read_text()
    assert state == "COMPLETED", f"job {job} {state}:\n{log[-4000:]}"
    return log


def test_nodes_are_separate_hosts_sharing_one_file_system(cluster, tmp_path):
    (tmp_path / "seen-by-all").write_text("shared\n")
    log = run_job(cluster, tmp_path, "--nodes=2", "--ntasks-per-node=1", "--wrap",
                  "srun -l sh -c 'echo host=$(hostname) addr=$(hostname -i) tmp=$(ls /tmp | tr \"\\n\" ,) "
                  f"shared=$(cat {tmp_path}/seen-by-all); touch /tmp/only-here-$(hostname)'", timeout=60)
    lines = sorted(line for line in log.splitlines() if "host=" in line)
    assert len(lines) == 2, log
    assert lines[0].startswith("0: host=node0 addr=10.77.0.1 ") and lines[1].startswith("1: host=node1 addr=10.77.0.2 ")
    assert all(line.endswith("shared=shared") for line in lines), log
    # a private /tmp per node, kept on disk under the cluster's root
    for node in cluster.nodes:
        private = sorted(p.name for p in (cluster.root / "nodes" / node / "tmp").glob("only-here-*"))
        assert private == [f"only-here-{node}"]


@pytest.fixture(scope="module")
def reference() -> dict:
    torch.set_num_threads(1)
    return distributed_worker.reference_run()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("launch", "backend", "expected_backend"),
    [
        ("srun", "torch", "torch"),
        ("srun --mpi=pmix", "horovod", "horovod"),
        ("mpirun --bind-to none", "auto", "horovod"),
    ],
)
def test_two_nodes_train_like_one_process_on_whole_batches(cluster, reference, tmp_path, launch, backend,
                                                           expected_backend):
    """One rank per node: the ranks meet over the bridge (gloo TCP store at node0, or MPI)."""
    log = run_job(cluster, tmp_path, "--nodes=2", "--ntasks-per-node=1", "--wrap",
                  f"{launch} {sys.executable} {WORKER} {backend} {tmp_path}")
    ranks = assert_ranks_match_reference(tmp_path, reference, expected_backend)
    assert [r["host"] for r in ranks] == ["node0", "node1"], log
