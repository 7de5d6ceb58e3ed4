"""jobs/train.sh and galhpc.submit (submitit) on a real one-node Slurm cluster (tests/slurm_cluster.py).

- sbatch jobs/train.sh on 2 tasks (srun -> torch.distributed) writes the checkpoint;
- a job told to stop (scancel --signal=USR1, as Slurm does before the time limit) saves,
  requeues itself and resumes from its checkpoint: epochs continue, none is run twice;
- the same with GALHPC_LAUNCHER=torchrun (its status 1 read as 75 through the stop marker),
  signalled through the batch shell or to every process;
- submitit: the same through SlurmExecutor with a preemption signal, and LocalExecutor.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from slurm_cluster import LocalSlurm, missing_requirements  # noqa: E402
from tiny_run import STOPPED_RUN_EPOCHS, read_checkpoint, wait_for_checkpoint, write_tiny_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRAIN_SH = REPO / "jobs" / "train.sh"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if missing_requirements() is not None:
        pytest.skip(f"no local Slurm: {missing_requirements()}")
    slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"), cpus=2)
    slurm.start()
    yield slurm
    slurm.stop()


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("data"))


def checkpoint_position(path: Path) -> dict:
    return read_checkpoint(path)["position"]


def sbatch(cluster: LocalSlurm, workdir: Path, *args: str) -> str:
    proc = cluster.run(["sbatch", "--parsable", f"--chdir={workdir}", f"--output={workdir}/job-%j.out", *args])
    return proc.stdout.strip().split(";")[0]


def test_sbatch_train_sh_on_two_tasks_writes_the_checkpoint(cluster, config_path, tmp_path):
    out = tmp_path / "run"
    job = sbatch(cluster, tmp_path, "--ntasks-per-node=2", str(TRAIN_SH), str(config_path), "--out", str(out))
    state = cluster.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=400)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert state == "COMPLETED", log
    assert "launch (srun, 2 rank(s))" in log
    position = checkpoint_position(out / "ckpt.pt")
    # 144 training images: 2 ranks x 72 -> 4 batches of 16 per epoch (one rank would take 9)
    assert position["epoch"] == 2 and position["batch"] == 0 and position["step"] == 8, log
    assert (out / "losses.csv").read_text().count("\n") == 3  # header + 2 epochs


def test_stopped_job_requeues_and_resumes(cluster, config_path, tmp_path):
    out = tmp_path / "run"
    epochs = STOPPED_RUN_EPOCHS
    job = sbatch(cluster, tmp_path, str(TRAIN_SH), str(config_path), "--out", str(out), "--epochs", str(epochs))
    wait_for_checkpoint(out / "ckpt.pt", min_epoch=1, timeout=300)
    cluster.run(["scancel", "--signal=USR1", job])  # what --signal=USR1@120 does before the time limit
    state = cluster.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=400)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert state == "COMPLETED", log
    assert cluster.job_field(job, "Restarts") == "1", log
    assert "requeueing job" in log and "resuming from" in log, log
    resumed = [line for line in log.splitlines() if "resuming from" in line][0]
    assert " at epoch 0, batch 0 " not in resumed, resumed  # it continued, not restarted
    ckpt = read_checkpoint(out / "ckpt.pt")
    assert ckpt["position"]["epoch"] == epochs
    assert [row["epoch"] for row in ckpt["history"]] == list(range(epochs))  # no epoch run twice


@pytest.mark.parametrize("scope", ["--batch", "--full"])
def test_torchrun_job_stopped_by_usr1_requeues_and_resumes(cluster, config_path, tmp_path, scope):
    """torchrun exits 1 when its ranks exit 75; train.sh reads the trainer's stop marker and
    requeues all the same.  --batch: the shell only (as --signal=B:USR1@120), which passes
    USR1 on; --full: the shell, torchrun and the ranks alike."""
    out = tmp_path / "run"
    epochs = STOPPED_RUN_EPOCHS
    job = sbatch(cluster, tmp_path, "--ntasks-per-node=2", "--export=ALL,GALHPC_LAUNCHER=torchrun",
                 str(TRAIN_SH), str(config_path), "--out", str(out), "--epochs", str(epochs))
    wait_for_checkpoint(out / "ckpt.pt", min_epoch=1, timeout=300)
    cluster.run(["scancel", scope, "--signal=USR1", job])
    state = cluster.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=400)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert state == "COMPLETED", log
    assert "launch (torchrun, 2 rank(s))" in log and "launcher status 1 -> 75" in log, log
    assert cluster.job_field(job, "Restarts") == "1", log
    assert "requeueing job" in log and "resuming from" in log, log
    resumed = [line for line in log.splitlines() if "resuming from" in line][0]
    assert " at epoch 0, batch 0 " not in resumed, resumed
    ckpt = read_checkpoint(out / "ckpt.pt")
    assert ckpt["position"]["epoch"] == epochs and ckpt["position"]["step"] == 4 * epochs
    assert [row["epoch"] for row in ckpt["history"]] == list(range(epochs))


def test_submitit_slurm_job_is_preempted_requeued_and_resumes(cluster, config_path, tmp_path, monkeypatch):
    from galhpc.submit import submit_training

    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    out = tmp_path / "run"
    epochs = STOPPED_RUN_EPOCHS
    job = submit_training(config_path, tmp_path / "submitit", {"out_dir": str(out), "epochs": epochs},
                          cluster="slurm", timeout_min=30, signal_delay_s=60)
    wait_for_checkpoint(out / "ckpt.pt", min_epoch=1, timeout=300)
    cluster.run(["scancel", "--signal=USR2", job.job_id])  # submitit's preemption / time-limit signal
    result = job.result()
    assert result["epochs"] == epochs
    assert [row["epoch"] for row in result["history"]] == list(range(epochs))
    assert cluster.job_field(job.job_id, "Restarts") == "1"
    assert "resuming from" in job.stderr()


def test_submitit_local_executor_trains(config_path, tmp_path):
    from galhpc.submit import submit_training

    out = tmp_path / "run"
    job = submit_training(config_path, tmp_path / "submitit", {"out_dir": str(out), "epochs": 1},
                          cluster="local", timeout_min=20)
    result = job.result()
    assert result["epochs"] == 1 and result["steps"] > 0
    assert checkpoint_position(out / "ckpt.pt")["epoch"] == 1


def test_sbatch_generate_and_encode_after_training(cluster, config_path, tmp_path):
    """train.sh, then generate.sh and encode.sh on 2 tasks (mpirun inside the allocation),
    chained with --dependency=afterok as a real pipeline would be."""
    jobs = REPO / "jobs"
    ckpt = tmp_path / "run" / "ckpt.pt"
    env = "--export=ALL,OMPI_MCA_btl_vader_single_copy_mechanism=none,GALHPC_PROGRESS=0"
    train = sbatch(cluster, tmp_path, env, str(jobs / "train.sh"), str(config_path), "--out",
                   str(tmp_path / "run"), "--epochs", "1")
    after = f"--dependency=afterok:{train}"
    generate = sbatch(cluster, tmp_path, env, after, str(jobs / "generate.sh"), str(ckpt), "48",
                      str(tmp_path / "synth.h5"))
    encode = sbatch(cluster, tmp_path, env, after, str(jobs / "encode.sh"), str(ckpt),
                    str(config_path.parent / "store.h5"), str(tmp_path / "clusters.h5"), "--gmm-components", "3")
    for job in (train, generate, encode):
        state = cluster.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=400)
        log = (tmp_path / f"job-{job}.out").read_text()
        assert state == "COMPLETED", log
    assert "launch (mpirun, 2 rank(s))" in (tmp_path / f"job-{generate}.out").read_text()
    with h5py.File(tmp_path / "synth.h5") as synth, h5py.File(tmp_path / "clusters.h5") as clusters:
        assert synth["images"].shape == (48, 16, 16)
        assert clusters["mu"].shape == (160, 4) and clusters["gamma"].shape == (160, 3)


def test_generate_job_stopped_by_usr1_requeues_and_gives_the_uninterrupted_catalogue(cluster, config_path, tmp_path):
    """jobs/generate.sh under mpirun: scancel --signal=USR1 mid-run -> the ranks finish their
    batch, keep complete shards and exit 75 -> the job requeues -> the re-run completes the
    catalogue, equal to one uninterrupted run."""
    import subprocess
    import time

    import numpy as np

    env = "--export=ALL,OMPI_MCA_btl_vader_single_copy_mechanism=none,GALHPC_PROGRESS=0"
    train = sbatch(cluster, tmp_path, env, str(TRAIN_SH), str(config_path), "--out", str(tmp_path / "run"),
                   "--epochs", "1")
    assert cluster.wait_job(train, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=400) == "COMPLETED"
    ckpt, out = tmp_path / "run" / "ckpt.pt", tmp_path / "synth.h5"
    options = ["--shard-size", "2048", "--batch-size", "256", "--seed", "5"]
    job = sbatch(cluster, tmp_path, env, str(REPO / "jobs" / "generate.sh"), str(ckpt), "100000", str(out), *options)
    shard_dir = out.with_name(out.name + ".shards")
    deadline = time.time() + 300
    while not list(shard_dir.glob("0*.h5")) and time.time() < deadline:
        time.sleep(0.2)
    cluster.run(["scancel", "--signal=USR1", job])  # what --signal=USR1@120 does before the time limit
    state = cluster.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=600)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert state == "COMPLETED", log
    assert cluster.job_field(job, "Restarts") == "1", log
    reference = tmp_path / "reference.h5"
    subprocess.run([sys.executable, "-m", "galhpc.cli.generate", "--checkpoint", str(ckpt), "--n", "100000",
                    "--out", str(reference), *options, "--threads", "1"], check=True, capture_output=True, timeout=600)
    with h5py.File(out) as a, h5py.File(reference) as b:
        assert np.array_equal(a["images"][()], b["images"][()]) and np.array_equal(a["z"][()], b["z"][()])


@pytest.mark.parametrize(("script", "args"), [
    ("train.sh", ["missing.yaml", "--out", "run"]),
    ("encode.sh", ["missing.pt", "store.h5", "enc.h5"]),
    ("generate.sh", ["missing.pt", "10", "gen.h5"]),
])
def test_a_job_script_in_a_folder_with_a_space_finds_its_own_folder(cluster, tmp_path, script, args):
    """sbatch runs a copy of the script from its spool: the script finds its own folder (for
    common.sh) through scontrol, whose Command= holds the path, spaces and all."""
    import shutil

    jobs = tmp_path / "my jobs"
    shutil.copytree(REPO / "jobs", jobs)
    job = sbatch(cluster, tmp_path, "--export=ALL,GALHPC_LAUNCHER=none,GALHPC_PROGRESS=0", str(jobs / script),
                 *(str(tmp_path / a) if a.endswith((".yaml", ".pt", ".h5")) or a == "run" else a for a in args))
    state = cluster.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=300)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert state == "FAILED", log
    assert "No such file" not in log and "[galhpc-job " in log, log  # common.sh was found and sourced
    assert "missing." in log, log  # and the script went on to refuse the missing input
    if script != "train.sh":  # (train.sh checks its config itself; the others leave it to the command)
        assert f"galhpc-{script.removesuffix('.sh')}: error:" in log, log
