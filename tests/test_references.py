"""Every repository file the code and the docs cite exists.

Scanned: galhpc/ and tests/ (Python), docs/ (Markdown and conf.py), README.md and
CONTRIBUTING.md.  A citation is
- a path in backticks (```galhpc/io/store.py```, ``jobs/train.sh``, ```docs/models.md```)
  whose first part is a folder or file at the repository's root; a ``:name`` after it (a
  function, a line) is not part of the path, a glob (``jobs/*.sh``) must match a file, and
  ``<placeholder>``/``{field}`` names are left alone;
- a relative path in backticks (``../x.md``), from the file's folder;
- a Markdown link ``[text](target)`` to a local file, relative to the page;
- a top-level document named anywhere (``README.md``, ``CONTRIBUTING.md``, ``DESIGN.md``);
- a module ``galhpc.x.y`` in backticks (``galhpc.io.catalog.open_catalog``): its packages
  and module exist, and a name after a package is one its ``__init__.py`` defines or
  imports (after a module, the rest is an attribute and is not checked).
CHANGELOG.md is not scanned: it names paths that were renamed or removed.

Run as a script to list every missing citation: ``python tests/test_references.py``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT_ENTRIES = {p.name for p in REPO.iterdir() if not p.name.startswith(".")} | {
    "CHANGELOG.md", "CONTRIBUTING.md", "LICENSE"}
# folders at the root whose paths are citations (outputs such as demo-output/ or data/ are not)
CITED_DIRS = ("galhpc", "tests", "docs", "jobs", "scripts", "configs", "benchmarks", "cpp_ext")
CITED_FILES = ("README.md", "CONTRIBUTING.md", "CHANGELOG.md", "LICENSE", "pyproject.toml", "Makefile",
               "requirements.txt", "setup.py", "environment.yml", "pytest.ini")
_SUBPACKAGES = {p.name for p in (REPO / "galhpc").iterdir() if p.is_dir() and not p.name.startswith("_")}
SELF = Path(__file__).resolve()

_BACKTICK = re.compile(r"``?([^`\s]+?)``?")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_TOP_DOC = re.compile(r"(?<![\w/.-])([A-Z][A-Z_]+\.md)\b")
# logger names under galhpc (`galhpc.progress`) are not modules
_LOGGERS = {name for f in (REPO / "galhpc").rglob("*.py")
            for name in re.findall(r"getLogger\([\"'](galhpc[\w.]*)[\"']\)", f.read_text())}
_MODULE = re.compile(r"^galhpc(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def scanned_files() -> list[Path]:
    """The files whose citations are checked."""
    files = sorted((REPO / "galhpc").rglob("*.py")) + sorted((REPO / "tests").rglob("*.py"))
    files += sorted((REPO / "docs").glob("*.md")) + [REPO / "docs" / "conf.py"]
    files += [REPO / "README.md", REPO / "CONTRIBUTING.md"]
    return [f for f in files if f.exists() and f.resolve() != SELF and "blocked_site" not in f.parts]


def _path_exists(path: str) -> bool:
    if any(c in path for c in "*?["):
        return any(REPO.glob(path))
    return (REPO / path).exists()


def _as_repo_path(token: str) -> str | None:
    """The repository path a backticked token cites, or None when it cites none."""
    token = token.strip(".,;()'\"")
    if "<" in token or "{" in token or "://" in token or "$" in token:
        return None
    token = re.split(r"::|:(?=[A-Za-z_0-9])", token, maxsplit=1)[0]  # path:function, path:123
    token = token.split("#", 1)[0]
    first = token.split("/", 1)[0]
    if first in CITED_DIRS and "/" in token and token.rstrip("/") != first:
        return token.rstrip("/")
    if token in CITED_FILES:
        return token
    if first in _SUBPACKAGES and "/" in token and re.search(r"\.(py|md)$", token):
        return f"galhpc/{token}"  # a path inside the package, cited without its `galhpc/`
    return None


def _module_exists(dotted: str) -> bool:
    """Whether ``galhpc.a.b.c`` names a module, or an attribute of the last module it reaches.

    Packages are walked while the parts are subpackages; a part that is a module ends the
    walk (what follows is an attribute); a part that is neither must be a name the
    package's ``__init__.py`` defines or imports.
    """
    package = REPO / "galhpc"
    for part in dotted.split(".")[1:]:
        if part == "_ext" and package == REPO / "galhpc":  # the compiled extension, built by setup.py
            return True
        if (package / f"{part}.py").exists():
            return True
        if (package / part / "__init__.py").exists():
            package = package / part
            continue
        init = package / "__init__.py"
        return init.exists() and re.search(rf"\b{re.escape(part)}\b", init.read_text()) is not None
    return True


def missing_references(files: list[Path] | None = None) -> list[str]:
    """``file:line: cited`` for every citation of a repository file that does not exist."""
    found = []
    for path in files if files is not None else scanned_files():
        rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            cited: set[str] = set()
            for token in _BACKTICK.findall(line):
                if token.startswith("../") and not (path.parent / token.strip(".,;()")).exists():
                    cited.add(token)  # a relative path out of the file's folder
                repo_path = _as_repo_path(token)
                if repo_path is not None and not _path_exists(repo_path):
                    cited.add(repo_path)
                module = _MODULE.match(token)
                if module and module[0] not in _LOGGERS and not _module_exists(module[0]):
                    cited.add(module[0])
            if path.suffix == ".md":
                for target in _LINK.findall(line):
                    target = target.split("#", 1)[0]
                    if not target or re.match(r"^[a-z]+:", target) or "<" in target:
                        continue
                    if not (path.parent / target).exists():
                        cited.add(target)
            for doc in _TOP_DOC.findall(line):
                if doc not in ROOT_ENTRIES and not (path.parent / doc).exists():
                    cited.add(doc)
            found += [f"{rel}:{lineno}: {c}" for c in sorted(cited)]
    return found


def test_every_cited_repository_file_exists():
    missing = missing_references()
    assert not missing, "cited files that are not in the repository:\n" + "\n".join(missing)


def test_the_scan_finds_a_missing_path_a_missing_module_and_a_missing_document(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("See `../none.md`, `galhpc/io/nothing_here.py:read`, `galhpc.nothing_here.x`, DESIGN.md and "
                    "[a page](no_such_page.md); `galhpc/data/fits.py`, `galhpc.data.fits.read_source`, "
                    "`jobs/*.sh`, `galhpc/report/sections/<name>.py` and README.md exist.\n")
    assert sorted(m.split(": ", 1)[1] for m in missing_references([page])) == [
        "../none.md", "DESIGN.md", "galhpc.nothing_here.x", "galhpc/io/nothing_here.py", "no_such_page.md"]


if __name__ == "__main__":
    print("\n".join(missing_references()) or "every cited file exists")
    sys.exit(0)
