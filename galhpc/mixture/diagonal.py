"""Diagonal Gaussian mixtures on latent embeddings, shared by mixture-prior models and stages.

- `gmm_responsibilities`: batched, diagonal, log-sum-exp posterior γ = p(c | z) in torch.
- `fit_diag_gmm`: the mini-batch GMM initialisation of s3VDC (a diagonal GMM fitted on
  the encoded means of k mini-batches), returned as torch-ready parameters.

On the floor of `priors` (below `models`), so AstroVaDEr and the catalogue's post-hoc GMM
use one implementation; sklearn is imported only when a GMM is fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from galhpc.priors import gmm_log_joint
from galhpc.runtime.precision import float32


@float32
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
    by position) and return float32 torch parameters.
    """
    from sklearn.mixture import GaussianMixture

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
