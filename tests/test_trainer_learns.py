"""Item 6, "it learns": AstroVaDEr trained by galhpc-train's library path on a GalSim store.

Held-out reconstructions beat the mean image by a wide margin, and the mixture's clusters
separate the true morphology classes better than a permutation baseline.
"""

import pytest
import torch

from galhpc.checkpoint import load_model
from galhpc.config import ModelConfig, PrepConfig, RunConfig, ScheduleConfig, SourceConfig, TrainConfig
from galhpc.data.loader import StoreLoader
from galhpc.data.prep import run_prep
from galhpc.mixture.metrics import ari, nmi, permutation_baseline
from galhpc.train.distributed import SingleProcess
from galhpc.train.trainer import train

pytestmark = pytest.mark.slow

# held-out (450 rows) NMI / ARI of argmax γ vs morph_class, measured 0.090 / 0.079 against a
# permutation p99 of 0.012 / 0.011 (issue 26); floors ~55 % of that (seeds, BLAS), above 3x
# the p99, and above the 0.023 that a 15 % signal already gives
NMI_FLOOR, ARI_FLOOR = 0.05, 0.04


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
                          lr_final=2e-4, threads=1, backend="single", device="cpu",
                          holdout_fraction=0.3),  # 450 held-out rows: a chance p99 well below the signal
    )
    result = train(cfg, backend=SingleProcess("cpu"))
    assert [row["phase"] for row in result.history][9:12] == ["alpha", "anneal", "anneal"]
    model = load_model(result.checkpoint, expect="astrovader")

    train_x, train_mu, train_y = collect(model, store, "train", cfg)
    hold_x, hold_mu, hold_y = collect(model, store, "holdout", cfg)
    with torch.no_grad():
        recon_mse = (model.decode(hold_mu) - hold_x).pow(2).mean().item()
    mean_image_mse = (train_x.mean(0, keepdim=True) - hold_x).pow(2).mean().item()
    assert recon_mse < 0.6 * mean_image_mse, (recon_mse, mean_image_mse)

    # clusters scored on the held-out rows only (the model never trained on them)
    with torch.no_grad():
        clusters = model.cluster_probs(hold_mu).argmax(1).numpy()
    chance = permutation_baseline(hold_y, clusters, n_permutations=200)
    scores = {"nmi": nmi(hold_y, clusters), "ari": ari(hold_y, clusters), **chance}
    print("held-out clusters:", {k: round(v, 4) for k, v in scores.items()})
    assert scores["nmi"] > max(3 * chance["nmi_p99"], NMI_FLOOR), scores
    assert scores["ari"] > max(3 * chance["ari_p99"], ARI_FLOOR), scores
