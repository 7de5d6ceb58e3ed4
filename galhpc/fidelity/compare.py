"""Two-sample tests of generated against real stamps: distances, classifier test, memorisation.

Per-statistic distances with bootstrap errors and their real-vs-real floor, a classifier
two-sample test, a memorisation check.

- Distances: the two-sample Kolmogorov–Smirnov statistic and the 1-D Wasserstein
  (earth mover's) distance of scipy.stats, each with the standard deviation of B bootstrap
  resamples of both samples as its error (Holzschuh et al. 2022 score generators by W).
- The floor: the same distances between two disjoint random halves of the real set, the
  value no generator can beat at that sample size.
- Classifier two-sample test (Lopez-Paz & Oquab 2017): gradient-boosted trees
  (scikit-learn's HistGradientBoostingClassifier, which takes NaN for an unmeasurable
  statistic) told generated from real by the statistics, k-fold cross-validated ROC AUC;
  0.5 = indistinguishable.
- Memorisation: each generated stamp's Euclidean pixel distance to its nearest training
  stamp against the same distance for held-out real stamps (KS), and the copying test: is
  each generated stamp's nearest among training and held-out stamps pooled a training one
  more often than their share of the pool (a permutation test), whatever the fidelity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Distance:
    """KS and Wasserstein distances of one statistic and their bootstrap errors."""

    ks: float
    ks_err: float
    ks_p: float
    wasserstein: float
    wasserstein_err: float
    n_a: int
    n_b: int


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64).ravel()
    return x[np.isfinite(x)]


def distance(a: np.ndarray, b: np.ndarray, n_boot: int = 200, rng: np.random.Generator | None = None) -> Distance:
    """KS and 1-D Wasserstein distances between two samples, with bootstrap errors.

    Parameters
    ----------
    a, b : numpy.ndarray
        1-D samples; non-finite values (unmeasured stamps) are dropped.
    n_boot : int
        Bootstrap resamples (both samples drawn with replacement); 0: errors NaN.
    rng : numpy.random.Generator, optional
        For the resamples (default: seeded 0).

    Returns
    -------
    Distance
        KS statistic, its bootstrap σ and p-value (scipy.stats.ks_2samp); Wasserstein
        distance (scipy.stats.wasserstein_distance, in the statistic's units) and its σ;
        the finite sample sizes.  All NaN when either sample has no finite value.
    """
    a, b = _finite(a), _finite(b)
    if len(a) == 0 or len(b) == 0:
        nan = float("nan")
        return Distance(nan, nan, nan, nan, nan, len(a), len(b))
    rng = rng or np.random.default_rng(0)
    ks = stats.ks_2samp(a, b)
    w = stats.wasserstein_distance(a, b)
    ks_boot, w_boot = [], []
    for _ in range(n_boot):
        ra, rb = rng.choice(a, len(a)), rng.choice(b, len(b))
        ks_boot.append(stats.ks_2samp(ra, rb).statistic)
        w_boot.append(stats.wasserstein_distance(ra, rb))
    err = (lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"))  # noqa: E731
    return Distance(float(ks.statistic), err(ks_boot), float(ks.pvalue), float(w), err(w_boot), len(a), len(b))


def split_halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves of range(n) (sizes n // 2 and n - n // 2).

    Parameters
    ----------
    n : int
        Number of rows to split.
    rng : numpy.random.Generator
        Source of the random permutation.

    Returns
    -------
    first, second : numpy.ndarray
        Sorted int64 row indices, n // 2 and n - n // 2 of them, disjoint, covering range(n).
    """
    order = rng.permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def classifier_auc(generated: np.ndarray, real: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017): how well trees tell generated from real rows.

    The classifier is scikit-learn's HistGradientBoostingClassifier (gradient-boosted trees,
    NaN features allowed), scored out of fold.

    Parameters
    ----------
    generated, real : numpy.ndarray
        (n_gen, F) and (n_real, F) feature rows (the per-stamp statistics); NaN allowed.
    folds : int
        Stratified cross-validation folds; each row is scored by the model not trained on it.
    seed : int
        Fold split and tree seed.

    Returns
    -------
    dict
        ``auc`` (ROC AUC of the out-of-fold scores, 0.5 = indistinguishable, 1 = fully
        separated), ``auc_err`` (σ of the per-fold AUCs), ``folds``, ``n_generated``, ``n_real``.

    Raises
    ------
    ValueError
        If either side has fewer rows than `folds`.

    References
    ----------
    .. [1] Lopez-Paz, D., & Oquab, M. (2017), "Revisiting classifier two-sample tests", ICLR.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
    if min(len(generated), len(real)) < folds:
        raise ValueError(f"the classifier test needs at least {folds} rows on each side, got "
                         f"{len(generated)} generated and {len(real)} real")
    x = np.concatenate([generated, real])
    y = np.concatenate([np.ones(len(generated), int), np.zeros(len(real), int)])
    score = np.empty(len(y))
    per_fold = []
    # one OpenMP thread: a few hundred rows fit in well under a second, while a shared node's
    # oversubscribed thread pool made the same fit a hundred times slower
    with threadpool_limits(1):
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
            # scikit-learn's default min_samples_leaf=20 forbids every split below 40 training
            # rows: the trees would stay constant and call any two small sets indistinguishable
            leaf = int(min(20, max(2, len(train) // 10)))
            clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=15,
                                                 min_samples_leaf=leaf, random_state=seed)
            clf.fit(x[train], y[train])
            score[test] = clf.predict_proba(x[test])[:, 1]
            per_fold.append(roc_auc_score(y[test], score[test]))
    return {"auc": float(roc_auc_score(y, score)), "auc_err": float(np.std(per_fold, ddof=1)), "folds": folds,
            "n_generated": len(generated), "n_real": len(real)}


def nearest_distances(queries: np.ndarray, reference: np.ndarray, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean pixel distance of each query stamp to its nearest reference stamp.

    Parameters
    ----------
    queries : numpy.ndarray
        (n, ...) stamps.
    reference : numpy.ndarray
        (m, ...) stamps of the same shape.
    block : int
        Queries per block (memory is block × m distances).

    Returns
    -------
    distance : numpy.ndarray
        (n,) float64, in the stamps' units.
    index : numpy.ndarray
        (n,) int64 row of the nearest reference stamp.

    Raises
    ------
    ValueError
        If query and reference stamps have different numbers of pixels.
    """
    q = np.asarray(queries, np.float64).reshape(len(queries), -1)
    r = np.asarray(reference, np.float64).reshape(len(reference), -1)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query stamps of {q.shape[1]} pixels against reference stamps of {r.shape[1]}")
    r2 = (r**2).sum(1)
    dist, index = np.empty(len(q)), np.empty(len(q), np.int64)
    for lo in range(0, len(q), block):
        qb = q[lo:lo + block]
        d2 = (qb**2).sum(1)[:, None] + r2[None, :] - 2.0 * qb @ r.T
        j = np.argmin(d2, axis=1)
        index[lo:lo + block] = j
        dist[lo:lo + block] = np.sqrt(np.maximum(d2[np.arange(len(qb)), j], 0.0))
    return dist, index


def memorisation(generated: np.ndarray, real: np.ndarray, training: np.ndarray, permutations: int = 2000,
                 seed: int = 0) -> dict[str, float]:
    """Test whether generated stamps sit closer to the training set than unseen real stamps do.

    Two tests.  The distribution test: each generated stamp's Euclidean pixel distance to
    its nearest training stamp against the same distance for held-out real stamps
    (two-sample KS); it rejects for a copying generator, and also for one whose stamps are
    simply unlike the real ones (blurry samples sit at other distances from everything), so
    it cannot tell copying from poor fidelity.  The copying test (after the data-copying
    test of Meehan et al. 2020): pool the t training and m held-out real stamps and find each
    generated stamp's nearest pooled stamp.  Training and held-out stamps are exchangeable
    draws of one population, so for a generator that does not copy the nearest one is a
    training stamp with probability t / (t + m), whatever its fidelity; for one that copies,
    nearly always.  Blurry samples share a few "hub" nearest stamps, so the generated
    stamps' choices are not independent and a binomial test would be too confident: the
    p-value is a permutation test instead, relabelling which t pooled stamps are
    "training" (the nearest-stamp choices fixed), which keeps the hubs.  It is the
    memorisation verdict.

    Parameters
    ----------
    generated : numpy.ndarray
        (n, ...) generated stamps, measured as the real ones (same noise).
    real : numpy.ndarray
        (m, ...) held-out real stamps (never trained on).
    training : numpy.ndarray
        (t, ...) training stamps.
    permutations : int
        Relabellings of the pool for the copying test's p-value.
    seed : int
        Seed of the relabellings.

    Returns
    -------
    dict
        ``ks`` and ``ks_p`` of the distribution test, their medians and ``median_ratio`` =
        median generated / median real (<< 1: memorised); ``copy_fraction`` (generated
        stamps whose nearest pooled stamp is a training one), ``copy_expected`` (t / (t + m),
        its value for a generator that does not copy), ``p_value`` (one-sided permutation
        p-value of copy_fraction > copy_expected; < 0.01: copies).

    References
    ----------
    .. [1] Meehan, C., Chaudhuri, K., & Dasgupta, S. (2020), "A non-parametric test to detect
       data-copying in generative models", AISTATS.
    """
    d_gen, _ = nearest_distances(generated, training)
    d_real, _ = nearest_distances(real, training)
    test = stats.ks_2samp(d_gen, d_real)
    t = len(training)
    _, nearest = nearest_distances(generated, np.concatenate([np.asarray(training, np.float64),
                                                              np.asarray(real, np.float64)]))
    chosen = np.bincount(nearest, minlength=t + len(real))  # generated stamps choosing each pooled stamp
    nearer = int(chosen[:t].sum())
    rng = np.random.default_rng(seed)
    null = np.array([chosen[rng.permutation(len(chosen))[:t]].sum() for _ in range(permutations)])
    p_value = (1 + int((null >= nearer).sum())) / (1 + permutations)
    expected = t / len(chosen)
    return {"ks": float(test.statistic), "ks_p": float(test.pvalue),
            "median_generated": float(np.median(d_gen)), "median_real": float(np.median(d_real)),
            "median_ratio": float(np.median(d_gen) / np.median(d_real)) if np.median(d_real) > 0 else float("nan"),
            "copy_fraction": nearer / len(d_gen), "copy_expected": expected, "p_value": float(p_value),
            "n_generated": len(d_gen), "n_real": len(d_real), "n_training": len(training)}
