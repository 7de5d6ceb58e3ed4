"""Figures of the VQ-VAE / PixelCNN / ConvAE issue, measured on a small simulated GalSim set.

    python benchmarks/models2_figures.py --work /tmp/galhpc-models2

1. prepares the store of configs/vqvae_galsim.yaml (GalSim, 32x32, truth and PSF stored);
2. trains, with galhpc's trainer, the VQ-VAE with K = 512 and K = 16, the VQ-VAE with the
   PSF output layer, and the ConvAE with and without dense layers (configs/*_galsim.yaml);
3. trains the PixelCNN prior conditional on morph_class (configs/vqvae_prior_morph_galsim.yaml);
4. prints (and writes metrics.json): held-out reconstruction MSE of every model; MSE to the
   noise-free, PSF-free truth of the observed images, of the plain VQ-VAE's reconstructions
   and of the PSF model's pre-PSF output; NMI/ARI of stick-breaking BGM clusters against
   morph_class and has_companion; per-class size and concentration of real and sampled images.

Everything runs on one CPU thread; with --quick it is a smoke run of a minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from sklearn.decomposition import PCA

from galhpc.checkpoint import load_model
from galhpc.config import RunConfig, load_config
from galhpc.data.loader import StoreLoader
from galhpc.data.prep import run_prep
from galhpc.mixture.bayesian import fit_stick_breaking_bgm
from galhpc.mixture.metrics import ari, nmi
from galhpc.models.base import StepState
from galhpc.runtime import setup_logging
from galhpc.train.trainer import train

log = logging.getLogger("galhpc.benchmarks.models2")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RUNS = {
    "vqvae_k512": "vqvae_galsim.yaml",
    "vqvae_k16": "vqvae_k16_galsim.yaml",
    "vqvae_k512_psf": "vqvae_psf_galsim.yaml",
    "convae_dense": "convae_dense_galsim.yaml",
    "convae_conv": "convae_conv_galsim.yaml",
}
PRIOR = "vqvae_prior_morph_galsim.yaml"


def run_config(name: str, work: Path, args: argparse.Namespace) -> RunConfig:
    """A config of configs/ with its store and output moved under `work`."""
    cfg = load_config(CONFIGS / name)
    store = str(work / "galsim32.h5")
    cfg.prep.output = cfg.train.store = store
    cfg.prep.sources[0].n = args.n
    cfg.train.out_dir = str(work / Path(cfg.train.out_dir).name)
    cfg.train.epochs = args.epochs
    if args.codebook_loss and cfg.model.name == "vqvae":
        cfg.model.params["ema"] = False
    psf = cfg.model.params.get("psf")
    if isinstance(psf, dict) and psf.get("kind") == "hdf5":
        cfg.model.params["psf"] = {**psf, "path": store}
    return cfg


def load_split(store: str, split: str, columns: list[str]) -> dict[str, np.ndarray]:
    """Images, labels and truth of a split ("holdout": the trainer's; "all"), in store order."""
    loader = StoreLoader(store, 256, split=split, augment=False, shuffle=False, drop_last=False,
                         label_columns=columns)
    parts: dict[str, list] = {}
    for batch in loader:
        for key in ("image", "index", *columns):
            parts.setdefault(key, []).append(batch[key].numpy())
    out = {k: np.concatenate(v) for k, v in parts.items()}
    with h5py.File(store, "r") as f:
        out["truth"] = f["truth"][np.sort(out["index"])][np.argsort(np.argsort(out["index"]))][:, None]
    return out


@torch.no_grad()
def evaluate_model(model, images: np.ndarray) -> dict[str, np.ndarray]:
    """Features, observed-space reconstructions and decoder outputs (pre-PSF) of images."""
    x = torch.from_numpy(images)
    feats, recons, decoded = [], [], []
    for part in x.split(256):
        out = model.loss({"image": part}, StepState())
        z = model.encode(part).mu
        feats.append(z.numpy())
        recons.append(out.recon.numpy())
        decoded.append(model.decode(z).numpy())
    return {"features": np.concatenate(feats), "recon": np.concatenate(recons), "decoded": np.concatenate(decoded)}


def cluster_scores(features: np.ndarray, labels: dict[str, np.ndarray], seed: int = 0) -> dict[str, float]:
    """Stick-breaking BGM on PCA(16) of the features; NMI/ARI of its clusters against labels."""
    reduced = PCA(n_components=min(16, features.shape[1]), random_state=seed).fit_transform(features)
    result = fit_stick_breaking_bgm(reduced, max_components=10, seed=seed, n_batches=3)
    clusters = result.models[0].predict(reduced)
    scores = {"bgm_k": result.k}
    for name, truth in labels.items():
        scores[f"nmi_{name}"] = round(nmi(truth, clusters), 4)
        scores[f"ari_{name}"] = round(ari(truth, clusters), 4)
    return scores


def radii(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-light radius r50 (pixels) about the flux centroid, and concentration 5 log10(r80/r20)."""
    x = np.clip(images[:, 0].astype(np.float64), 0, None)
    x = x - np.median(x[:, :3, :], axis=(1, 2))[:, None, None].clip(min=0)
    x = np.clip(x, 0, None)
    size = x.shape[-1]
    yy, xx = np.mgrid[:size, :size]
    flux = x.sum(axis=(1, 2)) + 1e-12
    cx = (x * xx).sum(axis=(1, 2)) / flux
    cy = (x * yy).sum(axis=(1, 2)) / flux
    r = np.hypot(xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]).reshape(len(x), -1)
    order = np.argsort(r, axis=1)
    r_sorted = np.take_along_axis(r, order, axis=1)
    cum = np.cumsum(np.take_along_axis(x.reshape(len(x), -1), order, axis=1), axis=1) / flux[:, None]
    at = lambda q: r_sorted[np.arange(len(x)), np.argmax(cum >= q, axis=1)] + 0.5  # noqa: E731
    return at(0.5), 5 * np.log10(at(0.8) / at(0.2))


def train_prior(cfg: RunConfig) -> Path:
    """The PixelCNN prior through the trainer when it feeds label columns, else a plain loop."""
    try:
        return train(cfg).checkpoint
    except KeyError as err:  # the trainer's batches lack the condition column
        log.warning("trainer batches have no condition column (%s); training the prior with a plain loop", err)
    from galhpc.checkpoint import assemble_model, save_checkpoint

    torch.manual_seed(cfg.train.seed)
    model = assemble_model(cfg.model)  # handed the VQ-VAE its config names
    column = model.condition.column
    loader = StoreLoader(cfg.train.store, cfg.train.batch_size, split="train", augment=cfg.train.augment,
                         label_columns=[column], seed=cfg.train.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.train.lr)
    steps = cfg.train.epochs * len(loader)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, (cfg.train.lr_final / cfg.train.lr) ** (1 / max(steps, 1)))
    model.train()
    for epoch in range(cfg.train.epochs):
        loader.set_epoch(epoch)
        total = 0.0
        for batch in loader:
            out = model.loss(batch, StepState(epoch=epoch))
            opt.zero_grad()
            out.total.backward()
            opt.step()
            sched.step()
            total += float(out.total.detach())
        log.info("prior epoch %d: nll %.4f", epoch, total / len(loader))
    path = Path(cfg.train.out_dir) / "ckpt.pt"
    return save_checkpoint(path, {"model_name": cfg.model.name, "model_state": model.state_dict(),
                                  "config": cfg.to_yaml()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/galhpc-models2")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--samples", type=int, default=200, help="prior samples per class")
    p.add_argument("--codebook-loss", action="store_true",
                   help="train the VQ-VAEs with the codebook loss instead of the configs' EMA codebook")
    p.add_argument("--quick", action="store_true", help="smoke run: 400 stamps, 1 epoch, 20 samples")
    args = p.parse_args()
    if args.quick:
        args.n, args.epochs, args.samples = 400, 1, 20
    setup_logging()
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, dict] = {}
    t0 = time.time()

    first = run_config(RUNS["vqvae_k512"], work, args)
    if not Path(first.prep.output).exists():
        run_prep(first.prep)
    labels = ["morph_class", "has_companion"]
    data = load_split(first.train.store, "holdout", labels)
    everything = load_split(first.train.store, "all", labels)
    truth_labels = {k: everything[k] for k in labels}
    observed_to_truth = float(((data["image"] - data["truth"]) ** 2).mean())
    metrics["data"] = {"holdout": len(data["image"]), "mse_observed_to_truth": observed_to_truth,
                       "mse_mean_image": float(((data["image"] - data["image"].mean(0)) ** 2).mean()),
                       "r50_truth": float(radii(data["truth"])[0].mean()),
                       "r50_observed": float(radii(data["image"])[0].mean())}

    checkpoints = {}
    for name, config in RUNS.items():
        cfg = run_config(config, work, args)
        start = time.time()
        checkpoints[name] = train(cfg).checkpoint
        model = load_model(checkpoints[name])
        out = evaluate_model(model, data["image"])
        row = {"train_seconds": round(time.time() - start, 1),
               "recon_mse": float(((out["recon"] - data["image"]) ** 2).mean()),
               "decoded_mse_to_truth": float(((out["decoded"] - data["truth"]) ** 2).mean()),
               "decoded_r50": float(radii(out["decoded"])[0].mean()),
               "features": out["features"].shape[1]}
        row.update(cluster_scores(evaluate_model(model, everything["image"])["features"], truth_labels))
        if name.startswith("vqvae"):
            with torch.no_grad():
                q = model.quantizer
                codes = model.codes(torch.from_numpy(data["image"])).flatten()
            used = torch.bincount(codes, minlength=q.num_codes).double()
            probs = used / used.sum()
            row["holdout_perplexity"] = float(torch.exp(-(probs[probs > 0] * probs[probs > 0].log()).sum()))
            row["codes_used"] = int((used > 0).sum())
        metrics[name] = row
        log.info("%s: %s", name, row)

    prior_cfg = run_config(PRIOR, work, args)
    prior_cfg.model.params["vqvae_checkpoint"] = str(checkpoints["vqvae_k512"])
    prior = load_model(train_prior(prior_cfg))
    per_class = {}
    r50_real, c_real = radii(data["image"])
    for c in range(3):
        g = torch.Generator().manual_seed(100 + c)
        images = prior.sample(args.samples, g, morph_class=c).images.numpy()
        r50, conc = radii(images)
        real = data["morph_class"] == c
        per_class[c] = {"samples_r50": round(float(r50.mean()), 3), "real_r50": round(float(r50_real[real].mean()), 3),
                        "samples_concentration": round(float(conc.mean()), 3),
                        "real_concentration": round(float(c_real[real].mean()), 3),
                        "samples_concentration_sem": round(float(conc.std() / np.sqrt(len(conc))), 3)}
    metrics["prior_morph_class"] = per_class
    metrics["seconds"] = round(time.time() - t0, 1)
    (work / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
