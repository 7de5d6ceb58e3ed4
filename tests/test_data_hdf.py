"""The Hubble Deep Field development set: real HST pixels, detected and cut as a survey would."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("photutils")

from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

from galhpc.data import hdf  # noqa: E402

pytestmark = pytest.mark.slow  # one photutils detection of the whole field: ~10 s on a loaded core


@pytest.fixture(scope="module")
def field():
    return hdf.build_field()


def test_field_has_many_galaxies_with_radii_and_a_position_split(field):
    cat = field.catalog
    assert len(cat) > 500
    assert len(np.unique(cat["object_id"])) == len(cat)
    assert np.isfinite(cat["r90"]).mean() > 0.95 and np.nanmedian(cat["r90"]) > 1.5
    held = np.asarray(cat["held_out"])
    assert 0.1 < held.mean() < 0.3
    # the split is by position: every held-out galaxy lies right of every training galaxy
    assert np.asarray(cat["x"])[held].min() > np.asarray(cat["x"])[~held].max()
    # the WCS puts the field at HDF-N with 0.1"/px
    assert abs(np.median(cat["ra"]) - hdf.HDF_RA_DEG) < 0.02 and abs(np.median(cat["dec"]) - hdf.HDF_DEC_DEG) < 0.01
    assert field.err.min() > 0 and field.sci.shape == field.err.shape == field.dq.shape == (872, 1000)


def test_stamps_are_hst_style_files_whose_wcs_points_at_the_galaxy(field, tmp_path):
    files = hdf.write_stamps(field, tmp_path / "stamps", max_objects=150)
    assert len(files) == 150
    cat = field.catalog
    by_id = {int(i): r for r, i in enumerate(cat["object_id"])}
    for path in files[::15]:
        with fits.open(path, checksum=True) as hdus:
            assert [h.name for h in hdus] == ["PRIMARY", "SCI", "ERR", "DQ"]
            sci = hdus["SCI"]
            assert sci.data.shape == (48, 48) and hdus["ERR"].data.min() > 0
            oid = sci.header["OBJID"]
            assert int(path.stem.split("_")[1]) == oid == hdus[0].header["OBJID"]
            row = cat[by_id[oid]]
            # independent oracle: astropy's WCS of the stamp maps the catalogue RA/Dec to the centre
            x, y = WCS(sci.header).world_to_pixel_values(row["ra"], row["dec"])
            assert abs(x - 23.5) <= 0.5 + 1e-6 and abs(y - 23.5) <= 0.5 + 1e-6
            # and the stamp's pixels are the field's pixels there (offset found through the two WCSs)
            fx, fy = field.wcs.world_to_pixel(WCS(sci.header).pixel_to_world(0, 0))
            x0, y0 = int(round(float(fx))), int(round(float(fy)))
            np.testing.assert_array_equal(sci.data, field.sci[y0:y0 + 48, x0:x0 + 48])
            np.testing.assert_array_equal(hdus["DQ"].data, field.dq[y0:y0 + 48, x0:x0 + 48])


@pytest.mark.parametrize("suffix", [".fits", ".ecsv", ".csv"])
def test_catalogue_written_in_any_format_reads_back(field, tmp_path, suffix):
    path = hdf.write_catalog(field, tmp_path / f"cat{suffix}")
    back = Table.read(path)
    np.testing.assert_array_equal(back["object_id"], field.catalog["object_id"])
    np.testing.assert_allclose(back["ra"], field.catalog["ra"], rtol=0, atol=1e-9)


def test_field_products_have_sci_and_inverse_variance_weight(field, tmp_path):
    sci_path, wht_path = hdf.write_field(field, tmp_path)
    with fits.open(sci_path) as s, fits.open(wht_path) as w:
        np.testing.assert_array_equal(s["SCI"].data, field.sci)
        wht = w["WHT"].data
        good = field.dq == 0
        np.testing.assert_allclose(wht[good], 1.0 / field.err[good].astype(np.float64) ** 2, rtol=1e-6)
        assert (wht[~good] == 0).all()
        assert WCS(s["SCI"].header).to_header()["CRVAL1"] == pytest.approx(hdf.HDF_RA_DEG)


def _quickstart_yaml_blocks(section: str) -> list[str]:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "quickstart.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", body, flags=re.S)


def test_quickstart_real_survey_cutouts_yaml_runs_verbatim_on_the_hdf(field, tmp_path, monkeypatch):
    import h5py

    from galhpc.config import config_from_yaml_text
    from galhpc.data.prep import run_prep

    monkeypatch.chdir(tmp_path)
    hdf.write_stamps(field, "hdf/stamps", max_objects=120)
    hdf.write_catalog(field, "hdf/hdf_catalog.fits")
    hdf.write_field(field, "hdf/field")
    stamps_yaml, field_yaml = _quickstart_yaml_blocks("Real survey cutouts")
    path = run_prep(config_from_yaml_text(stamps_yaml).prep)
    with h5py.File(path) as f:
        images, sigma, mask = f["images"][()], f["sigma"][()], f["mask"][()]
        ra, dec = f["labels/ra"][()], f["labels/dec"][()]
        assert {"flux", "r90", "kron_radius", "held_out", "sky"} <= set(f["labels"]) and "x" not in f["labels"]
        reasons = f["rejects/reason"][()].astype(str) if "rejects" in f else []
    n = len(images)
    assert n + len(reasons) == 120 and n > 100
    assert all("centre pixel is bad" in r or "% of the image" in r for r in reasons)  # saturated cores, by name
    assert sigma.shape == images.shape and mask.shape == images.shape and np.isfinite(sigma).all()
    assert ra.dtype == np.float64
    assert np.all(np.abs(ra - hdf.HDF_RA_DEG) < 0.03) and np.all(np.abs(dec - hdf.HDF_DEC_DEG) < 0.03)
    # sky subtracted: the median border pixel is 0 within the noise for nearly every stamp
    frame = np.ones(images.shape[1:], bool)
    frame[4:-4, 4:-4] = False
    border = np.array([np.median(img[frame & (m == 0)]) for img, m in zip(images, mask, strict=False)])
    noise = np.array([np.median(s[frame]) for s in sigma])
    assert np.mean(np.abs(border) < noise) > 0.95, np.abs(border / noise).max()

    path = run_prep(config_from_yaml_text(field_yaml).prep)
    with h5py.File(path) as f:
        n_field = f["images"].shape[0]
        reasons = f["rejects/reason"][()].astype(str)
    # the WHT map is 0 on the saturated pixels (DQ != 0): masked as in the stamps, so the same reasons
    assert n_field > 1000 and all("off the image edge" in r or "radius" in r or "centre pixel is bad" in r
                                  or "% of the image" in r for r in reasons)


def test_the_quickstart_fits_recipe_on_small_cutouts_says_why_it_rejects(field, tmp_path, monkeypatch):
    import re

    import yaml

    from galhpc.config import config_from_yaml_text
    from galhpc.data.prep import run_prep
    from galhpc.data.sources import DataError

    monkeypatch.chdir(tmp_path)
    hdf.write_stamps(field, "cutouts", max_objects=20)
    block = _quickstart_yaml_blocks("Your FITS cutouts")[0]
    config = yaml.safe_load(block)
    config["prep"]["sources"][0].pop("catalog")
    with pytest.raises(DataError, match=re.escape("20 x image NxN is smaller than crop_size N")):
        run_prep(config_from_yaml_text(yaml.safe_dump(config)).prep)
