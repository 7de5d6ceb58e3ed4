"""The documentation's commands and Python snippets are executed, as a reader would copy them.

Every code block of README.md and docs/*.md that holds a galhpc-* command, a `python -c`
command or Python code carries one marker, an HTML comment (invisible on the rendered page) on
the lines just before it:

    <!-- docs-run: SESSION [cwd=DIR] [COMMAND+="ARGS"] ... -->
    <!-- docs-skip: REASON -->

`docs-run` blocks of one SESSION run in order (README.md first, then docs/*.md by name) in one
temporary directory holding a link to the repository's configs/: shell blocks line by line
under bash, Python blocks with the interpreter.  `cwd=DIR` runs the block in that
subdirectory.  `COMMAND+="ARGS"` is the only substitution: ARGS are appended to every
COMMAND line of the block, and must be documented overrides that make the run small (e.g.
`galhpc-train+="--epochs 3"`, `galhpc-prep+="--set prep.sources.0.n=200"`), never a
rewrite of what the page says.  `docs-skip` says why a block cannot run here (Slurm, many
nodes, the reader's own files); `test_every_command_block_is_run_or_says_why` fails for a
block with neither, so a new block cannot slip through untried.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from galhpc.config import apply_settings, load_config
from galhpc.runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
SHELL = ("", "bash", "sh", "shell", "console")
MARKER = re.compile(r"^<!--\s*docs-(run|skip):\s*(.*?)\s*-->$")
COMMAND = re.compile(r"^(?:\$ )?(?:\w+=\S*\s+)*(?:(?:mpirun|mpiexec|srun)\b.*?\s)?(?:galhpc-\w+|python3? )")


@dataclass
class DocBlock:
    page: str
    line: int                    # 1-based line of the block's first line
    language: str                # "python", a shell name, or "indented"
    text: str
    marker: tuple[str, str] | None  # ("run", args) or ("skip", reason)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_python(self) -> bool:
        return self.language == "python"

    def needs_marker(self) -> bool:
        """Python code, or a shell block with a galhpc-* or python command."""
        if self.is_python:
            return True
        if self.language not in SHELL + ("indented",):
            return False
        return any(COMMAND.match(line.strip()) for line in self.text.splitlines())


def _marker_before(lines: list[str], start: int) -> tuple[str, str] | None:
    i = start - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    if i >= 0 and (m := MARKER.match(lines[i].strip())):
        return m.group(1), m.group(2)
    return None


def doc_blocks(page: Path) -> list[DocBlock]:
    """Fenced blocks and indented (4-space) code blocks of a Markdown page, with their markers."""
    lines = page.read_text().splitlines()
    name = str(page.relative_to(REPO)) if page.is_relative_to(REPO) else page.name
    blocks, i = [], 0
    while i < len(lines):
        if m := re.match(r"^```(\S*)", lines[i]):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append(DocBlock(name, i + 2, m.group(1), "\n".join(lines[i + 1:end]) + "\n",
                                   _marker_before(lines, i)))
            i = end + 1
        elif lines[i].startswith("    ") and lines[i].strip() and (i == 0 or not lines[i - 1].strip()) \
                and not re.match(r"^\s*([-*+]|\d+\.)\s", lines[i - 2] if i >= 2 else ""):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            body = [line[4:] for line in lines[i:end]]
            blocks.append(DocBlock(name, i + 1, "indented", "\n".join(body).strip("\n") + "\n",
                                   _marker_before(lines, i)))
            i = end
        else:
            i += 1
    return blocks


def all_blocks() -> list[DocBlock]:
    return [block for page in PAGES for block in doc_blocks(page)]


def parse_run(block: DocBlock) -> tuple[str, str, dict[str, list[str]]]:
    """(session, cwd, {command: appended args}) of a docs-run marker."""
    words = shlex.split(block.marker[1])
    assert words, f"{block.where}: docs-run needs a session name"
    session, cwd, appends = words[0], ".", {}
    for word in words[1:]:
        if word.startswith("cwd="):
            cwd = word[4:]
        elif "+=" in word:
            command, extra = word.split("+=", 1)
            assert command.startswith("galhpc-"), f"{block.where}: only galhpc-* commands take appended args"
            appends[command] = shlex.split(extra)
        else:
            raise AssertionError(f"{block.where}: unknown docs-run word {word!r}")
    return session, cwd, appends


def shell_lines(text: str, language: str) -> list[str]:
    """The block's commands, continued lines joined; a console block's `$ ` lines only."""
    joined = text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if language == "console" or any(x.startswith("$ ") for x in joined.splitlines()):
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if line and not line.startswith("#"):
            out.append(line)
    return out


def with_appends(line: str, appends: dict[str, list[str]]) -> str:
    """The command line with the marker's args appended to its galhpc-* command."""
    words = shlex.split(line, comments=True)
    command = next((w for w in words if w.startswith("galhpc-")), None)
    if command not in appends:
        return line
    return shlex.join(words + appends[command])


def test_every_command_block_is_run_or_says_why():
    """A block with a galhpc-* or python command, or Python code, is run here or says why not."""
    unmarked = [b.where for b in all_blocks() if b.needs_marker() and b.marker is None]
    assert not unmarked, f"code blocks with neither <!-- docs-run: ... --> nor <!-- docs-skip: REASON -->: {unmarked}"
    for block in all_blocks():
        if block.marker and block.marker[0] == "skip":
            assert len(block.marker[1]) >= 10, f"{block.where}: docs-skip needs a reason"
        if block.marker and block.marker[0] == "run":
            session, _, appends = parse_run(block)
            if block.is_python:
                assert not appends, f"{block.where}: appended args are for shell commands"
            for command in appends:
                assert any(command in line for line in shell_lines(block.text, block.language)), \
                    f"{block.where}: {command}+= matches no command of the block"


def test_the_marker_convention_finds_every_kind_of_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- docs-skip: needs Slurm and four nodes -->\n```bash\nsbatch x\n"
                    "galhpc-train --config c.yaml\n```\n\ntext\n\n    galhpc-prep --config c.yaml\n\n"
                    "<!-- docs-run: s cwd=out galhpc-prep+=\"--set a=1\" -->\n```python\nx = 1\n```\n"
                    "\n```yaml\nprep: {}\n```\n\n- item\n\n      python -c pass\n")
    blocks = doc_blocks(page)
    assert [(b.language, b.line, b.needs_marker()) for b in blocks] == [
        ("bash", 5, True), ("indented", 11, True), ("python", 15, True), ("yaml", 19, False)]
    assert blocks[0].marker == ("skip", "needs Slurm and four nodes") and blocks[1].marker is None
    assert parse_run(blocks[2]) == ("s", "out", {"galhpc-prep": ["--set", "a=1"]})
    assert with_appends("galhpc-prep --config c.yaml  # note", {"galhpc-prep": ["--set", "a=1"]}) == \
        "galhpc-prep --config c.yaml --set a=1"
    assert shell_lines("$ h5ls -r x.h5\n/images  Dataset\n$ python -c 'print(1)'\n", "") == \
        ["h5ls -r x.h5", "python -c 'print(1)'"]


def test_set_overrides_what_the_docs_shrink(tmp_path):
    """`--set KEY=VALUE`, the docs' substitution: dotted keys into mappings and list items,
    values read as YAML, mistakes refused in one line."""
    config = tmp_path / "c.yaml"
    config.write_text("prep:\n  sources:\n    - kind: galsim\n      n: 2000\ntrain:\n  epochs: 10\n")
    cfg = load_config(config, ["prep.sources.0.n=200", "train.lr=1e-4", "model.params.filters=[8, 16]"])
    assert cfg.prep.sources[0].n == 200 and cfg.train.lr == 1e-4 and cfg.train.epochs == 10
    assert cfg.model.params == {"filters": [8, 16]}
    data = {"a": {"b": 1}}
    assert apply_settings(data, ["a.b=2"]) == {"a": {"b": 2}} and data == {"a": {"b": 1}}
    for bad, says in [("train.epochs", "KEY=VALUE"), ("prep.sources.3.n=1", "1-item list"),
                      ("train.epochs.x=1", "train.epochs is not a mapping")]:
        with pytest.raises(ConfigError, match=says):
            load_config(config, [bad])
    with pytest.raises(ConfigError, match="trian"):  # a mistyped section is refused like one in the file
        load_config(config, ["trian.epochs=1"])


def sessions() -> dict[str, list[DocBlock]]:
    found: dict[str, list[DocBlock]] = {}
    for block in all_blocks():
        if block.marker and block.marker[0] == "run":
            found.setdefault(parse_run(block)[0], []).append(block)
    return found


def _run_block(block: DocBlock, root: Path, env: dict[str, str]) -> None:
    _, cwd, appends = parse_run(block)
    where = root / cwd
    if block.is_python:
        steps = [([sys.executable, "-c", block.text], block.text)]
    else:
        steps = [(["bash", "-c", with_appends(line, appends)], line)
                 for line in shell_lines(block.text, block.language)]
    for argv, shown in steps:
        start = time.perf_counter()
        run = subprocess.run(argv, cwd=where, env=env, capture_output=True, text=True, timeout=600)
        print(f"{time.perf_counter() - start:6.1f} s  {block.where}  {shown[:100]!r}")
        assert run.returncode == 0, (f"{block.where} failed (exit {run.returncode}):\n{shown}\n"
                                     f"--- stderr ---\n{run.stderr[-3000:]}\n--- stdout ---\n{run.stdout[-1500:]}")


@pytest.mark.slow
@pytest.mark.parametrize("session", sorted(sessions()))
def test_documented_session_runs(session, tmp_path):
    """The blocks of one session run in order, in a fresh directory, and each exits 0."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               MPLBACKEND="Agg", OMP_NUM_THREADS="2")
    for block in sessions()[session]:
        _run_block(block, tmp_path, env)
