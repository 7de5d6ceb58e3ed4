"""scripts/mutate.py's table of planted bugs still applies to the code (no stale mutant)."""

import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import mutate  # noqa: E402


def test_every_planted_bug_finds_its_snippet_once_and_has_tests():
    assert len(mutate.MUTANTS) == len({m.name for m in mutate.MUTANTS}) > 20
    problems = {m.name: mutate.stale(ROOT, m, slow=True) for m in mutate.MUTANTS}
    assert {name: problem for name, problem in problems.items() if problem} == {}


def test_a_moved_snippet_or_file_is_stale(capsys):
    m = mutate.MUTANTS[0]
    assert "found 0 times" in mutate.stale(ROOT, replace(m, old=m.old + "#nowhere"), slow=False)
    assert "does not exist" in mutate.stale(ROOT, replace(m, path="galhpc/nowhere.py"), slow=False)
    untested = replace(m, tests=("tests/test_nowhere*.py",), slow=())
    assert mutate.stale(ROOT, untested, slow=True) == "none of its test files exist"
    assert mutate.main(["--check", "--only", m.name]) == 0
    assert "1 of 1 mutants apply" in capsys.readouterr().out
