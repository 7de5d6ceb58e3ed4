"""Agreement between cluster labels and ground-truth labels, with a permutation baseline.

The one home of NMI and ARI in galhpc: the trainer's tests, the report's cluster section
and its truth recovery all score clusters here.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def _labels(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label arrays differ in length: {a.shape[0]} vs {b.shape[0]}")
    return a, b


def nmi(truth: np.ndarray, clusters: np.ndarray) -> float:
    """Normalised mutual information (arithmetic normalisation), in [0, 1].

    Parameters
    ----------
    truth : (N,) int
        True classes.
    clusters : (N,) int
        Cluster labels; any relabelling of them gives the same NMI.

    Returns
    -------
    float
        0 for independent labels, 1 for identical partitions.

    Raises
    ------
    ValueError
        If `truth` and `clusters` differ in length.
    """
    return float(normalized_mutual_info_score(*_labels(truth, clusters)))


def ari(truth: np.ndarray, clusters: np.ndarray) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985).

    Parameters
    ----------
    truth, clusters : (N,) int
        The two partitions (the index is symmetric in them).

    Returns
    -------
    float
        0 in expectation for random labels, 1 for identical partitions.

    Raises
    ------
    ValueError
        On arrays of different lengths.
    """
    return float(adjusted_rand_score(*_labels(truth, clusters)))


def label_agreement(truth: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """NMI and ARI of the rows where both labels are known (not negative).

    Parameters
    ----------
    truth : (N,) int
        True classes, negative where missing (e.g. a label the store lacks for an object).
    clusters : (N,) int
        Cluster labels, negative where the object has none.

    Returns
    -------
    dict
        ``nmi`` and ``ari`` (`nmi`, `ari`) of the rows with both labels non-negative.

    Raises
    ------
    ValueError
        When one array is longer than the other.
    """
    truth, clusters = _labels(truth, clusters)
    keep = (truth >= 0) & (clusters >= 0)
    return {"nmi": nmi(truth[keep], clusters[keep]), "ari": ari(truth[keep], clusters[keep])}


def permutation_baseline(
    truth: np.ndarray, clusters: np.ndarray, *, n_permutations: int = 100, seed: int = 0
) -> dict[str, float]:
    """NMI and ARI of the clusters against shuffled truth: their mean and 99th percentile.

    A clustering beats chance when its score exceeds the `*_p99` value.

    Parameters
    ----------
    truth : (N,) int
        True classes, shuffled `n_permutations` times.
    clusters : (N,) int
        Kept fixed.
    n_permutations : int
    seed : int
        Seed of the shuffles.

    Returns
    -------
    dict
        ``nmi_mean``, ``nmi_p99``, ``ari_mean``, ``ari_p99``.

    Raises
    ------
    ValueError
        If the lengths differ.
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
