"""The kill/fault harness: SIGKILL galhpc-generate and galhpc-encode at random moments while a
shard is being written (a shard temporary exists), re-run, and check the shards byte for byte
against an uninterrupted run (at least 20 kills during shard writing in total); SIGKILL
galhpc-train at least 20 times while it trains or writes a checkpoint, and check the final
weights bit for bit."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_catalog_encode import write_store  # noqa: E402
from test_catalog_generate import make_checkpoint  # noqa: E402
from tiny_run import read_checkpoint, write_tiny_run  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "GALHPC_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
KILLS_PER_COMMAND = 10


def shard_digests(out: Path) -> dict[str, str]:
    shard_dir = out.with_name(out.name + ".shards")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(shard_dir.glob("0*.h5"))}


def in_flight(out: Path) -> bool:
    shard_dir = out.with_name(out.name + ".shards")
    return shard_dir.is_dir() and any(p.name.startswith(".0") and ".tmp." in p.name for p in shard_dir.iterdir())


def kill_while_writing(cmd: list[str], out: Path, rng: random.Random, timeout: float = 300) -> bool:
    """Start `cmd`, wait until a shard is in flight, SIGKILL it a random moment later; True if
    it was killed with a shard temporary present, False if it finished first."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not in_flight(out):
            if proc.poll() is not None:
                assert proc.returncode == 0, proc.stderr.read()[-2000:]
                return False
            assert time.monotonic() < deadline, "no shard was ever in flight"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
        writing = in_flight(out) and proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return writing and proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def harness(cmd_for, reference: Path, work: Path, rng: random.Random) -> int:
    """Kill runs on fresh outputs until KILLS_PER_COMMAND kills hit shard writing; every
    completed output must equal the reference byte for byte.  Returns the kill count."""
    expected = shard_digests(reference)
    kills, round_ = 0, 0
    while kills < KILLS_PER_COMMAND:
        out = work / f"round{round_}.h5"
        round_ += 1
        while kills < KILLS_PER_COMMAND and kill_while_writing(cmd_for(out), out, rng):
            kills += 1
        done = subprocess.run(cmd_for(out), env=ENV, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert shard_digests(out) == expected, f"round {round_}: shards differ after {kills} kills"
        shard_dir = out.with_name(out.name + ".shards")
        assert not [p for p in shard_dir.iterdir() if ".tmp." in p.name]
        assert not out.with_name(out.name + ".lock").exists()
        assert round_ < 40, "too few kills landed during shard writing"
    return kills


def test_sigkill_during_shard_writing_loses_nothing(tmp_path, capsys):
    rng = random.Random(2024)
    ckpt = make_checkpoint(tmp_path / "vae.pt", "vae")
    store = write_store(tmp_path / "store.h5", n=3000)

    def generate(out: Path) -> list[str]:
        return [sys.executable, "-m", "galhpc.cli.generate", "--checkpoint", str(ckpt), "--n", "3000", "--out",
                str(out), "--batch-size", "16", "--shard-size", "128", "--seed", "4", "--threads", "1"]

    def encode(out: Path) -> list[str]:
        return [sys.executable, "-m", "galhpc.cli.encode", "--checkpoint", str(ckpt), "--store", str(store),
                "--out", str(out), "--batch-size", "16", "--shard-size", "128", "--gmm-components", "3",
                "--gmm-fit-objects", "300", "--threads", "1"]

    counts = {}
    for name, cmd_for in (("generate", generate), ("encode", encode)):
        work = tmp_path / name
        work.mkdir()
        reference = work / "reference.h5"
        done = subprocess.run(cmd_for(reference), env=ENV, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        counts[name] = harness(cmd_for, reference, work, rng)
    with capsys.disabled():
        print(f"\nSIGKILLs during shard writing, re-runs byte-identical: {counts}")
    assert sum(counts.values()) >= 20


TRAINING_KILLS = 20


def temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp." in p.name] if folder.is_dir() else []


def kill_while_training(cmd: list[str], out: Path, rng: random.Random, at_write: bool) -> str | None:
    """Start a training run and SIGKILL it once it is training: at a random moment after its
    first checkpoint, or (`at_write`) the moment a checkpoint/loss temporary is seen.
    Returns "write" or "step" for a kill, None when the run ended first."""
    ckpt = out / "ckpt.pt"
    before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if at_write and temporaries(out):
                break  # a checkpoint (or losses.csv/png) is being written right now
            if not at_write and ckpt.exists() and ckpt.stat().st_mtime_ns != before:
                time.sleep(rng.uniform(0.0, 0.8))  # this run has written a checkpoint: it is training
                break
            time.sleep(0.0005 if at_write else 0.01)
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read()[-2000:]
            return None
        writing = bool(temporaries(out))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return "write" if writing else "step"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_during_training_loses_nothing(tmp_path, capsys):
    """Training killed at ≥ 20 random moments of real work (half of them timed at a
    checkpoint write), re-run each time: the final weights equal an uninterrupted run's bit
    for bit, and no temporary is left."""
    import torch

    rng = random.Random(7)
    cfg = write_tiny_run(tmp_path, epochs=40)

    def train(out: Path) -> list[str]:
        return [sys.executable, "-m", "galhpc.cli.train", "--config", str(cfg), "--out", str(out)]

    reference = tmp_path / "reference"
    done = subprocess.run(train(reference), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out, kills = tmp_path / "killed", {"step": 0, "write": 0}
    while sum(kills.values()) < TRAINING_KILLS:
        kind = kill_while_training(train(out), out, rng, at_write=rng.random() < 0.5)
        assert kind is not None, f"the run ended after only {kills} kills: give it more epochs"
        kills[kind] += 1
    done = subprocess.run(train(out), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = read_checkpoint(reference / "ckpt.pt"), read_checkpoint(out / "ckpt.pt")
    assert a["position"]["epoch"] == b["position"]["epoch"] == 40
    assert [r["epoch"] for r in b["history"]] == list(range(40))  # no epoch lost or run twice
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    assert temporaries(out) == [] and not (out / "ckpt.pt.lock").exists()
    with capsys.disabled():
        print(f"\nSIGKILLs during training (step: after a checkpoint; write: a temporary present), "
              f"final weights bit-identical: {kills}")
    assert kills["write"] >= 1, kills
