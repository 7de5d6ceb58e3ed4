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
    """Posterior γ = p(c | z) of a diagonal GMM, computed `chunk` rows at a time.

    Uses log-sum-exp, so far-away points get a valid one-hot γ instead of 0/0.

    Parameters
    ----------
    z : torch.Tensor
        Latents (B, L), cast to float32.
    log_pi : torch.Tensor
        (K,) log mixture weights (normalised inside).
    mu, var : torch.Tensor
        (K, L) component means and variances, in latent units and their square.
    chunk : int
        Rows per step, bounding the (chunk, K, L) intermediate.

    Returns
    -------
    torch.Tensor
        γ (B, K) float32, rows summing to 1; (0, K) for an empty z.

    Raises
    ------
    ValueError
        When the shapes do not fit together, naming all four.
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
    """Fit a diagonal GMM with sklearn and return float32 torch parameters (s3VDC init, Cao et al. 2020).

    k-means init, the best of 5 starts by likelihood: one start often settles on a split by
    spread (e.g. bright tight vs faint broad) rather than by position.

    Parameters
    ----------
    x : numpy.ndarray
        (N, L) embeddings (cast to float64 for the fit).
    n_components : int
        K.
    seed : int
        sklearn's random_state.
    max_iter : int
        EM iterations per start.

    Returns
    -------
    DiagGMM
        `log_pi` (K,), `mu` (K, L), `var` (K, L), float32 tensors on the CPU.

    Raises
    ------
    ValueError
        When N < K.
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
