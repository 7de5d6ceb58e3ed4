"""A tiny but real training run for the job tests: ConvVAE on a 160-object 16x16 GalSim store."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

# Epochs of a run that a test stops (signal, node kill) after its first checkpoint: an epoch of
# this tiny run takes well under a second, so a short run can finish before the stop arrives
# and the test would see no stop at all.
STOPPED_RUN_EPOCHS = 30


def write_tiny_run(root: Path, epochs: int = 2) -> Path:
    """Simulate the store under `root` and write the run config beside it; returns the config path."""
    from galhpc.config import config_from_dict
    from galhpc.data.prep import run_prep

    data = {
        "prep": {"sources": [{"kind": "galsim", "n": 160, "seed": 1}], "image_size": 16, "workers": 1},
        "model": {"name": "vae", "image_size": 16, "latent_dim": 4},
        "train": {"store": str(root / "store.h5"), "out_dir": str(root / "run"), "epochs": epochs,
                  "batch_size": 16, "threads": 1, "augment": False},
    }
    run_prep(config_from_dict(data).prep, output=str(root / "store.h5"))
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def read_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def wait_for_checkpoint(path: Path, min_epoch: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                if read_checkpoint(path)["position"]["epoch"] >= min_epoch:
                    return
            except Exception:  # being replaced right now: read again
                pass
        time.sleep(0.5)
    raise TimeoutError(f"no checkpoint of epoch >= {min_epoch} at {path} after {timeout:.0f} s")


def stop_after_first_epoch(command: list[str], env: dict[str, str], log_path: Path, checkpoint: Path,
                           stop: Callable[[subprocess.Popen], None]) -> int:
    """Start the training job `command` (output to `log_path`), call `stop` on it once `checkpoint`
    holds a finished epoch, and return its exit status (killed if it outlives 180 s more)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_checkpoint(checkpoint, min_epoch=1, timeout=300)
            stop(proc)
            return proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()


def resume_to_the_end(command: list[str], env: dict[str, str], checkpoint: Path, epochs: int) -> str:
    """Run the stopped 2-rank job `command` again; check that it resumed from `checkpoint` and
    trained each of the `epochs` once; returns its stderr."""
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming from" in second.stderr, second.stderr
    ckpt = read_checkpoint(checkpoint)
    # 144 training images on 2 ranks: 4 batches of 16 per rank and epoch
    assert ckpt["position"] == {**ckpt["position"], "epoch": epochs, "batch": 0, "step": 4 * epochs}, ckpt["position"]
    assert [row["epoch"] for row in ckpt["history"]] == list(range(epochs)), ckpt["history"]
    return second.stderr
