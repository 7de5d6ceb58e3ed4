"""galhpc-generate --pixel-scale: by default the scale the model was trained at, which the
trainer records in the checkpoint (older checkpoints: read from the training store)."""

import shutil

import h5py
import numpy as np
import pytest
import torch

from galhpc.checkpoint import read_checkpoint, recorded_pixel_scale, save_checkpoint
from galhpc.cli.generate import main as generate_main
from galhpc.config import config_from_dict
from galhpc.data.prep import run_prep
from galhpc.data.store import store_pixel_scale
from galhpc.inference.emulate import DEFAULT_PIXEL_SCALE, EmulationError, SurveyEmulation, load_psf, resolve_pixel_scale

torch.set_num_threads(1)

PSF = "moffat:fwhm=0.7,beta=3.5"


def run_config(root, prep=None, **train):
    data = {
        "prep": prep or {"sources": [{"kind": "galsim", "n": 64, "seed": 1}], "image_size": 16, "workers": 1},
        "model": {"name": "vae", "image_size": 16, "latent_dim": 4, "params": {"filters": [8, 8, 8, 8]}},
        "train": {"store": str(root / "store.h5"), "out_dir": str(root / "run"), "epochs": 1, "batch_size": 16,
                  "threads": 1, "augment": False, "holdout_fraction": 0.0, **train},
    }
    return config_from_dict(data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real checkpoint trained on a GalSim store of pixel scale 0.2 (the SimOptions default)."""
    from galhpc.train.trainer import train

    root = tmp_path_factory.mktemp("pixscale")
    cfg = run_config(root)
    run_prep(cfg.prep, output=cfg.train.store)
    result = train(cfg, resume=False)
    return root, result.checkpoint


def generate(ckpt, out, *extra):
    argv = ["--checkpoint", str(ckpt), "--n", "8", "--out", str(out), "--batch-size", "8", "--psf", PSF,
            "--noise-sigma", "0.01", "--device", "cpu", "--threads", "1", "--overwrite", *extra]
    assert generate_main(argv) == 0
    with h5py.File(out) as f:
        return f["emulation/psf"][()], dict(f["meta"].attrs)


def test_default_is_the_training_pixel_scale_recorded_in_the_checkpoint(trained, tmp_path, capsys):
    root, ckpt = trained
    payload = read_checkpoint(ckpt)
    assert payload["pixel_scale"] == pytest.approx(0.2)
    assert str(root / "store.h5") in payload["pixel_scale_source"] and "galsim pixel_scale 0.2" in payload[
        "pixel_scale_source"]
    psf, meta = generate(ckpt, tmp_path / "synth.h5")
    np.testing.assert_array_equal(psf, load_psf(PSF, 0.2))
    assert psf.shape != load_psf(PSF, 0.03).shape  # drawn at 0.03 the Moffat would be ~7x wider
    assert meta["pixel_scale"] == pytest.approx(0.2)
    assert "recorded in the checkpoint" in meta["pixel_scale_source"]
    assert str(root / "store.h5") in meta["pixel_scale_source"]
    err = capsys.readouterr().err
    assert "pixel scale 0.2 arcsec/pixel" in err and "training store" in err


def test_an_explicit_pixel_scale_wins(trained, tmp_path):
    _, ckpt = trained
    psf, meta = generate(ckpt, tmp_path / "synth.h5", "--pixel-scale", "0.1")
    np.testing.assert_array_equal(psf, load_psf(PSF, 0.1))
    assert meta["pixel_scale"] == pytest.approx(0.1) and meta["pixel_scale_source"] == "--pixel-scale"


def without_store(root, run):
    """Run `run()` while the store the checkpoint names is gone (moved away, then back)."""
    hidden = root / "store.h5.away"
    (root / "store.h5").rename(hidden)
    try:
        return run()
    finally:
        hidden.rename(root / "store.h5")


def test_checkpoint_moved_away_from_its_store_keeps_the_training_scale(trained, tmp_path, capsys):
    root, ckpt = trained
    moved = tmp_path / "ckpt.pt"
    shutil.copy(ckpt, moved)
    psf, meta = without_store(root, lambda: generate(moved, tmp_path / "synth.h5"))
    np.testing.assert_array_equal(psf, load_psf(PSF, 0.2))
    assert meta["pixel_scale"] == pytest.approx(0.2)
    err = capsys.readouterr().err
    assert "WARNING" not in err and "pixel scale 0.2 arcsec/pixel: recorded in the checkpoint" in err


def old_checkpoint(ckpt, path):
    """A copy of `ckpt` as written before checkpoints carried the pixel scale."""
    payload = read_checkpoint(ckpt)
    del payload["pixel_scale"], payload["pixel_scale_source"]
    assert recorded_pixel_scale(payload) is None
    return save_checkpoint(path, payload)


def test_older_checkpoint_reads_the_scale_from_its_store(trained, tmp_path):
    root, ckpt = trained
    psf, meta = generate(old_checkpoint(ckpt, tmp_path / "old.pt"), tmp_path / "synth.h5")
    np.testing.assert_array_equal(psf, load_psf(PSF, 0.2))
    assert meta["pixel_scale_source"].startswith(f"training store {root / 'store.h5'}")


def test_unknown_scale_falls_back_to_cosmos_with_a_log_line(trained, tmp_path, capsys):
    root, ckpt = trained
    moved = old_checkpoint(ckpt, tmp_path / "ckpt.pt")  # records no scale, and its store is gone
    psf, meta = without_store(root, lambda: generate(moved, tmp_path / "synth.h5"))
    np.testing.assert_array_equal(psf, load_psf(PSF, DEFAULT_PIXEL_SCALE))
    assert DEFAULT_PIXEL_SCALE == 0.03 and meta["pixel_scale"] == pytest.approx(0.03)
    err = capsys.readouterr().err
    assert "WARNING" in err and "pixel scale 0.03 arcsec/pixel" in err and "default (COSMOS)" in err
    assert "store.h5 is not found" in err


def test_recorded_scale_comes_before_the_store_and_a_recorded_unknown_is_final(tmp_path):
    cfg = run_config(tmp_path)
    run_prep(cfg.prep, output=cfg.train.store)  # a 0.2" store
    assert resolve_pixel_scale(None, cfg, (0.1, "training store x")).value == pytest.approx(0.1)
    scale = resolve_pixel_scale(None, cfg, (None, "store x source 0 (fits) records no pixel scale"))
    assert (scale.value, scale.known) == (DEFAULT_PIXEL_SCALE, False)
    assert "the checkpoint records none: store x source 0 (fits)" in scale.source
    assert resolve_pixel_scale(0.3, cfg, (0.1, "training store x")).value == pytest.approx(0.3)
    assert resolve_pixel_scale(None, cfg, None).value == pytest.approx(0.2)


def test_store_pixel_scale_follows_options_crop_and_resize(tmp_path):
    galsim = {"kind": "galsim", "n": 4, "seed": 2, "options": {"pixel_scale": 0.1}}
    cfg = run_config(tmp_path, {"sources": [galsim], "image_size": 16, "workers": 1, "metrics": False,
                                "recipe": ["crop", "resize", "minmax"], "crop_size": 8})
    run_prep(cfg.prep, output=cfg.train.store)
    value, where = store_pixel_scale(cfg.train.store)
    assert value == pytest.approx(0.05) and "8-pixel crop resized to 16" in where  # 8 pixels of 0.1" over 16
    assert resolve_pixel_scale(None, cfg).value == pytest.approx(0.05)
    # a store of another image size is not the model's store
    assert store_pixel_scale(cfg.train.store, image_size=32)[0] is None
    # sources that record no scale, or disagree, leave it unknown
    fits = {"kind": "fits", "path": str(tmp_path / "none")}
    for sources in ([galsim, fits], [galsim, {**galsim, "options": {"pixel_scale": 0.2}}]):
        other = run_config(tmp_path, {"sources": sources, "image_size": 16})
        with h5py.File(tmp_path / "store.h5", "r+") as f:
            f.attrs["config"] = other.to_yaml()
        value, why = store_pixel_scale(tmp_path / "store.h5")
        assert value is None and ("records no pixel scale" in why or "mixes" in why)
        scale = resolve_pixel_scale(None, cfg)
        assert (scale.value, scale.known) == (0.03, False)
    with pytest.raises(EmulationError, match="positive"):
        resolve_pixel_scale(0.0, cfg)


def test_fingerprint_holds_the_pixel_scale_only_where_it_changes_the_output():
    psf = load_psf("moffat:fwhm=0.7,beta=3.5", 0.2)
    drawn = [SurveyEmulation(psf=psf, pixel_scale=scale).describe() for scale in (0.2, 0.03)]
    assert drawn[0] == drawn[1]  # the PSF is drawn already: its hash identifies it
    noisy = [SurveyEmulation(cosmos_noise=True, pixel_scale=scale).describe() for scale in (0.2, 0.03)]
    assert noisy[0] != noisy[1] and noisy[0]["pixel_scale"] == 0.2
