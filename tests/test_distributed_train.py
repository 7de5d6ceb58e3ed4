"""galhpc-train on 2 ranks through `bash jobs/train.sh` (mpirun; Horovod when installed):
a SIGUSR1 to the job script reaches the ranks, the run saves and exits 75, and the same
command resumes from the checkpoint and finishes without repeating an epoch."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny_run import read_checkpoint, wait_for_checkpoint, write_tiny_run  # noqa: E402

TRAIN_SH = Path(__file__).resolve().parents[1] / "jobs" / "train.sh"
BACKEND = "horovod" if importlib.util.find_spec("horovod") else "torch"

pytestmark = pytest.mark.slow


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_COMM", "PMI_")) and k not in ("RANK", "WORLD_SIZE")}
    env.update(GALHPC_NPROC="2", GALHPC_BACKEND=BACKEND, GALHPC_MPIRUN_ARGS="--oversubscribe",
               GALHPC_PROGRESS="0", OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_btl_vader_single_copy_mechanism="none")
    return env


def test_train_sh_two_ranks_stop_and_resume(tmp_path):
    config = write_tiny_run(tmp_path)
    out, epochs = tmp_path / "run", 5
    command = ["bash", str(TRAIN_SH), str(config), "--out", str(out), "--epochs", str(epochs)]
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as log:
        proc = subprocess.Popen(command, env=job_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_checkpoint(out / "ckpt.pt", min_epoch=1, timeout=300)
            proc.send_signal(signal.SIGUSR1)
            rc = proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = first_log.read_text()
    assert rc == 75, text
    assert "launch (mpirun, 2 rank(s))" in text and "got SIGUSR1, passing it on" in text, text
    assert "run the same command again to resume" in text
    stopped_at = read_checkpoint(out / "ckpt.pt")["position"]
    assert stopped_at["epoch"] < epochs

    second = subprocess.run(command, env=job_env(), capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming from" in second.stderr
    ckpt = read_checkpoint(out / "ckpt.pt")
    # 144 training images on 2 ranks: 4 batches of 16 per rank and epoch
    assert ckpt["position"] == {**ckpt["position"], "epoch": epochs, "batch": 0, "step": 4 * epochs}
    assert [row["epoch"] for row in ckpt["history"]] == list(range(epochs))

