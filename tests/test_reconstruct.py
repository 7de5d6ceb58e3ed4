"""`GalaxyModel.reconstruct`: reconstruction errors compare like with like.

The hook is the reconstruction of x in x's own space, as each model's loss compares it:
PSF ⊛ decode(μ) for a VQ-VAE with a PSF layer, the per-stamp normalisation undone for the
star/galaxy models, decode(encode(x).μ) otherwise; the trainer's `holdout_mse`, the
catalogue's `recon_mse` and the report's reconstructions are measured on it.
"""

import csv

import h5py
import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve
from test_vqvae import blobs

from galhpc.config import ModelConfig, RunConfig, TrainConfig
from galhpc.data.sources import Block
from galhpc.data.store import StoreReader, StoreWriter
from galhpc.formats.catalog import Shard
from galhpc.inference.encode import EncodeJob
from galhpc.inference.options import EncodeOptions
from galhpc.models.base import StepState
from galhpc.models.convae import ConvAE
from galhpc.models.hvae import HierarchicalAEVAE, PeakedVAE, denormalise_stamps, normalise_stamps
from galhpc.models.pixelcnn import VQVAEPrior
from galhpc.models.psf_layer import PSFError
from galhpc.models.segment import SegmentationAE
from galhpc.models.vade import AstroVaDEr
from galhpc.models.vae import ConvVAE, GaussianVAE
from galhpc.models.vqvae import VQVAE
from galhpc.report import model_calls
from galhpc.train.trainer import holdout_mse, train

torch.set_num_threads(1)

PSF_SPEC = {"kind": "galsim", "fwhm": 1.2, "size": 11}


def psf_vqvae(psf=PSF_SPEC) -> VQVAE:
    from galhpc.data.psf import read_psf

    torch.manual_seed(0)
    model = VQVAE(32, 1, 8, num_codes=16, hidden=16, res_hidden=4, psf=psf, output="softplus",
                  psf_image=read_psf(psf))
    return model.eval()


def convolve(images: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """scipy reference: each (C, H, W) image convolved with its (h, w) PSF, 'same' window."""
    psfs = psf if psf.ndim == 3 else np.broadcast_to(psf, (len(images), *psf.shape))
    return np.stack([[fftconvolve(band, p / p.sum(), mode="same") for band in img]
                     for img, p in zip(images, psfs, strict=False)])


# -- the hook, model by model ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: ConvVAE(32, 1, 4, filters=[8, 8, 8]),
    lambda: GaussianVAE(32, 1, 4, filters=[8, 8, 8]),
    lambda: AstroVaDEr(32, 1, 3, n_clusters=2, filters=[4, 4, 4], kernels=[3, 3, 3]),
    lambda: ConvAE(32, 1, 8, filters=[8, 8, 8]),
    lambda: VQVAE(32, 1, 8, num_codes=16, hidden=16, res_hidden=4),
], ids=["vae", "gaussian_vae", "astrovader", "convae", "vqvae_no_psf"])
def test_default_is_decode_of_the_posterior_mean(make):
    torch.manual_seed(0)
    model = make().eval()
    x = blobs(4)
    with torch.no_grad():
        expected = model.decode(model.encode(x).mu)
        assert torch.equal(model.reconstruct(x), expected)
        assert torch.equal(model.reconstruct(x, encoding=model.encode(x)), expected)
    assert model.reconstruct_columns == ()


def test_psf_vqvae_reconstruction_is_the_psf_convolved_decoder_output():
    model = psf_vqvae()
    x = blobs(4)
    with torch.no_grad():
        clean = model.decode(model.encode(x).mu)
        recon = model.reconstruct(x)
        out = model.loss({"image": x}, StepState())
    expected = convolve(clean.numpy(), model.psf_layer.psf.numpy())
    assert np.allclose(recon.numpy(), expected, atol=1e-5)
    # it is what the loss compares with x, and not the clean (pre-PSF) galaxy
    assert torch.allclose(recon, out.recon, atol=1e-6)
    assert float((recon - clean).abs().max()) > 0.05 * float(clean.abs().max())
    # decode keeps meaning the clean galaxy
    assert torch.equal(model.decode(model.encode(x).mu), clean)


def test_per_object_psfs_come_from_the_columns():
    model = psf_vqvae({"kind": "store"})
    assert model.batch_columns == ("psf",) and model.reconstruct_columns == ("psf",)
    x = blobs(3)
    psf = np.zeros((3, 7, 7), np.float32)  # a delta, a 3x3 and a 5x5 box
    for i, w in enumerate((1, 3, 5)):
        psf[i, 3 - w // 2 : 4 + w // 2, 3 - w // 2 : 4 + w // 2] = 1.0
    with torch.no_grad():
        clean = model.decode(model.encode(x).mu).numpy()
        recon = model.reconstruct(x, {"psf": torch.from_numpy(psf), "image": x}).numpy()
        with pytest.raises(PSFError, match="no 'psf' was given"):
            model.reconstruct(x)
    assert np.allclose(recon, convolve(clean, psf), atol=1e-5)
    assert np.allclose(recon[0], clean[0], atol=1e-6) and not np.allclose(recon[2], clean[2], atol=1e-3)


def test_prior_reconstructs_with_its_embedded_vqvae():
    vqvae = psf_vqvae()
    prior = VQVAEPrior(32, 1, 8, hidden=8, layers=2, kernel=3)
    prior._attach(vqvae, "vqvae")
    x = blobs(2)
    with torch.no_grad():
        assert torch.equal(prior.reconstruct(x), vqvae.reconstruct(x))
        assert not torch.allclose(prior.reconstruct(x), prior.decode(prior.encode(x).mu), atol=1e-3)


def stamps(n: int = 6, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Positive 5-band stamps in flux units with very different brightnesses."""
    g = torch.Generator().manual_seed(seed)
    flux = 10 ** (torch.rand(n, 1, 1, 1, generator=g) * 3)
    return flux * (blobs(n, size, seed).expand(n, 5, size, size) + 0.05 * torch.rand(n, 5, size, size, generator=g))


@pytest.mark.parametrize("make", [
    lambda: HierarchicalAEVAE(16, 5, 4, widths=[8, 8]),
    lambda: PeakedVAE(16, 5, 4, widths=[8, 8], peaked_dims=1),
    lambda: SegmentationAE(16, 5, 8, widths=[4, 8]),
], ids=["hvae", "peaked_vae", "segae"])
def test_star_galaxy_reconstructions_are_in_the_input_flux_units(make):
    torch.manual_seed(0)
    model = make()
    model.train()
    model.loss({"image": stamps(16, seed=3)}, StepState())  # BatchNorm running statistics
    model.eval()
    x = stamps()
    with torch.no_grad():
        recon = model.reconstruct(x)
        # scaling a stamp by c > 0 scales its reconstruction by c (the normalisation is undone)
        scale = recon.flatten(1).abs().amax(1).view(-1, 1, 1, 1)  # float32 round-off, relative to each stamp
        assert ((model.reconstruct(7.5 * x) - 7.5 * recon).abs() / (7.5 * scale)).max() < 1e-5
        # normalised with the input's own peak, it is the loss's reconstruction: same error as the loss
        out = model.loss({"image": x}, StepState())
        renormalised = torch.asinh(10.0 * recon / x.flatten(1).amax(1).view(-1, 1, 1, 1)) / np.arcsinh(10.0)
        # a PeakedVAE's loss reconstructs a posterior sample: compare at z = μ
        loss_recon = model.decode(model.encode(x).mu) if isinstance(model, PeakedVAE) else out.recon
        assert torch.allclose(renormalised, loss_recon, atol=1e-4)


def test_hvae_reconstruction_is_the_autoencoder_path_the_loss_measures():
    torch.manual_seed(0)
    model = HierarchicalAEVAE(16, 5, 4, widths=[8, 8]).eval()
    x = stamps()
    with torch.no_grad():
        out = model.loss({"image": x}, StepState())
        recon = model.reconstruct(x)
        renormalised = torch.asinh(10.0 * recon / x.flatten(1).amax(1).view(-1, 1, 1, 1)) / np.arcsinh(10.0)
        ae_mse = (renormalised - normalise_stamps(x, 10.0)).pow(2).flatten(1).sum(1).mean()
        assert torch.allclose(ae_mse, out.terms["ae_mse"], rtol=1e-4)
        # not the image through the small VAE latent
        through_vae = denormalise_stamps(model.decode(model.encode(x).mu), x, 10.0)
        assert not torch.allclose(recon, through_vae, rtol=1e-2)


def test_denormalise_inverts_normalise():
    x = stamps()
    assert torch.allclose(denormalise_stamps(normalise_stamps(x, 10.0), x, 10.0), x, rtol=1e-4, atol=1e-4)


# -- the three callers -----------------------------------------------------------------------------------


def test_holdout_mse_is_measured_in_observed_space():
    model = psf_vqvae()
    batches = [{"image": blobs(3, seed=1)}, {"image": blobs(2, seed=2)}]
    sse, count = holdout_mse(model, batches, None)
    psf = model.psf_layer.psf.numpy()
    expected, clean_sse = 0.0, 0.0
    with torch.no_grad():
        for b in batches:
            x = b["image"]
            clean = model.decode(model.encode(x).mu).numpy()
            expected += float(((convolve(clean, psf) - x.numpy()) ** 2).sum())
            clean_sse += float(((clean - x.numpy()) ** 2).sum())
    assert count == 5 * 32 * 32
    assert sse == pytest.approx(expected, rel=1e-4)
    assert abs(sse - clean_sse) > 1e-3 * clean_sse  # the old number (clean galaxy vs input) differs
    # only `max_batches` batches
    assert holdout_mse(model, batches, 1)[1] == 3 * 32 * 32


def write_psf_store(path, n=48, per_object=False):
    x = blobs(n, seed=5).numpy()[:, 0]
    psf = np.zeros((7, 7), np.float32)
    psf[2:5, 2:5] = 1.0
    block = Block(images=x, object_id=np.arange(100, 100 + n, dtype=np.int64),
                  psf=np.broadcast_to(psf, (n, 7, 7)).copy() if per_object else psf)
    with StoreWriter(path, "prep: {}\n", chunk_rows=16) as writer:
        writer.append(block)
    return path, x[:, None], psf


def one_component_job(model, store):
    job = EncodeJob(model, StoreReader(store), EncodeOptions(batch_size=10), torch.device("cpu"))
    job.gmm = {"log_pi": torch.zeros(1), "mu": torch.zeros(1, 8 * 64), "var": torch.ones(1, 8 * 64)}
    return job


@pytest.mark.parametrize("per_object", [False, True], ids=["fixed_psf", "per_object_psf"])
def test_catalogue_recon_mse_is_measured_in_observed_space(tmp_path, per_object):
    store, images, psf = write_psf_store(tmp_path / "store.h5", per_object=per_object)
    model = psf_vqvae({"kind": "store"} if per_object else {"kind": "hdf5", "path": str(store)})
    job = one_component_job(model, store)
    try:
        parts = dict(job.batches(Shard(0, 5, 30)))
    finally:
        job.reader.close()
    recon_mse = np.concatenate([parts[k]["recon_mse"] for k in sorted(parts)])
    with torch.no_grad():
        x = torch.from_numpy(images[5:30])
        clean = model.decode(model.encode(x).mu).numpy()
    expected = ((convolve(clean, psf) - images[5:30]) ** 2).reshape(25, -1).mean(axis=1)
    assert np.allclose(recon_mse, expected, rtol=1e-4, atol=1e-9)
    assert not np.allclose(recon_mse, ((clean - images[5:30]) ** 2).reshape(25, -1).mean(axis=1), rtol=1e-2)


def test_catalogue_refuses_a_store_without_the_per_object_psf(tmp_path):
    from galhpc.runtime.errors import DataError

    store = tmp_path / "nopsf.h5"
    with StoreWriter(store, "prep: {}\n", chunk_rows=16) as writer:
        writer.append(Block(images=blobs(8).numpy()[:, 0], object_id=np.arange(8, dtype=np.int64)))
    job = one_component_job(psf_vqvae({"kind": "store"}), store)
    try:
        with pytest.raises(DataError, match="'psf'"):
            list(job.batches(Shard(0, 0, 8)))
    finally:
        job.reader.close()


def test_report_reconstructions_use_the_hook():
    model = psf_vqvae()
    x = blobs(5)
    with torch.no_grad():
        expected = model.reconstruct(x).numpy()
    assert np.allclose(model_calls.reconstruct(model, x.numpy(), batch_size=2), expected, atol=1e-6)
    per_object = psf_vqvae({"kind": "store"})
    psf = np.zeros((5, 5, 5), np.float32)
    psf[:, 1:4, 1:4] = 1.0
    with torch.no_grad():
        expected = per_object.reconstruct(x, {"psf": torch.from_numpy(psf)}).numpy()
    assert np.allclose(model_calls.reconstruct(per_object, x.numpy(), 2, {"psf": psf}), expected, atol=1e-6)


def test_report_store_columns_reads_per_object_and_shared_psfs(tmp_path):
    from galhpc.report.heldout import store_columns

    store, _, psf = write_psf_store(tmp_path / "per_object.h5", n=20, per_object=True)
    with h5py.File(store, "a") as f:
        f["psf"][7] = 2 * psf
    cols = store_columns(store, ("psf",), np.array([7, 3]))
    assert np.array_equal(cols["psf"], np.stack([2 * psf, psf]))
    shared, _, psf = write_psf_store(tmp_path / "shared.h5", n=20)
    assert np.array_equal(store_columns(shared, ("psf",), np.array([4, 1, 2]))["psf"], np.stack([psf] * 3))


def test_training_logs_holdout_mse_in_observed_space(tmp_path):
    """End to end: a store-PSF VQ-VAE trains (the trainer hands it per-object PSFs) and its
    logged holdout_mse is the observed-space error of the saved model on the holdout rows."""
    from galhpc.checkpoint import load_model
    from galhpc.data.loader import StoreLoader

    store, _, _ = write_psf_store(tmp_path / "store.h5", n=64, per_object=True)
    cfg = RunConfig(
        model=ModelConfig(name="vqvae", image_size=32, latent_dim=8,
                          params={"num_codes": 16, "hidden": 16, "res_hidden": 4, "psf": {"kind": "store"},
                                  "output": "softplus"}),
        train=TrainConfig(store=str(store), out_dir=str(tmp_path / "run"), epochs=1, batch_size=16, threads=1,
                          holdout_fraction=0.25, backend="single", device="cpu", lr=1e-3, lr_final=1e-4),
    )
    train(cfg)
    with open(tmp_path / "run" / "losses.csv") as f:
        logged = float(list(csv.DictReader(f))[-1]["holdout_mse"])
    model = load_model(tmp_path / "run" / "ckpt.pt")
    model.eval()
    loader = StoreLoader(store, 16, split="holdout", holdout_fraction=0.25, seed=cfg.train.seed, shuffle=False,
                         drop_last=False, label_columns=["psf"])
    sse, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            x = batch["image"]
            clean = model.decode(model.encode(x).mu).numpy()
            sse += float(((convolve(clean, batch["psf"].numpy()) - x.numpy()) ** 2).sum())
            count += x.numel()
    assert logged == pytest.approx(sse / count, rel=1e-4)


def test_denormalising_a_diverged_output_stays_finite():
    x = torch.rand(2, 1, 8, 8, dtype=torch.float32) + 0.1
    y = torch.tensor([-1e3, -30.0, 0.5, 30.0, 1e3]).repeat(2, 1, 8, 1)[..., :8, :5]
    out = denormalise_stamps(y, x, 10.0)
    assert torch.isfinite(out).all()
    # inside the finite range it is still the exact inverse
    torch.testing.assert_close(denormalise_stamps(normalise_stamps(x, 10.0), x, 10.0), x)
