"""Unsupervised star/galaxy separation on held-out GalSim data: ROC and AUC of every method.

Methods (issue 8): the hierarchical AE+VAE with each double-peaked prior term (p_galaxy
from the sign of the peaked latent); a plain VAE + Isomap / t-SNE to 1-D; a VAE with the
revised (double-peaked DKL) KL + Isomap.  No method sees a label; labels only score them.
Training and held-out sets are simulated with different seeds.

    python benchmarks/starsep_roc.py --out docs/img        # ~15-20 min on 1 CPU core

Writes <out>/starsep_roc.png and <out>/starsep_metrics.json and prints the table.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from options import option_parser  # benchmarks/options.py
from starsim_sets import simulate_arrays  # benchmarks/starsim_sets.py

from galhpc.data.starsim import StarSimOptions
from galhpc.inference import starsep
from galhpc.models.hvae import HierarchicalAEVAE, PeakedVAE
from galhpc.train.arrays import fit_arrays

log = logging.getLogger("galhpc.benchmarks.starsep")


def main() -> None:
    args = option_parser(__doc__, out="benchmark-output/starsep", n_train=2500, n_test=1000, size=32, epochs=6,
                         mag_min=17.5, mag_max=21.5,
                         terms=("pw,aw,dkl,sc", "double-peaked terms of the hierarchical model"), no_baselines=False,
                         threads=1, workers=(2, "simulation processes")).parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    opts = StarSimOptions(mag_min=args.mag_min, mag_max=args.mag_max)
    x_train, _ = simulate_arrays(opts, args.size, 100, args.n_train, args.workers)
    x_test, truth = simulate_arrays(opts, args.size, 200, args.n_test, args.workers)
    is_galaxy = 1 - truth["is_star"]
    conc = starsep.stamp_concentration(x_test)
    star_fraction = opts.star_fraction  # the prior fraction the manifold baselines threshold at
    curves, metrics = [], {}

    def record(name: str, score: np.ndarray, predicted_galaxy: np.ndarray, seconds: float) -> None:
        curve = starsep.roc(name, is_galaxy, score)
        curves.append(curve)
        metrics[name] = {"auc": curve.auc, "accuracy": float(np.mean(predicted_galaxy == is_galaxy)),
                         "train_s": round(seconds, 1)}
        log.info("%s: AUC %.4f accuracy %.4f", name, curve.auc, metrics[name]["accuracy"])

    for term in [t for t in args.terms.split(",") if t]:
        torch.manual_seed(0)
        model = HierarchicalAEVAE(image_size=args.size, channels=x_train.shape[1], prior_term=term)
        start = time.time()
        fit_arrays(model, x_train, epochs=args.epochs, lr=1e-3)
        _, extra = starsep.encode_arrays(model, x_test)
        record(f"hierarchical AE+VAE ({term.upper()})", extra["p_galaxy"], extra["p_galaxy"] > 0.5, time.time() - start)

    if not args.no_baselines:
        for label, peaked in (("VAE", 0), ("VAE revised KL", 1)):
            torch.manual_seed(0)
            model = PeakedVAE(image_size=args.size, channels=x_train.shape[1], latent_dim=8, peaked_dims=peaked,
                              prior_term="dkl")
            start = time.time()
            fit_arrays(model, x_train, epochs=args.epochs, lr=1e-3)
            latents, _ = starsep.encode_arrays(model, x_test)
            seconds = time.time() - start
            methods = ("isomap", "tsne") if peaked == 0 else ("isomap",)
            for method in methods:
                score = starsep.orient_by_concentration(starsep.embed_1d(latents, method), conc)
                predicted = starsep.threshold_by_fraction(score, star_fraction)
                record(f"{label} + {'Isomap' if method == 'isomap' else 't-SNE'}", score, predicted, seconds)

    out = Path(args.out)
    starsep.plot_rocs(curves, out / "starsep_roc.png",
                      title=f"Star/galaxy, held-out (r {args.mag_min}-{args.mag_max}, n={args.n_test})")
    meta = {"n_train": args.n_train, "n_test": args.n_test, "size": args.size, "epochs": args.epochs,
            "mag_range": [args.mag_min, args.mag_max]}
    (out / "starsep_metrics.json").write_text(json.dumps({"setup": meta, "methods": metrics}, indent=2))
    print(f"{'method':40s} {'AUC':>7s} {'acc':>7s} {'train s':>8s}")
    for name, m in metrics.items():
        print(f"{name:40s} {m['auc']:7.4f} {m['accuracy']:7.4f} {m['train_s']:8.1f}")


if __name__ == "__main__":
    main()
