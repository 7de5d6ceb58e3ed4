"""galhpc-train on 2 real processes (torchrun, torch.distributed/gloo): AstroVaDEr through the
s3VDC mixture initialisation, rank-sharded data, a root-only checkpoint and loss files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import vader_config, write_store  # noqa: E402

from galhpc.checkpoint import read_checkpoint  # noqa: E402
from galhpc.train.distributed import _free_port  # noqa: E402

pytestmark = pytest.mark.slow
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "HOROVOD_RANK", "SLURM_JOB_ID")


def test_two_rank_torchrun_training_with_mixture_init(tmp_path):
    store = write_store(tmp_path / "toy.h5", n=224)
    cfg = vader_config(store, tmp_path / "run")
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.to_yaml())
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith(("OMPI_COMM", "PMI_"))}
    env.update(OMP_NUM_THREADS="1", GALHPC_PROGRESS="0")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "galhpc.cli.train", "--config", str(path), "--backend", "torch", "--device", "cpu"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = read_checkpoint(tmp_path / "run" / "ckpt.pt")
    # 179 training rows (224 - 20 % holdout) -> 89 per rank -> 2 batches of 32 per epoch
    assert payload["position"] == {"epoch": 3, "batch": 0, "step": 6, "sums": {}}
    assert [row["phase"] for row in payload["history"]] == ["alpha", "anneal", "static"]
    assert payload["stick_breaking_k"] is not None
    assert (tmp_path / "run" / "losses.csv").read_text().count("\n") == 4
    assert not list((tmp_path / "run").glob(".*tmp*"))
