#!/usr/bin/env python3
"""Mutation check: plant realistic bugs one at a time in a copy of the repository and run the
tests that should catch each; print killed / survived and the kill rate (`make mutate`).

The mutants are data (scripts/mutants.yaml). Each replaces one exact snippet of one file (a
snippet no longer found is reported STALE: the code moved and the mutant needs updating, which
fails the run like a survivor).
The copy is the working tree as git sees it (tracked and untracked, not ignored, files) plus
the compiled extension, in a temporary directory put first on PYTHONPATH; the tests run
there with `pytest -x`, so a killed mutant usually stops at its first failing test.

    python scripts/mutate.py              # every mutant, fast tests only
    python scripts/mutate.py --slow       # also the slow tests listed for some mutants
    python scripts/mutate.py --only gamma_over_batch sigma_for_variance
    python scripts/mutate.py --list
    python scripts/mutate.py --check      # every snippet found once, every mutant has tests; runs none

Exit status 1 if any mutant survived or is stale.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # file relative to the repository root
    old: str  # exact snippet, found exactly once
    new: str
    tests: tuple[str, ...]  # test files or node ids (globs allowed) that should kill it
    slow: tuple[str, ...] = field(default=())  # slow tests run only with --slow
    why: str = ""


MUTANTS_FILE = ROOT / "scripts" / "mutants.yaml"


def load_mutants(path: Path = MUTANTS_FILE) -> list[Mutant]:
    """Read the table of planted bugs.

    Parameters
    ----------
    path : Path
        YAML list of mappings with the fields of `Mutant` (lists for the tests).

    Returns
    -------
    list of Mutant
        In the order of the file.
    """
    with open(path) as f:
        rows = yaml.safe_load(f)
    return [Mutant(**{**row, "tests": tuple(row["tests"]), "slow": tuple(row.get("slow", ()))}) for row in rows]


MUTANTS = load_mutants()


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked + untracked, not ignored), plus the extension."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for ext in ROOT.glob("galhpc/_ext*.so"):
        shutil.copy2(ext, dest / "galhpc" / ext.name)


def test_args(tree: Path, patterns: tuple[str, ...]) -> list[str]:
    """Patterns to existing test paths in the copy (node ids pass through)."""
    out = []
    for pattern in patterns:
        base = pattern.split("::", 1)[0]
        if any(ch in base for ch in "*?["):
            out += sorted(str(Path(p).relative_to(tree)) for p in glob.glob(str(tree / base)))
        elif (tree / base).exists():
            out.append(pattern)
    return out


def stale(tree: Path, mutant: Mutant, slow: bool) -> str:
    """Say why `mutant` cannot be planted in `tree` ('' when it can).

    Parameters
    ----------
    tree : Path
        Repository root (the real one, or its copy).
    mutant : Mutant
        The planted bug.
    slow : bool
        Whether its slow tests count.

    Returns
    -------
    str
        The problem: its file is missing, its snippet is not found exactly once, or none of its tests exist.
    """
    target = tree / mutant.path
    if not target.is_file():
        return f"{mutant.path} does not exist"
    found = target.read_text().count(mutant.old)
    if found != 1:
        return f"snippet found {found} times in {mutant.path}"
    if not test_args(tree, mutant.tests + (mutant.slow if slow else ())):
        return "none of its test files exist"
    return ""


def run_mutant(tree: Path, mutant: Mutant, slow: bool, timeout: float) -> tuple[str, str, float]:
    problem = stale(tree, mutant, slow)
    if problem:
        return ("NO TESTS" if problem.startswith("none") else "STALE"), problem, 0.0
    target = tree / mutant.path
    original = target.read_text()
    tests = test_args(tree, mutant.tests + (mutant.slow if slow else ()))
    target.write_text(original.replace(mutant.old, mutant.new))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "tests")]),
           "GALHPC_PROGRESS": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    marker = "slow or not slow" if slow else "not slow"
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", marker,
                               *tests], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        rc, tail = done.returncode, (done.stdout + done.stderr).strip().splitlines()
    except subprocess.TimeoutExpired:
        rc, tail = -1, ["timed out"]
    finally:
        target.write_text(original)
    elapsed = time.monotonic() - start
    failed = next((line for line in tail if line.startswith(("FAILED", "ERROR"))), tail[-1] if tail else "")
    if rc == 0:
        return "SURVIVED", f"{', '.join(tests)} pass", elapsed
    if rc in (1, 2):  # tests failed, or could not even be collected (an import broke)
        return "KILLED", failed[:160], elapsed
    return "ERROR", f"pytest exit {rc}: {failed[:160]}", elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    p.add_argument("--slow", action="store_true", help="also run each mutant's slow tests")
    p.add_argument("--timeout", type=float, default=900, help="seconds per mutant (default 900)")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--check", action="store_true",
                   help="check that every snippet is found once and has tests, run nothing, and exit")
    args = p.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        p.error(f"unknown mutant(s): {sorted(set(args.only) - {m.name for m in MUTANTS})}")
    if args.list:
        for m in chosen:
            print(f"{m.name:34s} {m.path:28s} {m.why}")
        return 0
    if args.check:
        problems = [(m, problem) for m in chosen if (problem := stale(ROOT, m, args.slow))]
        for m, problem in problems:
            print(f"STALE     {m.name:34s} {problem}")
        print(f"{len(chosen) - len(problems)} of {len(chosen)} mutants apply")
        return 1 if problems else 0
    results = []
    with tempfile.TemporaryDirectory(prefix="galhpc-mutate-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        for m in chosen:
            status, detail, seconds = run_mutant(tree, m, args.slow, args.timeout)
            results.append((m, status))
            print(f"{status:9s} {m.name:34s} {seconds:6.1f}s  {detail}", flush=True)
    killed = sum(s == "KILLED" for _, s in results)
    scored = sum(s in ("KILLED", "SURVIVED") for _, s in results)
    print(f"\nkilled {killed} of {scored} mutants ({100 * killed / max(scored, 1):.0f} %)"
          + "".join(f"; {sum(s == k for _, s in results)} {k.lower()}" for k in ("STALE", "NO TESTS", "ERROR")
                    if any(s == k for _, s in results)))
    return 0 if all(s == "KILLED" for _, s in results) else 1


if __name__ == "__main__":
    sys.exit(main())
