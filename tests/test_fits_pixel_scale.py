"""FITS headers give the store its pixel scale (CD matrix, CDELT, PIXSCALE via astropy WCS), and the
checkpoint and galhpc-generate take it from there instead of the 0.03" fallback."""

import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits

from galhpc.checkpoint import read_checkpoint
from galhpc.config import config_from_dict
from galhpc.data.fits import header_pixel_scale
from galhpc.data.prep import run_prep
from galhpc.data.store import store_pixel_scale

torch.set_num_threads(1)
ARCSEC = 1 / 3600


def celestial(**cards) -> fits.Header:
    header = fits.Header()
    header.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.1, "CRVAL2": 2.2,
                   "CRPIX1": 12.5, "CRPIX2": 12.5, **cards})
    return header


def rotated_cd(scale: float, degrees: float) -> dict[str, float]:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {"CD1_1": -scale * ARCSEC * c, "CD1_2": scale * ARCSEC * s, "CD2_1": scale * ARCSEC * s,
            "CD2_2": scale * ARCSEC * c}


def write_cutouts(folder, header: fits.Header, n: int = 40, size: int = 24, seed: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    for i in range(n):
        image = np.exp(-(xx**2 + yy**2) / (2 * (1.5 + i % 3) ** 2)) + 0.01 * rng.standard_normal((size, size))
        fits.PrimaryHDU(image.astype(np.float32), header=header).writeto(folder / f"cutout_{i:04d}.fits")
    return folder


def test_header_scale_from_cd_matrix_cdelt_and_pixscale():
    assert header_pixel_scale(celestial(**rotated_cd(0.262, 0.0))) == pytest.approx(0.262, rel=1e-9)
    assert header_pixel_scale(celestial(**rotated_cd(0.262, 37.0))) == pytest.approx(0.262, rel=1e-9)
    cdelt = celestial(CDELT1=-0.2 * ARCSEC, CDELT2=0.2 * ARCSEC, PC1_1=0.0, PC1_2=-1.0, PC2_1=1.0, PC2_2=0.0)
    assert header_pixel_scale(cdelt) == pytest.approx(0.2, rel=1e-9)
    arcmin = celestial(CDELT1=-0.01, CDELT2=0.01, CUNIT1="arcmin", CUNIT2="arcmin")
    assert header_pixel_scale(arcmin) == pytest.approx(0.6, rel=1e-9)
    assert header_pixel_scale(fits.Header({"PIXSCALE": 0.168})) == pytest.approx(0.168)
    assert np.isnan(header_pixel_scale(fits.Header({"OBJID": 3})))
    assert header_pixel_scale(fits.Header(), primary=celestial(**rotated_cd(0.05, 10.0))) == pytest.approx(0.05)


def prep_config(root, folder, recipe=("resize", "minmax"), **extra):
    return config_from_dict({
        "prep": {"sources": [{"kind": "fits", "path": str(folder)}], "image_size": 16, "workers": 1,
                 "recipe": list(recipe), **extra},
        "model": {"name": "vae", "image_size": 16, "latent_dim": 4, "params": {"filters": [8, 8, 8, 8]}},
        "train": {"store": str(root / "store.h5"), "out_dir": str(root / "run"), "epochs": 1, "batch_size": 16,
                  "threads": 1, "augment": False, "holdout_fraction": 0.0},
    })


def test_cd_matrix_store_gives_the_checkpoint_and_generate_its_scale(tmp_path):
    """24-pixel cutouts of 0.262" (rotated CD matrix) resized to 16: 0.393" per stored pixel."""
    from galhpc.cli.generate import main as generate_main
    from galhpc.train.trainer import train

    cfg = prep_config(tmp_path, write_cutouts(tmp_path / "cd", celestial(**rotated_cd(0.262, 25.0))))
    run_prep(cfg.prep, output=cfg.train.store)
    with h5py.File(cfg.train.store) as f:
        assert np.allclose(f["labels/wcs_pixel_scale"][()], 0.262 * 24 / 16, rtol=1e-6)
    value, where = store_pixel_scale(cfg.train.store, image_size=16)
    assert value == pytest.approx(0.393, rel=1e-6) and "FITS headers" in where
    ckpt = train(cfg, resume=False).checkpoint
    assert read_checkpoint(ckpt)["pixel_scale"] == pytest.approx(0.393, rel=1e-6)
    out = tmp_path / "synth.h5"
    assert generate_main(["--checkpoint", str(ckpt), "--n", "4", "--out", str(out), "--batch-size", "4",
                          "--psf", "moffat:fwhm=0.7,beta=3.5", "--device", "cpu", "--threads", "1"]) == 0
    with h5py.File(out) as f:
        assert f["meta"].attrs["pixel_scale"] == pytest.approx(0.393, rel=1e-6)


def test_cdelt_store_with_crop_and_mixed_or_missing_headers(tmp_path):
    cdelt = celestial(CDELT1=-0.2 * ARCSEC, CDELT2=0.2 * ARCSEC)
    cfg = prep_config(tmp_path, write_cutouts(tmp_path / "cdelt", cdelt), recipe=("crop", "resize", "minmax"),
                      crop_size=20)
    run_prep(cfg.prep, output=cfg.train.store)
    assert store_pixel_scale(cfg.train.store)[0] == pytest.approx(0.2 * 20 / 16, rel=1e-6)  # crop keeps, resize scales
    bare = prep_config(tmp_path, write_cutouts(tmp_path / "bare", fits.Header()))
    run_prep(bare.prep, output=tmp_path / "bare.h5")
    value, why = store_pixel_scale(tmp_path / "bare.h5")
    assert value is None and "records no pixel scale" in why and "40 of 40 objects" in why
    mixed = tmp_path / "mixed"
    write_cutouts(mixed, cdelt, n=5)
    fits.PrimaryHDU(np.ones((24, 24), np.float32), header=fits.Header({"PIXSCALE": 0.3})).writeto(
        mixed / "cutout_0100.fits")
    run_prep(prep_config(tmp_path, mixed).prep, output=tmp_path / "mixed.h5")
    value, why = store_pixel_scale(tmp_path / "mixed.h5")
    assert value is None and "disagree" in why
