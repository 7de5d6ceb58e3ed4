"""galhpc.runtime.cli: every command turns GalhpcError/OSError into one line and exit status 1."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from galhpc.runtime.cli import describe_error, run_cli
from galhpc.runtime.errors import (
    CatalogError,
    CheckpointError,
    ConfigError,
    DataError,
    EmulationError,
    GalhpcError,
    LaunchError,
    NonFiniteLossError,
    PSFError,
)
from galhpc.runtime.files import OutputInUseError

ROOT = Path(__file__).resolve().parents[1]


def test_hierarchy_inherits_the_builtin_types():
    for cls, builtin in [(ConfigError, ValueError), (DataError, ValueError), (PSFError, ValueError),
                         (EmulationError, ValueError), (CheckpointError, RuntimeError),
                         (CatalogError, RuntimeError), (LaunchError, RuntimeError), (NonFiniteLossError, RuntimeError)]:
        assert issubclass(cls, GalhpcError) and issubclass(cls, builtin)


def test_old_import_paths_name_the_same_classes():
    from galhpc.checkpoint import CheckpointError as b
    from galhpc.config import ConfigError as c
    from galhpc.data.sources import DataError as d
    from galhpc.io.catalog import CatalogError as a

    assert (a, b, c, d) == (CatalogError, CheckpointError, ConfigError, DataError)


def test_full_disk_and_locking_errors_name_the_file_and_the_fix():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/scratch/out.h5.shards/000001.h5")
    assert describe_error(full) == "no space left on device: /scratch/out.h5.shards/000001.h5"
    lock = OSError(errno.ENOLCK, os.strerror(errno.ENOLCK), "/lustre/store.h5")
    text = describe_error(lock)
    assert text.startswith("/lustre/store.h5:") and "file locking" in text and "HDF5_USE_FILE_LOCKING=FALSE" in text
    # h5py's own message for a lock failure carries no errno
    text = describe_error(OSError("Unable to open file (unable to lock file, errno = 11)"))
    assert "HDF5_USE_FILE_LOCKING=FALSE" in text
    assert "LOCKING" not in describe_error(OSError("Can't read data (unable to read block 7)"))
    assert describe_error(ConfigError("a.yaml: bad\nsecond line")) == "a.yaml: bad; second line"
    busy = OutputInUseError(errno.EBUSY, "in use by node1:7 (lock /s/c.h5.lock; remove it only if that run is gone)",
                            "/s/c.h5")  # galhpc's own output lock: no HDF5 hint
    assert describe_error(busy) == "/s/c.h5: in use by node1:7 (lock /s/c.h5.lock; remove it only if that run is gone)"


def test_run_cli_prints_one_line(capsys):
    def fails() -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/ckpt.pt")

    assert run_cli("galhpc-x", fails) == 1
    assert capsys.readouterr().err == "galhpc-x: error: /x/ckpt.pt: No such file or directory\n"
    assert run_cli("galhpc-x", lambda: None) == 0 and run_cli("galhpc-x", lambda: 3) == 3
    with pytest.raises(ZeroDivisionError):  # a bug is not a user error: its traceback stays
        run_cli("galhpc-x", lambda: 1 / 0)


def test_prep_os_error_is_one_line_not_a_traceback(tmp_path):
    """Before: galhpc-prep let an OSError out as a traceback."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("prep:\n  image_size: 32\n  workers: 1\n  recipe: [minmax]\n"
                   "  sources:\n    - {kind: galsim, n: 2}\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GALHPC_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-m", "galhpc.cli.prep", "--config", str(cfg), "--out",
                           str(blocker / "store.h5")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert errors and errors[-1].startswith("galhpc-prep: error:") and str(blocker) in errors[-1]


@pytest.mark.parametrize(("module", "old", "new", "dest"), [
    ("galhpc.cli.prep", "--output", "--out", "out"),
    ("galhpc.cli.train", "--out-dir", "--out", "out_dir"),
    ("galhpc.cli.encode", "--input", "--store", "store"),
])
def test_old_flag_spellings_are_deprecated_aliases(module, old, new, dest, capsys):
    import importlib

    parser = importlib.import_module(module).build_parser()
    required = {"galhpc.cli.prep": ["--config", "c"], "galhpc.cli.train": ["--config", "c"],
                "galhpc.cli.encode": ["--checkpoint", "c", "--out", "o"]}[module]
    args = parser.parse_args([*required, old, "x"])
    assert str(getattr(args, dest)) == "x"
    assert f"{old} is deprecated, use {new}" in capsys.readouterr().err
    assert old not in parser.format_help() and new in parser.format_help()


def _without_root_file_access() -> list[str] | None:
    """A prefix running a command as this root user but without CAP_DAC_OVERRIDE, so a
    folder's mode bits bind it as they bind any user; None where that cannot be done."""
    import shutil

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def _run_as_unprivileged(body: str, folder: Path) -> subprocess.CompletedProcess:
    prefix = _without_root_file_access()
    if prefix is None:
        pytest.skip("needs root and setpriv to make a folder unwritable to this process")
    script = ("import sys\nfrom pathlib import Path\nfrom galhpc.runtime.cli import run_cli\n"
              f"folder = Path(sys.argv[1])\nraise SystemExit(run_cli('galhpc-x', lambda: {body}))")
    return subprocess.run([*prefix, sys.executable, "-c", script, str(folder)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)


@pytest.fixture
def unwritable_folder(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_an_unwritable_folder_is_a_permission_problem_not_hdf5_locking(unwritable_folder):
    """galhpc's own `<out>.lock` cannot be created: the line names that file and the cause."""
    done = _run_as_unprivileged("__import__('galhpc.runtime.files').runtime.files.OutputLock("
                                "folder / 'c.h5').acquire()", unwritable_folder)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"galhpc-x: error: {unwritable_folder}/c.h5.lock: permission denied"), done.stderr
    assert "HDF5" not in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_hdf5_refused_a_file_by_permission_names_the_file(unwritable_folder):
    """h5py names the file only inside its text (no `filename`): the line still names it."""
    done = _run_as_unprivileged("__import__('h5py').File(folder / 'c.h5', 'w')", unwritable_folder)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"galhpc-x: error: {unwritable_folder}/c.h5: permission denied"), done.stderr
    assert "LOCKING" not in done.stderr, done.stderr


def test_each_class_of_os_error_by_errno():
    assert describe_error(OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/out.h5.lock")).startswith(
        "/ro/out.h5.lock: read-only file system")
    assert describe_error(PermissionError(errno.EPERM, os.strerror(errno.EPERM), "/x/c.h5.lock")).startswith(
        "/x/c.h5.lock: permission denied")
    missing = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/x/results.lock/c.h5")
    assert describe_error(missing) == "/x/results.lock/c.h5: No such file or directory"  # "lock" in a name: no hint


def test_a_real_hdf5_lock_refusal_gets_the_locking_hint(tmp_path):
    import h5py

    path = tmp_path / "s.h5"
    h5py.File(path, "w").close()
    holder = subprocess.Popen([sys.executable, "-c", "import h5py, sys, time; f = h5py.File(sys.argv[1], 'a', "
                               "locking=True); print('open', flush=True); time.sleep(60)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(OSError) as refused:
            h5py.File(path, "r", locking=True)
    finally:
        holder.kill()
        holder.wait()
    text = describe_error(refused.value)
    assert "HDF5 file locking failed" in text and "HDF5_USE_FILE_LOCKING=FALSE" in text, text


@pytest.mark.parametrize("error", ["RendezvousError", "MissingExtraError", "OutputInUseError"])
def test_every_error_galhpc_raises_on_purpose_is_one_line_from_run_cli(error, capsys):
    from galhpc.extras import MissingExtraError
    from galhpc.train.rendezvous import RendezvousError

    made = {"RendezvousError": (RendezvousError("no interface routes to node7"), RuntimeError),
            "MissingExtraError": (MissingExtraError("galsim is needed: pip install 'galhpc[sim]'"), ImportError),
            "OutputInUseError": (OutputInUseError(errno.EBUSY, "in use by node1:7", "/s/c.h5"), OSError)}
    err, builtin = made[error]
    assert isinstance(err, GalhpcError) and isinstance(err, builtin)

    def fails() -> None:
        raise err

    assert run_cli("galhpc-x", fails) == 1
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and line.startswith("galhpc-x: error: ") and "Traceback" not in line, line
    assert str(err).split(":")[0] in line
