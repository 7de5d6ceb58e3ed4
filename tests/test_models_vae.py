"""ConvVAE and GaussianVAE: shapes, loss pieces against hand computations, objectives."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from galhpc.config import ModelConfig
from galhpc.models import build_model
from galhpc.models.base import StepState
from galhpc.models.vae import ConvVAE, GaussianVAE
from galhpc.priors import gaussian_log_likelihood, kl_unit_gaussian

torch.set_num_threads(1)


def test_kl_unit_gaussian_matches_torch_distributions_and_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen) * 0.5
    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros(6), torch.ones(6))
    exact = kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(kl_unit_gaussian(mu, logvar), exact)
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean(0)
    torch.testing.assert_close(kl_unit_gaussian(mu, logvar), monte_carlo, atol=0.05, rtol=0.02)


def test_gaussian_log_likelihood_matches_normal_log_prob():
    gen = torch.Generator().manual_seed(1)
    x, mean, logvar = (torch.randn(3, 2, 5, 5, generator=gen) for _ in range(3))
    expected = Normal(mean, (0.5 * logvar).exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_log_likelihood(x, mean, logvar), expected)


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("name", ["vae", "gaussian_vae"])
def test_models_build_from_config_at_every_preset_size(name, size):
    model = build_model(ModelConfig(name=name, image_size=size, channels=1, latent_dim=8))
    x = torch.rand(2, 1, size, size)
    out = model.loss({"image": x}, StepState())
    assert out.total.ndim == 0 and torch.isfinite(out.total)
    assert out.recon.shape == x.shape
    enc = model.encode(x)
    assert enc.mu.shape == enc.logvar.shape == (2, 8)
    samples = model.sample(3, torch.Generator().manual_seed(0))
    assert samples.images.shape == (3, 1, size, size) and samples.z.shape == (3, 8)
    assert samples.component.tolist() == [-1, -1, -1]


def test_bad_sizes_and_options_are_refused():
    with pytest.raises(ValueError, match="multiple of 16"):
        ConvVAE(image_size=40)
    with pytest.raises(ValueError, match="objective"):
        ConvVAE(image_size=32, objective="vamp")
    with pytest.raises(ValueError, match="arch"):
        GaussianVAE(image_size=32, arch="rnn")


def _pieces(model, x, weight=1.0):
    torch.manual_seed(3)
    out = model.loss({"image": x}, StepState(weights={"kl": weight}))
    return out.total, out.terms


def test_elbo_objective_is_recon_plus_weighted_kl():
    x = torch.rand(4, 1, 32, 32)
    model = ConvVAE(32, 1, 8, filters=[8, 8, 8, 8])
    total, terms = _pieces(model, x, weight=0.3)
    torch.testing.assert_close(total, terms["recon"] + 0.3 * terms["kl"])
    # recon is the per-image summed BCE of the decoder output, by hand
    torch.manual_seed(3)
    enc = model.encode(x)
    z = enc.mu + (0.5 * enc.logvar).exp() * torch.randn_like(enc.mu)
    p = model.decode(z)
    bce = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1).mean()
    torch.testing.assert_close(terms["recon"], bce, rtol=1e-4, atol=1e-3)


def test_beta_objective_scales_kl_by_beta():
    x = torch.rand(4, 1, 32, 32)
    model = ConvVAE(32, 1, 8, filters=[8, 8, 8, 8], objective="beta", beta=1e-2)
    total, terms = _pieces(model, x)
    torch.testing.assert_close(total, terms["recon"] + 1e-2 * terms["kl"])


def test_flow_objective_floors_kl_and_stops_its_gradient():
    x = torch.rand(4, 1, 32, 32)
    model = ConvVAE(32, 1, 8, filters=[8, 8, 8, 8], objective="flow", flow_lambda=1e6)
    total, terms = _pieces(model, x)
    assert terms["kl"] < 1e6
    torch.testing.assert_close(total, terms["recon"] + 1e6)
    grads_total = torch.autograd.grad(total, model.encoder.logvar.weight)[0]
    _, terms = _pieces(model, x)
    grads_recon = torch.autograd.grad(terms["recon"], model.encoder.logvar.weight)[0]
    torch.testing.assert_close(grads_total, grads_recon)  # the floored KL adds no gradient


def test_mse_recon_and_bce_range_check():
    x = torch.rand(2, 1, 32, 32)
    model = ConvVAE(32, 1, 8, filters=[8, 8, 8, 8], recon="mse")
    _, terms = _pieces(model, x)
    assert 0 < terms["recon"] < 32 * 32
    with pytest.raises(ValueError, match=r"BCE reconstruction needs images in \[0, 1\]"):
        ConvVAE(32, 1, 8, filters=[8, 8, 8, 8]).loss({"image": x * 3}, StepState())


def test_gaussian_vae_loss_is_negative_log_likelihood_plus_kl():
    x = torch.rand(3, 1, 32, 32)
    model = GaussianVAE(32, 1, 8, arch="fc", hidden=[32, 16], min_logvar=-4.0)
    torch.manual_seed(5)
    out = model.loss({"image": x}, StepState(weights={"kl": 2.0}))
    torch.manual_seed(5)
    enc = model.encode(x)
    z = enc.mu + (0.5 * enc.logvar).exp() * torch.randn_like(enc.mu)
    mean, logvar = model.decode_distribution(z)
    assert logvar.min() >= -4.0
    nll = -Normal(mean, (0.5 * logvar).exp()).log_prob(x).flatten(1).sum(1).mean()
    torch.testing.assert_close(out.terms["nll"], nll, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(out.total, out.terms["nll"] + 2.0 * out.terms["kl"])


@pytest.mark.parametrize("make", [lambda: ConvVAE(32, 1, 4, filters=[8, 8, 8, 8]),
                                  lambda: GaussianVAE(32, 1, 4, filters=[8, 8, 8, 8])])
def test_a_few_adam_steps_lower_the_loss_on_a_fixed_batch(make):
    torch.manual_seed(0)
    model = make()
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    widths = torch.linspace(2, 6, 8)
    x = torch.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / (2 * widths.view(-1, 1, 1) ** 2)).unsqueeze(1)
    def recon_mse():
        with torch.no_grad():
            model.eval()
            mse = (model.decode(model.encode(x).mu) - x).pow(2).mean().item()
            model.train()
            return mse

    before = recon_mse()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        out = model.loss({"image": x}, StepState())
        opt.zero_grad()
        out.total.backward()
        opt.step()
    assert math.isfinite(out.total.item())
    assert recon_mse() < 0.5 * before
