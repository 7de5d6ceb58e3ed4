"""Stop signals inside a catalogue job: a real galhpc-generate process stopped by SIGUSR1
mid-shard exits 75, keeps only complete shards, and the re-run gives the uninterrupted
catalogue byte for byte; shards sized by work give the same catalogue on 1 and 2 ranks."""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import pytest
import torch
from test_catalog_generate import make_checkpoint

from galhpc.inference.generate import generate_from_checkpoint
from galhpc.inference.options import GenerateOptions, OutputOptions
from galhpc.runtime.signals import EXIT_PREEMPTED

torch.set_num_threads(1)
ENV = {**os.environ, "GALHPC_PROGRESS": "0", "OMP_NUM_THREADS": "1", "OMPI_MCA_mpi_yield_when_idle": "1",
       "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
N, BATCH = 4096, 16
ARGS = ["--n", str(N), "--batch-size", str(BATCH), "--seed", "5", "--threads", "1", "--device", "cpu"]


def shard_digests(out):
    shard_dir = out.with_name(out.name + ".shards")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(shard_dir.glob("0*.h5"))}


def columns(path):
    with h5py.File(path) as f:
        return {k: f[k][()].tobytes() for k in f if isinstance(f[k], h5py.Dataset)}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("preempt") / "av.pt", "astrovader")


def wait_for_shards(out, count, proc, timeout=600):
    shard_dir = out.with_name(out.name + ".shards")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be stopped; make it longer"
        if shard_dir.is_dir() and len(list(shard_dir.glob("0*.h5"))) >= count:
            return
        time.sleep(0.01)
    raise TimeoutError(f"{count} shards of {out} not complete after {timeout} s")


def test_sigusr1_mid_shard_exits_75_and_the_rerun_is_identical(ckpt, tmp_path):
    reference = tmp_path / "ref.h5"
    generate_from_checkpoint(ckpt, reference, GenerateOptions(n=N, batch_size=BATCH, seed=5),
                             OutputOptions(shard_size=256, threads=1, device="cpu"))
    out = tmp_path / "stopped.h5"
    cmd = [sys.executable, "-m", "galhpc.cli.generate", "--checkpoint", str(ckpt), "--out", str(out), *ARGS,
           "--shard-size", "256"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_shards(out, 3, proc)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "stopped by SIGUSR1" in err
    assert not out.exists()
    done = shard_digests(out)
    expected = shard_digests(reference)
    assert 3 <= len(done) < len(expected)
    assert all(expected[name] == digest for name, digest in done.items())
    assert not list(out.with_name(out.name + ".shards").glob(".*tmp*"))  # the shard in flight was dropped
    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert shard_digests(out) == expected
    assert columns(out) == columns(reference)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun")
def test_work_sized_shards_give_the_same_catalogue_on_1_and_2_ranks_and_resume_on_another(ckpt, tmp_path):
    reference = tmp_path / "ref.h5"
    generate_from_checkpoint(ckpt, reference, GenerateOptions(n=N, batch_size=BATCH, seed=5),
                             OutputOptions(shard_size=256, threads=1, device="cpu"))
    sizes = {}
    for ranks in (1, 2):
        out = tmp_path / f"r{ranks}.h5"
        cmd = ["mpirun", "-n", str(ranks), "--oversubscribe", sys.executable, "-m", "galhpc.cli.generate",
               "--checkpoint", str(ckpt), "--out", str(out), *ARGS, "--shard-minutes", "0.01"]
        done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        assert columns(out) == columns(reference)  # rows do not depend on the shard size or rank count
        with h5py.File(out) as f:
            sizes[ranks] = f["meta"].attrs["n_shards"]
    assert min(sizes.values()) >= 4  # the ranks limit: at least 4 shards per rank
    # a resumed run on another rank count keeps the recorded size: delete the master and two shards
    out = tmp_path / "r2.h5"
    out.unlink()
    before = shard_digests(out)
    for name in list(before)[:2]:
        (out.with_name(out.name + ".shards") / name).unlink()
    generate_from_checkpoint(ckpt, out, GenerateOptions(n=N, batch_size=BATCH, seed=5),
                             OutputOptions(threads=1, device="cpu", shard_minutes=5.0))
    assert shard_digests(out) == before and columns(out) == columns(reference)
