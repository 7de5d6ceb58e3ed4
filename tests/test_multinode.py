"""Training and catalogues across nodes of an emulated Slurm cluster (tests/multinode_cluster.py).

Every node is its own network namespace, hostname and /tmp; pytest's base temporary
folder is the shared file system.  Ranks on different nodes talk over the cluster's
bridge (10.77.0.0/24), never over loopback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import h5py
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker  # noqa: E402
from multinode_cluster import MultiNodeSlurm, namespaces_missing  # noqa: E402
from test_catalog_encode import write_store  # noqa: E402
from test_catalog_generate import make_checkpoint  # noqa: E402
from test_catalog_mpi import assert_same_catalogue, shard_digests  # noqa: E402
from test_distributed_multiprocess import assert_ranks_match_reference  # noqa: E402
from test_slurm import sbatch  # noqa: E402
from tiny_run import STOPPED_RUN_EPOCHS, read_checkpoint, wait_for_checkpoint, write_tiny_run  # noqa: E402

from galhpc.inference.encode import encode_from_checkpoint  # noqa: E402
from galhpc.inference.generate import generate_from_checkpoint  # noqa: E402
from galhpc.inference.options import EncodeOptions, GenerateOptions, OutputOptions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
TRAIN_SH = REPO / "jobs" / "train.sh"
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
    ("launch", "backend", "expected_backend", "controller"),
    [
        ("srun", "torch", "torch", None),
        ("srun --mpi=pmix", "horovod", "horovod", "mpi"),
        ("mpirun --bind-to none", "auto", "horovod", "mpi"),
        ("srun", "horovod", "horovod", "gloo"),  # no PMI: Horovod's gloo rendezvous, run by rank 0
    ],
)
def test_two_nodes_train_like_one_process_on_whole_batches(cluster, reference, tmp_path, launch, backend,
                                                           expected_backend, controller):
    """One rank per node: the ranks meet over the bridge (gloo TCP store at node0, or MPI)."""
    log = run_job(cluster, tmp_path, "--nodes=2", "--ntasks-per-node=1", "--wrap",
                  f"{launch} {sys.executable} {WORKER} {backend} {tmp_path}")
    ranks = assert_ranks_match_reference(tmp_path, reference, expected_backend, controller)
    assert [r["host"] for r in ranks] == ["node0", "node1"], log
    if controller == "gloo":
        assert [r["interface"] for r in ranks] == ["eth0", "eth0"], log  # HOROVOD_GLOO_IFACE: the bridge



@pytest.mark.slow
@pytest.mark.parametrize(("backend", "controller"), [("torch", None), ("horovod", "gloo")])
def test_rank0_on_the_second_node_is_the_rendezvous(cluster, reference, tmp_path, backend, controller):
    """srun --distribution=arbitrary with SLURM_HOSTFILE listing node1 first: rank 0 (which
    serves the TCP store) runs on node1, and the ranks meet there, not at the first node."""
    (tmp_path / "hosts").write_text("node1\nnode0\n")
    job = sbatch(cluster, tmp_path, f"{JOB_ENV},SLURM_HOSTFILE={tmp_path / 'hosts'}", "--nodes=2",
                 "--ntasks-per-node=1", "--time=5", "--wrap",
                 f"srun --distribution=arbitrary {sys.executable} {WORKER} {backend} {tmp_path}")
    state = cluster.wait_job(job, ENDED, timeout=300)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert state == "COMPLETED", log[-4000:]
    ranks = assert_ranks_match_reference(tmp_path, reference, backend, controller)
    assert [r["host"] for r in ranks] == ["node1", "node0"], log


@pytest.mark.slow
def test_two_steps_of_one_job_at_once_each_meet_on_their_own_port(cluster, reference, tmp_path):
    """Two srun steps of one job, started together, both with rank 0 on node0: each step's
    ranks meet at 20000 + (job + 7919·step) mod 20000, not at one shared (taken) port."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    log = run_job(cluster, tmp_path, "--nodes=2", "--ntasks-per-node=1", "--time=5", "--wrap",
                  f"srun --overlap {sys.executable} {WORKER} torch {one} & "
                  f"srun --overlap {sys.executable} {WORKER} torch {two} & wait", timeout=300)
    for out in (one, two):
        ranks = assert_ranks_match_reference(out, reference, "torch", None)
        assert [r["host"] for r in ranks] == ["node0", "node1"], log


@pytest.mark.slow
def test_gloo_takes_the_cluster_interface_when_node_names_resolve_to_loopback(cluster, reference, tmp_path):
    """Debian names the host itself 127.0.1.1: gloo, left alone, would bind there and offer
    that address to the other node.  The interface that routes to the job's other nodes
    (eth0) is exported as GLOO_SOCKET_IFNAME instead."""
    cluster.name_self_loopback(True)
    try:
        log = run_job(cluster, tmp_path, "--nodes=2", "--ntasks-per-node=1", "--time=8", "--wrap",
                      f"srun sh -c 'getent hosts $(hostname)' && srun {sys.executable} {WORKER} torch {tmp_path}",
                      timeout=600)
    finally:
        cluster.name_self_loopback(False)
    assert "127.0.1.1       node0" in log and "127.0.1.1       node1" in log, log
    ranks = assert_ranks_match_reference(tmp_path, reference, "torch", None)
    assert [r["host"] for r in ranks] == ["node0", "node1"]
    assert [r["interface"] for r in ranks] == ["eth0", "eth0"], log


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("data"))


def wait_for_job_checkpoint(cluster: MultiNodeSlurm, job: str, path: Path, min_epoch: int,
                            timeout: float = 300) -> None:
    """`wait_for_checkpoint`, failing at once with the job's output when the job ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return wait_for_checkpoint(path, min_epoch, timeout=5)
        except TimeoutError:
            state = cluster.job_field(job, "JobState")
            if state in ENDED:
                log = next(path.parents[1].glob(f"job-{job}.out"), None)
                pytest.fail(f"job {job} {state} before a checkpoint of epoch {min_epoch}:\n"
                            f"{log.read_text()[-4000:] if log else ''}")
    raise TimeoutError(f"no checkpoint of epoch >= {min_epoch} at {path} after {timeout:.0f} s")


def history_epochs(path: Path) -> list[int]:
    return [row["epoch"] for row in read_checkpoint(path)["history"]]


@pytest.mark.slow
@pytest.mark.parametrize(("variables", "expected"), [
    ("", "torch.distributed: gloo, 2 ranks via slurm, store node0:"),  # rendezvous at the first node
    (",GALHPC_BACKEND=horovod", "horovod: 2 ranks over gloo via slurm"),
    (",GALHPC_BACKEND=horovod,GALHPC_SRUN_ARGS=--mpi=pmix", "horovod: 2 ranks over mpi via pmix"),
])
def test_sbatch_train_sh_on_two_nodes(cluster, config_path, tmp_path, variables, expected, trained_models):
    """`sbatch --nodes=2 --ntasks-per-node=1 jobs/train.sh cfg.yaml`: torch.distributed, Horovod
    over gloo (plain srun) and Horovod over MPI (srun --mpi=pmix) give the same model."""
    out = tmp_path / "run"
    job = sbatch(cluster, tmp_path, JOB_ENV + variables, "--nodes=2", "--ntasks-per-node=1", str(TRAIN_SH),
                 str(config_path), "--out-dir", str(out))
    state = cluster.wait_job(job, ENDED, timeout=300)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert state == "COMPLETED", log[-4000:]
    assert "launch (srun, 2 rank(s))" in log and expected in log, log
    checkpoint = read_checkpoint(out / "ckpt.pt")
    assert checkpoint["position"]["epoch"] == 2 and checkpoint["position"]["step"] == 8, log  # 2 x 72 images: 4 x 16
    for other in trained_models:  # every backend trains the same model (float sums in another order)
        for name, value in other.items():
            torch.testing.assert_close(checkpoint["model_state"][name], value, rtol=1e-4, atol=1e-5)
    trained_models.append(checkpoint["model_state"])


@pytest.fixture(scope="module")
def trained_models() -> list[dict]:
    """The models of test_sbatch_train_sh_on_two_nodes's runs, compared with each other."""
    return []


@pytest.mark.slow
def test_usr1_to_a_two_node_job_saves_once_requeues_and_resumes(cluster, config_path, tmp_path):
    """Rank 0 runs on node1, the batch script on node0 (srun -m arbitrary): the stop marker
    rank 0 writes must be on the shared file system for the script to see it.  Horovod over
    MPI/PMIx (the gloo rendezvous at rank 0's node: test_rank0_on_the_second_node_is_the_rendezvous)."""
    out = tmp_path / "run"
    epochs = STOPPED_RUN_EPOCHS
    (tmp_path / "hosts").write_text("node1\nnode0\n")
    env = (f"{JOB_ENV},SLURM_HOSTFILE={tmp_path / 'hosts'},GALHPC_BACKEND=horovod,"
           "GALHPC_SRUN_ARGS=--mpi=pmix --distribution=arbitrary")
    job = sbatch(cluster, tmp_path, env, "--nodes=2", "--ntasks-per-node=1", str(TRAIN_SH), str(config_path),
                 "--out-dir", str(out), "--epochs", str(epochs))
    wait_for_job_checkpoint(cluster, job, out / "ckpt.pt", min_epoch=1)
    cluster.run(["scancel", "--signal=USR1", job])  # to every rank, as --signal=USR1@120 does
    state = cluster.wait_job(job, ENDED, timeout=400)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert state == "COMPLETED", log
    assert cluster.job_field(job, "Restarts") == "1", log
    assert f"stop marker {tmp_path}/.galhpc-stop-{job}." in log, log  # rank 0 on node1 wrote it, node0 read it
    assert log.count("stopped by SIGUSR1") >= 1 and "requeueing job" in log, log
    resumed = [line for line in log.splitlines() if "resuming from" in line][0]
    assert " at epoch 0, batch 0 " not in resumed, resumed
    assert read_checkpoint(out / "ckpt.pt")["position"]["epoch"] == epochs
    assert history_epochs(out / "ckpt.pt") == list(range(epochs))  # no epoch run twice
    assert not list(tmp_path.glob(".galhpc-stop-*"))  # the marker's folder is removed


@pytest.mark.slow
def test_a_node_killed_mid_job_then_a_rerun_resumes_from_the_checkpoint(cluster, config_path, tmp_path):
    out = tmp_path / "run"
    epochs = STOPPED_RUN_EPOCHS
    args = ["--nodes=2", "--ntasks-per-node=1", "--no-requeue", str(TRAIN_SH), str(config_path),
            "--out-dir", str(out), "--epochs", str(epochs)]
    job = sbatch(cluster, tmp_path, JOB_ENV, *args)
    wait_for_job_checkpoint(cluster, job, out / "ckpt.pt", min_epoch=1)
    cluster.kill_node("node1")
    try:
        state = cluster.wait_job(job, ENDED, timeout=120)
        saved = read_checkpoint(out / "ckpt.pt")["position"]["epoch"]
    finally:
        cluster.start_node("node1")
    log = (tmp_path / f"job-{job}.out").read_text()
    assert state in ("FAILED", "NODE_FAIL"), f"{state}\n{log}"
    assert 1 <= saved < epochs, log
    cluster.wait_node("node1", ("idle",), timeout=60)
    log = run_job(cluster, tmp_path, *args, timeout=600)
    resumed = [line for line in log.splitlines() if "resuming from" in line][-1]
    assert f" at epoch {saved}, batch 0 " in resumed, resumed
    assert history_epochs(out / "ckpt.pt") == list(range(epochs))


GENERATE = ["--n", "1280", "--batch-size", "32", "--shard-size", "64", "--seed", "11", "--threads", "1",
            "--device", "cpu"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> tuple[Path, Path]:
    """A checkpoint and its one-process catalogue (GENERATE)."""
    root = tmp_path_factory.mktemp("catalogue")
    ckpt = make_checkpoint(root / "av.pt", "astrovader")
    one = root / "one.h5"
    generate_from_checkpoint(ckpt, one, GenerateOptions(n=1280, batch_size=32, seed=11),
                             OutputOptions(shard_size=64, threads=1, device="cpu"))
    return ckpt, one


def generate_command(launch: str, ckpt: Path, out: Path) -> str:
    args = " ".join(GENERATE)
    return f"{launch} {sys.executable} -m galhpc.cli.generate --checkpoint {ckpt} --out {out} {args}"


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["srun --mpi=pmix", "mpirun --bind-to none"])
def test_generate_on_two_nodes_times_two_ranks_equals_one_rank(cluster, catalogue, tmp_path, launch):
    ckpt, one = catalogue
    out = tmp_path / "four.h5"
    run_job(cluster, tmp_path, "--nodes=2", "--ntasks-per-node=2", "--wrap", generate_command(launch, ckpt, out))
    assert_same_catalogue(one, out)
    with h5py.File(out) as f:
        assert f["meta"].attrs["ranks"] == 4


@pytest.mark.slow
def test_plain_srun_over_two_nodes_is_refused_instead_of_running_twice(cluster, catalogue, tmp_path):
    """srun without PMI: Slurm says 2 tasks, MPI would see 1 rank each, and both would write
    every shard.  Open MPI refuses a direct launch without PMI itself; an MPI that starts
    singletons meets galhpc's own refusal (runtime.world.mpi_world)."""
    ckpt, _ = catalogue
    out = tmp_path / "refused.h5"
    job = sbatch(cluster, tmp_path, JOB_ENV, "--nodes=2", "--ntasks-per-node=1", "--wrap",
                 generate_command("srun --mpi=none", ckpt, out))
    state = cluster.wait_job(job, ENDED, timeout=300)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert state == "FAILED", log
    assert ("slurm started 2 tasks but MPI sees 1 rank(s)" in log
            or 'The application appears to have been direct launched using "srun"' in log), log
    assert not out.exists() and not list(out.parent.glob("refused.h5.shards/0*.h5"))


def kill_a_node_mid_catalogue_then_rerun(cluster: MultiNodeSlurm, workdir: Path, command: str, out: Path,
                                         one: Path, *, rerun: str | None = None, env: str = JOB_ENV,
                                         lock_left_on: str | None = None) -> None:
    """Run `command` (with `env`) on 2 nodes x 2 ranks, kill node1 once two shards are written,
    then re-run (`rerun`, default `command`): the first run leaves only complete shards (no
    master; its rank 0's lock when rank 0 ran on the killed node, `lock_left_on`), the re-run
    gives `one`'s catalogue and leaves no temporary behind."""
    shards = out.with_name(out.name + ".shards")
    allocation = ["--nodes=2", "--ntasks-per-node=2", "--no-requeue"]
    job = sbatch(cluster, workdir, env, *allocation, "--wrap", command)
    deadline = time.monotonic() + 300
    while not (shards.is_dir() and len(list(shards.glob("0*.h5"))) >= 2):
        running = cluster.job_field(job, "JobState") not in ENDED
        assert time.monotonic() < deadline and running, "no shard before the end"
        time.sleep(0.05)
    cluster.kill_node("node1")
    try:
        state = cluster.wait_job(job, ENDED, timeout=120)
    finally:
        cluster.start_node("node1")
    assert state in ("FAILED", "NODE_FAIL"), (workdir / f"job-{job}.out").read_text()
    assert not out.exists()  # the master appears only when every shard is complete
    done = shard_digests(out)
    assert 2 <= len(done) < 20 and all(shard_digests(one)[k] == v for k, v in done.items())
    if lock_left_on:
        assert out.with_name(out.name + ".lock").read_text().startswith(f"{lock_left_on}:")
    cluster.wait_node("node1", ("idle",), timeout=60)
    log = run_job(cluster, workdir, *allocation, "--wrap", rerun or command)
    assert_same_catalogue(one, out)
    left = [p.name for p in [*shards.iterdir(), *out.parent.iterdir()] if ".tmp." in p.name or p.suffix == ".lock"]
    assert left == [], (left, log)


@pytest.mark.slow
def test_generate_with_a_node_killed_then_rerun_equals_one_rank(cluster, catalogue, tmp_path):
    ckpt, one = catalogue
    out = tmp_path / "killed.h5"
    kill_a_node_mid_catalogue_then_rerun(cluster, tmp_path, generate_command("srun --mpi=pmix", ckpt, out), out, one)

ENCODE = ["--batch-size", "50", "--shard-size", "100", "--gmm-components", "5", "--gmm-fit-objects", "250",
          "--threads", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A store of 2,000 objects, a VAE checkpoint and their one-process catalogue (ENCODE)."""
    root = tmp_path_factory.mktemp("encoded")
    store = write_store(root / "store.h5", n=2000)
    vae = make_checkpoint(root / "vae.pt", "vae")
    one = root / "one.h5"
    encode_from_checkpoint(vae, store, one, EncodeOptions(batch_size=50, gmm_components=5, gmm_fit_objects=250),
                           OutputOptions(shard_size=100, threads=1, device="cpu"))
    return vae, store, one


def encode_command(launch: str, vae: Path, store: Path, out: Path) -> str:
    return (f"{launch} {sys.executable} -m galhpc.cli.encode --checkpoint {vae} --store {store} --out {out} "
            + " ".join(ENCODE))


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["srun --mpi=pmix", "mpirun --bind-to none"])
def test_encode_on_two_nodes_times_two_ranks_equals_one_rank(cluster, encoded, tmp_path, launch):
    """Latents, responsibilities γ and the post-hoc GMM fitted over ranks on two hosts."""
    vae, store, one = encoded
    out = tmp_path / "four.h5"
    log = run_job(cluster, tmp_path, "--nodes=2", "--ntasks-per-node=2", "--wrap",
                  f"srun sh -c 'hostname' && {encode_command(launch, vae, store, out)}")
    assert sorted(line for line in log.splitlines() if line.startswith("node")) == ["node0", "node0", "node1",
                                                                                    "node1"], log
    assert_same_catalogue(one, out)
    with h5py.File(out) as f:
        assert f["meta"].attrs["ranks"] == 4


@pytest.mark.slow
def test_encode_with_a_node_killed_then_rerun_equals_one_rank(cluster, encoded, tmp_path):
    """Rank 0 (which holds the output's lock) runs on node1, the node that is killed; the
    re-run is another job whose rank 0 runs on node0: the dead job's lock and node1's
    partial shards are taken over and removed (Slurm says that job ended)."""
    vae, store, one = encoded
    out = tmp_path / "killed.h5"
    (tmp_path / "hosts").write_text("node1\nnode1\nnode0\nnode0\n")
    first = encode_command("srun --mpi=pmix --distribution=arbitrary", vae, store, out)
    kill_a_node_mid_catalogue_then_rerun(cluster, tmp_path, first, out, one,
                                         rerun=encode_command("srun --mpi=pmix", vae, store, out),
                                         env=f"{JOB_ENV},SLURM_HOSTFILE={tmp_path / 'hosts'}", lock_left_on="node1")
