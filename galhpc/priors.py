"""KL terms and log-densities of the latent priors, per sample (shape (B,)).

All functions are pure torch and differentiable.  Variances are passed as tensors of
the same shape as the means (diagonal Gaussians); `logvar` is the encoder's log σ².
"""

from __future__ import annotations

import math

import torch

from galhpc.runtime.precision import float32

LOG_2PI = math.log(2.0 * math.pi)

# ---------------------------------------------------------------------------------------
# Unit Gaussian, Gaussian likelihood and Gaussian mixture (VaDE) terms
# ---------------------------------------------------------------------------------------


@float32
def kl_unit_gaussian(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, exp(logvar)) || N(0, I) ) summed over latent dimensions: (B,).

    The closed form of Kingma & Welling (2014), ½ Σ (μ² + σ² − 1 − log σ²).

    Parameters
    ----------
    mu : torch.Tensor
        (B, L) posterior means.
    logvar : torch.Tensor
        (B, L) posterior log variances log σ².

    Returns
    -------
    torch.Tensor
        (B,) KL in nats, float32 (or float64 for float64 inputs).
    """
    return 0.5 * torch.sum(mu.pow(2) + logvar.exp() - 1.0 - logvar, dim=-1)


@float32
def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Log N(x; mean, exp(logvar)) with diagonal covariance, summed over all but dim 0: (B,).

    Parameters
    ----------
    x : torch.Tensor
        (B, ...) observations, e.g. images (B, C, H, W).
    mean : torch.Tensor
        Predicted means, broadcastable to x.
    logvar : torch.Tensor
        Predicted log variances, broadcastable to x (a scalar for a fixed noise σ).

    Returns
    -------
    torch.Tensor
        (B,) log likelihood in nats, float32 (or float64 for float64 inputs).
    """
    per_element = -0.5 * (LOG_2PI + logvar + (x - mean).pow(2) * torch.exp(-logvar))
    return per_element.flatten(1).sum(dim=1)


@float32
def gmm_log_joint(z: torch.Tensor, log_pi: torch.Tensor, mu_c: torch.Tensor, var_c: torch.Tensor) -> torch.Tensor:
    """Log p(c) + log N(z; mu_c, diag var_c) for every sample and component: (B, K).

    The joint of the Gaussian mixture prior of VaDE (Jiang et al. 2017).

    Parameters
    ----------
    z : torch.Tensor
        (B, L) latent vectors.
    log_pi : torch.Tensor
        (K,) log mixture weights, up to a constant (normalised here by log_softmax).
    mu_c : torch.Tensor
        (K, L) component means.
    var_c : torch.Tensor
        (K, L) component variances (positive).

    Returns
    -------
    torch.Tensor
        (B, K) log p(c) + log p(z | c) in nats, float32 (or float64 for float64 inputs).
    """
    log_pi = torch.log_softmax(log_pi, dim=0)
    diff = z.unsqueeze(1) - mu_c.unsqueeze(0)  # (B, K, L)
    log_norm = -0.5 * (LOG_2PI + torch.log(var_c).unsqueeze(0) + diff.pow(2) / var_c.unsqueeze(0))
    return log_pi.unsqueeze(0) + log_norm.sum(dim=-1)


@float32
def minmax_scale(log_joint: torch.Tensor, lam: float) -> torch.Tensor:
    """Scale each row of log p(c, z) linearly into [-lam, 0] (s3VDC, Cao et al. 2020).

    The row maximum maps to 0 and the minimum to -lam, so the softmax that gives γ can
    neither overflow nor see a row of -inf; a constant row maps to zeros (uniform γ).

    Parameters
    ----------
    log_joint : torch.Tensor
        (B, K) log p(c, z), e.g. from `gmm_log_joint`.
    lam : float
        Width λ of the target range [-λ, 0] (s3VDC's λ).

    Returns
    -------
    torch.Tensor
        (B, K) scaled scores, float32 (or float64 for float64 inputs).

    References
    ----------
    .. [1] Cao, L., Asadi, S., Zhu, W., Schmidli, C., & Sjöberg, M. (2020), "Simple,
       scalable, and stable variational deep clustering", ECML PKDD.
    """
    top = log_joint.max(dim=1, keepdim=True).values
    bottom = log_joint.min(dim=1, keepdim=True).values
    spread = (top - bottom).clamp_min(torch.finfo(log_joint.dtype).tiny)
    return lam * (log_joint - top) / spread


@float32
def vade_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    log_gamma: torch.Tensor,
    log_pi: torch.Tensor,
    mu_c: torch.Tensor,
    var_c: torch.Tensor,
) -> torch.Tensor:
    """KL( q(z|x) q(c|x) || p(z|c) p(c) ) of VaDE (Jiang et al. 2017; Spindler et al. 2020 eq. 11): (B,).

    q(z|x) = N(mu, exp(logvar)); q(c|x) = γ given as log γ (B, K); p(c) = softmax(log_pi);
    p(z|c) = N(mu_c, diag var_c).  The log 2π terms of E[log q(z|x)] and E[log p(z|c)] cancel.

    Parameters
    ----------
    mu, logvar : torch.Tensor
        The posterior q(z|x) = N(mu, exp(logvar)): (B, L) means and log variances log σ².
    log_gamma : torch.Tensor
        (B, K) log responsibilities log q(c|x) (rows log-normalised).
    log_pi, mu_c, var_c : torch.Tensor
        The mixture prior p(c) p(z|c), as in `gmm_log_joint`: (K,) log weights, (K, L) means
        and (K, L) variances.

    Returns
    -------
    torch.Tensor
        (B,) KL in nats, float32 (or float64 for float64 inputs).

    References
    ----------
    .. [1] Jiang, Z., Zheng, Y., Tan, H., Tang, B., & Zhou, H. (2017), "Variational deep
       embedding: an unsupervised and generative approach to clustering", IJCAI.
    .. [2] Spindler, A., Geach, J. E., & Smith, M. J. (2021), "AstroVaDEr: astronomical
       variational deep embedder for unsupervised morphological classification of galaxies
       and synthetic image generation", MNRAS 502, 985 (arXiv 2020).
    """
    log_pi = torch.log_softmax(log_pi, dim=0)
    gamma = log_gamma.exp()
    var = logvar.exp().unsqueeze(1)  # (B, 1, L)
    diff2 = (mu.unsqueeze(1) - mu_c.unsqueeze(0)).pow(2)  # (B, K, L)
    expected_nll = 0.5 * torch.sum(torch.log(var_c).unsqueeze(0) + (var + diff2) / var_c.unsqueeze(0), dim=-1)
    cross = torch.sum(gamma * expected_nll, dim=1)
    categorical = torch.sum(gamma * (log_gamma - log_pi.unsqueeze(0)), dim=1)
    entropy_term = -0.5 * torch.sum(1.0 + logvar, dim=-1)
    return cross + categorical + entropy_term


# ---------------------------------------------------------------------------------------
# Double-peaked prior ½N(−m, s²) + ½N(m, s²) per peaked latent dimension
#
# Unsupervised star/galaxy separation: the sign of a peaked latent is the class.  The KL to
# a two-component mixture has no closed form, so training uses one of four surrogates
# (DOUBLE_PEAKED_TERMS, chosen by name).
# Each takes the posterior N(mu, exp(logvar)) of the peaked dimensions (B, D) and returns
# one value per sample (B,).  Derivations and the numerical-integration tests that check
# them: docs/models.md and tests/test_priors_double_peaked.py.
# ---------------------------------------------------------------------------------------

ERFC_TANH_SLOPE = 1.19  # Erfc(x) ≈ 1 − tanh(1.19 x): max error 0.021 over x ≥ 0


def double_peaked_log_prob(z: torch.Tensor, m: float, s: float) -> torch.Tensor:
    """Exact log p(z) of ½N(−m, s²) + ½N(m, s²) per dimension, summed over dims: (B,).

    Uses ½N(−m) + ½N(m) = N(z; 0, s²)·exp(−m²/2s²)·cosh(mz/s²), with a stable log cosh.

    Parameters
    ----------
    z : torch.Tensor
        (B, D) values of the peaked dimensions.
    m : float
        Peak position ±m.
    s : float
        Peak standard deviation.

    Returns
    -------
    torch.Tensor
        (B,) log density in nats, in z's dtype.
    """
    a = m * z / s**2
    log_cosh = a.abs() + torch.nn.functional.softplus(-2.0 * a.abs()) - math.log(2.0)
    per_dim = -0.5 * (LOG_2PI + 2.0 * math.log(s) + (z.pow(2) + m**2) / s**2) + log_cosh
    return per_dim.sum(dim=-1)


def _gaussian_kl_to_peak(mu: torch.Tensor, logvar: torch.Tensor, centre: torch.Tensor, s: float) -> torch.Tensor:
    """KL( N(mu, σ²) || N(centre, s²) ) per dimension."""
    return 0.5 * (2.0 * math.log(s) - logvar + (logvar.exp() + (mu - centre).pow(2)) / s**2 - 1.0)


def kl_double_peaked_sc(mu: torch.Tensor, logvar: torch.Tensor, m: float = 1.0, s: float = 0.5) -> torch.Tensor:
    """Scaling bound SC: KL(q‖p) ≤ log 2 + KL(q‖N(±m, s²)) for the nearer peak: (B,).

    The mixture is at least half of either component, p ≥ ½N(±m, s²), so the KL to the
    mixture is at most log 2 plus the Gaussian KL to the peak on μ's side.  Closed form,
    tight once the posterior sits on one peak; its kink at μ = 0 pushes codes off zero.

    Parameters
    ----------
    mu : torch.Tensor
        (B, D) posterior means of the peaked dimensions.
    logvar : torch.Tensor
        (B, D) their log variances log σ².
    m : float, optional
        Peak position ±m (default 1).
    s : float, optional
        Peak standard deviation (default 0.5).

    Returns
    -------
    torch.Tensor
        (B,) upper bound on the KL in nats, summed over the D dimensions.
    """
    centre = torch.where(mu >= 0, m, -m).to(mu.dtype)
    return (math.log(2.0) + _gaussian_kl_to_peak(mu, logvar, centre, s)).sum(dim=-1)


def folded_normal_mean(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """E|z| for z ~ N(mu, σ²), with Erfc(x) ≈ 1 − tanh(1.19x) (smooth, cheap, no erf).

    The folded-normal mean σ√(2/π)·exp(−μ²/2σ²) + μ(1 − Erfc(μ/√2σ)).

    Parameters
    ----------
    mu : torch.Tensor
        Means, any shape.
    logvar : torch.Tensor
        Log variances log σ², the shape of mu.

    Returns
    -------
    torch.Tensor
        E|z| elementwise, the shape of mu.
    """
    sigma = torch.exp(0.5 * logvar)
    x = mu / (math.sqrt(2.0) * sigma)
    erf_approx = torch.tanh(ERFC_TANH_SLOPE * x)  # = 1 − Erfc(x)
    return sigma * math.sqrt(2.0 / math.pi) * torch.exp(-x.pow(2)) + mu * erf_approx


def kl_double_peaked_dkl(mu: torch.Tensor, logvar: torch.Tensor, m: float = 1.0, s: float = 0.5) -> torch.Tensor:
    """Approximate exact KL (DKL): E_q[log q − log ½N(z; sign(z)·m, s²)] in closed form: (B,).

    The mixture is replaced by its upper envelope ½N(z; sign(z)·m, s²) (error at most log 2
    near z = 0, vanishing on the peaks) and the expectation is taken exactly over q, which
    leaves E_q|z| = σ√(2/π)·exp(−μ²/2σ²) + μ(1 − Erfc(μ/√2σ)); Erfc via tanh.  Tighter
    than SC (E_q of a max ≥ max of E_q) and smooth at μ = 0.

    Parameters
    ----------
    mu, logvar : torch.Tensor
        (B, D) posterior means and log variances log σ² of the peaked dimensions.
    m, s : float, optional
        Position ±m and standard deviation of the envelope's peaks ½N(z; sign(z)·m, s²)
        (defaults 1 and 0.5).

    Returns
    -------
    torch.Tensor
        (B,) approximate KL in nats, summed over the D dimensions.
    """
    var = logvar.exp()
    abs_mean = folded_normal_mean(mu, logvar)
    cross = math.log(s) + 0.5 * (mu.pow(2) + var + m**2 - 2.0 * m * abs_mean) / s**2
    neg_entropy = -0.5 * (1.0 + logvar)
    return (math.log(2.0) + cross + neg_entropy).sum(dim=-1)


def aw_double_peaked(mu: torch.Tensor, logvar: torch.Tensor, m: float = 1.0, s: float = 0.5) -> torch.Tensor:
    """Wasserstein analogy AW: −‖μ‖ + ‖σ − s‖ over the peaked dims: (B,).

    For μ bounded by tanh to |μ_i| < m (the model's job), m·√D − ‖μ‖ + ‖σ − s‖ is within a
    factor √2 of the 2-Wasserstein distance to the nearest peak (an L1 vs L2 norm of the
    mean and scale gaps).

    Parameters
    ----------
    mu, logvar : torch.Tensor
        (B, D) posterior means and log variances log σ² of the peaked dimensions.
    m : float, optional
        Peak position ±m (default 1); unused, kept for the common signature of the terms.
    s : float, optional
        Peak standard deviation, the σ the posterior is pulled towards (default 0.5).

    Returns
    -------
    torch.Tensor
        (B,) −‖μ‖₂ + ‖σ − s‖₂ over the D dimensions (negative values are normal: it is a
        surrogate, not a divergence).
    """
    del m
    sigma = torch.exp(0.5 * logvar)
    return -torch.linalg.vector_norm(mu, dim=-1) + torch.linalg.vector_norm(sigma - s, dim=-1)


def pw_double_peaked(mu: torch.Tensor, logvar: torch.Tensor, m: float = 1.0, s: float = 0.5) -> torch.Tensor:
    """Pseudo-Wasserstein PW: W₂² from N(μ, σ²) to the nearest peak N(sign(μ)·m, s²): (B,).

    Between diagonal Gaussians W₂² = ‖μ₁ − μ₂‖² + ‖σ₁ − σ₂‖²; 'pseudo' because the target is
    the nearer component, not the mixture.

    Parameters
    ----------
    mu, logvar : torch.Tensor
        (B, D) posterior means and log variances log σ² of the peaked dimensions.
    m, s : float, optional
        Position ±m and standard deviation of the peaks N(±m, s²), the nearer of which is the
        target (defaults 1 and 0.5).

    Returns
    -------
    torch.Tensor
        (B,) Σ (|μ| − m)² + (σ − s)² over the D dimensions.
    """
    sigma = torch.exp(0.5 * logvar)
    return ((mu.abs() - m).pow(2) + (sigma - s).pow(2)).sum(dim=-1)


DOUBLE_PEAKED_TERMS = {
    "sc": kl_double_peaked_sc,
    "dkl": kl_double_peaked_dkl,
    "aw": aw_double_peaked,
    "pw": pw_double_peaked,
}


def double_peaked_term(name: str):
    """The double-peaked prior term called `name` (sc | dkl | aw | pw).

    Parameters
    ----------
    name : str
        A key of `DOUBLE_PEAKED_TERMS`.

    Returns
    -------
    callable
        ``term(mu, logvar, m=1.0, s=0.5) -> (B,)``, one of `kl_double_peaked_sc`,
        `kl_double_peaked_dkl`, `aw_double_peaked`, `pw_double_peaked`.

    Raises
    ------
    ValueError
        For an unknown name (listing the known ones).
    """
    try:
        return DOUBLE_PEAKED_TERMS[name]
    except KeyError:
        raise ValueError(f"unknown double-peaked prior term {name!r}; known: {sorted(DOUBLE_PEAKED_TERMS)}") from None
