"""A tiny but real training run for the job tests: ConvVAE on a 160-object 16x16 GalSim store."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import yaml


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
