"""FITS source: cutout directories, MEF, cubes, catalogue join, comp.fits, bad input."""

from pathlib import Path

import astropy
import fitsio
import h5py
import numpy as np
import pytest

from galhpc.config import PrepConfig, SourceConfig
from galhpc.data import preprocess as pp
from galhpc.data.prep import run_prep
from galhpc.data.sources import DataError

COMP_FITS = Path(astropy.__file__).parent / "io/fits/tests/data/comp.fits"
H = 24


def _cutout(i: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:H]
    return (np.exp(-((x - 12) ** 2 + (y - 12) ** 2) / (2 * (1 + i % 4) ** 2)) * 100 + i).astype(np.float32)


def _cfg(tmp_path, recipe=("grey", "crop", "resize"), size=16, **source) -> PrepConfig:
    return PrepConfig(sources=[SourceConfig(kind="fits", **source)], output=str(tmp_path / "s.h5"),
                      image_size=size, recipe=list(recipe), workers=1, chunk_rows=4, metrics=False)


@pytest.fixture
def cutouts(tmp_path):
    d = tmp_path / "cutouts"
    d.mkdir()
    for i in range(7):
        fitsio.write(str(d / f"gal_{i:03d}.fits"), _cutout(i), header={"OBJID": 100 + i})
    cat = tmp_path / "cat.fits"
    ids = np.array([106, 105, 104, 103, 102, 101, 100, 999], dtype=np.int64)
    table = np.zeros(8, dtype=[("OBJECT_ID", "i8"), ("z", "f8"), ("morph", "S8"), ("vec", "f4", (2,))])
    table["OBJECT_ID"], table["z"], table["morph"] = ids, ids / 1000.0, [b"S%d" % i for i in ids]
    fitsio.write(str(cat), table)
    return d, cat


def test_directory_of_cutouts_joined_to_catalog(tmp_path, cutouts):
    d, cat = cutouts
    path = run_prep(_cfg(tmp_path, path=str(d), catalog=str(cat)))
    with h5py.File(path) as f:
        ids = f["object_id"][:]
        np.testing.assert_array_equal(ids, np.arange(100, 107))
        np.testing.assert_allclose(f["labels/z"][:], ids / 1000.0)
        assert list(f["labels/morph"][:]) == [b"S%d" % i for i in ids]
        assert "vec" not in f["labels"]
        expect = np.stack([pp.resize_area(_cutout(i), 16) for i in range(7)])
        np.testing.assert_allclose(f["images"][:], expect, rtol=1e-6)


def test_ids_from_file_names_and_missing_catalog_ids(tmp_path):
    d = tmp_path / "named"
    d.mkdir()
    for i in (3, 8):
        fitsio.write(str(d / f"cut_{i}.fits"), _cutout(i))
    path = run_prep(_cfg(tmp_path, path=str(d)))
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["object_id"][:], [3, 8])
    cat = tmp_path / "c.fits"
    fitsio.write(str(cat), np.array([(3, 1.0)], dtype=[("object_id", "i8"), ("m", "f8")]))
    with pytest.raises(DataError, match=r"cut_8\.fits.*object_id 8.*not in catalog"):
        run_prep(_cfg(tmp_path, path=str(d), catalog=str(cat)))
    path = run_prep(_cfg(tmp_path, path=str(d), catalog=str(cat)), on_error="skip")
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["object_id"][:], [3])
        assert b"cut_8.fits" in f["rejects/file"][0] and b"not in catalog" in f["rejects/reason"][0]


def test_multi_extension_file_and_cubes(tmp_path):
    mef = tmp_path / "mef.fits"
    with fitsio.FITS(str(mef), "rw", clobber=True) as f:
        for i in range(3):
            f.write(_cutout(i), extname=f"CUT{i}")
    path = run_prep(_cfg(tmp_path, path=str(mef)))
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["object_id"][:], [0, 1, 2])
        np.testing.assert_allclose(f["images"][2], pp.resize_area(_cutout(2), 16), rtol=1e-6)
    cube = tmp_path / "cube.fits"
    fitsio.write(str(cube), np.stack([_cutout(i) for i in range(5)]), header={"OBJID": 50})
    path = run_prep(_cfg(tmp_path, path=str(cube), hdu=0))
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["object_id"][:], np.arange(50, 55))
    bands = np.stack([_cutout(0), 2 * _cutout(1), _cutout(2)])
    fitsio.write(str(cube), bands, clobber=True)
    path = run_prep(_cfg(tmp_path, path=str(cube), options={"cube": "bands"}))
    with h5py.File(path) as f:
        assert f["images"].shape == (1, 16, 16)
        np.testing.assert_allclose(f["images"][0], pp.resize_area(bands.mean(axis=0), 16), rtol=1e-5)
    path = run_prep(_cfg(tmp_path, recipe=["resize"], path=str(cube), options={"cube": "bands"}))
    with h5py.File(path) as f:
        assert f["images"].shape == (1, 3, 16, 16)


def test_real_tile_compressed_comp_fits_matches_astropy(tmp_path):
    from astropy.io import fits as afits

    path = run_prep(PrepConfig(sources=[SourceConfig(kind="fits", path=str(COMP_FITS))], output=str(tmp_path / "c.h5"),
                               image_size=64, crop_size=256, recipe=["crop", "resize", "minmax"], workers=1))
    oracle = afits.getdata(COMP_FITS, ext=1).astype(np.float64)
    expect = pp.minmax(pp.resize_area(pp.centre_crop(oracle, 256), 64))
    with h5py.File(path) as f:
        assert f["images"].shape == (1, 64, 64)
        np.testing.assert_allclose(f["images"][0], expect, atol=1e-5)
        assert f["labels/snr"][0] > 5 and f["labels/width"][0] > 1


def test_corrupt_truncated_and_garbage_files(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    fitsio.write(str(d / "a_1.fits"), _cutout(1))
    raw = (d / "a_1.fits").read_bytes()
    (d / "b_2.fits").write_bytes(raw[:3000])  # header intact, data cut short
    (d / "c_3.fits").write_bytes(b"not a fits file" * 300)
    with pytest.raises(DataError, match=r"b_2\.fits.*unreadable FITS"):
        run_prep(_cfg(tmp_path, path=str(d)))
    assert not (tmp_path / "s.h5").exists() and not list(tmp_path.glob(".s.h5*"))
    path = run_prep(_cfg(tmp_path, path=str(d)), on_error="skip")
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["object_id"][:], [1])
        files = [x.decode() for x in f["rejects/file"][:]]
        assert [Path(x).name for x in files] == ["b_2.fits", "c_3.fits"]


def test_nan_pixels_missing_hdu_and_wrong_shapes(tmp_path):
    d = tmp_path / "nan"
    d.mkdir()
    bad = _cutout(2)
    bad[3, 4] = np.nan
    bad[5, 5] = np.inf
    fitsio.write(str(d / "g_1.fits"), _cutout(1))
    fitsio.write(str(d / "g_2.fits"), bad)
    strict = _cfg(tmp_path, path=str(d))
    strict.max_bad_fraction = 0.0  # by default 2 bad pixels of 576 are filled, not rejected
    with pytest.raises(DataError, match=r"g_2\.fits.*object_id 2: 2 NaN/inf pixels"):
        run_prep(strict)
    path = run_prep(strict, on_error="skip")
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["object_id"][:], [1])
        assert f["rejects/object"][0] == b"object_id 2"
    with pytest.raises(DataError, match=r"g_1\.fits: no HDU 'SCI'"):
        run_prep(_cfg(tmp_path, path=str(d), hdu="SCI"))
    line = tmp_path / "line.fits"
    fitsio.write(str(line), np.ones((2, 2, 3, 4), np.float32))
    with pytest.raises(DataError, match=r"line\.fits: HDU 0: image of shape \(2, 2, 3, 4\)"):
        run_prep(_cfg(tmp_path, path=str(line)))
    with pytest.raises(DataError, match=r"g_1\.fits.*smaller than crop_size 32"):
        run_prep(_with_crop(_cfg(tmp_path, path=str(d / "g_1.fits")), 32))
    with pytest.raises(DataError, match="no FITS files"):
        run_prep(_cfg(tmp_path, path=str(tmp_path / "nowhere")))


def _with_crop(cfg: PrepConfig, size: int) -> PrepConfig:
    cfg.crop_size = size
    return cfg


def test_cutouts_of_two_sizes_are_resized_to_one_store(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    fitsio.write(str(d / "a_1.fits"), _cutout(1))
    fitsio.write(str(d / "b_2.fits"), np.ones((40, 40), np.float32))
    path = run_prep(_cfg(tmp_path, path=str(d)))
    with h5py.File(path) as f:
        assert f["images"].shape == (2, 16, 16)
        np.testing.assert_allclose(f["images"][1], 1.0)
    keep_shape = _cfg(tmp_path, recipe=["grey"], path=str(d))
    with pytest.raises(DataError, match=r"b_2\.fits.*objects 2\.\.2 'images': shape \(40, 40\) differs"):
        run_prep(keep_shape)
