"""The repository passes `ruff check` under pyproject.toml's [tool.ruff] (120 columns,
E/F/W/B/SIM/UP/I, numpy docstrings on the package): any finding fails, listed file:line."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_configuration_is_the_projects():
    # ruff's own reading of pyproject.toml (tomllib is Python >= 3.11; galhpc supports 3.10):
    # 120 columns and one rule of each selected family enabled
    settings = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--show-settings", "galhpc/__init__.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert "linter.line_length = 120" in settings
    for code in ("E501", "F401", "W291", "B905", "SIM102", "UP004", "I001", "D205"):
        assert f"({code})" in settings, f"ruff rule {code} is not selected by pyproject.toml"


def test_ruff_check_finds_nothing():
    # ruff is a test requirement (requirements.txt, the `test` extra): `python -m ruff` runs the
    # binary that pip installed beside this interpreter, whatever is first on PATH.
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"ruff check found problems:\n{result.stdout}{result.stderr}"
