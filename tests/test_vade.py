"""AstroVaDEr and the GMM/VaDE prior terms against sklearn and Monte Carlo."""

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture
from torch.distributions import Categorical, Normal

from galhpc.mixture.diagonal import gmm_responsibilities
from galhpc.models.base import StepState
from galhpc.models.vade import AstroVaDEr, LinearPath
from galhpc.priors import gmm_log_joint, kl_unit_gaussian, minmax_scale, vade_kl

torch.set_num_threads(1)


def _mixture(k=4, dim=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weights = torch.rand(k, generator=gen) + 0.2
    return (
        (weights / weights.sum()).log().double(),
        (3 * torch.randn(k, dim, generator=gen)).double(),
        (0.3 + torch.rand(k, dim, generator=gen)).double(),
    )


def test_gamma_matches_sklearn_predict_proba_with_the_same_parameters():
    log_pi, mu, var = _mixture()
    sk = GaussianMixture(4, covariance_type="diag")
    sk.weights_, sk.means_, sk.covariances_ = log_pi.exp().numpy(), mu.numpy(), var.numpy()
    sk.precisions_cholesky_ = 1.0 / np.sqrt(var.numpy())
    z = torch.randn(500, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 4
    expected = sk.predict_proba(z.numpy())
    got = gmm_responsibilities(z, log_pi, mu, var, chunk=64).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)
    np.testing.assert_allclose(gmm_log_joint(z, log_pi, mu, var).logsumexp(1).numpy(), sk.score_samples(z.numpy()))


def test_gamma_of_a_far_away_point_is_one_hot_not_nan():
    log_pi, mu, var = _mixture()
    gamma = gmm_responsibilities(torch.full((1, 3), 1e4, dtype=torch.float64), log_pi, mu, var)
    assert torch.isfinite(gamma).all() and gamma.max() == 1.0


def test_shape_mismatch_is_named():
    log_pi, mu, var = _mixture()
    with pytest.raises(ValueError, match="shapes do not fit"):
        gmm_responsibilities(torch.zeros(2, 5, dtype=torch.float64), log_pi, mu, var)


def test_minmax_scale_maps_rows_into_minus_lambda_zero():
    values = torch.tensor([[-1e30, -5.0, 0.0], [2.0, 2.0, 2.0], [-3.0, -1.0, -2.0]])
    scaled = minmax_scale(values, 10.0)
    assert torch.isfinite(scaled).all()
    torch.testing.assert_close(scaled.max(1).values, torch.zeros(3))
    torch.testing.assert_close(scaled[[0, 2]].min(1).values, torch.full((2,), -10.0))
    torch.testing.assert_close(scaled[2], torch.tensor([-10.0, 0.0, -5.0]))
    torch.testing.assert_close(scaled[1], torch.zeros(3))


def test_vade_kl_matches_monte_carlo():
    """KL(q(z|x) q(c|x) || p(z|c) p(c)) with q(c|x) = γ fixed, sampled jointly."""
    log_pi, mu_c, var_c = _mixture(k=3, dim=2, seed=2)
    mu = torch.tensor([[0.5, -1.0], [2.0, 1.0]], dtype=torch.float64)
    logvar = torch.tensor([[-0.5, 0.2], [0.1, -1.0]], dtype=torch.float64)
    gamma = torch.tensor([[0.2, 0.5, 0.3], [0.7, 0.1, 0.2]], dtype=torch.float64)
    exact = vade_kl(mu, logvar, gamma.log(), log_pi, mu_c, var_c)
    torch.manual_seed(0)
    n = 400_000
    qz = Normal(mu, (0.5 * logvar).exp())
    z = qz.sample((n,))  # (n, B, L)
    c = Categorical(gamma).sample((n,))  # (n, B)
    log_q = qz.log_prob(z).sum(-1) + gamma.log().gather(1, c.T).T
    log_p = log_pi[c] + Normal(mu_c[c], var_c[c].sqrt()).log_prob(z).sum(-1)
    torch.testing.assert_close(exact, (log_q - log_p).mean(0), atol=0.02, rtol=0.01)


def test_vade_kl_reduces_to_unit_gaussian_kl_for_one_standard_component():
    mu, logvar = torch.randn(5, 4), torch.randn(5, 4) * 0.3
    kl = vade_kl(mu, logvar, torch.zeros(5, 1), torch.zeros(1), torch.zeros(1, 4), torch.ones(1, 4))
    torch.testing.assert_close(kl, kl_unit_gaussian(mu, logvar))


@pytest.mark.parametrize("size", [32, 64, 128])
def test_astrovader_shapes_at_preset_sizes(size):
    model = AstroVaDEr(size, 1, 20, n_clusters=5, filters=[8, 8, 4])
    x = torch.rand(2, 1, size, size)
    enc = model.encode(x)
    assert enc.mu.shape == (2, 20) and model.decode(enc.mu).shape == x.shape
    gamma = model.cluster_probs(enc.mu)
    assert gamma.shape == (2, 5)
    torch.testing.assert_close(gamma.sum(1), torch.ones(2))


def test_astrovader_loss_pieces_and_no_nan_for_wild_latents():
    torch.manual_seed(0)
    model = AstroVaDEr(32, 1, 6, n_clusters=4, filters=[8, 8, 4], l2=0.01)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        model.mu_c.mul_(1e3)  # a mixture far from every embedding: unscaled γ would underflow
    torch.manual_seed(1)
    out = model.loss({"image": x}, StepState(weights={"kl": 0.5, "gmm": 1.0}))
    assert all(torch.isfinite(v) for v in out.terms.values())
    torch.testing.assert_close(out.total, out.terms["recon"] + 0.5 * out.terms["kl"] + out.terms["l2"])
    penalty = sum(m.weight.pow(2).sum() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    torch.testing.assert_close(out.terms["l2"], 0.01 * penalty)
    out.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_alpha_phase_uses_unit_gaussian_kl_and_zero_mixture_gradients():
    model = AstroVaDEr(32, 1, 6, n_clusters=4, filters=[8, 8, 4])
    x = torch.rand(3, 1, 32, 32)
    torch.manual_seed(1)
    out = model.loss({"image": x}, StepState(weights={"kl": 5e-4, "gmm": 0.0}))
    enc = model.encode(x)
    torch.testing.assert_close(out.terms["kl"], kl_unit_gaussian(enc.mu, enc.logvar).mean())
    out.total.backward()
    for p in (model.pi_logits, model.mu_c, model.log_var_c):
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0


def test_mixture_init_from_embeddings_and_sampling_by_component():
    rng = np.random.default_rng(0)
    centres = np.array([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]])
    emb = np.concatenate([c + 0.3 * rng.standard_normal((200, 2)) for c in centres])
    model = AstroVaDEr(32, 1, 2, n_clusters=3, filters=[8, 8, 4])
    model.init_mixture(emb, seed=0)
    found = model.mu_c.detach().numpy()
    np.testing.assert_allclose(np.sort(found[:, 0]), [-6, 0, 6], atol=0.1)
    np.testing.assert_allclose(model.log_pi.exp().detach().numpy(), [1 / 3] * 3, atol=0.01)
    k = int(np.argmin(np.abs(found[:, 0] - 6.0)))
    with torch.no_grad():
        samples = model.sample(50, torch.Generator().manual_seed(0), component=k)
        assert samples.component.tolist() == [k] * 50
        assert samples.images.shape == (50, 1, 32, 32)
        assert abs(samples.z[:, 0].mean().item() - 6.0) < 0.3
        mixed = model.sample(600, torch.Generator().manual_seed(1))
        counts = np.bincount(mixed.component.numpy(), minlength=3)
        assert counts.min() > 150
    with pytest.raises(ValueError, match="component 7"):
        model.sample(1, component=7)


def test_linear_path_gappy_pca_describes_the_valid_pixels_not_the_masked_fill():
    """LinearPath.fit with a valid-pixel map is a gappy PCA: its basis is fitted to the pixels
    that count.  Oracle: the rank-L truth the stamps were made from (plain PCA spends a
    component on the clipped, masked cores; the gappy fit does not)."""
    rng = np.random.default_rng(0)
    n, d, rank = 400, 64, 3
    truth_basis = np.linalg.qr(rng.normal(size=(d, rank)))[0].T  # (3, D) orthonormal
    clean = rng.normal(size=(n, rank)) * np.array([3.0, 2.0, 1.0]) @ truth_basis
    observed = clean + 0.01 * rng.normal(size=(n, d))
    valid = np.ones((n, d), bool)
    hit = rng.random(n) < 0.3  # 30 % of stamps have a "saturated core": 4 pixels clipped and masked
    core = rng.integers(0, d - 4, n)
    for i in np.flatnonzero(hit):
        observed[i, core[i]:core[i] + 4] = 25.0
        valid[i, core[i]:core[i] + 4] = False

    def basis_error(path):
        b = path.dec.detach().double().numpy()  # (D, L) = V Λ^½: its column space is the basis
        q = np.linalg.qr(b)[0]
        residual = truth_basis.T - q @ (q.T @ truth_basis.T)
        return float(np.linalg.norm(residual) / np.linalg.norm(truth_basis))

    plain, gappy = LinearPath(d, rank, 1), LinearPath(d, rank, 1)
    plain.fit(torch.as_tensor(observed))
    gappy.fit(torch.as_tensor(observed), torch.as_tensor(valid))
    assert basis_error(plain) > 0.3  # the clipped cores took a component
    assert basis_error(gappy) < 0.05
    same = LinearPath(d, rank, 1)
    same.fit(torch.as_tensor(observed), torch.ones(n, d, dtype=torch.bool))  # nothing masked: plain PCA
    torch.testing.assert_close(same.dec, plain.dec)
