"""Installing without root: pip into a fresh venv as the unprivileged user `nobody`, and
scripts/setup.sh run as `nobody` (no apt, a precise list of what is missing)."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")
TORCH_WHEELS = sorted(Path("/opt/wheels").glob("torch-*.whl")) if Path("/opt/wheels").is_dir() else []

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to act as the unprivileged user nobody")


@pytest.fixture
def nobody_dir():
    """A fresh folder owned by nobody (pytest's tmp_path lies under a folder only root may enter)."""
    path = Path(tempfile.mkdtemp(prefix="galhpc-nobody-"))
    shutil.chown(path, "nobody", "nogroup")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_nobody(cmd: list[str], cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd), "PIP_NO_CACHE_DIR": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", **env}
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", "env", "-i",
                           *[f"{k}={v}" for k, v in base.items()], *cmd],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def copy_tree_for_nobody(dest: Path) -> Path:
    """The working tree's files (tracked and new, not ignored) copied to a folder nobody owns."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.split(b"\0")
    src = dest / "src"
    for name in filter(None, files):
        target = src / name.decode()
        if (REPO / name.decode()).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name.decode(), target)
    subprocess.run(["chown", "-R", "nobody:nogroup", str(dest)], check=True)
    return src


@needs_root
def test_setup_script_without_root_installs_nothing_and_names_what_is_missing(nobody_dir):
    """As nobody, with a Python whose site-packages it cannot write and a PATH without MPI
    tools: no apt-get, each missing tool named with what only it is for, one clear stop."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no system python3")
    bin_dir = nobody_dir / "bin"  # a PATH of the basics only: no mpicc/mpirun/h5ls/sbatch
    bin_dir.mkdir()
    for tool in ("bash", "id", "env", "grep", "mktemp", "rm", "dirname", "cat"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    run = as_nobody(["bash", str(REPO / "scripts" / "setup.sh")], nobody_dir, 60, PATH=str(bin_dir),
                    PYTHON=str(SYSTEM_PYTHON))
    out = run.stdout + run.stderr
    assert "not root: no system packages are installed" in out and "[setup] apt-get install" not in out
    assert "missing mpicc: needed only for building mpi4py and Horovod" in out
    assert "missing h5ls" in out and "missing sbatch" in out
    assert run.returncode == 1 and "is not writable by nobody" in out and "-m venv" in out


@pytest.mark.slow
@needs_root
@pytest.mark.skipif(not SYSTEM_PYTHON.exists() or not TORCH_WHEELS,
                    reason="needs /usr/bin/python3 and a local torch wheel")
def test_pip_install_into_a_fresh_venv_as_nobody(nobody_dir):
    """A fresh venv (system python, no site packages), torch pre-installed, then galhpc with its
    C++ extension built against that torch, all as nobody; every extra of '.[all]' resolves."""
    tmp_path = nobody_dir
    src = copy_tree_for_nobody(tmp_path)
    steps = [
        [str(SYSTEM_PYTHON), "-m", "venv", "venv"],
        ["venv/bin/pip", "install", "-q", str(TORCH_WHEELS[-1])],
        ["venv/bin/pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", "./src"],
        ["venv/bin/pip", "install", "-q", "--dry-run", "--no-build-isolation", "./src[all]"],
    ]
    for cmd in steps:
        run = as_nobody(cmd, tmp_path, 420)
        assert run.returncode == 0, f"{cmd}: {run.stderr[-3000:]}"
    python = str(tmp_path / "venv" / "bin" / "python")
    check = ("import sys, galhpc; assert 'torch' not in sys.modules; import torch, galhpc._ext; "
             "print(galhpc.__file__, galhpc.__all__)\n"
             "from galhpc.extras import require\n"
             "try:\n    require('galsim', 'sim', 'simulated GalSim sources')\n"
             "except ImportError as err:\n    print(err)\n")
    run = as_nobody([python, "-c", check], Path("/"), 120)
    assert run.returncode == 0, run.stderr
    assert str(src / "galhpc" / "__init__.py") in run.stdout and "open_catalog" in run.stdout
    assert "galsim is needed for simulated GalSim sources" in run.stdout and "pip install 'galhpc[sim]'" in run.stdout
    for script in ("galhpc-prep", "galhpc-train", "galhpc-encode", "galhpc-generate", "galhpc-report", "galhpc-export"):
        assert (tmp_path / "venv" / "bin" / script).is_file(), script
    assert not any(p.owner() != "nobody" for p in (tmp_path / "venv").rglob("*.py") if p.is_file())
