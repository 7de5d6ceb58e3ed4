"""Inference reads FITS the way training did: a checkpoint trained on a 32-pixel store made
with a non-default recipe (crop 40 -> resize 32, flux) from HST-style PRIMARY/SCI/ERR/DQ
files, under a run config whose own prep section is the 64-pixel min-max default, encodes a
FITS folder, answers a multi-extension FITS image query and reports on FITS input, all
equal to working from the prepared store, with no temporary store left behind."""

import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits

from galhpc.checkpoint import read_checkpoint
from galhpc.cli.encode import main as encode_main
from galhpc.cli.search import main as search_main
from galhpc.config import config_from_dict
from galhpc.data.prep import run_prep
from galhpc.io.table import read_table

torch.set_num_threads(1)
N, SIZE = 36, 48


def hst_file(path, image, objid):
    """PRIMARY (no data) + SCI + ERR + DQ, as HST pipelines write them."""
    sci = fits.ImageHDU(image.astype(np.float32), name="SCI")
    sci.header["OBJID"] = objid
    err = fits.ImageHDU(np.full(image.shape, 0.05, np.float32), name="ERR")
    dq = fits.ImageHDU(np.zeros(image.shape, np.int16), name="DQ")
    fits.HDUList([fits.PrimaryHDU(), sci, err, dq]).writeto(path)


def blob(i, rng):
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    q = 0.5 + 0.5 * (i % 4) / 3
    return 50 * np.exp(-(xx**2 + (yy / q) ** 2) / (2 * (2.0 + i % 3) ** 2)) + rng.normal(0, 0.05, (SIZE, SIZE))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from galhpc.train.trainer import train

    root = tmp_path_factory.mktemp("fitsinf")
    cutouts = root / "cutouts"
    cutouts.mkdir()
    rng = np.random.default_rng(5)
    for i in range(N):
        hst_file(cutouts / f"gal_{100 + i:05d}.fits", blob(i, rng), 100 + i)
    prep = config_from_dict({"prep": {
        "sources": [{"kind": "fits", "path": str(cutouts), "hdu": "SCI"}],
        "image_size": 32, "crop_size": 40, "recipe": ["crop", "resize", "flux"], "workers": 1}}).prep
    store = run_prep(prep, output=root / "store.h5")
    cfg = config_from_dict({  # its own prep section is left at the default: 64 px, min-max
        "model": {"name": "vae", "image_size": 32, "latent_dim": 4,
                  "params": {"filters": [8, 8, 8, 8], "recon": "mse"}},
        "train": {"store": str(store), "out_dir": str(root / "run"), "epochs": 1, "batch_size": 8, "threads": 1,
                  "augment": False, "holdout_fraction": 0.0},
    })
    assert cfg.prep.image_size == 64 and cfg.prep.recipe[-1] == "minmax"
    ckpt = train(cfg, resume=False).checkpoint
    return {"root": root, "cutouts": cutouts, "store": store, "ckpt": ckpt}


def encode_args(ckpt, store, out):
    return ["--checkpoint", str(ckpt), "--store", str(store), "--out", str(out), "--batch-size", "8",
            "--gmm-components", "3", "--gmm-fit-objects", "36", "--threads", "1", "--device", "cpu"]


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if ".input.h5" in p.name or ".prep-" in p.name)


@pytest.mark.slow
def test_checkpoint_records_the_prep_of_its_store(trained):
    with h5py.File(trained["store"]) as f:
        assert read_checkpoint(trained["ckpt"])["store_prep"] == f.attrs["config"]


@pytest.mark.slow
def test_encode_of_a_fits_folder_equals_encoding_the_prepared_store(trained, tmp_path):
    assert encode_main(encode_args(trained["ckpt"], trained["cutouts"], tmp_path / "fits.h5")) == 0
    assert encode_main(encode_args(trained["ckpt"], trained["store"], tmp_path / "store.h5")) == 0
    with h5py.File(tmp_path / "fits.h5", locking=False) as a, h5py.File(tmp_path / "store.h5", locking=False) as b:
        assert np.array_equal(a["object_id"][()], np.arange(100, 100 + N))
        assert np.array_equal(a["object_id"][()], b["object_id"][()])
        np.testing.assert_array_equal(a["mu"][()], b["mu"][()])
        assert a["meta"].attrs["input"] == str(trained["cutouts"])
    assert leftovers(tmp_path) == [] and leftovers(trained["root"]) == []
    png = tmp_path / "similar.png"  # stamps from the FITS cutouts the catalogue was encoded from
    assert search_main(["--catalog", str(tmp_path / "fits.h5"), "--id", "103", "--k", "3", "--out",
                        str(tmp_path / "similar.csv"), "--mosaic", str(png), "--threads", "1"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and leftovers(tmp_path) == []


@pytest.mark.slow
def test_multi_extension_image_query_finds_its_own_object(trained, tmp_path, capsys):
    catalogue = tmp_path / "clusters.h5"
    assert encode_main(encode_args(trained["ckpt"], trained["store"], catalogue)) == 0
    out = tmp_path / "similar.h5"
    query = trained["cutouts"] / "gal_00107.fits"
    assert search_main(["--catalog", str(catalogue), "--image", str(query), "--k", "2", "--out", str(out),
                        "--threads", "1"]) == 0
    table = read_table(out)
    assert table["id"][0] == 107 and table["distance"][0] < 1e-4
    assert leftovers(tmp_path) == []
    broken = tmp_path / "broken.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((4, 4), np.float32), name="ERR")]).writeto(broken)
    assert search_main(["--catalog", str(catalogue), "--image", str(broken), "--out", str(tmp_path / "x.h5"),
                        "--threads", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert str(broken) in err[-1] and "Traceback" not in "\n".join(err)
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_report_on_fits_input_equals_the_report_on_the_prepared_store(trained, tmp_path):
    import json

    from galhpc.cli.report import main as report_main

    catalogue = tmp_path / "clusters.h5"
    assert encode_main(encode_args(trained["ckpt"], trained["cutouts"], catalogue)) == 0
    metrics = {}
    for name, store in (("fits", trained["cutouts"]), ("store", trained["store"])):
        out = tmp_path / name
        assert report_main(["--checkpoint", str(trained["ckpt"]), "--clusters", str(catalogue), "--store",
                            str(store), "--out", str(out), "--n-morph", "4", "--n-tsne", "30",
                            "--threads", "1"]) == 0
        metrics[name] = json.loads((out / "metrics.json").read_text())
    fits_m, store_m = metrics["fits"], metrics["store"]
    assert fits_m["inputs"]["store"] == str(trained["cutouts"])
    assert fits_m["inputs"]["sampled_objects_in_store"] == store_m["inputs"]["sampled_objects_in_store"] == N
    for section in ("clusters", "reconstruction"):
        assert "error" not in fits_m[section] and "error" not in store_m[section]
        assert {k: v for k, v in fits_m[section].items() if k != "seconds"} == \
            {k: v for k, v in store_m[section].items() if k != "seconds"}, section
    assert leftovers(tmp_path) == []


def test_a_checkpoint_without_a_recorded_prep_of_another_size_is_refused_naming_it(tmp_path, capsys):
    """An older checkpoint records no store prep; its run config's default 64-pixel prep is
    not taken for a 16-pixel model: one line naming the checkpoint, no store left behind."""
    from test_catalog_generate import make_checkpoint

    cutouts = tmp_path / "cutouts"
    cutouts.mkdir()
    hst_file(cutouts / "gal_00001.fits", blob(1, np.random.default_rng(0)), 1)
    ckpt = make_checkpoint(tmp_path / "old.pt", "vae", image_size=16)
    assert encode_main(encode_args(ckpt, cutouts, tmp_path / "c.h5")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(ckpt) in err and "records no prep config of its training store" in err and "64-pixel" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cutouts", "old.pt"]


def test_fits_prep_keeps_recipe_and_conventions_and_the_catalogue_only_for_the_training_cutouts():
    import dataclasses

    from galhpc.config import PrepConfig, SourceConfig
    from galhpc.inference.encode import fits_prep

    fits_source = SourceConfig(kind="fits", path="train/", catalog="cat.ecsv", hdu="SCI", passthrough=["mag_r"],
                               options={"id_from": "header"})
    prep = PrepConfig(sources=[SourceConfig(kind="galsim"), fits_source], image_size=32, crop_size=40,
                      recipe=["crop", "resize", "flux"], filters={"snr_min": 5.0})
    other = fits_prep("new/*.fits", prep)
    assert other.sources == [dataclasses.replace(fits_source, path="new/*.fits", catalog=None)]
    assert (other.image_size, other.crop_size, other.recipe, other.filters) == (32, 40, prep.recipe, {})
    assert fits_prep("train/", prep).sources == [fits_source]
