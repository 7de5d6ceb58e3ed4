"""Gaussian mixtures on latent embeddings.

- `gmm_responsibilities`: batched, diagonal, log-sum-exp posterior γ = p(c | z) in torch.
- `fit_diag_gmm`: the mini-batch GMM initialisation of s3VDC (a diagonal GMM fitted on
  the encoded means of k mini-batches), returned as torch-ready parameters.
- `fit_stick_breaking_bgm`: a Dirichlet-process (stick-breaking) BayesianGaussianMixture
  fitted on several mini-batches of embeddings, reporting the number of clusters K that
  the batches agree on (Spindler et al. 2020).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from galhpc.priors import gmm_log_joint

log = logging.getLogger("galhpc.cluster.gmm")


def gmm_responsibilities(
    z: torch.Tensor, log_pi: torch.Tensor, mu: torch.Tensor, var: torch.Tensor, *, chunk: int = 4096
) -> torch.Tensor:
    """γ (B, K) of a diagonal GMM for latents z (B, L), computed `chunk` rows at a time.

    log_pi (K,) log weights (normalised inside), mu and var (K, L).  Uses log-sum-exp, so
    far-away points get a valid one-hot γ instead of 0/0.
    """
    if z.ndim != 2 or mu.shape != var.shape or mu.shape[1] != z.shape[1] or log_pi.shape[0] != mu.shape[0]:
        raise ValueError(
            f"gmm_responsibilities: shapes do not fit: z {tuple(z.shape)}, log_pi {tuple(log_pi.shape)}, "
            f"mu {tuple(mu.shape)}, var {tuple(var.shape)}"
        )
    pieces = [torch.softmax(gmm_log_joint(part, log_pi, mu, var), dim=1) for part in z.split(chunk)]
    return torch.cat(pieces) if pieces else z.new_zeros((0, mu.shape[0]))


@dataclass
class DiagGMM:
    """Parameters of a diagonal GMM: log weights (K,), means (K, L), variances (K, L)."""

    log_pi: torch.Tensor
    mu: torch.Tensor
    var: torch.Tensor


def fit_diag_gmm(x: np.ndarray, n_components: int, *, seed: int = 0, max_iter: int = 200) -> DiagGMM:
    """Fit a diagonal GMM with sklearn (k-means init, the best of 5 starts by likelihood: one
    start often settles on a split by spread, e.g. bright tight vs faint broad, rather than
    by position) and return float32 torch parameters."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < n_components:
        raise ValueError(f"fit_diag_gmm: {len(x)} embeddings cannot fit {n_components} components")
    gmm = GaussianMixture(n_components, covariance_type="diag", random_state=seed, max_iter=max_iter, reg_covar=1e-5,
                          n_init=5)
    gmm.fit(x)
    return DiagGMM(
        torch.as_tensor(np.log(gmm.weights_), dtype=torch.float32),
        torch.as_tensor(gmm.means_, dtype=torch.float32),
        torch.as_tensor(gmm.covariances_, dtype=torch.float32),
    )


@dataclass
class StickBreakingResult:
    """Models fitted per mini-batch, their effective component counts and the consistent K."""

    models: list[BayesianGaussianMixture]
    counts: list[int]
    k: int


def effective_components(model: BayesianGaussianMixture, x: np.ndarray, min_fraction: float) -> int:
    """Number of components that win at least `min_fraction` of the points they are fitted on."""
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
    """Dirichlet-process GMM on `n_batches` disjoint mini-batches of the embeddings x (N, L).

    Each batch gets its own stick-breaking BayesianGaussianMixture (diagonal covariances,
    at most `max_components`); a component counts when it holds ≥ `min_fraction` of its
    batch.  K is the count most batches agree on (ties: the smaller K).
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
