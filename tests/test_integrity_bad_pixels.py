"""Undefined pixels never reach a model silently: FITS BLANK (integer images) becomes NaN and
the object is rejected by name, as astropy reads it; a FITS file whose CHECKSUM/DATASUM do
not match is rejected as corrupt; galhpc-encode refuses a store with NaN pixels, naming the
store and the object ids."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits

from galhpc.config import PrepConfig, SourceConfig
from galhpc.data.prep import run_prep
from galhpc.data.sources import DataError

sys.path.insert(0, str(Path(__file__).parent))
from test_catalog_encode import write_store  # noqa: E402
from test_catalog_generate import make_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
H = 16


def _image(i: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:H]
    return (np.exp(-((x - 8) ** 2 + (y - 8) ** 2) / 8.0) * 1000 + 10 * i).astype(np.int16)


def _cfg(tmp_path, path, on_error="skip", max_bad_fraction=0.0) -> PrepConfig:
    # max_bad_fraction 0: any undefined pixel rejects (by default a few are filled and masked)
    return PrepConfig(sources=[SourceConfig(kind="fits", path=str(path))], output=str(tmp_path / "s.h5"),
                      image_size=H, recipe=["resize"], workers=1, chunk_rows=4, metrics=False, on_error=on_error,
                      max_bad_fraction=max_bad_fraction)


def _write(path: Path, data: np.ndarray, objid: int, checksum: bool = False, **cards) -> None:
    hdu = fits.PrimaryHDU(data)
    hdu.header["OBJID"] = objid
    for key, value in cards.items():
        hdu.header[key] = value
    hdu.writeto(path, checksum=checksum)


def test_blank_pixels_of_integer_images_are_rejected_naming_the_object(tmp_path):
    d = tmp_path / "cutouts"
    d.mkdir()
    for i in range(4):
        data = _image(i)
        if i == 2:
            data[3, 5] = -32768
        _write(d / f"g{i}.fits", data, 100 + i, BLANK=-32768)
    scaled = _image(5)
    scaled[0, 0] = -1
    _write(d / "g5.fits", scaled, 105, BLANK=-1, BSCALE=2.0, BZERO=100.0)  # fitsio scales; BLANK is raw
    with fits.open(d / "g2.fits") as hdul:  # the oracle: astropy reads the BLANK pixel as NaN
        assert np.isnan(hdul[0].data[3, 5]) and np.isfinite(np.delete(hdul[0].data.ravel(), 3 * H + 5)).all()
    path = run_prep(_cfg(tmp_path, d))
    with h5py.File(path) as f:
        assert sorted(f["object_id"][()].tolist()) == [100, 101, 103]
        assert f["images"][()].min() > -1000  # no -32768 (or its scaled value) in the store
        reasons = dict(zip(f["rejects/object"][()].astype(str), f["rejects/reason"][()].astype(str), strict=False))
    assert any("102" in obj and "1 NaN/inf pixels" in why for obj, why in reasons.items()), reasons
    assert any("105" in obj and "1 NaN/inf pixels" in why for obj, why in reasons.items()), reasons
    with pytest.raises(DataError, match=r"102.*NaN/inf"):
        run_prep(_cfg(tmp_path, d, on_error="raise"))


def test_a_file_with_wrong_checksums_is_rejected_as_corrupt(tmp_path):
    d = tmp_path / "cutouts"
    d.mkdir()
    _write(d / "good.fits", _image(0), 1, checksum=True)
    _write(d / "bad.fits", _image(1), 2, checksum=True)
    raw = bytearray((d / "bad.fits").read_bytes())
    raw[2880 + 100] ^= 0x01  # one bit of the data unit
    (d / "bad.fits").write_bytes(bytes(raw))
    verdict = pytest.warns(Warning, match="(?i)datasum verification failed")  # astropy's verdict, the oracle
    with verdict, fits.open(d / "bad.fits", checksum=True) as hdul:
        hdul[0].data  # noqa: B018
    path = run_prep(_cfg(tmp_path, d))
    with h5py.File(path) as f:
        assert f["object_id"][()].tolist() == [1]
        files = f["rejects/file"][()].astype(str).tolist()
        reasons = f["rejects/reason"][()].astype(str).tolist()
    assert any("bad.fits" in name for name in files)
    assert any("checksum mismatch" in why and "corrupt" in why for why in reasons), reasons


def test_encode_refuses_a_store_with_nan_pixels_naming_store_and_objects(tmp_path):
    store = write_store(tmp_path / "store.h5", n=200)
    with h5py.File(store, "r+") as f:
        images = f["images"]
        images[17, 3, 3] = np.nan
        images[150, 0, 0] = np.inf
    ckpt = make_checkpoint(tmp_path / "vae.pt", "vae")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GALHPC_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "galhpc.cli.encode", "--checkpoint", str(ckpt), "--store", str(store),
                           "--out", str(tmp_path / "c.h5"), "--batch-size", "64", "--gmm-components", "3",
                           "--gmm-fit-objects", "200", "--threads", "1"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "galhpc-encode: error:" in line]
    assert len(errors) == 1 and str(store) in errors[0] and "NaN/inf" in errors[0], done.stderr[-2000:]
    assert "173" in errors[0]  # object_id of row 17 (ids are 10 * row + 3)
    assert not (tmp_path / "c.h5").exists()


def _train_cfg(tmp_path, store, image_size):
    from galhpc.config import config_from_dict

    return config_from_dict({
        "model": {"name": "vae", "image_size": image_size, "latent_dim": 4, "params": {"recon": "mse"}},
        "train": {"store": str(store), "out_dir": str(tmp_path / "run"), "epochs": 1, "batch_size": 16,
                  "threads": 1, "augment": False, "holdout_fraction": 0.0},
    })


def test_training_refuses_another_image_size_before_torch(tmp_path):
    from galhpc.train.trainer import train

    store = write_store(tmp_path / "store.h5", n=64, size=16)
    with pytest.raises(DataError, match=r"store\.h5: images are 1x16x16 .* model takes 1x32x32"):
        train(_train_cfg(tmp_path, store, 32))


def test_a_nan_batch_names_the_store_and_the_object(tmp_path):
    from galhpc.train.trainer import train

    store = write_store(tmp_path / "store.h5", n=64, size=16)
    with h5py.File(store, "r+") as f:
        f["images"][40, 2, 2] = np.nan
    with pytest.raises(DataError, match=r"store\.h5: NaN/inf pixels in object_id 403 "):
        train(_train_cfg(tmp_path, store, 16))
