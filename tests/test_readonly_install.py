"""galhpc installed read-only (a container image, a shared software stack) with an
unwritable $HOME: importing and running its numba kernels works, without numba's disk cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_USE = """
import logging, sys
import numpy as np
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
import galhpc.kernels.numba_codebook as nc
assert nc.__file__.startswith(sys.argv[1]), nc.__file__
x = np.array([[0.0, 0.0], [2.0, 2.1], [0.9, 1.2]], np.float32)
codebook = np.array([[0.0, 0.1], [1.0, 1.0], [2.0, 2.0]], np.float32)
index, distance = nc.nearest_code_cpu(x, codebook)
print(index.tolist())
"""


def _read_only(path: Path) -> None:
    for folder, _dirs, files in os.walk(path):
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)


@pytest.mark.slow  # compiles the parallel kernel (about 10 s)
def test_numba_kernels_import_and_run_from_a_read_only_install(tmp_path):
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("root without setpriv ignores the folders' modes")
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    install, home = tmp_path / "site", tmp_path / "home"
    shutil.copytree(ROOT / "galhpc", install / "galhpc", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    home.mkdir()
    _read_only(install)
    _read_only(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_") and k != "XDG_CACHE_HOME"}
    env.update(PYTHONPATH=str(install), HOME=str(home), PYTHONDONTWRITEBYTECODE="1")
    try:
        done = subprocess.run([*prefix, sys.executable, "-c", _USE, str(install)], env=env, capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)
    finally:
        for folder, _, _ in os.walk(tmp_path):
            os.chmod(folder, 0o755)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["[0,", "2,", "1]"], done.stdout
    assert "numba cannot cache _search_cpu" in done.stderr, done.stderr[-3000:]
    assert not list(install.rglob("*.nbi")) and not list(home.rglob("*.nbi"))
