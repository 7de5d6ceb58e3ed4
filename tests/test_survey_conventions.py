"""Survey conventions beyond the HST-style set: catalogue positions under the names other
surveys use (VizieR RAJ2000/DEJ2000 sexagesimal, SExtractor ALPHA_J2000/DELTA_J2000),
catalogue positions the image's projection cannot place, and weight maps shipped as
separate files.  astropy writes every file and is the oracle for every position."""

from __future__ import annotations

import astropy.units as u
import h5py
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from test_data_survey_cutouts import H, _cfg, _galaxy, _read, _wcs

from galhpc.data.prep import run_prep


def _survey_image(path, n=160) -> WCS:
    """A noisy n x n image with a TAN WCS at (150, 2) and galaxies at pixels (40, 40), (100, 80)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix = [150.0, 2.0], [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cd = np.diag([-5e-5, 5e-5])
    img = _galaxy(0, shape=(n, n), centre=(40, 40)) + _galaxy(1, shape=(n, n), centre=(80, 100))
    fits.PrimaryHDU(img, w.to_header()).writeto(path)
    return w


def test_survey_image_position_on_the_far_side_of_the_sky_is_a_reject_not_a_crash(tmp_path):
    w = _survey_image(tmp_path / "big.fits")
    near = w.pixel_to_world([40, 100], [40, 80])
    Table({"id": [1, 2, 3, 4], "ra": list(near.ra.deg) + [330.0, 150.0],
           "dec": list(near.dec.deg) + [-60.0, -99.0]}).write(tmp_path / "cat.fits")
    s = _read(run_prep(_cfg(tmp_path, kind="survey_image", path=str(tmp_path / "big.fits"),
                            catalog=str(tmp_path / "cat.fits"), id_column="id", options={"size": 24})))
    assert sorted(s["object_id"].tolist()) == [1, 2]
    assert "off the image" in s["rejects"]["object_id 3"]  # TAN has no pixel for the far side
    assert "not a declination" in s["rejects"]["object_id 4"]  # a -99 sentinel is no position


def test_survey_image_sexagesimal_vizier_columns_by_option_and_by_convention(tmp_path):
    w = _survey_image(tmp_path / "big.fits")
    sky = w.pixel_to_world([40, 100], [40, 80])
    Table({"id": [1, 2], "RAJ2000": sky.ra.to_string(u.hour, sep=":", precision=4),
           "DEJ2000": sky.dec.to_string(u.deg, sep=":", precision=3, alwayssign=True)}).write(tmp_path / "cat.csv")
    for options in ({"ra_column": "RAJ2000", "dec_column": "DEJ2000"}, {}):
        s = _read(run_prep(_cfg(tmp_path, kind="survey_image", path=str(tmp_path / "big.fits"),
                                catalog=str(tmp_path / "cat.csv"), id_column="id", options={"size": 24, **options})))
        order = np.argsort(s["object_id"])
        np.testing.assert_allclose(s["labels"]["ra"][order], sky.ra.deg, atol=1e-5)
        np.testing.assert_allclose(s["labels"]["dec"][order], sky.dec.deg, atol=1e-5)
        peaks = [np.unravel_index(np.argmax(im), im.shape) for im in s["images"]]
        assert all(abs(y - (H - 1) / 2) <= 1 and abs(x - (H - 1) / 2) <= 1 for y, x in peaks)


@pytest.mark.parametrize("ra_name,dec_name", [("ALPHA_J2000", "DELTA_J2000"), ("RAJ2000", "DEJ2000"), ("RA", "DEC")])
def test_fits_stamps_take_the_catalogue_position_under_its_survey_name(tmp_path, ra_name, dec_name):
    d = tmp_path / "c"
    d.mkdir()
    for i in (1, 2):
        fits.PrimaryHDU(_galaxy(i), _wcs().to_header()).writeto(d / f"g_{i}.fits")  # WCS centre (189.2, 62.2)
    Table({"ID": [1, 2], ra_name: [10.5, 11.5], dec_name: [-1.25, 1.25]}).write(tmp_path / "cat.ecsv")
    s = _read(run_prep(_cfg(tmp_path, path=str(d), catalog=str(tmp_path / "cat.ecsv"), id_column="id")))
    order = np.argsort(s["object_id"])
    np.testing.assert_allclose(s["labels"]["ra"][order], [10.5, 11.5])
    np.testing.assert_allclose(s["labels"]["dec"][order], [-1.25, 1.25])


def test_weight_and_mask_maps_shipped_as_files_beside_the_stamp_are_its_sigma_and_mask(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    for oid in (3, 4):  # image in PRIMARY, inverse variance and flags in their own files
        fits.PrimaryHDU(_galaxy(oid), _wcs().to_header()).writeto(d / f"obj_{oid:05d}.fits")
        fits.PrimaryHDU(np.full((H, H), 0.25, np.float32)).writeto(d / f"obj_{oid:05d}.wht.fits")
    flags = np.zeros((H, H), np.int16)
    flags[0, :5] = 1
    fits.CompImageHDU(flags).writeto(d / "obj_00004_flag.fits.fz")
    fits.PrimaryHDU(np.ones((H, H), np.float32)).writeto(d / "obj_00009_rms.fits")  # no stamp obj_00009
    s = _read(run_prep(_cfg(tmp_path, path=str(d))))
    assert sorted(s["object_id"].tolist()) == [3, 4]  # no weight map is a galaxy
    np.testing.assert_allclose(s["sigma"], 2.0)  # 1 / sqrt(0.25)
    row = int(np.flatnonzero(s["object_id"] == 4)[0])
    assert s["mask"][row].sum() == 5 and s["mask"][row][0, :5].all() and s["mask"][1 - row].sum() == 0
    assert "no stamp obj_00009.fits" in s["rejects"]["file"]


def test_catalogue_units_are_recorded_on_the_store_labels_for_the_catalogues_downstream(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    for i in (1, 2):
        fits.PrimaryHDU(_galaxy(i), _wcs().to_header()).writeto(d / f"g_{i}.fits")
    cat = Table({"id": [1, 2], "ra": [10.5, 11.5] * u.deg, "dec": [-1.0, 1.0] * u.deg,
                 "mag_r": [21.3, 22.9] * u.mag, "r_petro": [1.2, 3.4] * u.arcsec, "z_phot": [0.3, 0.5]})
    cat.write(tmp_path / "cat.fits")  # TUNITn cards, read back by astropy
    out = run_prep(_cfg(tmp_path, path=str(d), catalog=str(tmp_path / "cat.fits"), id_column="id",
                        passthrough=["mag_r", "r_petro", "z_phot"]))
    with h5py.File(out) as f:
        units = {k: f[f"labels/{k}"].attrs.get("unit") for k in ("ra", "dec", "mag_r", "r_petro", "z_phot")}
    assert units == {"ra": "deg", "dec": "deg", "mag_r": "mag", "r_petro": "arcsec", "z_phot": None}


def test_sigma_map_through_a_non_integer_resize_is_the_noise_the_stored_pixels_have(tmp_path):
    # 48 -> 32 px (HDF stamps to the quickstart's image_size): each stored pixel averages
    # input pixels with weights (2/3, 1/3) per axis, so its σ is 2 x 5/9, not 2 / 1.5
    d = tmp_path / "c"
    d.mkdir()
    rng = np.random.default_rng(1)
    for i in range(20):
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(rng.normal(0, 2.0, (48, 48)).astype(np.float32), name="SCI"),
                      fits.ImageHDU(np.full((48, 48), 2.0, np.float32), name="ERR")]).writeto(d / f"n_{i}.fits")
    s = _read(run_prep(_cfg(tmp_path, path=str(d), size=32)))
    measured = s["images"].std()  # the oracle: the stored pixels' own scatter
    assert abs(np.median(s["sigma"]) / measured - 1) < 0.03
    np.testing.assert_allclose(s["sigma"], 2.0 * 5 / 9, rtol=1e-5)


def test_catalogue_columns_named_like_prep_labels_are_kept_beside_them_not_overwritten(tmp_path):
    import dataclasses

    d = tmp_path / "c"
    d.mkdir()
    for i in (1, 2):
        fits.PrimaryHDU(_galaxy(i), _wcs().to_header()).writeto(d / f"g_{i}.fits")
    Table({"id": [1, 2], "snr": [11.0, 22.0], "width": [3.0, 4.0], "source_index": [7, 8],
           "flux_norm": [1.0, 2.0]}).write(tmp_path / "cat.fits")  # a survey's own S/N, size, tile ...
    cfg = _cfg(tmp_path, path=str(d), catalog=str(tmp_path / "cat.fits"), id_column="id", recipe=("resize", "flux"),
               passthrough=["snr", "width", "source_index", "flux_norm"])
    s = _read(run_prep(dataclasses.replace(cfg, metrics=True)))
    order = np.argsort(s["object_id"])
    labels = {k: v[order] for k, v in s["labels"].items()}
    np.testing.assert_array_equal(labels["catalog_snr"], [11.0, 22.0])
    np.testing.assert_array_equal(labels["catalog_width"], [3.0, 4.0])
    np.testing.assert_array_equal(labels["catalog_source_index"], [7, 8])
    np.testing.assert_array_equal(labels["catalog_flux_norm"], [1.0, 2.0])
    np.testing.assert_array_equal(labels["source_index"], [0, 0])  # the store's own, which its readers rely on
    assert np.all(labels["snr"] > 50) and np.all(labels["flux_norm"] > 100)  # the prep's measurements


def test_survey_image_pixels_of_zero_weight_are_masked_not_trained_on(tmp_path):
    # a drizzled mosaic's chip gap: WHT = 0 and SCI = 0 there; those zeros are no sky
    w = _survey_image(tmp_path / "big.fits")
    with fits.open(tmp_path / "big.fits") as f:
        sci, header = f[0].data.copy(), f[0].header
    wht = np.full(sci.shape, 0.25, np.float32)
    wht[:, 33], sci[:, 33] = 0.0, 0.0
    fits.PrimaryHDU(sci, header).writeto(tmp_path / "big.fits", overwrite=True)
    fits.PrimaryHDU(wht).writeto(tmp_path / "wht.fits")
    sky = w.pixel_to_world([40], [40])
    Table({"id": [1], "ra": sky.ra.deg, "dec": sky.dec.deg}).write(tmp_path / "cat.fits")
    s = _read(run_prep(_cfg(tmp_path, kind="survey_image", path=str(tmp_path / "big.fits"), size=24,
                            catalog=str(tmp_path / "cat.fits"), id_column="id",
                            options={"size": 24, "weight": str(tmp_path / "wht.fits")})))
    mask = s["mask"][0]
    assert mask.sum() == 24 and mask.all(axis=0).sum() == 1  # the gap's column, and nothing else
    column = int(np.flatnonzero(mask.all(axis=0))[0])
    assert 3 <= column <= 6  # x = 33 in a 24-px stamp centred on x = 40
    assert not np.any(s["images"][0][:, column] == 0.0)  # filled with sky + noise of the local σ


def test_a_legacy_surveys_grz_cutout_is_one_three_band_object_with_its_file_id_and_position(tmp_path):
    from test_data_survey_cutouts import DEC0, RA0

    d = tmp_path / "c"
    d.mkdir()
    for oid in (123, 124):  # as the Legacy Surveys cutout service writes them: (3, H, W), BANDS = 'grz'
        header = _wcs().to_header()
        header["BANDS"], header["BAND0"], header["BAND1"], header["BAND2"] = "grz", "g", "r", "z"
        cube = np.stack([_galaxy(oid + b, amp=100.0 * (b + 1)) for b in range(3)])
        fits.PrimaryHDU(cube, header).writeto(d / f"legacy_{oid:05d}.fits")
    s = _read(run_prep(_cfg(tmp_path, path=str(d))))
    assert sorted(s["object_id"].tolist()) == [123, 124]  # not 6 objects numbered in read order
    assert s["images"].shape == (2, 3, H, H)
    np.testing.assert_allclose(s["labels"]["ra"], RA0, atol=1e-6)
    np.testing.assert_allclose(s["labels"]["dec"], DEC0, atol=1e-6)
