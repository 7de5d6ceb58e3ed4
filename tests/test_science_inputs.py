"""Preprocessing that keeps the physics, and models whose input carries no nuisance.

- every intensity step stores its per-object coefficients, so stored pixels map back to
  input units, and `noise_sigma` is the sky σ in stored units;
- flux normalisation does not inflate noise (no per-image min-max: the sky stays at 0);
- size-scaled cutouts (box of k x R90), for FITS-like blocks and simulated sources;
- position angles, rotations and border noise of galhpc.models.nuisance against GalSim
  and the numpy recipes; orient models encode a rotated galaxy to the same latent.
"""

import math

import numpy as np
import pytest
import torch

from galhpc.config import ConfigError, PrepConfig, SourceConfig
from galhpc.data import preprocess as pp
from galhpc.data.prep import check_prep_config, process_block
from galhpc.data.sources import Block, DataError
from galhpc.models.nuisance import Canonicaliser, border_noise, position_angle, rotate


def _galaxies(n=6, size=48, noise=2.0, seed=0):
    """Elliptical Gaussians of different fluxes and sizes plus white noise, in counts."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2
    fluxes = np.geomspace(500, 20000, n)
    widths = np.linspace(2.0, 4.0, n)
    imgs = np.stack([f / (2 * np.pi * w * w * 0.6) * np.exp(-0.5 * ((x / w) ** 2 + (y / (0.6 * w)) ** 2))
                     for f, w in zip(fluxes, widths, strict=False)])
    noisy = imgs + rng.normal(0, noise, imgs.shape)
    return Block(noisy.astype(np.float32), np.arange(n, dtype=np.int64), {"w": widths},
                 truth=imgs.astype(np.float32)), fluxes


def test_flux_step_stores_coefficients_that_map_back_and_keeps_the_sky_at_zero():
    block, fluxes = _galaxies()
    prep = PrepConfig(image_size=48, recipe=["flux"], flux_scale=100.0)
    out = process_block(block, prep, "s")
    flux_norm, sky = out.labels["flux_norm"], out.labels["sky"]
    # the sky is the sigma-clipped median of the border frame: 0 here within its error
    # (1.25 σ / sqrt(frame pixels) for a median of Gaussian noise; frame of width prep.border)
    frame = 48 * 48 - (48 - 2 * prep.border) ** 2
    assert np.all(np.abs(sky) < 4 * 1.25 * 2.0 / np.sqrt(frame))
    # the sum of the sky-subtracted pixels (the flux), floored at 5 σ of that sum's noise for the faintest
    floor = pp.FLUX_FLOOR_SIGMA * out.labels["border_noise"] * 48
    expect = block.images.sum(axis=(1, 2)) - sky * 48 * 48
    np.testing.assert_allclose(flux_norm, np.maximum(expect, floor), rtol=1e-5)
    assert np.all(flux_norm[1:] > floor[1:])
    # the flux of the bright ones within the sky estimate's error spread over the stamp
    np.testing.assert_allclose(flux_norm[-2:], fluxes[-2:], rtol=0.05)
    back = out.images * flux_norm[:, None, None] / prep.flux_scale + sky[:, None, None]
    np.testing.assert_allclose(back, block.images, rtol=1e-4, atol=1e-3)
    # the noiseless truth has no sky: it is only scaled
    np.testing.assert_allclose(out.truth * flux_norm[:, None, None] / prep.flux_scale, block.truth, rtol=1e-4,
                               atol=1e-3)
    # the sky's level is 0 whatever the S/N (per-image min-max puts it at ~3σ/(peak + 3σ))
    top, bottom = out.images[:, :6, :].reshape(len(out), -1), out.images[:, -6:, :].reshape(len(out), -1)
    border = np.concatenate([top, bottom], 1)
    assert np.all(np.abs(np.median(border, axis=1)) < 4 * 1.25 * out.labels["noise_sigma"] / np.sqrt(frame) + 1e-6)
    # noise σ in stored units: the measured border noise carried through the scaling
    np.testing.assert_allclose(out.labels["noise_sigma"], out.labels["border_noise"] * 100.0 / flux_norm, rtol=1e-6)
    measured = [pp.border_noise(img) for img in out.images]
    np.testing.assert_allclose(out.labels["noise_sigma"], measured, rtol=1e-4)


def test_minmax_and_arcsinh_coefficients_and_noise():
    block, _ = _galaxies(n=4)
    prep = PrepConfig(image_size=48, recipe=["arcsinh", "minmax"], stretch_scale=50.0)
    out = process_block(block, prep, "s")
    offset, scale = out.labels["minmax_offset"], out.labels["minmax_scale"]
    back = np.sinh(out.images / scale[:, None, None] + offset[:, None, None]) * prep.stretch_scale
    np.testing.assert_allclose(back, block.images, rtol=1e-3, atol=1e-2)
    # arcsinh linearised at the sky: σ / s, then x scale
    np.testing.assert_allclose(out.labels["noise_sigma"], out.labels["border_noise"] / 50.0 * scale, rtol=1e-6)


def test_flux_floor_keeps_empty_stamps_finite():
    rng = np.random.default_rng(3)
    empty = rng.normal(0, 1.0, (1, 32, 32)).astype(np.float32)
    out = process_block(Block(empty, np.arange(1)), PrepConfig(image_size=32, recipe=["flux"]), "s")
    assert out.labels["flux_norm"][0] == pytest.approx(pp.FLUX_FLOOR_SIGMA * out.labels["border_noise"][0] * 32)
    assert np.all(np.isfinite(out.images)) and np.abs(out.images).max() < 100.0


def test_size_scaled_crop_box_follows_r90_and_rejects_missing_radii():
    block, _ = _galaxies(n=4, size=64)
    block.labels["r90"] = np.array([5.0, 10.0, np.nan, 20.0])
    prep = PrepConfig(image_size=16, recipe=["crop", "resize", "flux"], crop_r90=2.0, on_error="skip")
    out = process_block(block, prep, "cutouts.fits")
    np.testing.assert_array_equal(out.object_id, [0, 1, 3])
    assert out.rejects[0].object == "object_id 2" and "r90" in out.rejects[0].reason
    np.testing.assert_allclose(out.labels["resample_factor"], [10 / 16, 20 / 16, 40 / 16])
    expect = pp.resize_area(pp.centre_crop(block.images[1], 20), 16)
    back = out.images[1] * out.labels["flux_norm"][1] / 100.0 + out.labels["sky"][1]
    np.testing.assert_allclose(back, expect, rtol=1e-4, atol=1e-3)
    with pytest.raises(DataError, match="r90"):
        process_block(block, PrepConfig(image_size=16, recipe=["crop", "resize"], crop_r90=2.0), "cutouts.fits")
    del block.labels["r90"]
    with pytest.raises(DataError, match="needs the label column 'r90'"):
        process_block(block, prep, "cutouts.fits")
    with pytest.raises(ConfigError, match="crop_r90"):
        check_prep_config(PrepConfig(crop_r90=-1.0))


def test_size_scaled_simulated_stamps_span_the_same_number_of_r90():
    from galhpc.data.synth import SimOptions, read_source

    prep = PrepConfig(image_size=32, recipe=[], workers=1, chunk_rows=64)
    opts = {"size_scaled": 3.0, "noise_sigma": 0.01, "companion_probability": 0.0, "store_psf": True}
    (block,) = list(read_source(SourceConfig(kind="galsim", n=40, seed=5, options=opts), prep))
    scale = block.labels["pixel_scale"]
    np.testing.assert_allclose(scale, 3.0 * block.labels["r90"] / 32, rtol=1e-9)
    assert scale.max() / scale.min() > 1.5 and block.psf.shape == (40, 25, 25)
    # the fraction of light inside the central disc of radius R90 / 2 px... is the same for
    # big and small galaxies when stamps are size-scaled: measure the 90 % light radius in pixels
    y, x = np.mgrid[0:32, 0:32] - 15.5
    r = np.hypot(x, y)
    r90_px = []
    for img in block.images:
        order = np.argsort(r, axis=None)
        cum = np.cumsum(img.ravel()[order]) / img.sum()
        r90_px.append(r.ravel()[order][np.searchsorted(cum, 0.9)])
    assert np.std(r90_px) / np.mean(r90_px) < 0.2  # fixed pixel scale: sizes spread 2-3x
    fixed, = list(read_source(SourceConfig(kind="galsim", n=40, seed=5, options={**opts, "size_scaled": None}), prep))
    assert SimOptions().size_scaled is None and np.all(fixed.labels["pixel_scale"] == 0.2)


def _gaussian_images(angles_deg, size=32, q=0.4, sigma=2.0):
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2
    out = []
    for a in np.radians(angles_deg):
        u = x * np.cos(a) + y * np.sin(a)
        v = -x * np.sin(a) + y * np.cos(a)
        out.append(np.exp(-0.5 * ((u / sigma) ** 2 + (v / (q * sigma)) ** 2)))
    return torch.tensor(np.stack(out)[:, None], dtype=torch.float32)


def test_position_angle_and_rotation():
    angles = [20.0, -50.0, 80.0, 0.0]
    x = _gaussian_images(angles, q=0.5, sigma=2.5)
    np.testing.assert_allclose(np.degrees(position_angle(x).numpy()), angles, atol=0.2)
    turned = rotate(x, torch.full((4,), math.radians(30.0)))
    expect = (np.array(angles) + 30.0 + 90.0) % 180.0 - 90.0
    np.testing.assert_allclose(np.degrees(position_angle(turned).numpy()), expect, atol=0.5)
    canonical = rotate(x, -position_angle(x))
    np.testing.assert_allclose(position_angle(canonical).numpy(), 0.0, atol=0.01)
    # canonical images of one galaxy at 4 angles agree to interpolation error
    assert (canonical - canonical[3:4]).abs().max() < 0.1 * canonical.max()  # bilinear, twice


def test_position_angle_agrees_with_galsim():
    import galsim  # a required dependency (requirements.txt): its absence is an error, not a skip

    ims = [galsim.Exponential(half_light_radius=0.8).shear(q=0.5, beta=b * galsim.degrees)
           .drawImage(nx=32, ny=32, scale=0.2).array for b in (10.0, 65.0, -35.0)]
    theta = position_angle(torch.tensor(np.stack(ims)[:, None]))
    np.testing.assert_allclose(np.degrees(theta.numpy()), [10.0, 65.0, -35.0], atol=0.5)


def test_border_noise_matches_the_numpy_recipe():
    rng = np.random.default_rng(0)
    imgs = rng.normal(0, 1, (5, 1, 32, 32)) * np.array([0.1, 0.5, 1, 2, 4])[:, None, None, None]
    got = border_noise(torch.tensor(imgs, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, [pp.border_noise(i[0]) for i in imgs], rtol=1e-5)


def test_noise_matching_gives_every_input_the_same_sky():
    rng = np.random.default_rng(1)
    sigmas = np.array([0.01, 0.05, 0.2, 0.29])
    x = torch.tensor(rng.normal(0, 1, (4, 1, 32, 32)) * sigmas[:, None, None, None], dtype=torch.float32)
    canon = Canonicaliser(match_sigma=0.3, image_shape=(1, 32, 32)).eval()
    x_in, theta = canon(x)
    assert theta is None
    # 0.3 to the accuracy of the border estimate (the least noisy of 12 patches: biased low)
    np.testing.assert_allclose(x_in.flatten(1).std(dim=1).numpy(), 0.3, rtol=0.15)
    again, _ = canon(x)
    assert torch.equal(again, x_in)  # inference: a fixed noise field, deterministic
    train_in, _ = canon.train()(x)
    assert not torch.equal(train_in, x_in)


@pytest.mark.parametrize("name,params", [
    ("astrovader", {"n_clusters": 2, "filters": [8, 8], "kernels": [3, 3], "recon": "gaussian", "sigma": 0.1}),
    ("convae", {"filters": [8, 8, 8]}),
    ("vqvae", {"num_codes": 16, "hidden": 16, "res_hidden": 8, "n_res": 1}),
])
def test_orient_models_encode_a_rotated_galaxy_to_the_same_latent(name, params):
    from galhpc.config import ModelConfig
    from galhpc.models import build_model

    torch.manual_seed(0)
    x = _gaussian_images([10.0, 55.0, -70.0], q=0.5) * 5
    latents = {}
    for orient in (False, True):
        model = build_model(ModelConfig(name=name, image_size=32, latent_dim=6,
                                        params={**params, "orient": orient})).eval()
        with torch.no_grad():
            enc = model.encode(x)
            latents[orient] = enc.mu
            if orient:
                # the decoder draws its disc in the canonical frame, and the pose turns it to each input's angle
                np.testing.assert_allclose(enc.pose.numpy(), position_angle(x).numpy())
                out = model.reconstruct(x, encoding=enc)
                canonical = model.decode(enc.mu)
                disc = model.canon.window
                torch.testing.assert_close(out, rotate(canonical * disc, enc.pose, padding="zeros"))
                assert float(out[..., 0, 0].abs().max()) == 0.0  # no corner drawn from outside the stamp
    spread = lambda mu: float((mu - mu.mean(0)).norm(dim=1).max() / mu.norm(dim=1).mean())  # noqa: E731
    assert spread(latents[True]) < 0.15 and spread(latents[True]) < 0.3 * spread(latents[False])


def test_impossible_model_params_are_config_errors_naming_the_model():
    from galhpc.config import ModelConfig
    from galhpc.models import build_model
    from galhpc.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="model 'astrovader': .*recon 'l1'"):
        build_model(ModelConfig(name="astrovader", image_size=32, params={"recon": "l1"}))
    with pytest.raises(ConfigError, match="model 'convae': .*match_sigma must be > 0"):
        build_model(ModelConfig(name="convae", image_size=32, params={"match_sigma": -1.0}))
    with pytest.raises(ConfigError, match="model 'vae': .*unexpected keyword"):
        build_model(ModelConfig(name="vae", image_size=32, params={"orient": True}))


@pytest.mark.parametrize("name,params,bad", [
    ("convae", {"filters": [8, 8, 8, 8]}, "filters"),
    ("convae", {"filters": [8, 8]}, None),
    ("astrovader", {"filters": [8, 8, 8, 8], "kernels": [3, 3, 3, 3]}, "filters"),
    ("vae", {"filters": [8, 8, 8, 8]}, "filters"),
    ("segae", {"widths": [8, 8, 8, 8, 8]}, "widths"),
    ("hvae", {"widths": [8, 8, 8, 8]}, "widths"),
])
def test_model_params_are_checked_against_the_image_size_at_build(name, params, bad):
    """A ConvAE with other than three filters failed only at the first batch (mat1 and mat2
    shapes cannot be multiplied); now every model refuses, at build time, params that do
    not fit the image size, in one line naming the param, and builds those that do."""
    from galhpc.config import ModelConfig
    from galhpc.models import build_model
    from galhpc.runtime.errors import ConfigError

    cfg = ModelConfig(name=name, image_size=24, latent_dim=4, params=params)
    if bad is not None:
        with pytest.raises(ConfigError, match=f"model '{name}': .*image_size 24 .*{bad}"):
            build_model(cfg)
        return
    model = build_model(cfg).eval()
    with torch.no_grad():
        x = torch.rand(2, 1, 24, 24)
        assert model.reconstruct(x).shape == x.shape
