"""Physical units of generated galaxies: flux and AB magnitude per object, FITS cutouts and
cube read back with astropy, and generated stamps injected into a survey image found again
by photutils at their RA/Dec."""

import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from galhpc.checkpoint import save_checkpoint
from galhpc.config import config_from_dict
from galhpc.inference.generate import generate_from_checkpoint
from galhpc.inference.options import GenerateOptions, OutputOptions
from galhpc.io.catalog import open_catalog
from galhpc.io.export import export_fits_cube, export_fits_cutouts, inject_stamps
from galhpc.models import build_model

ZP = 30.0


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A 40-object catalogue of a (random-weight) VAE trained on a flux-normalised GalSim store
    whose root attributes record zero point and BUNIT."""
    from galhpc.data.prep import run_prep

    root = tmp_path_factory.mktemp("units")
    data = {"prep": {"sources": [{"kind": "galsim", "n": 40, "seed": 2}], "image_size": 16, "workers": 1,
                     "recipe": ["flux"]},
            "model": {"name": "vae", "image_size": 16, "latent_dim": 4, "params": {"filters": [8, 8, 8, 8]}},
            "train": {"store": str(root / "store.h5")}}
    cfg = config_from_dict(data)
    run_prep(cfg.prep, output=str(root / "store.h5"))
    with h5py.File(root / "store.h5", "r+") as f:
        f.attrs["zero_point"], f.attrs["bunit"] = ZP, "electron/s"
        norms = f["labels/flux_norm"][()]
    torch.manual_seed(0)
    save_checkpoint(root / "ckpt.pt", {"model_name": "vae", "model_state": build_model(cfg.model).state_dict(),
                                       "config": cfg.to_yaml()})
    generate_from_checkpoint(root / "ckpt.pt", root / "synth.h5",
                             GenerateOptions(n=40, batch_size=16, pixel_scale=0.2),
                             OutputOptions(shard_size=16, threads=1, device="cpu"))
    return root, norms


def test_flux_and_magnitude_follow_flux_norm_and_zero_point(synth):
    root, norms = synth
    with open_catalog(root / "synth.h5") as cat:
        images, flux_norm = cat.read("images").astype(np.float64), cat.read("flux_norm").astype(np.float64)
        flux, mag = cat.read("flux"), cat.read("mag_ab")
        meta = cat.meta
    assert np.isin(flux_norm.astype(np.float32), norms.astype(np.float32)).all()
    assert len(np.unique(flux_norm)) > 5  # drawn per object, not one value
    np.testing.assert_allclose(flux, images.reshape(40, -1).sum(1) * flux_norm / 100.0, rtol=1e-5)
    np.testing.assert_allclose(mag, ZP - 2.5 * np.log10(flux), rtol=1e-5)
    assert meta["image_bunit"] == "electron/s" and meta["zero_point"] == ZP and meta["pixel_scale"] == 0.2
    assert meta["flux_scale"] == 100.0


def test_fits_cutouts_and_cube_read_back_with_units(synth):
    root, _ = synth
    with open_catalog(root / "synth.h5") as cat:
        export_fits_cutouts(cat, root / "cutouts")
        export_fits_cube(cat, root / "cube.fits")
        ids, mag = cat.read("object_id"), cat.read("mag_ab")
    files = sorted((root / "cutouts").glob("object_*.fits"))
    assert len(files) == 40
    for i in (0, 17, 39):
        with fits.open(root / "cutouts" / f"object_{ids[i]}.fits") as hdul:
            h, data = hdul[0].header, hdul[0].data.astype(np.float64)
        assert h["BUNIT"] == "electron/s" and h["OBJ_ID"] == ids[i] and h["MAGZP"] == ZP
        assert h["PIXSCALE"] == pytest.approx(0.2) and h["CDELT1"] == pytest.approx(0.2 / 3600)
        # the header magnitude is that of the pixels in BUNIT with the zero point
        assert h["MAG"] == pytest.approx(h["MAGZP"] - 2.5 * np.log10(data.sum()), abs=1e-4)
        assert h["MAG"] == pytest.approx(float(mag[i]), abs=1e-4)
    with fits.open(root / "cube.fits") as hdul:
        assert hdul[0].data.shape == (40, 16, 16) and hdul[0].header["BUNIT"] == "electron/s"
        np.testing.assert_allclose(hdul[0].data[17], fits.getdata(root / "cutouts" / f"object_{ids[17]}.fits"))
        table = Table(hdul["OBJECTS"].data)
    np.testing.assert_array_equal(table["object_id"], ids)
    np.testing.assert_allclose(table["mag_ab"], mag)
    with open_catalog(root / "synth.h5") as cat, pytest.raises(FileExistsError):
        export_fits_cutouts(cat, root / "cutouts")
    from galhpc.cli.export import main as export_main

    assert export_main([str(root / "synth.h5"), "--fits-cube", str(root / "cli_cube.fits"),
                        "--fits-cutouts", str(root / "cli_cutouts")]) == 0
    np.testing.assert_array_equal(fits.getdata(root / "cli_cube.fits"), fits.getdata(root / "cube.fits"))
    assert len(list((root / "cli_cutouts").glob("*.fits"))) == 40


def test_injected_galaxies_are_detected_at_their_ra_dec():
    pytest.importorskip("photutils")
    from photutils.segmentation import SourceCatalog, detect_sources

    galsim = pytest.importorskip("galsim")
    rng = np.random.default_rng(3)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [100.5, 100.5]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    sky = rng.normal(0, 1.0, (200, 200))
    stamps = np.stack([galsim.Exponential(half_light_radius=rng.uniform(0.4, 0.8), flux=rng.uniform(400, 800))
                       .drawImage(nx=25, ny=25, scale=0.2).array for _ in range(6)])
    # well apart (no blends), at random sub-pixel positions
    x_true = np.array([30.0, 100, 170, 30, 100, 170]) + rng.uniform(-5, 5, 6)
    y_true = np.array([50.0, 50, 50, 150, 150, 150]) + rng.uniform(-5, 5, 6)
    ra, dec = wcs.pixel_to_world_values(x_true, y_true)
    image = inject_stamps(sky, wcs, stamps, ra, dec)
    # flux is kept but for what the sub-pixel spline shift moves past a stamp edge
    np.testing.assert_allclose(image.sum() - sky.sum(), stamps.sum(), rtol=5e-3)
    segments = detect_sources(image, threshold=3.0, n_pixels=8)
    found = SourceCatalog(image, segments).to_table()
    xy = np.stack([found["xcentroid"], found["ycentroid"]], 1)
    for x, y in zip(x_true, y_true, strict=False):
        assert np.hypot(xy[:, 0] - x, xy[:, 1] - y).min() < 0.5
    assert len(found) == 6


def _gaussians(k, rng, size=24):
    """Round Gaussian galaxies, σ uniform in [1, 3.5] px, flux log-uniform in [100, 10^3.5]."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    sigma = rng.uniform(1.0, 3.5, k)[:, None, None]
    flux = 10 ** rng.uniform(2, 3.5, k)[:, None, None]
    return flux * np.exp(-0.5 * (x**2 + y**2) / sigma**2) / (2 * np.pi * sigma**2)


@pytest.mark.slow
def test_rejection_sampling_follows_a_target_magnitude_and_size_table():
    from scipy import stats

    from galhpc.inference.photometry import Photometry, half_light_radius, rejection_sample

    rng = np.random.default_rng(7)
    one = _gaussians(1, np.random.default_rng(1))
    sigma = np.sqrt((one[0] * ((np.arange(24) - 11.5) ** 2)[None, :]).sum() / one[0].sum())
    assert half_light_radius(one)[0] == pytest.approx(sigma * np.sqrt(2 * np.log(2)), rel=0.05)
    photometry = Photometry(np.ones(1), 1.0, "electron/s", 25.0, "test")
    target_mag = rng.uniform(17.0, 19.0, 2000)  # fluxes 251..1585
    target_size = 1.1774 * rng.uniform(1.5, 2.5, 2000)
    got = rejection_sample(_gaussians, 300, target_mag, target_size, photometry, seed=3, bins=12)
    raw = _gaussians(300, np.random.default_rng(9))
    raw_mag = 25.0 - 2.5 * np.log10(raw.reshape(300, -1).sum(1))
    assert stats.ks_2samp(raw_mag, target_mag).statistic > 0.25  # what the generator alone gives
    assert stats.ks_2samp(got["mag_ab"], target_mag).statistic < 0.12
    assert stats.ks_2samp(got["half_light_radius"], target_size).statistic < 0.12
    np.testing.assert_allclose(got["mag_ab"], 25.0 - 2.5 * np.log10(got["images"].reshape(300, -1).sum(1)))
    assert got["images"].shape == (300, 24, 24) and 0 < got["acceptance"] < 1
    with pytest.raises(Exception, match="zero point"):
        rejection_sample(_gaussians, 5, target_mag, target_size, Photometry(np.ones(1), 1.0, "x", None, "t"))


def test_generate_rejection_moves_magnitudes_to_the_target(synth, capfd):
    """galhpc-generate --target-table: the catalogue's magnitudes follow the target (scipy's KS
    against the target far smaller than without rejection); the pilot's acceptance is in
    /meta and agrees with the measured one (kept / Σ rejection_draws)."""
    import json

    from scipy import stats

    from galhpc.cli.generate import main as generate_main
    from galhpc.inference.photometry import half_light_radius

    root, _ = synth
    generate_from_checkpoint(root / "ckpt.pt", root / "plain.h5",
                             GenerateOptions(n=240, batch_size=60, pixel_scale=0.2),
                             OutputOptions(threads=1, device="cpu"))
    with open_catalog(root / "plain.h5") as cat:
        mags, sizes = cat.read("mag_ab").astype(np.float64), half_light_radius(cat.read("images"))
    bright = mags < np.percentile(mags, 30)  # the target: the bright 30 % of the generator's own population
    Table({"mag": mags[bright], "r_half": sizes[bright]}).write(root / "target.ecsv")
    assert generate_main(["--checkpoint", str(root / "ckpt.pt"), "--n", "120", "--out", str(root / "rej.h5"),
                          "--seed", "1", "--batch-size", "30", "--device", "cpu", "--threads", "1",
                          "--pixel-scale", "0.2", "--target-table", str(root / "target.ecsv"),
                          "--target-columns", "mag,r_half", "--target-pilot", "600"]) == 0
    with open_catalog(root / "rej.h5") as cat:
        got, draws, meta = cat.read("mag_ab").astype(np.float64), cat.read("rejection_draws"), cat.meta
    assert len(got) == 120 and (draws >= 1).all()
    before = stats.ks_2samp(mags, mags[bright]).statistic
    after = stats.ks_2samp(got, mags[bright])
    assert after.statistic < 0.5 * before and after.pvalue > 0.01, (before, after)
    measured = len(got) / draws.sum()
    assert 0 < meta["rejection_expected_acceptance"] < 0.6
    assert measured == pytest.approx(meta["rejection_expected_acceptance"], abs=0.12)
    assert json.loads(meta["rejection_target"])["columns"] == ["mag", "r_half"]
    assert f"rejection sampling kept 120 of {draws.sum()} candidates" in capfd.readouterr().err
