"""PixelCNN prior: raster-order causality, learning known distributions, conditioning, the
self-contained vqvae_prior checkpoint and conditional samples that differ by condition."""

import math

import pytest
import torch

from galhpc.checkpoint import CheckpointError, assemble_model, load_model, save_checkpoint
from galhpc.config import ModelConfig, RunConfig
from galhpc.models import build_model
from galhpc.models.base import StepState
from galhpc.models.pixelcnn import GatedPixelCNN, VQVAEPrior

torch.set_num_threads(1)


def features(net: GatedPixelCNN, codes: torch.Tensor) -> torch.Tensor:
    """The horizontal stack's output (what the per-position head turns into logits)."""
    v = h = net.embedding(codes).permute(0, 3, 1, 2)
    for layer in net.layers:
        v, h = layer(v, h, None)
    return h


def raster_dependence(net: GatedPixelCNN, size: int) -> torch.Tensor:
    """depends[p, q]: do the features (and logits) at q change when the code at p changes?"""
    torch.manual_seed(0)
    codes = torch.randint(0, net.num_codes, (1, size, size))
    with torch.no_grad():
        base, base_logits = features(net, codes), net(codes)
        depends = torch.zeros(size * size, size * size, dtype=torch.bool)
        for p in range(size * size):
            changed = codes.clone()
            changed.view(-1)[p] = (changed.view(-1)[p] + 1) % net.num_codes
            diff = (features(net, changed) - base).abs().amax(dim=1).flatten()
            logit_diff = (net(changed) - base_logits).abs().amax(dim=1).flatten()
            depends[p] = (diff > 1e-6) | (logit_diff > 1e-6)
    return depends


def test_pixelcnn_is_causal_in_raster_order_and_has_no_blind_spot():
    net = GatedPixelCNN(num_codes=7, channels=8, layers=4, kernel=3)
    size = 6
    depends = raster_dependence(net, size)
    order = torch.arange(size * size)
    # no position depends on itself or on any later position
    assert not depends[order[:, None] >= order[None, :]].any()
    # and every position sees its left neighbour and the three neighbours of the row above
    for i in range(1, size):
        for j in range(1, size - 1):
            q = i * size + j
            for p in (q - 1, q - size - 1, q - size, q - size + 1):
                assert depends[p, q], f"position {divmod(q, size)} blind to {divmod(p, size)}"


def test_pixelcnn_conditioning_reaches_every_position():
    net = GatedPixelCNN(num_codes=5, channels=8, layers=2, kernel=3, cond_dim=3)
    codes = torch.randint(0, 5, (1, 4, 4))
    a = net(codes, torch.tensor([[1.0, 0, 0]]))
    b = net(codes, torch.tensor([[0.0, 1, 0]]))
    assert ((a - b).abs().amax(dim=1) > 1e-6).all()


def fit(net: GatedPixelCNN, make_batch, steps: int, lr: float = 3e-3) -> float:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        codes, cond = make_batch()
        loss = torch.nn.functional.cross_entropy(net(codes, cond), codes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def test_pixelcnn_learns_the_entropy_of_row_constant_maps():
    """Rows hold one random code each: the best NLL per code is log(K) / width."""
    torch.manual_seed(0)
    k, size = 4, 4
    net = GatedPixelCNN(num_codes=k, channels=16, layers=3, kernel=3)

    def batch():
        return torch.randint(0, k, (64, size, 1)).expand(64, size, size).contiguous(), None

    nll = fit(net, batch, steps=250)
    optimum = math.log(k) / size
    assert nll < optimum + 0.08, (nll, optimum)


def test_conditional_pixelcnn_samples_follow_the_condition():
    """Class c means every code is c: samples for each class must be maps of that code."""
    torch.manual_seed(0)
    k = 3
    net = GatedPixelCNN(num_codes=k, channels=16, layers=2, kernel=3, cond_dim=k)

    def batch():
        c = torch.randint(0, k, (32,))
        return c[:, None, None].expand(32, 3, 3).contiguous(), torch.nn.functional.one_hot(c, k).float()

    fit(net, batch, steps=300)
    g = torch.Generator().manual_seed(0)
    for c in range(k):
        cond = torch.nn.functional.one_hot(torch.full((8,), c), k).float()
        samples = net.sample(16, (3, 3), cond[:1].expand(16, k), generator=g)
        assert (samples == c).float().mean() > 0.85  # the rare wrong first code makes a whole wrong map


def blobs(n: int, size: int = 16, seed: int = 0, small: bool | None = None):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    label = torch.randint(0, 2, (n,), generator=g) if small is None else torch.full((n,), int(not small))
    sigma = torch.where(label == 0, 1.2, 3.0)[:, None, None] * (1 + 0.1 * torch.rand(n, 1, 1, generator=g))
    c = size / 2 - 0.5
    return torch.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * sigma**2)).unsqueeze(1), label


def train_vqvae(path, images, steps: int):
    cfg = RunConfig()
    cfg.model = ModelConfig(name="vqvae", image_size=16, latent_dim=8,
                            params={"num_codes": 16, "hidden": 32, "res_hidden": 8, "restart_every": 20})
    model = build_model(cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = {"image": images[torch.randint(0, len(images), (32,), generator=g)]}
        out = model.loss(batch, StepState())
        opt.zero_grad()
        out.total.backward()
        opt.step()
    save_checkpoint(path, {"model_name": "vqvae", "model_state": model.state_dict(), "config": cfg.to_yaml()})
    return cfg


def prior_config(vqvae_ckpt, condition=None) -> RunConfig:
    cfg = RunConfig()
    cfg.model = ModelConfig(name="vqvae_prior", image_size=16, params={
        "vqvae_checkpoint": str(vqvae_ckpt), "hidden": 16, "layers": 3, "kernel": 3, "condition": condition})
    return cfg


def test_prior_keeps_the_vqvae_frozen_and_loads_from_its_own_checkpoint(tmp_path):
    images, labels = blobs(64)
    train_vqvae(tmp_path / "vq.pt", images, steps=5)
    cfg = prior_config(tmp_path / "vq.pt", {"column": "size_class", "kind": "class", "num_classes": 2})
    prior = assemble_model(cfg.model)
    assert isinstance(prior, VQVAEPrior)
    frozen = {k: v.clone() for k, v in prior.vqvae.state_dict().items()}
    opt = torch.optim.Adam([p for p in prior.parameters() if p.requires_grad], lr=1e-3)
    prior.train()
    out = prior.loss({"image": images[:16], "size_class": labels[:16]}, StepState())
    out.total.backward()
    opt.step()
    assert set(out.terms) == {"nll", "bits_per_code"} and prior.batch_columns == ("size_class",)
    assert all(torch.equal(frozen[k], v) for k, v in prior.vqvae.state_dict().items())
    assert not prior.vqvae.training
    # the prior's checkpoint alone rebuilds it: remove the VQ-VAE checkpoint first
    path = save_checkpoint(tmp_path / "prior.pt", {"model_name": "vqvae_prior", "model_state": prior.state_dict(),
                                                   "config": cfg.to_yaml()})
    (tmp_path / "vq.pt").unlink()
    loaded = load_model(path, expect="vqvae_prior")
    prior.eval()
    a = prior.sample(4, torch.Generator().manual_seed(5), size_class=1)
    b = loaded.sample(4, torch.Generator().manual_seed(5), size_class=1)
    assert torch.equal(a.z, b.z) and torch.allclose(a.images, b.images)
    assert a.images.shape == (4, 1, 16, 16) and a.z.shape == (4, 16) and a.component.tolist() == [1] * 4
    assert torch.equal(loaded.sample(2, torch.Generator().manual_seed(1), component=0).component, torch.zeros(2).long())


def test_prior_errors_name_the_problem(tmp_path):
    images, _ = blobs(32)
    train_vqvae(tmp_path / "vq.pt", images, steps=1)
    prior = assemble_model(prior_config(tmp_path / "vq.pt", {"column": "size_class", "kind": "class",
                                                             "num_classes": 2}).model)
    with pytest.raises(ValueError, match="conditional on 'size_class'"):
        prior.sample(2)
    with pytest.raises(ValueError, match=r"unknown condition\(s\) \['colour'\]"):
        prior.sample(2, colour=1)
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        prior.sample(2, size_class=5)
    with pytest.raises(KeyError, match="no label column 'size_class'"):
        prior.loss({"image": images[:4]}, StepState())
    unconditional = assemble_model(prior_config(tmp_path / "vq.pt").model)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.sample(1, size_class=1)
    missing = assemble_model(prior_config(tmp_path / "nowhere.pt").model)
    with pytest.raises(CheckpointError, match="nowhere.pt"):
        missing.loss({"image": images[:4]}, StepState())


def radius(images: torch.Tensor) -> torch.Tensor:
    """Flux-weighted RMS radius of each image about its centroid (pixels)."""
    x = images.clamp(min=0)[:, 0]
    size = x.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    flux = x.sum(dim=(1, 2)) + 1e-8
    cx = (x * xx).sum(dim=(1, 2)) / flux
    cy = (x * yy).sum(dim=(1, 2)) / flux
    r2 = ((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2)
    return ((x * r2).sum(dim=(1, 2)) / flux).sqrt()


@pytest.mark.slow
def test_conditional_prior_samples_differ_by_condition_in_size(tmp_path):
    """Small and large blobs, conditioned on their class: samples of each class have its size."""
    torch.manual_seed(0)
    images, labels = blobs(512)
    train_vqvae(tmp_path / "vq.pt", images, steps=300)
    prior = assemble_model(prior_config(tmp_path / "vq.pt", {"column": "size_class", "kind": "class",
                                                             "num_classes": 2}).model)
    opt = torch.optim.Adam([p for p in prior.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(0)
    prior.train()
    for _ in range(300):
        pick = torch.randint(0, len(images), (64,), generator=g)
        out = prior.loss({"image": images[pick], "size_class": labels[pick]}, StepState())
        opt.zero_grad()
        out.total.backward()
        opt.step()
    prior.eval()
    small = radius(prior.sample(32, torch.Generator().manual_seed(1), size_class=0).images).mean()
    large = radius(prior.sample(32, torch.Generator().manual_seed(2), size_class=1).images).mean()
    with torch.no_grad():  # what the decoder makes of real members of each class
        recon_small = radius(prior.decode(prior.encode(blobs(64, small=True)[0]).mu)).mean()
        recon_large = radius(prior.decode(prior.encode(blobs(64, small=False)[0]).mu)).mean()
    gap = recon_large - recon_small
    assert gap > 1.0
    assert abs(small - recon_small) < 0.2 * gap and abs(large - recon_large) < 0.2 * gap
