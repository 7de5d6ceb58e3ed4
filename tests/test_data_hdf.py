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
