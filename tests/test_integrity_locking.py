"""File systems without file locking (NFS/Lustre: flock() fails with ENOLCK), reproduced with
an LD_PRELOAD shim: every command works (readers open without locks, writers write private
temporaries through a file object, with no HDF5 lock); a locking failure that still reaches
a command is one line naming "file locking" and HDF5_USE_FILE_LOCKING=FALSE."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from tiny_run import write_tiny_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIM = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
int flock(int fd, int op) { (void)fd; (void)op; errno = ENOLCK; return -1; }
"""


@pytest.fixture(scope="module")
def no_locking_env(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler for the flock() shim")
    root = tmp_path_factory.mktemp("shim")
    (root / "shim.c").write_text(SHIM)
    lib = root / "libnoflock.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(root / "shim.c")], check=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GALHPC_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "LD_PRELOAD": str(lib)}
    env.pop("HDF5_USE_FILE_LOCKING", None)
    probe = subprocess.run([sys.executable, "-c", (
        "import h5py, sys\n"
        "try:\n    h5py.File(sys.argv[1], 'w').close()\nexcept OSError as e:\n    print(e); sys.exit(3)\n"),
        str(root / "probe.h5")], env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 3 and "lock" in probe.stdout, "the shim does not break HDF5's locking"
    return env


def galhpc(env, command, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", f"galhpc.cli.{command}", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # five commands end to end, minutes on a loaded machine
def test_every_command_works_without_file_locking(no_locking_env, tmp_path):
    env = no_locking_env
    cfg = write_tiny_run(tmp_path, epochs=1)  # the store itself is written without the shim
    data = yaml.safe_load(cfg.read_text())
    store = tmp_path / "store2.h5"
    done = galhpc(env, "prep", "--config", cfg, "--out", store)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not [p for p in tmp_path.glob(".*") if ".tmp." in p.name]
    data["train"]["out_dir"] = str(tmp_path / "run")
    cfg.write_text(yaml.safe_dump(data))
    done = galhpc(env, "train", "--config", cfg, "--store", store, "--epochs", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = tmp_path / "run" / "ckpt.pt"
    done = galhpc(env, "encode", "--checkpoint", ckpt, "--store", store, "--out", tmp_path / "clusters.h5",
                  "--gmm-components", "3", "--gmm-fit-objects", "100", "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    done = galhpc(env, "generate", "--checkpoint", ckpt, "--n", "64", "--out", tmp_path / "synth.h5",
                  "--batch-size", "32", "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    done = galhpc(env, "report", "--checkpoint", ckpt, "--clusters", tmp_path / "clusters.h5", "--store", store,
                  "--synth", tmp_path / "synth.h5", "--out", tmp_path / "report", "--max-objects", "100",
                  "--n-tsne", "50", "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_locking_failure_names_file_locking_and_the_switch(no_locking_env, tmp_path):
    """A writer outside galhpc's own (here: h5py with locking on) still gets the hint through run_cli."""
    script = ("import sys, h5py\nfrom galhpc.runtime.cli import run_cli\n"
              "sys.exit(run_cli('galhpc-x', lambda: h5py.File(sys.argv[1], 'w').close()))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.h5")], env=no_locking_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "file locking" in lines[0] and "HDF5_USE_FILE_LOCKING=FALSE" in lines[0], done.stderr
