"""Agreement between cluster labels and ground-truth labels, with a permutation baseline."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def _labels(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label arrays differ in length: {a.shape[0]} vs {b.shape[0]}")
    return a, b


def nmi(truth: np.ndarray, clusters: np.ndarray) -> float:
    """Normalised mutual information (arithmetic normalisation), in [0, 1]."""
    return float(normalized_mutual_info_score(*_labels(truth, clusters)))


def ari(truth: np.ndarray, clusters: np.ndarray) -> float:
    """Adjusted Rand index: 0 for random labels, 1 for identical partitions."""
    return float(adjusted_rand_score(*_labels(truth, clusters)))


def permutation_baseline(
    truth: np.ndarray, clusters: np.ndarray, *, n_permutations: int = 100, seed: int = 0
) -> dict[str, float]:
    """NMI and ARI of the clusters against shuffled truth: their mean and 99th percentile.

    A clustering beats chance when its score exceeds the `*_p99` value.
    """
    truth, clusters = _labels(truth, clusters)
    rng = np.random.default_rng(seed)
    nmis, aris = [], []
    for _ in range(n_permutations):
        shuffled = rng.permutation(truth)
        nmis.append(nmi(shuffled, clusters))
        aris.append(ari(shuffled, clusters))
    return {
        "nmi_mean": float(np.mean(nmis)),
        "nmi_p99": float(np.percentile(nmis, 99)),
        "ari_mean": float(np.mean(aris)),
        "ari_p99": float(np.percentile(aris, 99)),
    }
