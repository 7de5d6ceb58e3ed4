"""`--help` and argument errors of every galhpc-* command load no heavy package (torch,
h5py, matplotlib, astropy, scipy): they answer in well under a second.  The times
themselves are measured by benchmarks/startup.py, not asserted here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

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


RANK_NEEDS = {  # what each rank of an MPI command needs at import: torch (once), h5py for HDF5 outputs
    "galhpc.inference.encode": {"torch", "h5py"},
    "galhpc.inference.generate": {"torch", "h5py"},
    "galhpc.train.trainer": {"torch"},
    "galhpc.search.run": {"torch", "h5py"},
    "galhpc.search.rarity": {"torch", "h5py"},
}
NOT_AT_IMPORT = ("matplotlib", "astropy", "scipy", "sklearn", "numba", "galsim", "statmorph", "photutils", "pyarrow",
                 "fitsio", "pandas")


@pytest.mark.slow  # one torch import per module (a few seconds each)
@pytest.mark.parametrize("module", sorted(RANK_NEEDS))
def test_each_rank_imports_only_what_its_work_needs(module):
    """Under `mpirun -n N` every rank pays its imports: torch and h5py, not the report's or
    the data preparation's packages (imported where used, if ever)."""
    probe = (f"import sys\nimport {module}\n"
             f"print(','.join(m for m in {(*sorted(RANK_NEEDS[module]), *NOT_AT_IMPORT)!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(filter(None, done.stdout.strip().split(","))) == RANK_NEEDS[module], done.stdout
