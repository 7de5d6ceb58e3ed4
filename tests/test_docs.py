"""The documentation site builds with warnings as errors (as `make docs` runs it): the user guide,
every CLI's --help, the API reference."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_sphinx_site_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("numpydoc")
    pytest.importorskip("myst_parser")
    run = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(REPO / "docs"), str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin",
                                                                           "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[-4000:]
    cli = (tmp_path / "cli.html").read_text()
    for command in ("galhpc-prep", "galhpc-train", "galhpc-encode", "galhpc-generate", "galhpc-report",
                    "galhpc-export"):
        assert f"usage: {command}" in cli, command
    api = (tmp_path / "api.html").read_text()
    assert "galhpc.open_catalog" in api and "Neural discrete" in api and "CatalogError" in api
    for page in ("install", "schema", "hpc", "architecture"):
        assert (tmp_path / f"{page}.html").is_file()
