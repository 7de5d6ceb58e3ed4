"""Start-up time of every galhpc-* command: `--help`, an argument error, and the imports of a rank.

    python benchmarks/startup.py              # 3 runs each, the median
    python benchmarks/startup.py --repeats 5 --json startup.json

For each command of pyproject.toml's [project.scripts] prints, in seconds (wall clock of a
fresh `python` process, so the interpreter's own start is included; the `python -c pass`
line gives it alone):
- `--help`: the parser only (goal <= 1 s);
- `bad flag`: an argument error (goal <= 1 s);
- `import cli`: `import galhpc.cli.X` alone;
- `rank imports`: the library the command's work imports (what each rank of `mpirun -n N`
  pays once), and which heavy packages that pulls in.
`--help` must import none of torch, h5py, matplotlib, astropy, scipy (listed if it does).
Timings on a loaded machine vary by tens of percent: compare runs of the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "h5py", "matplotlib", "astropy", "scipy", "sklearn", "numba", "mpi4py", "galsim", "pyarrow",
         "statmorph", "photutils")
# the library module each command's work imports (what a rank loads after parsing)
WORK = {
    "galhpc-prep": "galhpc.data.prep",
    "galhpc-train": "galhpc.train.trainer",
    "galhpc-encode": "galhpc.inference.encode",
    "galhpc-generate": "galhpc.inference.generate",
    "galhpc-report": "galhpc.report.build",
    "galhpc-export": "galhpc.io.export",
    "galhpc-search": "galhpc.search.run",
    "galhpc-rarity": "galhpc.search.rarity",
}

_PROBE = """
import atexit, sys
heavy = {heavy!r}
atexit.register(lambda: print("HEAVY=" + ",".join(m for m in heavy if m in sys.modules), file=sys.__stderr__))
{body}
"""


def commands() -> dict[str, str]:
    """galhpc-* name -> its module (``galhpc.cli.prep``), from pyproject.toml."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    return {name: target.split(":")[0] for name, target in scripts.items()}


def timed(body: str, repeats: int) -> tuple[float, str]:
    """Median wall time of `python -c body` and the heavy packages it had imported at exit."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    times, heavy = [], ""
    for _ in range(repeats):
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY, body=body)], env=env,
                              capture_output=True, text=True)
        times.append(time.perf_counter() - began)
        heavy = next((line[6:] for line in done.stderr.splitlines() if line.startswith("HEAVY=")), "?")
    return statistics.median(times), heavy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    base, _ = timed("pass", args.repeats)
    print(f"python -c pass: {base:.2f} s (the interpreter alone)")
    print(f"{'command':18} {'--help':>7} {'bad flag':>9} {'import cli':>11} {'rank imports':>13}  heavy packages "
          "of --help / of the rank")
    rows = {}
    for name, module in commands().items():
        run_main = f"from {module} import main\ntry:\n    main({{argv}})\nexcept SystemExit:\n    pass"
        helped, help_heavy = timed(run_main.format(argv="['--help']"), args.repeats)
        refused, _ = timed(run_main.format(argv="['--no-such-flag']"), args.repeats)
        imported, _ = timed(f"import {module}", args.repeats)
        rank, rank_heavy = timed(f"import {WORK[name]}", args.repeats) if name in WORK else (float("nan"), "")
        rows[name] = {"help_s": helped, "bad_flag_s": refused, "import_cli_s": imported, "rank_imports_s": rank,
                      "help_heavy": help_heavy, "rank_heavy": rank_heavy}
        print(f"{name:18} {helped:7.2f} {refused:9.2f} {imported:11.2f} {rank:13.2f}  "
              f"{help_heavy or '-'} / {rank_heavy or '-'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"python_s": base, "commands": rows}, indent=1))


if __name__ == "__main__":
    main()
