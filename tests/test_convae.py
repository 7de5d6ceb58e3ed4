"""Convolutional autoencoder baseline: shapes of both variants, checkpoints, learning."""

import pytest
import torch
from test_vqvae import blobs

from galhpc.checkpoint import load_model, save_checkpoint
from galhpc.config import ModelConfig, RunConfig
from galhpc.models import build_model
from galhpc.models.base import StepState
from galhpc.models.convae import ConvAE

torch.set_num_threads(1)


@pytest.mark.parametrize("dense, features", [(True, 64), (False, 4 * 4 * 4)])
def test_convae_feature_sizes_and_round_trip_shapes(dense, features):
    model = build_model(ModelConfig(name="convae", image_size=32, latent_dim=64, params={"dense": dense}))
    assert isinstance(model, ConvAE)
    x = blobs(3)
    z = model.encode(x).mu
    assert z.shape == (3, features) and model.feature_dim == features
    assert model.decode(z).shape == x.shape
    with pytest.raises(ValueError, match="images must be"):
        model.encode(torch.rand(3, 1, 16, 16))
    with pytest.raises(ValueError, match="multiple of 8"):
        ConvAE(36)


def test_convae_checkpoint_round_trip(tmp_path):
    cfg = RunConfig()
    cfg.model = ModelConfig(name="convae", image_size=32, latent_dim=16, params={"dense": True})
    model = build_model(cfg.model).eval()
    path = save_checkpoint(tmp_path / "ckpt.pt", {"model_name": "convae", "model_state": model.state_dict(),
                                                  "config": cfg.to_yaml()})
    loaded = load_model(path, expect="convae")
    x = blobs(2)
    assert torch.equal(loaded.encode(x).mu, model.encode(x).mu)


@pytest.mark.parametrize("dense", [True, False])
def test_convae_learns_to_reconstruct_better_than_the_mean_image(dense):
    torch.manual_seed(0)
    train, held_out = blobs(384, seed=1), blobs(128, seed=2)
    model = ConvAE(32, 1, 16, dense=dense, filters=(16, 32, 32))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        out = model.loss({"image": train[torch.randint(0, 384, (32,), generator=g)]}, StepState())
        opt.zero_grad()
        out.total.backward()
        opt.step()
    with torch.no_grad():
        mse = float(model.loss({"image": held_out}, StepState()).terms["recon"])
    baseline = float(((held_out - train.mean(0)) ** 2).mean())
    assert mse < 0.25 * baseline, (mse, baseline)
