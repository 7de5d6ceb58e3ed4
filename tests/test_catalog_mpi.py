"""Real `mpirun` runs of galhpc-generate/encode: same catalogue on 1, 2 and 3 ranks, and
SIGKILL at random moments followed by a re-run gives the uninterrupted catalogue."""

import contextlib
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import h5py
import pytest
import torch
from test_catalog_encode import write_store
from test_catalog_generate import make_checkpoint

from galhpc.inference.encode import encode_from_checkpoint
from galhpc.inference.generate import generate_from_checkpoint
from galhpc.inference.options import EncodeOptions, GenerateOptions, OutputOptions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun"),
]
torch.set_num_threads(1)

GENERATE = ["--n", "300", "--batch-size", "32", "--shard-size", "64", "--seed", "11", "--noise-sigma", "0.01",
            "--keep-clean", "--threads", "1", "--device", "cpu"]
ENV = {**os.environ, "GALHPC_PROGRESS": "0", "OMP_NUM_THREADS": "1", "OMPI_MCA_mpi_yield_when_idle": "1"}


def mpirun(ranks, module, args, timeout=300):
    cmd = ["mpirun", "-n", str(ranks), "--oversubscribe", sys.executable, "-m", module, *map(str, args)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def shard_digests(out):
    shard_dir = out.with_name(out.name + ".shards")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(shard_dir.glob("0*.h5"))}


def datasets(path):
    with h5py.File(path) as f:
        return {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}


def assert_same_catalogue(a, b):
    assert shard_digests(a) == shard_digests(b)  # shard files byte for byte
    left, right = datasets(a), datasets(b)
    assert left.keys() == right.keys()
    for name in left:
        assert left[name].tobytes() == right[name].tobytes(), name


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("mpi") / "av.pt", "astrovader")


def test_generate_is_identical_on_1_2_and_3_ranks(ckpt, tmp_path):
    one = tmp_path / "one.h5"
    generate_from_checkpoint(ckpt, one,
                             GenerateOptions(n=300, batch_size=32, seed=11, noise_sigma=0.01, keep_clean=True),
                             OutputOptions(shard_size=64, threads=1, device="cpu"))  # = GENERATE, in this process
    for ranks in (2, 3):
        out = tmp_path / f"r{ranks}.h5"
        mpirun(ranks, "galhpc.cli.generate", ["--checkpoint", ckpt, "--out", out, *GENERATE])
        assert_same_catalogue(one, out)
        with h5py.File(out) as f:
            assert f["meta"].attrs["ranks"] == ranks and f["meta"].attrs["n_shards"] == 5


def test_encode_with_post_hoc_gmm_is_identical_on_1_and_2_ranks(tmp_path):
    store = write_store(tmp_path / "store.h5", n=500)
    vae = make_checkpoint(tmp_path / "vae.pt", "vae")
    opts = ["--batch-size", "50", "--shard-size", "100", "--gmm-components", "5", "--gmm-fit-objects", "250",
            "--threads", "1", "--device", "cpu"]
    encode_from_checkpoint(vae, store, tmp_path / "one.h5",
                           EncodeOptions(batch_size=50, gmm_components=5, gmm_fit_objects=250),
                           OutputOptions(shard_size=100, threads=1, device="cpu"))
    mpirun(2, "galhpc.cli.encode", ["--checkpoint", vae, "--store", store, "--out", tmp_path / "two.h5", *opts])
    assert_same_catalogue(tmp_path / "one.h5", tmp_path / "two.h5")
    with h5py.File(tmp_path / "two.h5") as f:
        assert f["gmm/mu"].shape[0] == f["gamma"].shape[1] == 3


def kill_session(proc):
    """SIGKILL mpirun and every rank it started (they share the session we created)."""
    listing = subprocess.run(["ps", "-o", "pid=", "--sid", str(proc.pid)], capture_output=True, text=True)
    for pid in sorted({int(p) for p in listing.stdout.split()} | {proc.pid}):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


def check_visible_shards(out, reference):
    """Every shard under its final name is complete and equal to the reference's."""
    shard_dir = out.with_name(out.name + ".shards")
    expected = shard_digests(reference)
    for name, digest in shard_digests(out).items():
        assert digest == expected[name], f"shard {name} differs after a kill"
    return len(list(shard_dir.glob("0*.h5")))


def wait_for_shards(out, count, proc, timeout=240):
    """Block until `count` shards are complete (or the run ends); True if the run ended."""
    shard_dir = out.with_name(out.name + ".shards")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        if shard_dir.is_dir() and len(list(shard_dir.glob("0*.h5"))) >= count:
            return False
        time.sleep(0.01)
    raise TimeoutError(f"{count} shards of {out} not complete after {timeout} s")


def test_sigkill_at_random_moments_then_rerun_gives_the_same_catalogue(ckpt, tmp_path):
    n, shard = 19200, 64  # 300 shards: at least 225 left after the last kill target, seconds of work
    args = ["--n", n, "--batch-size", "16", "--shard-size", shard, "--seed", "3", "--threads", "1",
            "--device", "cpu"]
    reference = tmp_path / "ref.h5"
    generate_from_checkpoint(ckpt, reference, GenerateOptions(n=n, batch_size=16, seed=3),
                             OutputOptions(shard_size=shard, threads=1, device="cpu"))
    out = tmp_path / "killed.h5"
    cmd = ["mpirun", "-n", "2", "--oversubscribe", sys.executable, "-m", "galhpc.cli.generate",
           "--checkpoint", str(ckpt), "--out", str(out), *map(str, args)]
    rng = random.Random(2024)
    visible, target = [], 0
    for _ in range(3):
        target += rng.randint(5, 25)  # kill somewhere after this many more shards
        with open(tmp_path / f"run{len(visible)}.log", "w") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        ended = wait_for_shards(out, target, proc)
        time.sleep(rng.uniform(0.0, 0.2))
        kill_session(proc)
        assert not ended, (f"the run ended (status {proc.returncode}) before it could be killed: "
                           f"{(tmp_path / f'run{len(visible)}.log').read_text()[-1500:]}")
        assert not out.exists()  # the master appears only when every shard is complete
        visible.append(check_visible_shards(out, reference))
    assert visible == sorted(visible) and visible[0] >= 5 and visible[-1] < n // shard, visible
    mpirun(2, "galhpc.cli.generate", ["--checkpoint", ckpt, "--out", out, *args])
    assert_same_catalogue(reference, out)
    assert not list(out.with_name(out.name + ".shards").glob(".*tmp*"))
