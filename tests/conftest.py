"""Shared test settings (no progress bars, deterministic small thread pools) and the shared tiny
store, checkpoint and catalogue fixtures."""

import logging
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("GALHPC_PROGRESS", "0")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")


@pytest.fixture(autouse=True)
def _galhpc_records_reach_caplog(monkeypatch):
    """`setup_logging` (run by every CLI `main`, which many tests call in-process) stops
    propagation at the "galhpc" logger so a rank's lines are written once; caplog listens
    at the root, so every later test in the process would see no galhpc records."""
    monkeypatch.setattr(logging.getLogger("galhpc"), "propagate", True)


# One small real pipeline, built once per test session by galhpc's own CLIs (prep -> train ->
# encode) and shared read-only: a test that changes one of these files copies it first.
TINY_CONFIG = {
    "prep": {"sources": [{"kind": "galsim", "n": 120, "seed": 3}], "image_size": 32, "workers": 1, "chunk_rows": 32},
    "model": {"name": "vae", "image_size": 32, "latent_dim": 4},
    # 60 optimiser steps (5 whole batches of the 90 training rows, 12 epochs): enough for samples
    # with a central source that statmorph can segment (6 steps give flat noise)
    "train": {"epochs": 12, "batch_size": 16, "lr": 0.003, "threads": 1, "holdout_fraction": 0.25,
              "backend": "single", "device": "cpu", "augment": False},
}
TINY_N = TINY_CONFIG["prep"]["sources"][0]["n"]
TINY_SHARD_SIZE = 32  # four shards of the 120 objects


def tiny_run_config(store, out_dir, **sections) -> dict:
    """Return `TINY_CONFIG` training on `store` into `out_dir`, with whole sections replaced.

    Parameters
    ----------
    store : str or Path
        Training store the run reads.
    out_dir : str or Path
        Folder of the run's checkpoint and logs.
    **sections : dict
        Replacement sections (``model``, ``schedule``, ``train`` keys merged over the tiny ones).

    Returns
    -------
    dict
        A run configuration for `galhpc.config.config_from_dict` or a YAML file.
    """
    train = {**TINY_CONFIG["train"], **sections.pop("train", {}), "store": str(store), "out_dir": str(out_dir)}
    return {**TINY_CONFIG, **sections, "train": train}


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """A 120-object 32x32 GalSim training store written by `galhpc-prep`; read-only."""
    from galhpc.cli.prep import main as prep_main

    root = tmp_path_factory.mktemp("tiny_store")
    config = root / "prep.yaml"
    config.write_text(yaml.safe_dump({"prep": {**TINY_CONFIG["prep"], "output": str(root / "store.h5")}}))
    assert prep_main(["--config", str(config)]) == 0
    return root / "store.h5"


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_store, tmp_path_factory) -> Path:
    """A ConvVAE checkpoint trained by `galhpc-train` on `tiny_store` (60 steps, one thread); read-only."""
    import torch

    from galhpc.cli.train import main as train_main

    root = tmp_path_factory.mktemp("tiny_checkpoint")
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_run_config(tiny_store, root / "run")))
    threads = torch.get_num_threads()
    try:
        assert train_main(["--config", str(config)]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "run" / "ckpt.pt"


@pytest.fixture(scope="session")
def tiny_catalog(tiny_store, tiny_checkpoint, tmp_path_factory) -> Path:
    """The `galhpc-encode` catalogue of `tiny_store` by `tiny_checkpoint` in four shards; read-only."""
    from galhpc.cli.encode import main as encode_main

    out = tmp_path_factory.mktemp("tiny_catalog") / "clusters.h5"
    assert encode_main(["--checkpoint", str(tiny_checkpoint), "--store", str(tiny_store), "--out", str(out),
                        "--batch-size", str(TINY_SHARD_SIZE), "--shard-size", str(TINY_SHARD_SIZE),
                        "--gmm-components", "4", "--threads", "1", "--device", "cpu"]) == 0
    return out
