"""An output in use by a live run is refused ("in use by host:pid") before anything is
deleted; a lock left by a dead process is taken over.  Two real concurrent generate runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from galhpc.runtime.files import OutputInUseError, OutputLock

sys.path.insert(0, str(Path(__file__).parent))
from test_catalog_generate import make_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "GALHPC_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


def test_lock_is_exclusive_and_a_dead_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "c.h5"
    with OutputLock(out) as first:
        assert first.path.read_text().strip() == f"{socket.gethostname()}:{os.getpid()}"
        child = subprocess.run([sys.executable, "-c", (
            "import sys; from galhpc.runtime.files import OutputLock\n"
            f"OutputLock({str(out)!r}).acquire()")], env=ENV, capture_output=True, text=True, timeout=120)
        assert child.returncode != 0 and f"in use by {socket.gethostname()}:{os.getpid()}" in child.stderr
    assert not first.path.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "c.h5.lock").write_text(f"{socket.gethostname()}:{dead.pid}\n")
    with OutputLock(out):  # its writer is gone
        pass
    (tmp_path / "c.h5.lock").write_text("another-node:1234\n")  # cannot be checked from here: refused
    with pytest.raises(OutputInUseError, match="in use by another-node:1234"):
        OutputLock(out).acquire()


def test_a_killed_holder_not_yet_reaped_is_gone(tmp_path):
    """A rank SIGKILLed with its mpirun stays a zombie until init reaps it: its pid still
    answers kill(pid, 0), but the run is gone and its lock is taken over."""
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.01)  # exited, not waited for: a zombie
    try:
        os.kill(zombie.pid, 0)  # the pid still answers
        out = tmp_path / "c.h5"
        (tmp_path / "c.h5.lock").write_text(f"{socket.gethostname()}:{zombie.pid}\n")
        assert OutputLock(out).live_holder() is None
        with OutputLock(out) as lock:
            assert lock.held
    finally:
        zombie.wait()


@pytest.fixture
def foreign_lock(tmp_path, monkeypatch):
    """A lock of a rank 0 on another node (node7, in Slurm job 41), with Slurm's answers faked."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    out = tmp_path / "c.h5"
    out.with_name("c.h5.lock").write_text("node7:1234 slurm_job=41\n")
    return out


def test_a_requeued_job_takes_over_its_earlier_runs_lock_from_another_node(foreign_lock, monkeypatch):
    """Rank 0 ran on node7, which died; Slurm requeued the job (restart 1) onto this node."""
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with OutputLock(foreign_lock) as lock:
        assert lock.path.read_text().strip() == f"{socket.gethostname()}:{os.getpid()} slurm_job=41 restart=1"


def test_another_step_of_the_same_job_run_is_refused(foreign_lock, monkeypatch):
    """Two srun steps of one job (same restart count) on one output: the first still runs."""
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    with pytest.raises(OutputInUseError, match="in use by node7:1234 slurm_job=41"):
        OutputLock(foreign_lock).acquire()


def test_a_live_pid_of_an_ended_job_or_of_a_stale_lock_is_a_reused_pid(tmp_path, monkeypatch):
    """The pid in the lock runs again, but as another program: Slurm says the holder's job
    ended, or (no Slurm) the lock has not been refreshed for longer than stale_s."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    out, live = tmp_path / "c.h5", os.getppid()
    lock_file = out.with_name("c.h5.lock")
    lock_file.write_text(f"{socket.gethostname()}:{live} slurm_job=13\n")
    monkeypatch.setattr("galhpc.runtime.files.slurm_job_state", lambda job: "COMPLETED")
    OutputLock(out).acquire().release()
    lock_file.write_text(f"{socket.gethostname()}:{live}\n")
    with pytest.raises(OutputInUseError):  # fresh: the live pid may be its writer
        OutputLock(out, stale_s=60).acquire()
    old = time.time() - 7200
    os.utime(lock_file, (old, old))
    OutputLock(out, stale_s=60).acquire().release()


_CONTENDER = """
import sys, time
from pathlib import Path
from galhpc.runtime.files import OutputLock, OutputInUseError
out, sync, me, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def wait_for(pattern):
    deadline = time.monotonic() + 300
    while len(list(sync.glob(pattern))) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {n} {pattern}")
        time.sleep(0.002)

(sync / f"ready.{me}").touch()
wait_for("ready.*")  # every contender has imported: all ask at once
try:
    lock = OutputLock(out).acquire()
except OutputInUseError:
    answer, lock = "refused", None
else:
    answer = f"held at {time.time():.6f}"
tmp = sync / f".answer.{me}"
tmp.write_text(answer)
tmp.rename(sync / f"answer.{me}")
if lock is not None:  # keep it until every contender has answered: a late one cannot find it free
    wait_for("answer.*")
    lock.release()
"""


def test_two_runs_never_both_take_over_one_stale_lock(tmp_path):
    """8 processes ask together for a lock whose writer is dead: exactly one gets it.

    Each holder keeps the lock until all 8 have answered (files, not a start window), so
    two answers "held" can only mean two processes held it at the same time.
    """
    out, n = tmp_path / "c.h5", 8
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for trial in range(2):
        sync = tmp_path / f"sync{trial}"
        sync.mkdir()
        out.with_name("c.h5.lock").write_text(f"{socket.gethostname()}:{dead.pid}\n")
        procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, str(out), str(sync), str(i), str(n)], env=ENV,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
        answers = sorted((sync / f"answer.{i}").read_text() for i in range(n))
        held = [a for a in answers if a.startswith("held")]
        assert len(held) == 1 and answers.count("refused") == n - 1, (trial, answers)
        assert not out.with_name("c.h5.lock").exists()


def test_a_new_holders_empty_lock_is_not_taken_over_as_the_abandoned_one(tmp_path, monkeypatch):
    """An abandoned empty lock (its writer died before naming itself) is judged gone by two
    runs; run A takes it over and creates its own, still empty for an instant, when run B
    gets the take-over guard: B must see that this is not the file it judged, and stay out."""
    out = tmp_path / "c.h5"
    lock_file = out.with_name("c.h5.lock")
    lock_file.write_text("")
    old = time.time() - 60
    os.utime(lock_file, (old, old))
    calls = []

    def empty_gone(self):
        calls.append(1)
        if len(calls) == 1:  # meanwhile A removed the abandoned lock and created its own, not yet named
            lock_file.unlink()
            lock_file.write_text("")
            return "empty for 60 s"
        lock_file.write_text(f"{socket.gethostname()}:{os.getppid()}\n")  # A names itself (a live pid)
        return None

    monkeypatch.setattr(OutputLock, "_empty_gone", empty_gone)
    with pytest.raises(OutputInUseError, match=f"in use by {socket.gethostname()}:{os.getppid()}"):
        OutputLock(out).acquire()
    assert lock_file.read_text().strip() == f"{socket.gethostname()}:{os.getppid()}"


@pytest.mark.parametrize(("state", "taken"), [("COMPLETED", True), ("NODE_FAIL", True), ("", True),
                                              ("RUNNING", False), ("PENDING", False), ("COMPLETING", False)])
def test_another_jobs_lock_is_taken_over_only_when_slurm_says_it_ended(foreign_lock, monkeypatch, state, taken):
    monkeypatch.setattr("galhpc.runtime.files.slurm_job_state", lambda job: state if job == "41" else None)
    if taken:
        OutputLock(foreign_lock).acquire().release()
    else:
        with pytest.raises(OutputInUseError, match="in use by node7:1234 slurm_job=41"):
            OutputLock(foreign_lock).acquire()


def test_without_slurm_another_hosts_lock_is_taken_over_once_no_longer_refreshed(foreign_lock, monkeypatch):
    monkeypatch.setattr("galhpc.runtime.files.slurm_job_state", lambda job: None)  # no controller to ask
    lock_file = foreign_lock.with_name("c.h5.lock")
    with pytest.raises(OutputInUseError, match="node7:1234"):
        OutputLock(foreign_lock, stale_s=60).acquire()
    old = time.time() - 120
    os.utime(lock_file, (old, old))
    OutputLock(foreign_lock, stale_s=60).acquire().release()


def test_a_held_lock_is_refreshed(tmp_path):
    with OutputLock(tmp_path / "c.h5", heartbeat_s=0.05) as lock:
        old = time.time() - 1000
        os.utime(lock.path, (old, old))
        deadline = time.monotonic() + 60  # a loaded machine may run the refresh thread late, not never
        while time.time() - lock.path.stat().st_mtime > 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert time.time() - lock.path.stat().st_mtime < 10


@pytest.mark.slow  # two real concurrent runs of 20000 objects
@pytest.mark.parametrize("second_seed", ["7", "8"])
def test_second_generate_on_one_out_is_refused_while_the_first_runs(tmp_path, second_seed):
    ckpt = make_checkpoint(tmp_path / "av.pt")
    out = tmp_path / "g.h5"

    go = tmp_path / "go"

    def cmd(seed: str) -> list[str]:  # imports, says so, then waits for `go`: both start the work together
        argv = ["--checkpoint", str(ckpt), "--n", "20000", "--out", str(out), "--batch-size", "16",
                "--shard-size", "256", "--seed", seed, "--threads", "1"]
        script = ("import os, sys, time\nfrom galhpc.cli.generate import main\n"
                  f"open(os.path.join({str(tmp_path)!r}, f'ready.{{os.getpid()}}'), 'w').close()\n"
                  f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\nraise SystemExit(main(sys.argv[1:]))")
        return [sys.executable, "-c", script, *argv]

    first = subprocess.Popen(cmd("7"), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(cmd(second_seed), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(list(tmp_path.glob("ready.*"))) < 2 and first.poll() is None and second.poll() is None:
        assert time.monotonic() < deadline, "the two runs did not finish importing"
        time.sleep(0.01)
    go.touch()
    try:
        _, err2 = second.communicate(timeout=600)
        _, err1 = first.communicate(timeout=600)
        runs = {first.pid: (first.returncode, err1), second.pid: (second.returncode, err2)}
        assert sorted(code for code, _ in runs.values()) == [0, 1], runs  # one ran, one was refused
        winner = next(pid for pid, (code, _) in runs.items() if code == 0)
        refused = next(err for code, err in runs.values() if code == 1)
        errors = [line for line in refused.splitlines() if "galhpc-generate: error:" in line]
        assert len(errors) == 1 and f"in use by {socket.gethostname()}:{winner}" in errors[0], refused
        assert "HDF5" not in errors[0], errors  # galhpc's own lock, not an HDF5 file lock
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    with h5py.File(out, "r") as f:  # the winner's in-flight shards were not deleted
        assert f["images"].shape[0] == 20000 and (f["object_id"][()] >= 0).all()
    assert not (tmp_path / "g.h5.lock").exists()


@pytest.fixture(scope="module")
def tiny_config(tiny_store, tmp_path_factory) -> Path:
    """A run config training a ConvVAE on the shared tiny store (each test names its own --out)."""
    import yaml
    from conftest import tiny_run_config

    path = tmp_path_factory.mktemp("tiny") / "tiny.yaml"
    config = tiny_run_config(tiny_store, path.parent / "run", train={"backend": "auto"})  # one run of 2 ranks
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("ranks", [1, 2])
def test_training_into_an_out_dir_a_live_run_holds_is_refused_on_every_rank(tiny_config, tmp_path, ranks):
    """Two runs training into one folder would overwrite each other's checkpoints: the second
    stops before it reads or writes anything, on every rank (no rank left waiting in a collective)."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "galhpc.cli.train", "--config", str(tiny_config), "--out", str(out), "--epochs", "1"]
    launch = ["mpirun", "-n", "2", "--oversubscribe", "--bind-to", "none"] if ranks == 2 else []
    env = {**ENV, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_btl_vader_single_copy_mechanism": "none"}
    with OutputLock(out / "ckpt.pt"):  # a live run (this process) holds the folder
        done = subprocess.run([*launch, *argv], env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if "galhpc-train: error:" in line]
    assert done.returncode != 0 and 1 <= len(errors) <= ranks, done.stderr  # mpirun may kill rank 1 first
    assert any(f"in use by {socket.gethostname()}:{os.getpid()}" in e for e in errors), errors  # rank 0's line
    assert not any("HDF5" in e for e in errors), errors
    assert sorted(p.name for p in out.iterdir()) == []  # nothing read or written; the lock was ours
    done = subprocess.run([*launch, *argv], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "ckpt.pt").exists() and not (out / "ckpt.pt.lock").exists()
