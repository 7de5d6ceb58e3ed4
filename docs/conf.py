"""Sphinx configuration of galhpc's documentation site.

Build (warnings are errors, as in CI and `make docs`):

    python -m sphinx -W -b html docs build/docs

The user guide pages are the Markdown files of docs/ (MyST); the API reference is
autodoc + numpydoc (api.md); cli.md shows each command's --help, produced at build time
by the `galhpc-help` directive below.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GALHPC_PROGRESS", "0")

import galhpc  # noqa: E402

project = "galhpc"
version = release = galhpc.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "numpydoc"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Types in the signatures (from the annotations), so a function without a numpydoc Parameters
# section still shows them; "description" would repeat them beside numpydoc's own fields.
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
html_theme = "alabaster"
html_title = f"galhpc {release}"
suppress_warnings = ["myst.xref_missing"]  # links to source files (galhpc/...py) outside the docs


class GalhpcHelp(Directive):
    """``galhpc-help`` MODULE: the --help text of a galhpc command-line module, as a literal block."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module = importlib.import_module(self.arguments[0])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                module.main(["--help"])
            except SystemExit as done:
                if done.code not in (0, None):
                    raise self.error(f"{self.arguments[0]} --help exited {done.code}") from done
        block = nodes.literal_block(out.getvalue(), out.getvalue())
        block["language"] = "text"
        return [block]


def setup(app):
    app.add_directive("galhpc-help", GalhpcHelp)
