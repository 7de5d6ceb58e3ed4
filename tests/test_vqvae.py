"""VQ-VAE: quantiser against brute force, EMA and dead-code restart, PSF layer, checkpoints, learning."""

import math

import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve

from galhpc.checkpoint import load_model, save_checkpoint
from galhpc.config import ModelConfig, RunConfig
from galhpc.models import build_model
from galhpc.models.base import StepState
from galhpc.models.psf_layer import PSFError, PSFLayer, galsim_psf_image
from galhpc.models.vqvae import VQVAE, VectorQuantizer

torch.set_num_threads(1)


def blobs(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Elliptical Gaussian blobs of random size, shape and centre, peak 1: (n, 1, size, size)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    cx = size / 2 + torch.randn(n, 1, 1, generator=g) * 2
    cy = size / 2 + torch.randn(n, 1, 1, generator=g) * 2
    s = torch.rand(n, 1, 1, generator=g) * 3 + 1.5
    q = torch.rand(n, 1, 1, generator=g) * 0.6 + 0.4
    return torch.exp(-(((xx - cx) ** 2) * q + ((yy - cy) ** 2) / q) / (2 * s**2)).unsqueeze(1)


def small_vqvae(**params) -> VQVAE:
    return VQVAE(32, 1, 16, num_codes=params.pop("num_codes", 32), hidden=32, res_hidden=8, **params)


def test_quantiser_matches_brute_force_and_passes_gradients_straight_through():
    torch.manual_seed(0)
    vq = VectorQuantizer(24, 8)
    vq.codebook.data = torch.randn(24, 8)
    z_e = torch.randn(3, 8, 5, 5, requires_grad=True)
    z_q, index, terms = vq(z_e)
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    expected = torch.cdist(flat, vq.codebook.detach()).argmin(dim=1)
    assert torch.equal(index.flatten(), expected)
    assert torch.allclose(z_q.detach().permute(0, 2, 3, 1).reshape(-1, 8), vq.codebook.detach()[expected])
    # commitment and codebook losses are the same number, with gradients to different tensors
    mse = ((flat - vq.codebook.detach()[expected]) ** 2).mean()
    assert torch.allclose(terms["commitment"], mse) and torch.allclose(terms["codebook"], mse)
    z_q.sum().backward()
    assert torch.allclose(z_e.grad, torch.ones_like(z_e))  # straight-through estimator
    counts = torch.bincount(expected, minlength=24).float()
    p = counts / counts.sum()
    p = p[p > 0]
    assert math.isclose(float(terms["perplexity"]), float(torch.exp(-(p * p.log()).sum())), rel_tol=1e-5)


def test_ema_codebook_moves_to_the_mean_of_its_assigned_vectors():
    vq = VectorQuantizer(2, 2, ema=True, decay=0.0, eps=0.0, restart_every=0)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    points = torch.tensor([[1.0, 0.0], [0.0, 3.0], [9.0, 9.0], [12.0, 10.0], [11.0, 11.0]])
    vq.train()
    _, _, terms = vq(points.reshape(5, 1, 1, 2).permute(0, 3, 1, 2))
    assert torch.allclose(vq.codebook, torch.tensor([[0.5, 1.5], [32 / 3, 10.0]]))
    assert float(terms["codebook"]) == 0.0


def test_dead_codes_are_counted_and_restarted_on_encoder_outputs():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 2, usage_decay=0.5, dead_threshold=0.05, restart_every=10)
    vq.codebook.data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0], [-100.0, 50.0]])
    data = torch.rand(64, 2)  # near codes 0 and 1 only
    vq.train()
    for _ in range(9):
        _, _, terms = vq(data.reshape(64, 1, 1, 2).permute(0, 3, 1, 2))
    assert float(terms["dead_codes"]) == 2.0
    vq(data.reshape(64, 1, 1, 2).permute(0, 3, 1, 2))  # step 10: restart
    restarted = vq.codebook.detach()[2:]
    assert all(any(torch.equal(code, row) for row in data) for code in restarted)
    assert int((vq.usage < vq.dead_threshold).sum()) == 0


def test_vqvae_shapes_encode_decode_and_codes():
    model = small_vqvae()
    x = blobs(4)
    enc = model.encode(x)
    assert enc.mu.shape == (4, 16 * 8 * 8) and enc.logvar is None
    assert model.decode(enc.mu).shape == x.shape
    codes = model.codes(x)
    assert codes.shape == (4, 8, 8) and codes.dtype == torch.int64
    assert torch.allclose(model.decode_codes(codes), model.decode(enc.mu), atol=1e-6)
    with pytest.raises(ValueError, match="images must be"):
        model.encode(torch.rand(4, 1, 16, 16))
    with pytest.raises(ValueError, match="multiple of 4"):
        VQVAE(30, 1, 16)


def test_registry_builds_vqvae_from_config_params():
    model = build_model(ModelConfig(name="vqvae", image_size=32, latent_dim=8, params={"num_codes": 16, "ema": True}))
    assert isinstance(model, VQVAE) and model.num_codes == 16 and model.quantizer.ema


def test_galsim_psf_layer_is_unit_sum_and_matches_scipy_convolution():
    layer = PSFLayer({"kind": "galsim", "profile": "moffat", "fwhm": 0.7, "beta": 3.5, "pixel_scale": 0.2, "size": 15})
    drawn = galsim_psf_image("moffat", 0.7, 3.5, 0.2, 15)
    assert math.isclose(float(layer.psf.sum()), 1.0, rel_tol=1e-5)
    assert np.allclose(layer.psf.numpy(), drawn / drawn.sum(), atol=1e-7)
    x = blobs(2)
    out = layer(x)
    expected = np.stack([fftconvolve(img[0].numpy(), layer.psf.numpy(), mode="same") for img in x])
    assert np.allclose(out[:, 0].numpy(), expected, atol=1e-5)


def test_psf_from_fits_file_and_clear_errors(tmp_path):
    """The data layer reads PSF files; the layer is handed the image and reads none itself."""
    import fitsio
    import h5py

    from galhpc.checkpoint import assemble_model
    from galhpc.config import ModelConfig
    from galhpc.data.psf import read_psf

    psf = np.zeros((5, 5), np.float32)
    psf[2, 2], psf[2, 3] = 3.0, 1.0
    path = tmp_path / "psf.fits"
    fitsio.write(str(path), psf)
    layer = PSFLayer(str(path), read_psf(str(path)))
    assert np.allclose(layer.psf.numpy(), psf / 4)
    with pytest.raises(PSFError, match="models read no files"):
        PSFLayer(str(path))
    model = assemble_model(ModelConfig(name="vqvae", image_size=16, latent_dim=4, params={
        "num_codes": 4, "hidden": 8, "res_hidden": 4, "psf": str(path)}))
    assert np.allclose(model.psf_layer.psf.numpy(), psf / 4)
    with pytest.raises(PSFError, match="not found: .*missing.fits"):
        read_psf({"kind": "file", "path": str(tmp_path / "missing.fits")})
    bad = tmp_path / "bad.fits"
    fitsio.write(str(bad), np.full((5, 5), np.nan, np.float32))
    with pytest.raises(PSFError, match="bad.fits.*NaN"):
        PSFLayer(str(bad), read_psf(str(bad)))

    with h5py.File(tmp_path / "store.h5", "w") as f:
        f["psf"] = psf
        f["per_object"] = np.stack([psf, psf])
    spec = {"kind": "hdf5", "path": str(tmp_path / "store.h5")}
    assert np.allclose(PSFLayer(spec, read_psf(spec)).psf.numpy(), psf / 4)
    with pytest.raises(PSFError, match="store.h5:per_object .*kind 'store'"):
        read_psf({"kind": "hdf5", "path": str(tmp_path / "store.h5"), "dataset": "per_object"})
    with pytest.raises(PSFError, match="no dataset 'nope'"):
        read_psf({"kind": "hdf5", "path": str(tmp_path / "store.h5"), "dataset": "nope"})
    with pytest.raises(PSFError, match="kind"):
        PSFLayer({"kind": "nonsense"})
    with pytest.raises(PSFError, match="no 'psf' was given"):
        PSFLayer({"kind": "store"})(blobs(1))


def test_psf_model_loss_compares_the_convolved_decoder_output_with_the_input():
    model = small_vqvae(psf={"kind": "galsim", "fwhm": 0.6, "size": 11})
    x = blobs(3)
    out = model.loss({"image": x}, StepState())
    deconvolved = model.decode(model.encode(x).mu)
    convolved = torch.from_numpy(
        np.stack([fftconvolve(d[0].detach().numpy(), model.psf_layer.psf.numpy(), mode="same") for d in deconvolved])
    )
    assert torch.allclose(out.recon[:, 0].detach(), convolved, atol=1e-5)
    assert torch.allclose(out.terms["recon"], ((out.recon - x) ** 2).mean())
    # per-object PSFs from the batch (kind "store"); a delta PSF leaves the output unchanged
    per_object = small_vqvae(psf={"kind": "store"})
    delta = torch.zeros(3, 5, 5)
    delta[:, 2, 2] = 2.0
    out = per_object.loss({"image": x, "psf": delta}, StepState())
    assert torch.allclose(out.recon, per_object.decode(per_object.encode(x).mu), atol=1e-6)


@pytest.mark.parametrize("psf", [None, {"kind": "galsim", "fwhm": 0.6, "size": 9}])
def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path, psf):
    cfg = RunConfig()
    cfg.model = ModelConfig(name="vqvae", image_size=32, latent_dim=16,
                            params={"num_codes": 16, "hidden": 32, "res_hidden": 8, "psf": psf})
    model = build_model(cfg.model)
    path = save_checkpoint(tmp_path / "ckpt.pt", {"model_name": "vqvae", "model_state": model.state_dict(),
                                                  "config": cfg.to_yaml()})
    loaded = load_model(path, expect="vqvae")
    model.eval()
    x = blobs(2)
    assert torch.equal(loaded.codes(x), model.codes(x))
    assert torch.allclose(loaded.loss({"image": x}, StepState()).recon, model.loss({"image": x}, StepState()).recon)


def train_steps(model, images: torch.Tensor, steps: int, lr: float = 1e-3, batch: int = 32):
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        pick = torch.randint(0, len(images), (batch,), generator=g)
        b = {"image": images[pick]}
        out = model.loss(b, StepState())
        opt.zero_grad()
        out.total.backward()
        opt.step()
    model.eval()
    return model


@pytest.mark.parametrize("ema", [False, True])
def test_vqvae_learns_to_reconstruct_far_better_than_the_mean_image(ema):
    torch.manual_seed(0)
    train, held_out = blobs(384, seed=1), blobs(128, seed=2)
    model = train_steps(small_vqvae(ema=ema), train, steps=150)
    with torch.no_grad():
        out = model.loss({"image": held_out}, StepState())
    baseline = float(((held_out - train.mean(0)) ** 2).mean())
    assert float(out.terms["recon"]) < 0.2 * baseline
    assert float(out.terms["perplexity"]) > 3.0  # more than a couple of codes in use


@pytest.mark.slow
def test_psf_layer_learns_the_deconvolved_galaxy():
    """Observed = truth ⊛ PSF: the pre-PSF output must be closer to the truth than the observation."""
    torch.manual_seed(0)
    spec = {"kind": "galsim", "profile": "moffat", "fwhm": 0.8, "pixel_scale": 0.2, "size": 15}
    truth = blobs(512, seed=3)
    observed = PSFLayer(spec)(truth)
    model = VQVAE(32, 1, 16, num_codes=64, hidden=32, res_hidden=8, psf=spec, tikhonov=0.1)
    train_steps(model, observed[:448], steps=400)
    with torch.no_grad():
        deconvolved = model.decode(model.encode(observed[448:]).mu)
    mse_model = float(((deconvolved - truth[448:]) ** 2).mean())
    mse_observed = float(((observed[448:] - truth[448:]) ** 2).mean())
    assert mse_model < 0.8 * mse_observed


def _ema_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(rank)  # different restart picks per rank: the broadcast must unify them
    from galhpc.train.distributed import TorchDistributedBackend

    vq = VectorQuantizer(3, 2, ema=True, decay=0.0, eps=0.0, usage_decay=0.0, dead_threshold=0.5,
                         restart_every=1)
    vq.group = TorchDistributedBackend(device="cpu").world  # what the trainer hands the model
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-50.0, -50.0]]))
    points = torch.tensor([[1.0, 0.0], [9.0, 9.0]]) if rank == 0 else torch.tensor([[0.0, 3.0], [12.0, 10.0]])
    vq.train()
    vq(points.reshape(2, 1, 1, 2).permute(0, 3, 1, 2))
    torch.save(vq.codebook, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_ema_codebook_and_restarts_agree_across_ranks(tmp_path):
    """Two gloo ranks with different data: one codebook, the EMA of all ranks' vectors."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ema_rank, args=(2, port, str(tmp_path)), nprocs=2)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(a, b)
    assert torch.allclose(a[:2], torch.tensor([[0.5, 1.5], [10.5, 9.5]]))
    # the dead code was restarted on one of rank 0's vectors (broadcast to every rank)
    assert any(torch.equal(a[2], p) for p in torch.tensor([[1.0, 0.0], [9.0, 9.0]]))


def test_quantizer_agrees_through_the_group_it_is_handed():
    """The model is handed its process group (the trainer passes its backend's world); no global lookup."""

    class Doubling:  # as if a second rank had seen the same batch
        def __init__(self):
            self.calls = []

        def allreduce_sum(self, t):
            self.calls.append("allreduce_sum")
            return t * 2

        def broadcast_object(self, t, root=0):
            self.calls.append("broadcast_object")
            return t

    torch.manual_seed(0)
    for restart_every, calls in ((0, ["allreduce_sum"] * 2), (1, ["allreduce_sum"] * 2 + ["broadcast_object"])):
        model = VQVAE(16, 1, 4, num_codes=8, hidden=8, res_hidden=4, ema=True, restart_every=restart_every)
        collective = Doubling()
        model.use_group(collective)
        model.train()
        model.loss({"image": torch.rand(4, 1, 16, 16)}, StepState())
        assert collective.calls == calls
        if not restart_every:  # 4 images x 4x4 code vectors, counted twice: the "other rank" too
            assert float(model.quantizer.usage.sum()) == pytest.approx(0.01 * 2 * 4 * 16)


def test_unstretch_output_inverts_the_input_stretch_and_needs_one():
    """output 'unstretch': the decoder draws in the encoder's s·arcsinh(x/s) space, so its
    output is s·sinh(y/s) (checked against numpy), finite for any y, and refused without a stretch."""
    model = small_vqvae(stretch=0.5, output="unstretch")
    x = np.linspace(-3.0, 60.0, 101)
    stretched = torch.as_tensor(0.5 * np.arcsinh(x / 0.5), dtype=torch.float64)
    np.testing.assert_allclose(model.output(stretched).numpy(), x, rtol=1e-9, atol=1e-12)
    assert torch.isfinite(model.output(torch.tensor([1e4, -1e4]))).all()
    img = torch.rand(2, 1, 32, 32)
    z = model.encode(img).mu
    raw = model.decoder(z.reshape(2, 16, 8, 8))
    torch.testing.assert_close(model.decode(z), 0.5 * torch.sinh(raw / 0.5))
    with pytest.raises(ValueError, match="unstretch"):
        small_vqvae(output="unstretch")


def test_downsample_2_gives_a_code_map_of_half_the_stamp_side():
    """downsample 2: one code per 2x2 pixels (H/2 x W/2 map, D·H/2·W/2 features in μ), decoded
    back to the stamp's size; only 2 and 4 are accepted, and the stamp must divide by it."""
    model = small_vqvae(downsample=2)
    x = blobs(3)
    assert model.codes(x).shape == (3, 16, 16)
    z = model.encode(x).mu
    assert z.shape == (3, 16 * 16 * 16)
    assert model.decode(z).shape == (3, 1, 32, 32)
    assert model.rebuild_params()["downsample"] == 2
    assert small_vqvae().codes(x).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="downsample"):
        small_vqvae(downsample=3)
    with pytest.raises(ValueError, match="multiple of 4"):
        VQVAE(30, 1, 4, num_codes=8, hidden=8, res_hidden=4, downsample=4)
