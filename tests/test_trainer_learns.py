"""Item 6, "it learns": AstroVaDEr trained by galhpc-train's library path on a GalSim store.

Held-out reconstructions beat the mean image by a wide margin, and the mixture's clusters
separate the true morphology classes better than a permutation baseline.
"""

import numpy as np
import pytest
import torch

from galhpc.checkpoint import load_model
from galhpc.cluster.metrics import ari, nmi, permutation_baseline
from galhpc.config import ModelConfig, PrepConfig, RunConfig, ScheduleConfig, SourceConfig, TrainConfig
from galhpc.data.loader import StoreLoader
from galhpc.data.prep import run_prep
from galhpc.train.distributed import SingleProcess
from galhpc.train.trainer import train

pytestmark = pytest.mark.slow


def collect(model, store, split, cfg):
    loader = StoreLoader(store, 256, split=split, holdout_fraction=cfg.train.holdout_fraction, seed=cfg.train.seed,
                         shuffle=False, drop_last=False, label_columns=["morph_class"])
    images, means, labels = [], [], []
    with torch.no_grad():
        for batch in loader:
            images.append(batch["image"])
            means.append(model.encode(batch["image"]).mu)
            labels.append(batch["morph_class"])
    return torch.cat(images), torch.cat(means), torch.cat(labels).numpy()


def test_astrovader_learns_reconstructions_and_morphology_clusters(tmp_path):
    torch.set_num_threads(1)
    source = SourceConfig(kind="galsim", n=1500, seed=3, options={"noise_sigma": 3.0, "flux_min": 5000.0})
    store = run_prep(PrepConfig(sources=[source], output=str(tmp_path / "gs.h5"), image_size=32,
                                recipe=["minmax"], workers=2, chunk_rows=128))
    cfg = RunConfig(
        model=ModelConfig(name="astrovader", image_size=32, latent_dim=10,
                          params={"n_clusters": 3, "filters": [16, 16, 16], "kernels": [3, 3, 3]}),
        schedule=ScheduleConfig(enabled=True, t_alpha=10, gmm_init_batches=20, t_beta=2, t_static=2, periods=1,
                                dp_max_components=8, dp_batches=3),
        train=TrainConfig(store=str(store), out_dir=str(tmp_path / "run"), epochs=14, batch_size=64, lr=2e-3,
                          lr_final=2e-4, threads=1, backend="single", device="cpu"),
    )
    result = train(cfg, backend=SingleProcess("cpu"))
    assert [row["phase"] for row in result.history][9:12] == ["alpha", "anneal", "anneal"]
    model, _, _ = load_model(result.checkpoint, expect="astrovader")

    train_x, train_mu, train_y = collect(model, store, "train", cfg)
    hold_x, hold_mu, hold_y = collect(model, store, "holdout", cfg)
    with torch.no_grad():
        recon_mse = (model.decode(hold_mu) - hold_x).pow(2).mean().item()
    mean_image_mse = (train_x.mean(0, keepdim=True) - hold_x).pow(2).mean().item()
    assert recon_mse < 0.6 * mean_image_mse, (recon_mse, mean_image_mse)

    truth = np.concatenate([train_y, hold_y])
    with torch.no_grad():
        clusters = model.cluster_probs(torch.cat([train_mu, hold_mu])).argmax(1).numpy()
    chance = permutation_baseline(truth, clusters, n_permutations=200)
    scores = {"nmi": nmi(truth, clusters), "ari": ari(truth, clusters), **chance}
    assert scores["nmi"] > max(3 * chance["nmi_p99"], 0.02), scores
    assert scores["ari"] > max(3 * chance["ari_p99"], 0.02), scores
