"""Rarity and similarity quality on a simulated set with truth labels, against PCA of the same size.

  python benchmarks/search_quality.py --catalog runs/rarity_galsim/clusters.h5 \
      --store data/rarity_galsim.h5 --checkpoint runs/rarity_galsim/ckpt.pt

The rare population is `labels/<rare-label> == <rare-value>` of the store (default
source_index == 1: the second source of configs/rarity_galsim.yaml).  Prints markdown tables:

1. per rarity score (galhpc.search.rarity: nll_prior, knn_distance, recon_chi2) of the model
   and of PCA with as many components as the model's latent size (NLL under a diagonal GMM
   with the model's number of components fitted on the PCA latents, k-th neighbour distance
   in PCA space, PCA reconstruction χ² per pixel): ROC AUC and precision of the top 1 %;
2. per latent choice and metric (μ Euclidean, μ Mahalanobis under the query component's
   diagonal covariance, sampled z Euclidean, PCA Euclidean): the fraction of each query's k
   nearest neighbours sharing its truth label (morph_class, has_companion, edge_on for
   galaxy queries; the rare class for rare queries), with the chance level.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from galhpc.checkpoint import checkpoint_config, load_model, read_checkpoint
from galhpc.formats.catalog import GMM_GROUP
from galhpc.formats.table import RARITY_SCORES
from galhpc.mixture.diagonal import fit_diag_gmm
from galhpc.report.heldout import noise_sigma
from galhpc.search.rarity import LatentPrior, knn_distance, latent_prior, prior_nll, rarity_scores
from galhpc.search.run import store_stamps
from galhpc.search.source import CatalogColumns
from galhpc.search.topk import search_blocks


def neighbours(queries: np.ndarray, data: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    return search_blocks(queries, [(0, data)], k, exclude=rows).rows


def agreement(neigh: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> float:
    return float((labels[neigh] == labels[rows][:, None]).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", type=Path, required=True)
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--rare-label", default="source_index")
    p.add_argument("--rare-value", type=int, default=1)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--queries", type=int, default=1000, help="galaxy queries for the neighbour agreement")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    model, cfg = load_model(args.checkpoint), checkpoint_config(read_checkpoint(args.checkpoint))
    cat = CatalogColumns(args.catalog)
    n = len(cat)
    rows = np.arange(n)
    with h5py.File(args.store, "r") as f:
        labels = {name: f[f"labels/{name}"][()] for name in f["labels"]}
        images = f["images"][()].reshape(n, -1).astype(np.float64)
    rare = labels[args.rare_label] == args.rare_value
    sigma = noise_sigma(args.store, rows, store_stamps(args.store, rows))[0]
    print(f"{n} objects, {rare.sum()} rare ({args.rare_label} == {args.rare_value}, {rare.mean():.2%}); "
          f"model {model.name}, latent {cfg.model.latent_dim}")

    ours = rarity_scores(args.catalog, args.catalog.with_suffix(".rarity.h5"), k=args.k, model=model,
                         noise=lambda r: sigma[r])
    latent = cfg.model.latent_dim
    pca = PCA(latent, random_state=0).fit(images)
    z_pca = pca.transform(images)
    recon_pca = pca.inverse_transform(z_pca)
    prior = latent_prior(model, cat.groups.get(GMM_GROUP), latent)
    g = fit_diag_gmm(z_pca, len(prior.log_pi), seed=0)
    pca_scores = {
        "nll_prior": prior_nll(z_pca, LatentPrior(g.log_pi.double().numpy(), g.mu.double().numpy(),
                                                  g.var.double().numpy(), "pca gmm")),
        "knn_distance": knn_distance(z_pca, rows, z_pca, rows, args.k),
        "recon_chi2": ((images - recon_pca) ** 2).mean(axis=1) / sigma**2,
    }
    top = max(1, int(round(0.01 * n)))
    print("\n| score | model ROC AUC | PCA ROC AUC | model precision top 1 % | PCA precision top 1 % |")
    print("|---|---|---|---|---|")
    for name in RARITY_SCORES:
        cells = []
        for scores in (ours[name], pca_scores[name]):
            order = np.argsort(-scores, kind="stable")[:top]
            cells.append((roc_auc_score(rare, scores), rare[order].mean()))
        print(f"| {name} | {cells[0][0]:.3f} | {cells[1][0]:.3f} | {cells[0][1]:.2f} | {cells[1][1]:.2f} |")
    print(f"(top 1 % = {top} objects; the best possible precision is {min(1, rare.sum() / top):.2f})")

    mu = cat.read("mu", rows).astype(np.float64)
    logvar = cat.read("logvar", rows).astype(np.float64) if "logvar" in cat.columns else None
    comp = cat.read("component", rows).astype(np.int64)
    rng = np.random.default_rng(0)
    galaxies = np.flatnonzero(~rare)
    q_gal = np.sort(rng.choice(galaxies, min(args.queries, len(galaxies)), replace=False))
    q_rare = np.flatnonzero(rare)
    spaces = {"mu, Euclidean": (mu, None), "PCA, Euclidean": (z_pca, None)}
    if logvar is not None:
        spaces["sampled z, Euclidean"] = (mu + np.exp(0.5 * logvar) * rng.standard_normal(mu.shape), None)
    spaces["mu, Mahalanobis (component cov.)"] = (mu, prior.var)
    tasks = [(name, q_gal) for name in ("morph_class", "has_companion", "edge_on") if name in labels]
    tasks.append((f"rare ({args.rare_label})", q_rare))
    truth = {**labels, f"rare ({args.rare_label})": rare.astype(np.int64)}
    print("\n| latent, metric | " + " | ".join(f"{t} (queries: {len(q)})" for t, q in tasks) + " |")
    print("|---|" + "---|" * len(tasks))
    for space, (data, var) in spaces.items():
        cells = []
        for task, queries in tasks:
            if var is None:
                neigh = neighbours(data[queries], data, queries, args.k)
            else:  # each query's metric: its own component's diagonal covariance
                neigh = np.empty((len(queries), args.k), np.int64)
                for c in np.unique(comp[queries]):
                    sel = comp[queries] == c
                    scale = 1.0 / np.sqrt(var[c])
                    neigh[sel] = neighbours(data[queries[sel]] * scale, data * scale, queries[sel], args.k)
            cells.append(agreement(neigh, truth[task], queries))
        print(f"| {space} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    chance = []
    for task, queries in tasks:
        lab = truth[task]
        values, counts = np.unique(lab, return_counts=True)
        freq = dict(zip(values, counts / len(lab), strict=False))
        chance.append(np.mean([freq[v] for v in lab[queries]]))
    print("| chance (random neighbours) | " + " | ".join(f"{c:.3f}" for c in chance) + " |")


if __name__ == "__main__":
    main()
