"""A full disk anywhere ends with exit 1 and one line naming the file and "no space left":
no segfault (HDF5 used to crash in its dataset close), no temporary file, and the next run
after freeing space resumes.  Real full disks: small tmpfs mounts (root only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from galhpc.checkpoint import save_checkpoint
from galhpc.runtime.errors import CheckpointError

sys.path.insert(0, str(Path(__file__).parent))
from test_catalog_generate import make_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "GALHPC_PROGRESS": "0", "OMP_NUM_THREADS": "1",
       "OMPI_MCA_mpi_yield_when_idle": "1"}


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs; skipped where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a real full disk needs `mount -t tmpfs` (root): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*") if ".tmp." in p.name]


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def assert_one_line_no_space(done: subprocess.CompletedProcess, prog: str, name: str, ranks: int = 1) -> None:
    """Exit 1 (not 139, a segfault), and one error line per failing rank naming the file and "no space left"."""
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and "Segmentation" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if f"{prog}: error:" in line]
    assert 1 <= len(errors) <= ranks, done.stderr[-2000:]
    for line in errors:
        assert "no space left" in line and name in line, line


def fill(disk: Path, leave: int) -> Path:
    """Occupy the disk until about `leave` bytes are free."""
    stat = os.statvfs(disk)
    ballast = disk / "ballast"
    ballast.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return ballast


@pytest.mark.parametrize("ranks", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_generate_on_a_full_disk_exits_1_and_resumes(tiny_disk, tmp_path, ranks):
    if ranks == 2 and shutil.which("mpirun") is None:
        pytest.skip("needs Open MPI's mpirun")
    ckpt = make_checkpoint(tmp_path / "av.pt")
    out = tiny_disk / "g.h5"
    args = [sys.executable, "-m", "galhpc.cli.generate", "--checkpoint", str(ckpt), "--n", "3000", "--out", str(out),
            "--batch-size", "32", "--shard-size", "256", "--seed", "3", "--threads", "1", "--device", "cpu"]
    launch = ["mpirun", "-n", "2", "--oversubscribe"] if ranks == 2 else []
    done = run(launch + args)  # 12 shards of 300 KiB on a 2 MiB disk
    assert_one_line_no_space(done, "galhpc-generate", str(out) + ".shards/", ranks)
    assert not temporaries(tiny_disk), temporaries(tiny_disk)
    assert not out.exists()
    complete = sorted((tiny_disk / "g.h5.shards").glob("0*.h5"))
    assert complete
    for path in complete:
        with h5py.File(path, "r") as f:
            assert f["images"].shape[0] == f.attrs["stop"] - f.attrs["start"]
    subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_disk)], check=True)  # space freed
    again = run(launch + args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already complete" in again.stderr or ranks == 2
    reference = tmp_path / "ref.h5"
    assert run(args[:8] + [str(reference)] + args[9:]).returncode == 0
    with h5py.File(out, "r") as a, h5py.File(reference, "r") as b:
        assert np.array_equal(a["images"][()], b["images"][()])


def test_prep_on_a_full_disk_exits_1_and_leaves_no_temporary(tiny_disk, tmp_path):
    cfg = tmp_path / "prep.yaml"
    cfg.write_text("prep:\n  image_size: 32\n  workers: 1\n  recipe: [minmax]\n  chunk_rows: 16\n"
                   "  sources:\n    - {kind: galsim, n: 60, seed: 1}\n")  # 60 x 4 KiB = 240 KiB
    fill(tiny_disk, 100_000)
    out = tiny_disk / "store.h5"
    done = run([sys.executable, "-m", "galhpc.cli.prep", "--config", str(cfg), "--out", str(out)])
    assert_one_line_no_space(done, "galhpc-prep", str(out))
    assert not out.exists() and not temporaries(tiny_disk)
    subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_disk)], check=True)
    again = run([sys.executable, "-m", "galhpc.cli.prep", "--config", str(cfg), "--out", str(out)])
    assert again.returncode == 0, again.stderr[-2000:]
    with h5py.File(out, "r") as f:
        assert f["images"].shape == (60, 32, 32)


def test_checkpoint_save_on_a_full_disk_is_one_checkpoint_error(tiny_disk):
    fill(tiny_disk, 200_000)
    path = tiny_disk / "ckpt.pt"
    payload = {"model_state": {"w": torch.zeros(200_000)}, "config": ""}  # 800 KB
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*ckpt\.pt: no space left on device$"):
        save_checkpoint(path, payload)
    assert not path.exists() and not temporaries(tiny_disk)


def test_a_figure_on_a_full_disk_names_the_png(tiny_disk):
    from galhpc.report.figures import image_grid

    fill(tiny_disk, 0)
    rng = np.random.default_rng(0)
    with pytest.raises(OSError, match="no space left") as caught:
        image_grid([rng.random((8, 32, 32))], ["a"], tiny_disk / "grid.png")
    assert caught.value.filename == str(tiny_disk / "grid.png")
    assert not temporaries(tiny_disk) and not list(tiny_disk.glob("*.png"))
