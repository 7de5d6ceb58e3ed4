"""A preempted training job exits 75 (so Slurm requeues it) under torchrun too.

torchrun reports ranks that exit 75 as its own failure (status 1) and terminates the other
ranks; galhpc-train's rank 0 writes $GALHPC_STOP_MARKER with the checkpoint, and
jobs/train.sh maps the launcher's status to 75.  The real `bash jobs/train.sh` with
GALHPC_LAUNCHER=torchrun runs 2 ranks, is signalled the ways Slurm does it (the batch shell
only: --signal=B:USR1, scancel --batch; every process of the job: scancel --full, the
SIGTERM of preemption), exits 75, and the same command resumes and finishes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from galhpc.train.preemption import STOP_MARKER_ENV, mark_stopped

sys.path.insert(0, str(Path(__file__).parent))
import tiny_run  # noqa: E402
from tiny_run import read_checkpoint, resume_to_the_end, stop_after_first_epoch, write_tiny_run  # noqa: E402

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def job_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_COMM", "PMI_", "TORCHELASTIC_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", STOP_MARKER_ENV)}
    env.update(GALHPC_NPROC="2", GALHPC_LAUNCHER="torchrun", GALHPC_BACKEND="torch", GALHPC_PROGRESS="0",
               OMP_NUM_THREADS="1", TMPDIR=str(tmp))
    return env


def descendants(pid: int) -> list[int]:
    """pid and all its descendants (torchrun starts its ranks in new sessions, so no killpg)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        out = subprocess.run(["pgrep", "-P", str(p)], capture_output=True, text=True).stdout
        todo.extend(int(c) for c in out.split())
    return found


@pytest.mark.slow
@pytest.mark.parametrize("target, sig", [
    ("script", signal.SIGUSR1),  # sbatch --signal=B:USR1@120, scancel --batch --signal=USR1
    ("every process", signal.SIGUSR1),  # scancel --full --signal=USR1: torchrun gets it too
    ("every process", signal.SIGTERM),  # preemption / time limit: SIGTERM to every process
])
def test_torchrun_job_stopped_by_a_signal_exits_75_and_resumes(tmp_path, target, sig):
    config = write_tiny_run(tmp_path)
    out, epochs = tmp_path / "run", tiny_run.STOPPED_RUN_EPOCHS
    command = ["bash", str(JOBS / "train.sh"), str(config), "--out", str(out), "--epochs", str(epochs)]
    first_log, tmp = tmp_path / "first.log", tmp_path / "tmp"
    tmp.mkdir()

    def stop(proc: subprocess.Popen) -> None:
        for pid in [proc.pid] if target == "script" else descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    rc = stop_after_first_epoch(command, job_env(tmp), first_log, out / "ckpt.pt", stop)
    text = first_log.read_text()
    assert rc == 75, text
    assert "launch (torchrun, 2 rank(s))" in text and f"got {sig.name}, passing it on" in text, text
    assert "launcher status 1 -> 75" in text and "run the same command again to resume" in text, text
    stopped_at = read_checkpoint(out / "ckpt.pt")["position"]
    assert 0 < stopped_at["epoch"] < epochs
    assert not list(tmp.glob("galhpc-stop.*"))  # the marker's folder went with the script

    assert "-> 75" not in resume_to_the_end(command, job_env(tmp), out / "ckpt.pt", epochs)


def stopped_status(rc: int, marker: Path) -> tuple[str, str]:
    script = f'source "{JOBS / "common.sh"}"; galhpc_stopped {rc} "{marker}"'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return done.stdout.strip(), done.stderr


def test_job_status_is_75_only_with_the_marker_and_a_failure(tmp_path):
    marker = tmp_path / "stopped"
    assert stopped_status(1, marker)[0] == "1"  # a real failure stays one
    assert stopped_status(75, marker)[0] == "75"
    marker.write_text("checkpoint=run/ckpt.pt\nstep=9\n")
    status, log = stopped_status(1, marker)
    assert status == "75" and "checkpoint=run/ckpt.pt step=9" in log and "launcher status 1 -> 75" in log
    assert stopped_status(138, marker)[0] == "75"  # a launcher killed by the signal
    assert stopped_status(0, marker)[0] == "0"


def test_stop_marker_is_written_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.delenv(STOP_MARKER_ENV, raising=False)
    assert mark_stopped(tmp_path / "ckpt.pt", 3) is None
    monkeypatch.setenv(STOP_MARKER_ENV, str(tmp_path / "stopped"))
    assert mark_stopped(tmp_path / "ckpt.pt", 3) == tmp_path / "stopped"
    assert (tmp_path / "stopped").read_text() == f"checkpoint={tmp_path / 'ckpt.pt'}\nstep=3\n"
    assert [p.name for p in tmp_path.iterdir()] == ["stopped"]  # no temporary left
    monkeypatch.setenv(STOP_MARKER_ENV, str(tmp_path / "missing" / "stopped"))
    assert mark_stopped(tmp_path / "ckpt.pt", 3) is None  # logged, never raised
