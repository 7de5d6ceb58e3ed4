"""The commands the documentation gives: every Python one-liner and block compiles, every
galhpc command line parses with that command's own parser, and the store-copying commands
of docs/search.md run as written and copy every dataset.

The commands and snippets are executed by tests/test_docs_run.py (on small data), or marked
there with the reason they cannot run here (a cluster, the reader's own files, hours of
training)."""

import re
import shlex
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from galhpc.data.sources import Block
from galhpc.data.store import StoreWriter

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]


def fenced_blocks(path):
    """(language, text) of every fenced code block of a Markdown page."""
    return re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def shell_commands(text):
    """The block's command lines, backslash-continued lines joined as the shell joins them."""
    return [line.strip() for line in text.replace("\\\n", "").splitlines() if line.strip()]


def python_snippets():
    """(page, code) of every ```python block and every `python -c "..."` command of the docs."""
    found = []
    for page in PAGES:
        for language, text in fenced_blocks(page):
            if language == "python":
                found.append((page.name, text))
                continue
            for command in shell_commands(text):
                if command.startswith("python -c "):
                    found.append((page.name, shlex.split(command, comments=True)[2]))
    return found


@pytest.mark.parametrize("page, code", python_snippets())
def test_documented_python_compiles(page, code):
    compile(code, page, "exec")


def search_copy_commands():
    blocks = [text for _, text in fenced_blocks(REPO / "docs" / "search.md") if "rarity_galsim_eval.h5', 'w'" in text]
    assert len(blocks) == 1
    commands = [c for c in shell_commands(blocks[0]) if c.startswith("python -c ")]
    assert len(commands) == 2
    return commands


def test_search_store_copies_take_every_dataset(tmp_path):
    """docs/search.md cuts a 6000-object store into a training and an evaluation store: each
    copy must hold every dataset (images, object_id, labels, truth), cut to its rows, and the
    shared PSF whole (the one-liner used to copy /images only)."""
    (tmp_path / "data").mkdir()
    n = 6000
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n, 4, 4)).astype(np.float32)
    block = Block(images=images, object_id=np.arange(n, dtype=np.int64) * 7,
                  labels={"source_index": (np.arange(n) >= 5970).astype(np.int64)},
                  truth=rng.standard_normal((n, 4, 4)).astype(np.float32), psf=np.ones((3, 3), np.float32) / 9)
    with StoreWriter(tmp_path / "data" / "rarity_galsim.h5", "prep: {}\n") as writer:
        writer.append(block)
    for command in search_copy_commands():
        run = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
    rows = {"rarity_galsim_train.h5": np.arange(1500), "rarity_galsim_eval.h5": np.r_[1500:3490, 5970:5980]}
    with h5py.File(tmp_path / "data" / "rarity_galsim.h5") as f:
        names = []
        f.visit(names.append)
        datasets = [k for k in names if isinstance(f[k], h5py.Dataset)]
        assert {"images", "object_id", "labels/source_index", "truth", "psf"} <= set(datasets)
        for name, r in rows.items():
            with h5py.File(tmp_path / "data" / name) as g:
                assert g.attrs["n_objects"] == len(r) and g.attrs["galhpc_kind"] == "store"
                for k in datasets:
                    want = f[k][()][r] if f[k].shape[:1] == (n,) else f[k][()]
                    assert np.array_equal(g[k][()], want), (name, k)
                assert g["labels/source_index"][()].sum() == (10 if "eval" in name else 0)  # the planted rare objects


LAUNCHERS = ("mpirun", "mpiexec", "srun")


def galhpc_commands():
    """(page, argv) of every galhpc-* command line in the docs' shell blocks (after any
    environment assignments and an mpirun/srun prefix); usage synopses with [optional]
    parts are left out."""
    found = []
    for page in PAGES:
        for language, text in fenced_blocks(page):
            if language not in ("", "bash", "sh", "shell", "console"):
                continue
            for line in shell_commands(text):
                if "[" in line or not re.search(r"\bgalhpc-\w+", line):
                    continue
                words = shlex.split(line, comments=True)
                while words and "=" in words[0] and not words[0].startswith("-"):
                    words = words[1:]
                if words and words[0] in LAUNCHERS:
                    words = words[next(i for i, w in enumerate(words) if w.startswith("galhpc-")):]
                if words and words[0].startswith("galhpc-"):
                    found.append((page.name, words))
    return found


@pytest.mark.parametrize("page, argv", galhpc_commands(), ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else v)
def test_documented_commands_parse_and_name_files_that_exist(page, argv):
    """Each galhpc command of the docs is accepted by that command's own argument parser (a
    renamed or removed flag fails here), and a configs/ file it names is in the repository."""
    import importlib

    module = importlib.import_module(f"galhpc.cli.{argv[0][len('galhpc-'):]}")
    parse = module.parse_args if hasattr(module, "parse_args") else module.build_parser().parse_args
    args = parse(argv[1:])
    if str(getattr(args, "config", None)).startswith("configs/"):  # the repository's (cfg.yaml: the reader's own)
        assert (REPO / args.config).is_file(), f"{page}: {args.config}"
