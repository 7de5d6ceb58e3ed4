"""Double-peaked prior terms (SC, DKL, AW, PW) against numerical integration (scipy)."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from galhpc import priors

torch.set_num_threads(1)

M, S = 1.5, 0.4
CASES = [(0.0, 0.3), (0.2, 0.5), (-0.7, 0.2), (1.4, 0.4), (-1.6, 0.35), (2.5, 0.1), (0.05, 1.2)]


def mixture_pdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * stats.norm.pdf(z, -M, S) + 0.5 * stats.norm.pdf(z, M, S)


def numeric_kl(mu: float, sigma: float, log_p) -> float:
    """∫ q (log q − log p) dz over ±12σ."""
    def integrand(z):
        return stats.norm.pdf(z, mu, sigma) * (stats.norm.logpdf(z, mu, sigma) - log_p(z))

    value, _ = integrate.quad(integrand, mu - 12 * sigma, mu + 12 * sigma,
                              points=[0.0] if abs(mu) < 12 * sigma else None, limit=200)
    return value


def numeric_w2_squared(mu: float, sigma: float, centre: float, scale: float) -> float:
    """W₂² between two 1-D laws from their quantile functions: ∫₀¹ (F⁻¹ − G⁻¹)² du."""
    value, _ = integrate.quad(lambda u: (stats.norm.ppf(u, mu, sigma) - stats.norm.ppf(u, centre, scale)) ** 2, 0, 1,
                              limit=200)
    return value


def term(name: str, mu: float, sigma: float) -> float:
    mu_t = torch.tensor([[mu]], dtype=torch.float64)
    logvar_t = torch.tensor([[2 * math.log(sigma)]], dtype=torch.float64)
    return float(priors.double_peaked_term(name)(mu_t, logvar_t, M, S))


def test_log_prob_matches_mixture_density():
    z = torch.linspace(-4, 4, 81, dtype=torch.float64).unsqueeze(1)
    expected = np.log(mixture_pdf(z.numpy()[:, 0]))
    np.testing.assert_allclose(priors.double_peaked_log_prob(z, M, S).numpy(), expected, rtol=1e-10, atol=1e-10)
    def density(x: float) -> float:
        return math.exp(float(priors.double_peaked_log_prob(torch.tensor([[x]], dtype=torch.float64), M, S)))

    total, _ = integrate.quad(density, -10, 10)
    assert total == pytest.approx(1.0, abs=1e-8)


def test_tanh_erfc_approximation_error():
    x = np.linspace(0, 6, 6001)
    assert np.max(np.abs(special.erfc(x) - (1 - np.tanh(priors.ERFC_TANH_SLOPE * x)))) < 0.022


@pytest.mark.parametrize("mu,sigma", CASES)
def test_sc_is_an_upper_bound_within_log2(mu, sigma):
    exact = numeric_kl(mu, sigma, lambda z: np.log(mixture_pdf(z)))
    sc = term("sc", mu, sigma)
    assert exact - 1e-7 <= sc
    centre = M if mu >= 0 else -M
    nearest = numeric_kl(mu, sigma, lambda z: np.log(0.5) + stats.norm.logpdf(z, centre, S))
    assert sc == pytest.approx(nearest, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("mu,sigma", CASES)
def test_dkl_is_the_envelope_kl_up_to_the_erfc_approximation(mu, sigma):
    def log_envelope(z):
        return np.log(0.5) + stats.norm.logpdf(z, np.where(z >= 0, M, -M), S)

    envelope_kl = numeric_kl(mu, sigma, log_envelope)
    dkl = term("dkl", mu, sigma)
    # Only E|z| is approximated: error ≤ (m/s²)·|μ|·max|Erfc − (1 − tanh)|.
    assert abs(dkl - envelope_kl) <= M / S**2 * abs(mu) * 0.022 + 1e-7
    exact = numeric_kl(mu, sigma, lambda z: np.log(mixture_pdf(z)))
    assert exact - 1e-7 - M / S**2 * abs(mu) * 0.022 <= dkl <= exact + math.log(2) + 1e-7
    assert envelope_kl <= term("sc", mu, sigma) + 1e-7  # tighter than SC


def test_dkl_and_sc_tight_on_a_peak():
    exact = numeric_kl(M, 0.1, lambda z: np.log(mixture_pdf(z)))
    for name in ("sc", "dkl"):
        assert term(name, M, 0.1) == pytest.approx(exact, abs=1e-6)


@pytest.mark.parametrize("mu,sigma", [(0.3, 0.2), (-1.2, 0.6), (1.45, 0.39), (-0.01, 0.05)])
def test_pw_is_w2_squared_to_nearest_peak(mu, sigma):
    centre = M if mu >= 0 else -M
    assert term("pw", mu, sigma) == pytest.approx(numeric_w2_squared(mu, sigma, centre, S), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("mu,sigma", [(0.3, 0.2), (-1.2, 0.6), (1.45, 0.39), (-0.01, 0.05)])
def test_aw_brackets_w2_to_nearest_peak(mu, sigma):
    centre = M if mu >= 0 else -M
    w2 = math.sqrt(numeric_w2_squared(mu, sigma, centre, S))
    shifted = term("aw", mu, sigma) + M  # tanh bounds |μ| < m, so m − |μ| = |μ − nearest peak|
    assert w2 - 1e-6 <= shifted <= math.sqrt(2) * w2 + 1e-6


def test_terms_are_minimised_on_the_peaks_and_have_gradients_at_zero():
    grid = torch.linspace(-2.5, 2.5, 501, dtype=torch.float64).unsqueeze(1)
    logvar = torch.full_like(grid, 2 * math.log(S))
    for name in ("sc", "dkl", "pw"):
        values = priors.double_peaked_term(name)(grid, logvar, M, S)
        best = float(grid[values.argmin(), 0].abs())
        assert best == pytest.approx(M, abs=0.15), name
    mu = torch.tensor([[0.01], [-0.01]], dtype=torch.float64, requires_grad=True)
    priors.kl_double_peaked_dkl(mu, torch.zeros_like(mu), M, S).sum().backward()
    assert mu.grad[0, 0] < 0 < mu.grad[1, 0]  # descent moves codes away from zero


def test_multi_dimensional_terms_sum_over_dims():
    mu = torch.tensor([[0.4, -1.0]], dtype=torch.float64)
    logvar = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    for name in ("sc", "dkl", "pw"):
        fn = priors.double_peaked_term(name)
        parts = fn(mu[:, :1], logvar[:, :1], M, S) + fn(mu[:, 1:], logvar[:, 1:], M, S)
        assert torch.allclose(fn(mu, logvar, M, S), parts)


def test_unknown_term_is_refused():
    with pytest.raises(ValueError, match="unknown double-peaked prior term 'kl2'"):
        priors.double_peaked_term("kl2")
