"""`--help` and argument errors of every galhpc-* command load no heavy package (torch,
h5py, matplotlib, astropy, scipy): they answer in well under a second.  The times
themselves are measured by benchmarks/startup.py, not asserted here."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
HEAVY = ("torch", "h5py", "matplotlib", "astropy", "scipy", "sklearn", "numba", "mpi4py")

_PROBE = """
import sys
from {module} import main
heavy_at_import = [m for m in {heavy!r} if m in sys.modules]
for argv in (["--help"], ["--no-such-flag"]):
    try:
        main(argv)
    except SystemExit as stop:
        assert stop.code == (0 if argv == ["--help"] else 2), (argv, stop.code)
    else:
        raise AssertionError(f"{{argv}} did not end in the parser")
print("IMPORT=" + ",".join(heavy_at_import))
print("PARSE=" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_help_and_argument_errors_import_no_heavy_package(command):
    module = SCRIPTS[command].split(":")[0]
    done = subprocess.run([sys.executable, "-c", _PROBE.format(module=module, heavy=HEAVY)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split("=", 1) for line in done.stdout.splitlines() if line.startswith(("IMPORT=", "PARSE=")))
    assert lines == {"IMPORT": "", "PARSE": ""}, f"{command}: {lines}"
