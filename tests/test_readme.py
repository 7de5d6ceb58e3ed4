"""The README's Python section runs as written, on a tiny trained checkpoint and its catalogue."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tiny_run import write_tiny_run

from galhpc.cli.encode import main as encode_main
from galhpc.cli.train import main as train_main

REPO = Path(__file__).resolve().parents[1]


def readme_python() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_readme_python_section_runs(tmp_path):
    code = readme_python()
    assert len(code.strip().splitlines()) <= 15
    for link in re.findall(r"\]\(([^)#]+)\)", (REPO / "README.md").read_text()):
        assert not link.startswith(("..", "/")) and (REPO / link).exists(), link  # links stay inside the repository
    demo = tmp_path / "demo-output"
    demo.mkdir()
    config = write_tiny_run(demo, epochs=1)
    assert train_main(["--config", str(config), "--out-dir", str(demo / "train"), "--device", "cpu"]) == 0
    assert encode_main(["--checkpoint", str(demo / "train" / "ckpt.pt"), "--input", str(demo / "store.h5"),
                        "--out", str(demo / "clusters.h5"), "--batch-size", "64", "--shard-size", "64",
                        "--gmm-components", "3", "--gmm-fit-objects", "160", "--threads", "1", "--device", "cpu"]) == 0
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "MPLBACKEND": "Agg"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "galaxies.png").stat().st_size > 0
    assert "object_id" in run.stdout and "(3, 4)" in run.stdout
