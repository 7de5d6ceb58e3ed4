"""galhpc.runtime.cli: every command turns GalhpcError/OSError into one line and exit status 1."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from galhpc.runtime.cli import describe_error, run_cli
from galhpc.runtime.files import OutputInUseError
from galhpc.runtime.errors import (
    CatalogError, CheckpointError, ConfigError, DataError, EmulationError, GalhpcError, LaunchError,
    NonFiniteLossError, PSFError,
)

ROOT = Path(__file__).resolve().parents[1]


def test_hierarchy_inherits_the_builtin_types():
    for cls, builtin in [(ConfigError, ValueError), (DataError, ValueError), (PSFError, ValueError),
                         (EmulationError, ValueError), (CheckpointError, RuntimeError),
                         (CatalogError, RuntimeError), (LaunchError, RuntimeError), (NonFiniteLossError, RuntimeError)]:
        assert issubclass(cls, GalhpcError) and issubclass(cls, builtin)


def test_old_import_paths_name_the_same_classes():
    from galhpc.catalog.shards import CatalogError as a
    from galhpc.checkpoint import CheckpointError as b
    from galhpc.config import ConfigError as c
    from galhpc.data.sources import DataError as d

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
    cfg.write_text("prep:\n  image_size: 32\n  workers: 1\n  recipe: [minmax]\n  sources:\n    - {kind: galsim, n: 2}\n")
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
