"""Saturated cores (bright stars with diffraction spikes, galaxy nuclei) are real objects:
the prep keeps them, their saturated pixels masked and left at the clipped value, unless
`prep.saturated: reject` says otherwise (issue #25 item 1).  Stamps are written with astropy,
a saturated star clipped at a known level and flagged in the DQ's saturation bit."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from astropy.io import fits

from galhpc.config import ConfigError, PrepConfig, SourceConfig
from galhpc.data.prep import run_prep

H = 32
CLIP = 500.0  # the detector's full well, in image units
SATURATED_BIT, NO_DATA_BIT = 8, 1  # WFPC2 DQ


def _star(seed: int, peak: float = 5000.0) -> tuple[np.ndarray, np.ndarray]:
    """A star clipped at CLIP (its DQ flags the clipped pixels) on a sky of noise 1."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:H, :H]
    r2 = (x - (H - 1) / 2) ** 2 + (y - (H - 1) / 2) ** 2
    star = peak * np.exp(-r2 / (2 * 1.5**2)) + rng.standard_normal((H, H))
    dq = np.where(star >= CLIP, SATURATED_BIT, 0).astype(np.int16)
    return np.minimum(star, CLIP).astype(np.float32), dq


def _write(path, objid: int, sci: np.ndarray, dq: np.ndarray) -> None:
    header = fits.Header({"OBJID": objid})
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(sci, header, name="SCI"),
                  fits.ImageHDU(np.ones((H, H), np.float32), header, name="ERR"),
                  fits.ImageHDU(dq, header, name="DQ")]).writeto(path)


def _prep(tmp_path, saturated: str | None, bits: int | None = SATURATED_BIT) -> dict:
    folder = tmp_path / "stamps"
    if not folder.exists():
        folder.mkdir()
        sci, dq = _star(1)
        _write(folder / "star_00001.fits", 1, sci, dq)
        dead = dq.copy()
        dead[H // 2, H // 2] |= NO_DATA_BIT  # saturated AND dead: no data, whatever else it says
        _write(folder / "dead_00002.fits", 2, sci, dead)
        _write(folder / "faint_00003.fits", 3, *_star(3, peak=100.0))  # never saturated
    options = {} if bits is None else {"saturated_bits": bits}
    extra = {} if saturated is None else {"saturated": saturated}
    out = tmp_path / f"{saturated}_{bits}.h5"
    cfg = PrepConfig(sources=[SourceConfig(kind="fits", path=str(folder), options=options)], output=str(out),
                     image_size=H, recipe=[], workers=1, chunk_rows=8, metrics=False, on_error="skip", **extra)
    run_prep(cfg)
    with h5py.File(out) as f:
        rejects = dict(zip(f["rejects/object"][()].astype(str), f["rejects/reason"][()].astype(str), strict=False)) \
            if "rejects" in f else {}
        order = f["object_id"][()].tolist()
        return {"images": f["images"][()], "mask": f["mask"][()], "order": order, "ids": sorted(order),
                "rejects": rejects}


def test_saturated_star_is_kept_by_default_masked_at_its_clipped_value(tmp_path):
    store = _prep(tmp_path, saturated=None)  # the default
    assert store["ids"] == [1, 3]  # the star is kept; the dead-centre one is still rejected
    (reason,) = store["rejects"].values()
    assert "centre pixel is bad" in reason
    sci, dq = _star(1)
    saturated = dq != 0
    assert saturated.sum() > 4 and saturated[H // 2, H // 2]
    row = store["order"].index(1)
    np.testing.assert_array_equal(store["mask"][row] != 0, saturated)  # masked: out of every likelihood
    # the encoder sees a flat-topped core at the full well, not sky noise (a hole in the star)
    np.testing.assert_array_equal(store["images"][row][saturated], CLIP)
    np.testing.assert_array_equal(store["images"][row][~saturated], sci[~saturated])


def test_saturated_reject_is_explicit_and_says_why(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        store = _prep(tmp_path, saturated="reject")
    assert store["ids"] == [3]
    reasons = list(store["rejects"].values())
    assert sum("centre pixel is saturated (prep.saturated: reject)" in r for r in reasons) == 2
    assert "saturated (prep.saturated: reject)" in caplog.text  # counted in the by-reason summary


def test_without_saturation_bits_a_flagged_core_is_a_bad_centre(tmp_path):
    # a DQ whose meaning the prep was not told: every flag is a bad pixel, as before
    assert _prep(tmp_path, saturated="mask", bits=None)["ids"] == [3]


def test_an_unknown_saturated_policy_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="prep.saturated"):
        _prep(tmp_path, saturated="keep")
