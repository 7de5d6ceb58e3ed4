"""Physical units of generated galaxies: each object's flux in the survey's units and its AB magnitude.

A model trained on a store whose recipe has the `flux` step draws stamps in stored units,
stored = input / flux_norm · flux_scale (galhpc.data.prep), so a generated stamp has a
shape and no brightness of its own.  Each generated object i gets a `flux_norm` drawn from
the training store's own `labels/flux_norm` values (seeded by (run seed, i): any rank count
gives the same draw), and then

    image in survey units = stored image · flux_norm / flux_scale
    flux    = Σ stored pixels · flux_norm / flux_scale           (survey units · pixel)
    mag_ab  = zero_point − 2.5 log10(flux)                        (NaN for flux <= 0)

`zero_point` is the AB magnitude of one survey unit summed over an object (e.g. 31.4 for
nJy, 23.9 for µJy; for HST electrons/s −2.5 log10(PHOTFLAM) − 5 log10(PHOTPLAM) − 2.408);
it and the unit (FITS BUNIT) come from the store's root attributes `zero_point` and
`bunit` when it records them, else from the caller; without a zero point `mag_ab` is NaN.
A store without the `flux` step keeps fluxes in stored units (flux_norm 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from galhpc.catalog.seeds import derived_seed
from galhpc.runtime.errors import DataError
from galhpc.runtime.files import open_h5_readonly

log = logging.getLogger("galhpc.catalog.photometry")

FLUX_STREAM = 2  # the draw of each object's flux_norm (seeds.SAMPLE_STREAM 0, NOISE_STREAM 1)
STORED_UNIT = "stored"  # BUNIT of pixels left in stored units (no flux step, no survey unit known)


@dataclass(frozen=True)
class Photometry:
    """How stored pixel values of generated stamps become survey units and magnitudes."""

    flux_norms: np.ndarray  # (M,) the training store's flux_norm values, drawn from per object
    flux_scale: float  # the store's prep.flux_scale (1 without a flux step)
    bunit: str  # FITS BUNIT of the survey pixels
    zero_point: float | None  # AB mag of one survey unit; None: unknown
    source: str  # where these came from, for /meta

    def draw_flux_norm(self, seed: int, start: int, stop: int) -> np.ndarray:
        """(stop − start,) float64 flux_norm of objects [start, stop), keyed by object index."""
        picks = [np.random.default_rng(derived_seed(seed, i, FLUX_STREAM)).integers(len(self.flux_norms))
                 for i in range(start, stop)]
        return self.flux_norms[np.asarray(picks, np.int64)]

    def columns(self, images: np.ndarray, seed: int, start: int) -> dict[str, np.ndarray]:
        """`flux_norm`, `flux` and `mag_ab` (float32/64 (n,)) of stored-unit stamps (n, ...) of
        objects start..start+n−1."""
        n = len(images)
        norm = self.draw_flux_norm(seed, start, start + n)
        flux = np.asarray(images, np.float64).reshape(n, -1).sum(1) * norm / self.flux_scale
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = self.zero_point - 2.5 * np.log10(flux) if self.zero_point is not None else np.full(n, np.nan)
        mag = np.where(flux > 0, mag, np.nan)
        return {"flux_norm": norm.astype(np.float32), "flux": flux.astype(np.float64),
                "mag_ab": mag.astype(np.float32)}

    def meta(self) -> dict[str, Any]:
        """/meta attributes of the catalogue (image_bunit, zero_point, flux_scale, photometry_source)."""
        return {"image_bunit": self.bunit, "zero_point": np.nan if self.zero_point is None else self.zero_point,
                "flux_scale": self.flux_scale, "photometry_source": self.source,
                "image_units": f"stored: survey {self.bunit} = image * flux_norm / {self.flux_scale:g}"}


def store_photometry(store: str | Path | None, zero_point: float | None = None, bunit: str | None = None,
                     flux_scale: float | None = None) -> Photometry:
    """The photometric calibration of a model trained on `store`.

    Parameters
    ----------
    store : str or Path or None
        The training store; None or a missing file: fluxes in stored units.
    zero_point : float, optional
        AB magnitude of one survey unit; overrides the store's `zero_point` attribute.
    bunit : str, optional
        Survey pixel unit (FITS BUNIT); overrides the store's `bunit` attribute.
    flux_scale : float, optional
        The store's prep.flux_scale (read from its config when None).

    Returns
    -------
    Photometry

    Raises
    ------
    DataError
        If the store's flux_norm column has no finite positive value.
    """
    if store is None or not Path(store).is_file():
        why = "no training store" if store is None else f"training store {store} not found"
        log.warning("%s: fluxes stay in stored units (no flux_norm to draw)", why)
        return Photometry(np.ones(1), 1.0, bunit or STORED_UNIT, zero_point, why)
    with open_h5_readonly(store) as f:
        attrs = dict(f.attrs)
        norms = f["labels/flux_norm"][()].astype(np.float64) if "labels/flux_norm" in f else None
        config = str(attrs.get("config", ""))
    if zero_point is None and "zero_point" in attrs and np.isfinite(float(attrs["zero_point"])):
        zero_point = float(attrs["zero_point"])
    if bunit is None and "bunit" in attrs:
        bunit = str(attrs["bunit"])
    if norms is None:
        return Photometry(np.ones(1), 1.0, bunit or STORED_UNIT, zero_point, f"{store}: no flux step")
    norms = norms[np.isfinite(norms) & (norms > 0)]
    if not len(norms):
        raise DataError(f"{store}: labels/flux_norm has no finite positive value to draw fluxes from")
    if flux_scale is None:
        import yaml

        flux_scale = float((yaml.safe_load(config) or {}).get("prep", {}).get("flux_scale", 100.0))
    return Photometry(norms, float(flux_scale), bunit or "unknown", zero_point, f"{store}: labels/flux_norm")
