"""Survey cutouts as surveys ship them: HST-style PRIMARY/SCI/ERR/DQ files, multi-object files,
BLANK/masked pixels, σ maps, sky pedestals, neighbours, catalogues in any format with nulls,
duplicate ids, and stamps cut from a large image.  Files are written with astropy (the
oracle for every FITS convention)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import MaskedColumn, Table
from astropy.wcs import WCS

from galhpc.config import PrepConfig, SourceConfig
from galhpc.data.loader import StoreLoader
from galhpc.data.prep import run_prep
from galhpc.data.sources import DataError

H = 32
RA0, DEC0 = 189.2, 62.2


def _wcs(shape=(H, H), crval=(RA0, DEC0)) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    w.wcs.cd = np.diag([-0.1 / 3600, 0.1 / 3600])
    return w


def _galaxy(seed: int, sky: float = 0.0, noise: float = 1.0, shape=(H, H), centre=None, amp=200.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    cy, cx = centre if centre is not None else ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    img = amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 2.0**2)) + sky + noise * rng.standard_normal(shape)
    return img.astype(np.float32)


def _hst_file(path: Path, objid: int, err: float = 1.0, dq: np.ndarray | None = None, image=None) -> None:
    header = _wcs().to_header()
    header["OBJID"] = objid
    sci = _galaxy(objid) if image is None else image
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(sci, header, name="SCI"),
            fits.ImageHDU(np.full((H, H), err, np.float32), header, name="ERR"),
            fits.ImageHDU(np.zeros((H, H), np.int16) if dq is None else dq, header, name="DQ")]
    fits.HDUList(hdus).writeto(path)


def _cfg(tmp_path, recipe=("resize",), size=H, **source) -> PrepConfig:
    options = source.pop("options", {})
    return PrepConfig(sources=[SourceConfig(kind=source.pop("kind", "fits"), options=options, **source)],
                      output=str(tmp_path / "s.h5"), image_size=size, recipe=list(recipe), workers=1,
                      chunk_rows=8, metrics=False, on_error="skip")


def _read(path):
    with h5py.File(path) as f:
        out = {k: f[k][()] for k in ("images", "object_id", "sigma", "mask") if k in f}
        out["labels"] = {k: f["labels"][k][()] for k in f["labels"]}
        if "rejects" in f:
            out["rejects"] = dict(zip(f["rejects/object"][()].astype(str), f["rejects/reason"][()].astype(str),
                                      strict=False))
    return out


def test_err_and_dq_extensions_are_sigma_and_mask_never_galaxies(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    dq = np.zeros((H, H), np.int16)
    dq[0, :3] = 8
    for oid in (46, 47):
        _hst_file(d / f"hst_{oid:05d}.fits", oid, err=2.5, dq=dq if oid == 47 else None)
    s = _read(run_prep(_cfg(tmp_path, path=str(d))))
    assert sorted(s["object_id"].tolist()) == [46, 47]  # 2 objects, not 6; ids from SCI's OBJID
    assert s["sigma"].shape == s["images"].shape and s["sigma"].dtype == np.float32
    np.testing.assert_allclose(s["sigma"], 2.5)
    row = int(np.flatnonzero(s["object_id"] == 47)[0])
    assert s["mask"].dtype == np.uint8 and s["mask"][row].sum() == 3 and s["mask"][row][0, :3].all()
    assert s["mask"][1 - row].sum() == 0


def test_every_sci_extension_of_a_multi_object_file_is_one_object_with_its_own_err(tmp_path):
    header = _wcs().to_header()
    hdus = [fits.PrimaryHDU()]
    for k in range(4):
        h = header.copy()
        h["EXTVER"], h["OBJID"] = k + 1, 200 + k
        hdus.append(fits.ImageHDU(_galaxy(k), h, name="SCI"))
        hdus.append(fits.ImageHDU(np.full((H, H), 1.0 + k, np.float32), h, name="ERR"))
    path = tmp_path / "multi.fits"
    fits.HDUList(hdus).writeto(path)
    for hdu in (None, "SCI"):
        s = _read(run_prep(_cfg(tmp_path, path=str(path), hdu=hdu)))
        assert s["object_id"].tolist() == [200, 201, 202, 203]
        np.testing.assert_allclose(s["sigma"][:, 0, 0], [1.0, 2.0, 3.0, 4.0])


def test_weight_map_gives_sigma_and_zero_weight_is_a_masked_pixel(tmp_path):
    header = _wcs().to_header()
    header["OBJID"] = 9
    wht = np.full((H, H), 1 / 0.5**2, np.float32)
    wht[1, 1] = 0.0
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(_galaxy(9), header, name="SCI"),
                  fits.ImageHDU(wht, header, name="WHT")]).writeto(tmp_path / "w.fits")
    s = _read(run_prep(_cfg(tmp_path, path=str(tmp_path / "w.fits"))))
    assert s["mask"][0][1, 1] == 1 and s["mask"][0].sum() == 1
    np.testing.assert_allclose(np.delete(s["sigma"][0].ravel(), H + 1), 0.5, rtol=1e-6)
    assert np.isfinite(s["images"]).all() and np.isfinite(s["sigma"]).all()


def test_a_file_of_only_error_and_mask_maps_is_refused(tmp_path):
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((H, H), np.float32), name="ERR"),
                  fits.ImageHDU(np.zeros((H, H), np.int16), name="DQ")]).writeto(tmp_path / "maps.fits")
    cfg = _cfg(tmp_path, path=str(tmp_path / "maps.fits"))
    cfg.on_error = "raise"
    with pytest.raises(DataError, match=r"maps\.fits: no science image HDU"):
        run_prep(cfg)


def test_a_few_blank_pixels_are_filled_and_masked_many_or_central_ones_reject_with_reasons(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    corner, many, centre = _galaxy(1), _galaxy(2), _galaxy(3)
    corner[:1, :3] = np.nan  # 3 pixels of 1024: kept
    many[:4, :] = np.nan  # 12.5 %: rejected
    centre[H // 2, H // 2] = np.nan
    for oid, img in ((1, corner), (2, many), (3, centre)):
        h = fits.Header()
        h["OBJID"] = oid
        fits.PrimaryHDU(img, h).writeto(d / f"g{oid}.fits")
    s = _read(run_prep(_cfg(tmp_path, path=str(d))))
    assert s["object_id"].tolist() == [1]
    assert np.isfinite(s["images"]).all() and s["mask"][0][0, :3].all() and s["mask"][0].sum() == 3
    # filled with sky + noise of the local σ (the border σ here: no ERR map), not a constant
    filled = s["images"][0][0, :3]
    assert np.all(np.abs(filled) < 6 * s["sigma"][0][0, 0]) and len(set(filled.tolist())) == 3
    assert "12 % of the image > max_bad_fraction 5 %" in s["rejects"]["object_id 2"]
    assert "the centre pixel is bad" in s["rejects"]["object_id 3"]


def test_skip_with_nothing_kept_says_why(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    for oid in range(3):
        _hst_file(d / f"g{oid}.fits", 10 + oid)
    cfg = _cfg(tmp_path, recipe=["grey", "crop", "resize", "flux"], size=64, path=str(d))
    cfg.crop_size = 128  # the quickstart's recipe on 32x32 cutouts
    with pytest.raises(DataError, match=r"3 rejected: 3 x image NxN is smaller than crop_size N"):
        run_prep(cfg)


def test_sigma_follows_resize_and_flux_as_a_noise_level(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    _hst_file(d / "g.fits", 5, err=3.0)
    s = _read(run_prep(_cfg(tmp_path, recipe=["resize"], size=16, path=str(d))))
    # area average of 2x2 pixels of independent noise σ: σ / 2 (oracle: variance arithmetic)
    np.testing.assert_allclose(s["sigma"], 1.5, rtol=1e-6)
    s = _read(run_prep(_cfg(tmp_path, recipe=["resize", "flux"], size=16, path=str(d))))
    factor = 100.0 / s["labels"]["flux_norm"][0]
    np.testing.assert_allclose(s["sigma"], 1.5 * factor, rtol=1e-5)


def test_flux_step_subtracts_the_sky_so_the_border_median_is_zero_within_the_noise(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    for oid in range(6):
        _hst_file(d / f"g{oid}.fits", oid, image=_galaxy(oid, sky=40.0, noise=2.0))
    s = _read(run_prep(_cfg(tmp_path, recipe=["flux"], path=str(d))))
    frame = np.ones((H, H), bool)
    frame[8:-8, 8:-8] = False
    noise_sigma = s["noise_sigma"] if "noise_sigma" in s else s["labels"]["noise_sigma"]
    for img, sigma in zip(s["images"], noise_sigma, strict=False):
        assert abs(np.median(img[frame])) < 0.5 * sigma
    np.testing.assert_allclose(s["labels"]["sky"], 40.0, atol=0.3)


def test_neighbours_step_masks_every_source_but_the_target(tmp_path):
    img = _galaxy(4, noise=1.0) + _galaxy(5, noise=0.0, centre=(6.0, 25.0), amp=300.0)
    h = fits.Header()
    h["OBJID"] = 4
    fits.PrimaryHDU(img.astype(np.float32), h).writeto(tmp_path / "pair.fits")
    cfg = _cfg(tmp_path, path=str(tmp_path / "pair.fits"))
    cfg.neighbours = "mask"
    s = _read(run_prep(cfg))
    mask, out = s["mask"][0], s["images"][0]
    assert mask[6, 25] == 1 and mask[H // 2, H // 2] == 0
    assert mask[H // 2 - 2 : H // 2 + 3, H // 2 - 2 : H // 2 + 3].sum() == 0
    assert out[6, 25] < 10 and out[H // 2, H // 2] > 100  # neighbour replaced by noise, target untouched


def test_catalogues_in_any_format_with_nulls_as_nulls(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    for oid in (1, 2, 3):
        _hst_file(d / f"g{oid}.fits", oid)
    table = Table({"object_id": [1, 2, 3], "z": [0.1, np.nan, 0.3],
                   "n_obs": MaskedColumn([5, -999, 7], mask=[False, True, False]),
                   "ra": [10.0, 11.0, 12.0], "dec": [1.0, 2.0, 3.0]})
    formats = {"cat.fits": {}, "cat.csv": {}, "cat.ecsv": {}, "cat.vot": {"format": "votable"}}
    for name, kw in formats.items():
        table.write(tmp_path / name, **kw)
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"object_id": [1, 2, 3], "z": [0.1, None, 0.3], "n_obs": pa.array([5, None, 7], pa.int32()),
                             "ra": [10.0, 11.0, 12.0], "dec": [1.0, 2.0, 3.0]}), tmp_path / "cat.parquet")
    formats["cat.parquet"] = {}
    with fits.open(tmp_path / "cat.fits") as hdul:  # the oracle: astropy wrote a TNULL for the null integer
        assert any(k.startswith("TNULL") for k in hdul[1].header)
    for name in formats:
        s = _read(run_prep(_cfg(tmp_path, path=str(d), catalog=str(tmp_path / name))))
        order = np.argsort(s["object_id"])
        n_obs = s["labels"]["n_obs"][order]
        assert n_obs[0] == 5 and n_obs[2] == 7 and np.isnan(n_obs[1]), (name, n_obs)  # never -999
        assert np.isnan(s["labels"]["z"][order][1])
        np.testing.assert_array_equal(s["labels"]["ra"][order], [10.0, 11.0, 12.0])
        assert s["labels"]["ra"].dtype == np.float64


def test_unreadable_catalogue_and_missing_passthrough_are_one_clear_line(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    _hst_file(d / "g1.fits", 1)
    (tmp_path / "bad.fits").write_text("not a table")
    with pytest.raises(DataError, match=r"catalog .*bad\.fits: not readable as a table by astropy"):
        run_prep(_cfg(tmp_path, path=str(d), catalog=str(tmp_path / "bad.fits")))
    Table({"object_id": [1], "mag_r": [20.0], "other": [1.0]}).write(tmp_path / "cat.ecsv")
    with pytest.raises(DataError, match=r"no passthrough column\(s\) \['z_phot'\]"):
        run_prep(_cfg(tmp_path, path=str(d), catalog=str(tmp_path / "cat.ecsv"), passthrough=["mag_r", "z_phot"]))
    s = _read(run_prep(_cfg(tmp_path, path=str(d), catalog=str(tmp_path / "cat.ecsv"), passthrough=["mag_r"])))
    assert "mag_r" in s["labels"] and "other" not in s["labels"]


def test_duplicate_ids_in_image_headers_are_refused_naming_both_files(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    _hst_file(d / "tile_a.fits", 2)
    _hst_file(d / "tile_b.fits", 2)
    with pytest.raises(DataError, match=r"duplicate object id 2: .*tile_a\.fits.*tile_b\.fits"):
        run_prep(_cfg(tmp_path, path=str(d)))  # on_error: skip too


def test_ra_dec_from_the_wcs_centre_unless_the_catalogue_has_them(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    _hst_file(d / "g1.fits", 1)
    s = _read(run_prep(_cfg(tmp_path, path=str(d))))
    with fits.open(d / "g1.fits") as hdul:
        centre = WCS(hdul["SCI"].header).pixel_to_world((H - 1) / 2, (H - 1) / 2)
    assert s["labels"]["ra"][0] == pytest.approx(centre.ra.deg, abs=1e-9)
    assert s["labels"]["dec"][0] == pytest.approx(centre.dec.deg, abs=1e-9)


def test_loader_batches_carry_sigma_and_mask_shaped_like_the_image(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    dq = np.zeros((H, H), np.int16)
    dq[0, 0] = 1
    for oid in range(4):
        _hst_file(d / f"g{oid}.fits", oid, err=2.0, dq=dq)
    path = run_prep(_cfg(tmp_path, path=str(d)))
    batch = next(iter(StoreLoader(path, 2, split="all", shuffle=False, augment=True)))
    assert batch["sigma"].shape == batch["image"].shape == batch["mask"].shape == (2, 1, H, H)
    assert int(batch["mask"].sum()) == 2 and bool((batch["sigma"] == 2.0).all())


def _survey_image(tmp_path) -> tuple[Path, Path, np.ndarray, WCS]:
    shape = (200, 240)
    wcs = _wcs(shape)
    data = np.random.default_rng(0).normal(5.0, 1.0, shape).astype(np.float32)
    header = wcs.to_header()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header, name="SCI")]).writeto(tmp_path / "img.fits")
    wht = np.full(shape, 4.0, np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(wht, header, name="WHT")]).writeto(tmp_path / "wht.fits")
    return tmp_path / "img.fits", tmp_path / "wht.fits", data, wcs


def test_survey_image_stamps_are_the_image_pixels_at_the_catalogue_position(tmp_path):
    image, weight, data, wcs = _survey_image(tmp_path)
    pix = [(60.0, 50.0), (120.0, 100.0), (3.0, 100.0), (500.0, 100.0)]  # (x, y): two inside, partly off, outside
    world = wcs.pixel_to_world([p[0] for p in pix], [p[1] for p in pix])
    Table({"object_id": [1, 2, 3, 4], "ra": world.ra.deg, "dec": world.dec.deg, "r90": [4.0, 6.0, 4.0, 4.0]}).write(
        tmp_path / "cat.ecsv")
    cfg = _cfg(tmp_path, kind="survey_image", path=str(image), catalog=str(tmp_path / "cat.ecsv"),
               options={"weight": str(weight), "size": H})
    cfg.recipe = ["resize"]
    s = _read(run_prep(cfg))
    assert s["object_id"].tolist() == [1, 2]
    # the stamp is the image's pixels in a box whose centre ((H-1)/2) is within half a pixel of (60, 50)
    matches = [(x0, y0) for x0 in range(40, 50) for y0 in range(30, 40)
               if np.array_equal(s["images"][0], data[y0 : y0 + H, x0 : x0 + H])]
    assert len(matches) == 1
    x0, y0 = matches[0]
    assert abs(x0 + (H - 1) / 2 - 60) <= 0.5 and abs(y0 + (H - 1) / 2 - 50) <= 0.5
    np.testing.assert_allclose(s["sigma"], 0.5)
    assert "partly off the image edge" in s["rejects"]["object_id 3"]
    assert "off the image edge" in s["rejects"]["object_id 4"]
    # a mask image: its non-zero pixels are the store's mask at the same place
    bad = np.zeros(data.shape, np.uint8)
    bad[y0 + 2, x0 + 3] = 1
    fits.PrimaryHDU(bad).writeto(tmp_path / "mask.fits")
    cfg.sources[0].options = {"weight": str(weight), "mask": str(tmp_path / "mask.fits"), "size": H}
    s = _read(run_prep(cfg))
    assert s["mask"][0].sum() == 1 and s["mask"][0][2, 3] == 1 and s["mask"][1].sum() == 0
    # size scaled by a radius column
    cfg.sources[0].options = {"size": H, "scale_by": "r90", "scale_factor": 4}
    cfg.image_size = 16
    s = _read(run_prep(cfg))
    assert s["object_id"].tolist() == [1, 2] and s["images"].shape == (2, 16, 16)


def test_hsc_style_image_mask_variance_with_bad_bits_and_a_1d_hdu_that_is_no_galaxy(tmp_path):
    header = _wcs().to_header()
    header["OBJID"] = 77
    mask = np.zeros((H, H), np.int32)
    mask[10:22, 10:22] = 32  # DETECTED: the galaxy itself, informational
    mask[0, 0] = 32 | 4  # + SAT: bad
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(_galaxy(7), header, name="IMAGE"),
                         fits.ImageHDU(mask, header, name="MASK"),
                         fits.ImageHDU(np.full((H, H), 4.0, np.float32), header, name="VARIANCE"),
                         fits.ImageHDU(np.arange(H, dtype=np.float32), name="CALIB")])
    hdus.writeto(tmp_path / "hsc.fits")
    cfg = _cfg(tmp_path, path=str(tmp_path / "hsc.fits"))
    with pytest.raises(DataError, match="the centre pixel is bad"):  # any non-zero value is bad: DETECTED too
        run_prep(cfg)
    cfg.sources[0].options = {"mask_bad_bits": 0xFFFF & ~32}
    s = _read(run_prep(cfg))
    assert s["object_id"].tolist() == [77] and s["mask"][0].sum() == 1 and s["mask"][0][0, 0] == 1
    np.testing.assert_allclose(s["sigma"], 2.0)  # sqrt(VARIANCE)


def test_sky_from_a_catalogue_column_and_sigma_through_arcsinh(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    for oid in (1, 2):
        _hst_file(d / f"g{oid}.fits", oid, err=2.0, image=_galaxy(oid, sky=10.0 * oid, noise=2.0))
    Table({"object_id": [1, 2], "sky_level": [10.0, 20.0]}).write(tmp_path / "cat.csv")
    cfg = _cfg(tmp_path, recipe=["flux"], path=str(d), catalog=str(tmp_path / "cat.csv"))
    cfg.sky = "sky_level"
    s = _read(run_prep(cfg))
    order = np.argsort(s["object_id"])
    np.testing.assert_array_equal(s["labels"]["sky"][order], [10.0, 20.0])
    cfg.sky, cfg.recipe, cfg.stretch_scale = "none", ["arcsinh"], 3.0
    s = _read(run_prep(cfg))
    with fits.open(d / "g1.fits") as hdul:
        x = hdul["SCI"].data.astype(np.float64)
    row = int(np.flatnonzero(s["object_id"] == 1)[0])
    # independent: the derivative of arcsinh(x / s) times σ at every pixel
    np.testing.assert_allclose(s["sigma"][row], 2.0 / 3.0 / np.sqrt(1 + (x / 3.0) ** 2), rtol=1e-5)


@pytest.mark.parametrize("change, message", [({"max_bad_fraction": 1.5}, "max_bad_fraction"),
                                             ({"neighbours": "erase"}, "neighbours must be"),
                                             ({"sky": ""}, "prep.sky")])
def test_bad_pixel_sky_and_neighbour_settings_are_checked_before_reading(tmp_path, change, message):
    from galhpc.config import ConfigError

    cfg = _cfg(tmp_path, path=str(tmp_path / "nowhere"))
    for key, value in change.items():
        setattr(cfg, key, value)
    with pytest.raises(ConfigError, match=message):
        run_prep(cfg)


def test_sexagesimal_catalogue_positions_are_degrees(tmp_path):
    from astropy.coordinates import SkyCoord

    d = tmp_path / "c"
    d.mkdir()
    _hst_file(d / "g1.fits", 1)
    _hst_file(d / "g2.fits", 2)
    Table({"object_id": [1, 2], "RA": ["12:36:49.4", ""], "DEC": ["+62:12:58", ""]}).write(tmp_path / "cat.csv")
    s = _read(run_prep(_cfg(tmp_path, path=str(d), catalog=str(tmp_path / "cat.csv"))))
    oracle = SkyCoord("12:36:49.4", "+62:12:58", unit=("hourangle", "deg"))
    order = np.argsort(s["object_id"])
    assert s["labels"]["ra"][order][0] == pytest.approx(oracle.ra.deg)
    assert s["labels"]["dec"][order][0] == pytest.approx(oracle.dec.deg)
    # a null catalogue position falls back to the stamp's WCS centre
    assert s["labels"]["ra"][order][1] == pytest.approx(RA0, abs=1e-3)
