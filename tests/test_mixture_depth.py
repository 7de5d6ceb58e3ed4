"""The depth-conditioned mixture prior (galhpc.mixture.depth) and the depth it is conditioned on
(galhpc.models.nuisance.depth_covariates), against independent oracles: scipy's normal
densities for the change of variables, numpy for the aperture S/N, sklearn's GaussianMixture
and η² computed by hand for what the standardisation is for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.mixture import GaussianMixture

from galhpc.mixture.depth import DepthStandardiser
from galhpc.models.nuisance import depth_covariates
from galhpc.models.vade import AstroVaDEr
from galhpc.priors import vade_kl


def eta2(values: np.ndarray, labels: np.ndarray) -> float:
    """Between-group share of the variance, by hand (not galhpc's)."""
    total = ((values - values.mean()) ** 2).sum()
    between = sum((labels == c).sum() * (values[labels == c].mean() - values.mean()) ** 2 for c in np.unique(labels))
    return float(between / total)


def depth_dependent_latents(n: int = 3000, seed: int = 0):
    """Two morphological classes in equal shares at every depth; the latent's location and
    scale follow the depth (faint objects shrink towards a common point and scatter less)."""
    rng = np.random.default_rng(seed)
    depth = np.stack([rng.uniform(0.8, 3.0, n), rng.normal(-1.0, 0.3, n)], 1)  # log S/N, log σ
    cls = rng.integers(0, 2, n)
    u = np.where(cls[:, None] == 1, 2.0, -2.0) * np.array([1.0, 0.5, 0.0]) + rng.normal(size=(n, 3))
    d1 = depth[:, :1]
    location = np.concatenate([8 * (d1 - 1.9), 5 * (d1 - 1.9) ** 2, 3 * depth[:, 1:]], 1)
    scale = 0.2 + 0.6 * (d1 - 0.7)  # from 0.26 at the faint end to 1.6 at the bright
    return depth, cls, location + scale * u


def test_standardised_latents_cluster_by_class_not_by_depth():
    depth, cls, z = depth_dependent_latents()
    raw = GaussianMixture(2, covariance_type="diag", random_state=0, n_init=3).fit_predict(z)
    assert eta2(depth[:, 0], raw) > 0.25  # the mixture of raw latents splits by depth (0.31)
    assert max((raw == cls).mean(), (raw != cls).mean()) < 0.7  # and misses the classes (0.62)
    std = DepthStandardiser(3)
    std.fit(torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(depth, dtype=torch.float32))
    u, _ = std.standardise(torch.as_tensor(z, dtype=torch.float32), None, torch.as_tensor(depth, dtype=torch.float32))
    labels = GaussianMixture(2, covariance_type="diag", random_state=0, n_init=3).fit_predict(u.detach().numpy())
    assert eta2(depth[:, 0], labels) < 0.02 and eta2(depth[:, 1], labels) < 0.02
    agreement = max((labels == cls).mean(), (labels != cls).mean())
    assert agreement > 0.95  # 0.988


def test_restore_inverts_standardise_and_draws_follow_the_training_depths():
    depth, _, z = depth_dependent_latents(500, seed=1)
    std = DepthStandardiser(3)
    d, zt = torch.as_tensor(depth, dtype=torch.float32), torch.as_tensor(z, dtype=torch.float32)
    std.fit(zt, d)
    u, _ = std.standardise(zt, None, d)
    assert torch.allclose(std.restore(u, d), zt, atol=1e-4)
    drawn = std.draw(20000, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(drawn.mean(0), depth.mean(0), atol=0.03)
    np.testing.assert_allclose(np.cov(drawn.T), np.cov(depth.T), atol=0.01)


def test_vade_kl_in_the_standardised_latent_is_the_kl_against_the_depth_conditioned_prior():
    """KL(q(u|x) q(c|x) || p(u|c) p(c)) in u equals, by numerical integration over z with
    scipy's densities, the KL of q(z|x) against p(z | c, d) = N(m + s μ_c, s² σ_c²)."""
    gen = torch.Generator().manual_seed(3)
    std = DepthStandardiser(1)
    with torch.no_grad():
        std.location.copy_(torch.randn(6, 1, generator=gen))
        std.log_scale.copy_(0.3 * torch.randn(6, 1, generator=gen))
    depth = torch.tensor([[1.7, -0.8]])
    mu_z, logvar_z = torch.tensor([[0.4]]), torch.tensor([[-0.5]])
    log_pi = torch.log(torch.tensor([0.3, 0.7]))
    mu_c, var_c = torch.tensor([[-1.0], [1.2]]), torch.tensor([[0.5], [2.0]])
    log_gamma = torch.log(torch.tensor([[0.25, 0.75]]))
    with torch.no_grad():
        mu_u, logvar_u = std.standardise(mu_z, logvar_z, depth)
    ours = float(vade_kl(mu_u, logvar_u, log_gamma, log_pi, mu_c, var_c.log().exp()))

    with torch.no_grad():
        loc, log_s = (float(t) for t in std.location_scale(depth))
    s = np.exp(log_s)
    grid = np.linspace(-30, 30, 400001)
    q = stats.norm(float(mu_z), np.exp(0.5 * float(logvar_z)))
    qz = q.pdf(grid)
    gamma, pi = np.array([0.25, 0.75]), np.array([0.3, 0.7])
    expected = 0.0
    for c in range(2):
        p = stats.norm(loc + s * float(mu_c[c, 0]), s * np.sqrt(float(var_c[c, 0])))
        kl_z = np.trapezoid(qz * (q.logpdf(grid) - p.logpdf(grid)), grid)
        expected += gamma[c] * (kl_z + np.log(gamma[c] / pi[c]))
    assert ours == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_depth_covariates_are_the_aperture_snr_and_sky_sigma_of_the_stamp():
    rng = np.random.default_rng(0)
    size, sky = 48, 0.05
    yy, xx = np.indices((size, size)) - (size - 1) / 2.0
    flux = np.array([5.0, 50.0, 500.0])
    profile = np.exp(-0.5 * (xx**2 + yy**2) / 2.0**2)
    images = flux[:, None, None] * profile / profile.sum() + rng.normal(0, sky, (3, size, size))
    got = depth_covariates(torch.as_tensor(images[:, None], dtype=torch.float32)).numpy()
    inside = np.hypot(xx, yy) < size / 6.0
    expected_snr = images[:, inside].sum(1) / (sky * np.sqrt(inside.sum()))
    # σ is the smallest of the border patches' standard deviations (galhpc's border estimate,
    # as the prep measures the sky): 20 % low for 18 patches of 64 pure-noise pixels
    np.testing.assert_allclose(got[:, 1], np.log10(sky), atol=0.12)
    np.testing.assert_allclose(got[:, 0] + got[:, 1], np.log10(expected_snr * sky), atol=1e-4)
    assert np.all(np.diff(got[:, 0]) > 0.9)  # ten times the flux, ten times the S/N


def test_astrovader_with_a_depth_prior_reconstructs_and_samples_through_the_same_latent():
    torch.manual_seed(0)
    model = AstroVaDEr(32, 1, 4, n_clusters=3, filters=[4, 8], kernels=[3, 3], recon="chi2", orient=True,
                       linear_path=True, linear_init_batches=1, depth_prior=True, uniform_pi=True)
    x = 0.05 * torch.randn(64, 1, 32, 32)
    x[:, :, 12:20, 14:18] += torch.logspace(-1, 1, 64).view(-1, 1, 1, 1)
    model.init_from_data([{"image": x}])
    model.eval()
    enc = model.encode(x)
    assert enc.depth.shape == (64, 2)
    # the catalogue's μ is the standardised latent: about unit scale and free of log S/N
    assert abs(np.corrcoef(enc.mu[:, 0].detach(), enc.depth[:, 0])[0, 1]) < 0.2
    z, _, _ = model.encode_z(x)
    decoded = model.canon.restore(model.output(model.decoder_logits(z)), enc.pose)
    torch.testing.assert_close(model.reconstruct(x), decoded, atol=1e-4, rtol=1e-4)
    assert torch.equal(model.log_pi, torch.full((3,), -np.log(3.0)).float())  # uniform_pi: fixed 1/K
    model.init_mixture(enc.mu.detach().numpy(), seed=0)
    assert torch.allclose(model.log_pi, torch.full((3,), -float(np.log(3.0))))
    assert not model.pi_logits.requires_grad
    samples = model.sample(5, torch.Generator().manual_seed(0))
    assert samples.images.shape == (5, 1, 32, 32) and torch.isfinite(samples.images).all()

