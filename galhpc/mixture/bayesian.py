"""Gaussian mixtures on latent embeddings.

(The diagonal GMM itself, `fit_diag_gmm` and `gmm_responsibilities`, lives one floor down
in `galhpc.mixture.diagonal`, where models may use it.)

- `fit_stick_breaking_bgm`: a Dirichlet-process (stick-breaking) BayesianGaussianMixture
  fitted on several mini-batches of embeddings, reporting the number of clusters K that
  the batches agree on (Spindler et al. 2021).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
from sklearn.mixture import BayesianGaussianMixture

log = logging.getLogger("galhpc.mixture.bayesian")


@dataclass
class StickBreakingResult:
    """Models fitted per mini-batch, their effective component counts and the consistent K."""

    models: list[BayesianGaussianMixture]
    counts: list[int]
    k: int


def effective_components(model: BayesianGaussianMixture, x: np.ndarray, min_fraction: float) -> int:
    """Number of components that win at least `min_fraction` of the points they are fitted on.

    Parameters
    ----------
    model : sklearn.mixture.BayesianGaussianMixture
        A fitted mixture.
    x : numpy.ndarray
        (N, L) the points it was fitted on.
    min_fraction : float
        Share of the N points, in [0, 1].

    Returns
    -------
    int
        Components whose hard assignments reach the share.
    """
    labels = model.predict(x)
    shares = np.bincount(labels, minlength=model.n_components) / len(x)
    return int(np.sum(shares >= min_fraction))


def fit_stick_breaking_bgm(
    x: np.ndarray,
    max_components: int,
    *,
    seed: int = 0,
    n_batches: int = 5,
    weight_concentration: float | None = None,
    min_fraction: float = 0.02,
    max_iter: int = 300,
) -> StickBreakingResult:
    """Dirichlet-process GMM (stick-breaking, Blei & Jordan 2006) on disjoint mini-batches of embeddings.

    Each of `n_batches` batches gets its own BayesianGaussianMixture (diagonal
    covariances, at most `max_components`); a component counts when it holds
    ≥ `min_fraction` of its batch.  K is the count most batches agree on (ties: the
    smaller K), as Spindler et al. (2021) choose the number of clusters.

    Parameters
    ----------
    x : numpy.ndarray
        (N, L) embeddings (cast to float64).
    max_components : int
        Truncation level of the stick-breaking prior.
    seed : int
        Seed of the batch split; batch i fits with random_state seed + i.
    n_batches : int
        Number of disjoint batches.
    weight_concentration : float, optional
        The Dirichlet process's concentration; None: sklearn's default 1 / max_components.
    min_fraction : float
        Share of a batch a component must win to count.
    max_iter : int
        Variational iterations per batch.

    Returns
    -------
    StickBreakingResult
        The fitted `models`, their effective component `counts` and the agreed `k`.

    Raises
    ------
    ValueError
        When x is not 2-d, or a batch would hold fewer than 2 · max_components points.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"fit_stick_breaking_bgm: embeddings must be (N, L), got shape {x.shape}")
    rng = np.random.default_rng(seed)
    batches = np.array_split(rng.permutation(len(x)), n_batches)
    if min(len(b) for b in batches) < 2 * max_components:
        raise ValueError(
            f"fit_stick_breaking_bgm: {len(x)} embeddings are too few for {n_batches} batches "
            f"of at least {2 * max_components} points"
        )
    models, counts = [], []
    for i, rows in enumerate(batches):
        model = BayesianGaussianMixture(
            n_components=max_components,
            covariance_type="diag",
            weight_concentration_prior_type="dirichlet_process",
            weight_concentration_prior=weight_concentration,
            max_iter=max_iter,
            random_state=seed + i,
        )
        model.fit(x[rows])
        models.append(model)
        counts.append(effective_components(model, x[rows], min_fraction))
    tally = Counter(counts)
    best = max(tally.values())
    k = min(c for c, n in tally.items() if n == best)
    log.info("stick-breaking BGM: components per batch %s -> K = %d", counts, k)
    return StickBreakingResult(models, counts, k)
