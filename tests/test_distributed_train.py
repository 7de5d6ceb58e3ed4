"""galhpc-train on 2 ranks through `bash jobs/train.sh` (mpirun; Horovod when installed):
a SIGUSR1 to the job script reaches the ranks, the run saves and exits 75, and the same
command resumes from the checkpoint and finishes without repeating an epoch."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tiny_run  # noqa: E402
from tiny_run import read_checkpoint, resume_to_the_end, stop_after_first_epoch, write_tiny_run  # noqa: E402

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
    out, epochs = tmp_path / "run", tiny_run.STOPPED_RUN_EPOCHS
    command = ["bash", str(TRAIN_SH), str(config), "--out", str(out), "--epochs", str(epochs)]
    first_log = tmp_path / "first.log"
    rc = stop_after_first_epoch(command, job_env(), first_log, out / "ckpt.pt",
                                lambda proc: proc.send_signal(signal.SIGUSR1))
    text = first_log.read_text()
    assert rc == 75, text
    assert "launch (mpirun, 2 rank(s))" in text and "got SIGUSR1, passing it on" in text, text
    assert "run the same command again to resume" in text
    stopped_at = read_checkpoint(out / "ckpt.pt")["position"]
    assert stopped_at["epoch"] < epochs

    resume_to_the_end(command, job_env(), out / "ckpt.pt", epochs)
