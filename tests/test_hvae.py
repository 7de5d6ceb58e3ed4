"""Hierarchical AE+VAE and the single-level baselines: interface, prior, orientation, learning."""

import numpy as np
import pytest
import torch

from galhpc.config import ModelConfig
from galhpc.models import build_model
from galhpc.models.base import StepState
from galhpc.models.hvae import DoublePeakedLatent, HierarchicalAEVAE, PeakedVAE, concentration, normalise_stamps

torch.set_num_threads(1)


def stamps(n: int = 8, size: int = 16, channels: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=g) * 50


@pytest.mark.parametrize("term", ["sc", "dkl", "aw", "pw"])
def test_hvae_interface_and_gradients(term):
    model = build_model(ModelConfig(name="hvae", image_size=16, channels=5, latent_dim=3,
                                    params={"prior_term": term, "widths": [8, 8]}))
    assert isinstance(model, HierarchicalAEVAE)
    x = stamps()
    out = model.loss({"image": x}, StepState(weights={"kl": 0.5}))
    assert torch.isfinite(out.total) and {"ae_mse", "code_nll", f"prior_{term}", "kl_gauss"} <= set(out.terms)
    out.total.backward()
    assert all(p.grad is not None for p in model.code_encoder.parameters())
    model.eval()
    enc = model.encode(x)
    assert enc.mu.shape == (8, 3) and enc.logvar.shape == (8, 3)
    cols = model.extra_columns(x, enc)
    assert cols["p_galaxy"].shape == (8,) and torch.all((cols["p_galaxy"] >= 0) & (cols["p_galaxy"] <= 1))
    assert cols["ae_code"].shape == (8, 30)
    assert model.decode(enc.mu).shape == x.shape
    samples = model.sample(6, torch.Generator().manual_seed(1))
    assert samples.images.shape == (6, 5, 16, 16) and set(samples.component.tolist()) <= {0, 1}
    if term == "aw":
        assert torch.all(enc.mu[:, 0].abs() < model.prior.m)  # tanh-bounded peaked mean


def test_vae_on_code_does_not_train_the_autoencoder():
    model = HierarchicalAEVAE(image_size=16, widths=[8, 8], vae_weight=1.0)
    out = model.loss({"image": stamps()}, StepState())
    out.terms["code_nll"].backward()
    assert all(p.grad is None for p in model.trunk.parameters())


def test_normalisation_removes_brightness_and_concentration_ranks_point_sources():
    x = stamps(4, 16, 3)
    np.testing.assert_allclose(normalise_stamps(x, 5.0), normalise_stamps(7.0 * x, 5.0), rtol=1e-5, atol=1e-6)
    point = torch.zeros(1, 1, 16, 16)
    point[0, 0, 8, 8] = 1.0
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    blob = torch.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 18.0).view(1, 1, 16, 16)
    assert concentration(point) > concentration(blob)


def test_galaxy_side_follows_the_less_concentrated_side():
    prior = DoublePeakedLatent(1, "pw", peak_mean=1.0, peak_scale=0.5)
    mu = torch.tensor([[-1.0], [-0.8], [0.9], [1.1]])
    prior.track_sides(mu, torch.tensor([0.9, 0.8, 0.2, 0.3]))  # negative side concentrated: stars
    assert prior.galaxy_sign() == 1.0
    p = prior.p_galaxy(mu)
    assert p[2] > 0.99 and p[0] < 0.01
    prior.track_sides(-mu, torch.tensor([0.9, 0.8, 0.2, 0.3]))
    prior.side_concentration.copy_(torch.tensor([0.2, 0.9]))
    assert prior.galaxy_sign() == -1.0 and prior.p_galaxy(mu)[0] > 0.99
    state = prior.state_dict()
    assert set(state) == {"side_concentration", "side_seen"}


def test_plain_vae_baseline_has_no_peaked_dim():
    model = PeakedVAE(image_size=16, latent_dim=4, widths=[8, 8], peaked_dims=0)
    out = model.loss({"image": stamps()}, StepState())
    assert float(out.terms["prior_dkl"]) == 0.0 and torch.isfinite(out.total)
    model.eval()
    assert model.extra_columns(stamps(), model.encode(stamps())) == {}


def test_bad_peaked_dims_are_refused():
    with pytest.raises(ValueError, match="peaked_dims"):
        HierarchicalAEVAE(image_size=16, latent_dim=2, peaked_dims=3)
    with pytest.raises(ValueError, match="unknown double-peaked prior term"):
        HierarchicalAEVAE(image_size=16, prior_term="wasserstein")
