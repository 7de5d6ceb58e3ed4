"""Physical units of generated galaxies: each object's flux in the survey's units and its AB magnitude.

A model trained on a store whose recipe has the `flux` step draws stamps in stored units,
stored = input / flux_norm · flux_scale (galhpc.data.prep), so a generated stamp has a
shape and no brightness of its own.  Each generated object i gets a `flux_norm` drawn from
the training store's `labels/flux_norm` distribution, as the checkpoint recorded it at
training (`galhpc.data.store.flux_calibration`: up to 4096 quantiles; the store itself for
older checkpoints), seeded by (run seed, i) so any rank count gives the same draw, and then

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

from galhpc.data.store import flux_calibration
from galhpc.inference.seeds import derived_seed
from galhpc.runtime.errors import DataError

log = logging.getLogger("galhpc.inference.photometry")

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
        """The flux_norm of objects [start, stop), each drawn by its object index.

        Parameters
        ----------
        seed : int
            The run seed.
        start, stop : int
            The object range.

        Returns
        -------
        numpy.ndarray
            (stop − start,) float64, drawn from the training store's flux norms.
        """
        picks = [np.random.default_rng(derived_seed(seed, i, FLUX_STREAM)).integers(len(self.flux_norms))
                 for i in range(start, stop)]
        return self.flux_norms[np.asarray(picks, np.int64)]

    def columns(self, images: np.ndarray, seed: int, start: int,
                flux_norm: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The ``flux_norm``, ``flux`` and ``mag_ab`` columns of stored-unit stamps.

        Parameters
        ----------
        images : numpy.ndarray
            (n, ...) stamps of objects start..start+n−1, in stored units.
        seed : int
            The run seed.
        start : int
            Object index of the first stamp.
        flux_norm : numpy.ndarray, optional
            (n,) when already chosen (rejection sampling keeps each candidate's own), else
            drawn by object index.

        Returns
        -------
        dict of str to numpy.ndarray
            ``flux_norm`` (n,) float32, ``flux`` (n,) float64 in survey units, ``mag_ab`` (n,)
            float32 AB magnitudes (NaN for flux <= 0 or without a zero point).
        """
        n = len(images)
        norm = self.draw_flux_norm(seed, start, start + n) if flux_norm is None else np.asarray(flux_norm, np.float64)
        flux = np.asarray(images, np.float64).reshape(n, -1).sum(1) * norm / self.flux_scale
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = self.zero_point - 2.5 * np.log10(flux) if self.zero_point is not None else np.full(n, np.nan)
        mag = np.where(flux > 0, mag, np.nan)
        return {"flux_norm": norm.astype(np.float32), "flux": flux.astype(np.float64),
                "mag_ab": mag.astype(np.float32)}

    def meta(self) -> dict[str, Any]:
        """/meta attributes of the catalogue.

        Returns
        -------
        dict
            ``image_bunit``, ``zero_point`` (NaN when unknown), ``flux_scale``,
            ``photometry_source`` and ``image_units``.
        """
        return {"image_bunit": self.bunit, "zero_point": np.nan if self.zero_point is None else self.zero_point,
                "flux_scale": self.flux_scale, "photometry_source": self.source,
                "image_units": f"stored: survey {self.bunit} = image * flux_norm / {self.flux_scale:g}"}


def store_photometry(store: str | Path | None, zero_point: float | None = None, bunit: str | None = None,
                     flux_scale: float | None = None, recorded: dict[str, Any] | None = None) -> Photometry:
    """The photometric calibration of a model trained on `store`.

    Parameters
    ----------
    store : str or Path or None
        The training store, read when `recorded` is None; None or a missing file: fluxes in
        stored units (with a warning).
    zero_point : float, optional
        AB magnitude of one survey unit; overrides the recorded/store `zero_point`.
    bunit : str, optional
        Survey pixel unit (FITS BUNIT); overrides the recorded/store `bunit`.
    flux_scale : float, optional
        Overrides the prep's flux_scale.
    recorded : dict, optional
        The calibration a checkpoint recorded at training (`galhpc.data.store.flux_calibration`,
        payload key ``flux_calibration``); preferred to reading the store.

    Returns
    -------
    Photometry

    Raises
    ------
    DataError
        If the store's flux_norm column has no finite positive value.
    """
    if recorded is None:
        if store is None or not Path(store).is_file():
            why = "no training store" if store is None else f"training store {store} not found"
            log.warning("%s and no calibration in the checkpoint: fluxes stay in stored units (no flux_norm to "
                        "draw)", why)
            return Photometry(np.ones(1), 1.0, bunit or STORED_UNIT, zero_point, why)
        recorded = flux_calibration(store)
    if zero_point is None:
        zero_point = recorded.get("zero_point")
    bunit = bunit or recorded.get("bunit")
    if recorded.get("flux_norms") is None:
        return Photometry(np.ones(1), 1.0, bunit or STORED_UNIT, zero_point, recorded["source"])
    norms = np.asarray(recorded["flux_norms"], np.float64)
    if not len(norms):
        raise DataError(f"{recorded['source']} has no finite positive value to draw fluxes from")
    return Photometry(norms, float(flux_scale if flux_scale is not None else recorded["flux_scale"]),
                      bunit or "unknown", zero_point, recorded["source"])


def half_light_radius(images: np.ndarray) -> np.ndarray:
    """Radius (pixels) of the circle about the flux-weighted centroid holding half of each stamp's positive flux.

    A fast size for selecting samples (statmorph's r½ is the measured one).

    Parameters
    ----------
    images : numpy.ndarray
        (n, H, W) or (n, C, H, W) stamps (channels summed).

    Returns
    -------
    numpy.ndarray
        (n,) float64; NaN for a stamp without positive flux.
    """
    images = np.asarray(images, np.float64)
    if images.ndim == 4:
        images = images.sum(axis=1)
    n, h, w = images.shape
    sub = 5  # each pixel's flux spread over sub×sub points: radii on a grid finer than the pixels
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    y = (np.arange(h)[:, None] + offsets[None, :]).ravel()
    x = (np.arange(w)[:, None] + offsets[None, :]).ravel()
    out = np.full(n, np.nan)
    for i, img in enumerate(np.clip(images, 0.0, None)):
        total = img.sum()
        if total <= 0:
            continue
        cy = (img.sum(1) * np.arange(h)).sum() / total
        cx = (img.sum(0) * np.arange(w)).sum() / total
        fine = np.repeat(np.repeat(img, sub, 0), sub, 1).ravel() / sub**2
        r = np.hypot(y[:, None] - cy, x[None, :] - cx).ravel()
        order = np.argsort(r)
        cum = np.cumsum(fine[order])
        out[i] = float(np.interp(0.5 * total, cum, r[order]))
    return out


@dataclass(frozen=True)
class MagSizeTarget:
    """A target (AB magnitude, half-light radius) distribution and the rejection rule that draws a generator to it.

    The grid is `bins`×`bins` over the target's 1st–99th percentile range.  A pilot sample
    gives the generator's own density q; a candidate in cell c is kept with probability
    (p_c / q_c) / max_c(p_c / q_c).  Cells the generator never reaches cannot be filled:
    their share of the target is `unreachable_fraction`.
    """

    mag_edges: np.ndarray  # (bins + 1,)
    size_edges: np.ndarray  # (bins + 1,) pixels
    p: np.ndarray  # (bins·bins,) the target's density per cell, summing to 1

    @classmethod
    def from_table(cls, target_mag: np.ndarray, target_size: np.ndarray, bins: int = 8) -> MagSizeTarget:
        """The grid of a target table's magnitudes and sizes (non-finite rows dropped).

        Parameters
        ----------
        target_mag : numpy.ndarray
            (n,) AB magnitudes.
        target_size : numpy.ndarray
            (n,) half-light radii, pixels.
        bins : int, optional
            Cells per axis.

        Returns
        -------
        MagSizeTarget
            Edges per axis and the target's density per cell.

        Raises
        ------
        DataError
            With fewer than two finite rows.
        """
        tm, ts = np.asarray(target_mag, np.float64), np.asarray(target_size, np.float64)
        keep = np.isfinite(tm) & np.isfinite(ts)
        tm, ts = tm[keep], ts[keep]
        if len(tm) < 2:
            raise DataError(f"the target table has {len(tm)} rows with a finite magnitude and size; need >= 2")
        edges = [np.linspace(*np.percentile(v, [1, 99]), bins + 1) for v in (tm, ts)]
        p = np.histogram2d(tm, ts, edges)[0].ravel()
        return cls(edges[0], edges[1], p / p.sum())

    @property
    def bins(self) -> int:
        """Cells per axis of the grid."""
        return len(self.mag_edges) - 1

    def cells(self, mag: np.ndarray, size: np.ndarray) -> np.ndarray:
        """The grid cell of each (mag, size).

        Parameters
        ----------
        mag, size : numpy.ndarray
            (n,) AB magnitudes and half-light radii (pixels), NaN allowed.

        Returns
        -------
        numpy.ndarray
            (n,) int64 cell index, -1 outside the grid or non-finite.
        """
        cm = np.digitize(mag, self.mag_edges) - 1
        cs = np.digitize(size, self.size_edges) - 1
        inside = (cm >= 0) & (cm < self.bins) & (cs >= 0) & (cs < self.bins) & np.isfinite(mag) & np.isfinite(size)
        return np.where(inside, cm * self.bins + cs, -1)

    def acceptance(self, pilot_cells: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Keep probability per cell from a pilot sample's cells.

        Parameters
        ----------
        pilot_cells : numpy.ndarray
            (n,) cells of the pilot's candidates (`cells`).

        Returns
        -------
        accept : numpy.ndarray
            (bins·bins,) probability of keeping a candidate in each cell.
        unreachable_fraction : float
            Share of the target in cells no pilot candidate reached.
        expected_acceptance : float
            Kept / drawn the rule gives on the pilot's distribution.

        Raises
        ------
        DataError
            When no pilot candidate falls inside the target's range.
        """
        cells = np.asarray(pilot_cells, np.int64)
        q = np.bincount(cells[cells >= 0], minlength=self.bins**2).astype(np.float64) / max(len(cells), 1)
        reachable = q > 0
        ratio = np.where(reachable, self.p / np.where(reachable, q, 1.0), 0.0)
        if ratio.max() <= 0:
            raise DataError("no generated object falls inside the target's magnitude/size range")
        accept = ratio / ratio.max()
        return accept, float(self.p[~reachable].sum()), float((q * accept).sum())


def stamp_mag_size(images: np.ndarray, flux_norm: np.ndarray, photometry: Photometry) -> tuple[np.ndarray, np.ndarray]:
    """AB magnitude and fast half-light radius of stored-unit stamps.

    Parameters
    ----------
    images : numpy.ndarray
        (n, ...) stamps in stored units.
    flux_norm : numpy.ndarray
        (n,) their objects' flux_norm.
    photometry : Photometry
        The calibration (flux scale, zero point).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        (n,) AB magnitudes (NaN for flux <= 0) and (n,) half-light radii in pixels.
    """
    flux = np.asarray(images, np.float64).reshape(len(images), -1).sum(1) * flux_norm / photometry.flux_scale
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, photometry.zero_point - 2.5 * np.log10(flux), np.nan)
    return mag, half_light_radius(images)


def rejection_sample(draw, n: int, target_mag: np.ndarray, target_size: np.ndarray, photometry: Photometry,
                     seed: int = 0, bins: int = 8, pilot: int = 2000, batch: int = 512,
                     max_draws: int = 1_000_000) -> dict[str, np.ndarray]:
    """Generated galaxies whose (AB magnitude, half-light radius) follow a target table.

    Rejection sampling on a (mag, size) grid: a pilot sample gives the generator's own
    density q, the target table the wanted density p (both as `bins`×`bins` histograms on the
    target's 1st–99th percentile range); a candidate in cell c is kept with probability
    (p_c / q_c) / max_c(p_c / q_c).  Cells the generator never reaches cannot be filled:
    their share of the target is reported as `unreachable_fraction`.

    Parameters
    ----------
    draw : callable
        ``draw(k, rng) -> images (k, H, W)`` in stored units (e.g. a model's samples).
    n : int
        Objects to keep.
    target_mag, target_size : numpy.ndarray
        The target table's AB magnitudes and half-light radii (pixels of the stamps).
    photometry : Photometry
        Calibration of the stored units (with a zero point).
    seed, bins, pilot, batch, max_draws
        Randomness; grid cells per axis; pilot draws; candidates per call; a bound on draws.

    Returns
    -------
    dict
        ``images`` (n, H, W), ``flux``, ``mag_ab``, ``half_light_radius`` (n,),
        ``acceptance`` (kept / drawn), ``unreachable_fraction``.

    Raises
    ------
    DataError
        Without a zero point, or when `max_draws` candidates give fewer than `n`.
    """
    if photometry.zero_point is None:
        raise DataError("a target magnitude distribution needs a zero point (--zero-point or the store's attribute)")
    rng = np.random.default_rng(seed)
    target = MagSizeTarget.from_table(target_mag, target_size, bins)

    def measure(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        norm = photometry.draw_flux_norm(int(rng.integers(2**62)), 0, len(images))
        mag, size = stamp_mag_size(images, norm, photometry)
        return images.reshape(len(images), -1).sum(1) * norm / photometry.flux_scale, mag, size, \
            target.cells(mag, size)

    accept, unreachable, _ = target.acceptance(measure(np.asarray(draw(pilot, rng), np.float64))[3])
    kept: dict[str, list[np.ndarray]] = {"images": [], "flux": [], "mag_ab": [], "half_light_radius": []}
    n_kept, drawn = 0, 0
    while n_kept < n:
        if drawn >= max_draws:
            raise DataError(f"rejection sampling kept {n_kept} of {n} objects in {drawn} draws; the generator "
                            "rarely reaches the target's magnitudes and sizes")
        images = np.asarray(draw(batch, rng), np.float64)
        drawn += len(images)
        flux, mag, size, cell = measure(images)
        take = (cell >= 0) & (rng.random(len(images)) < np.where(cell >= 0, accept[np.maximum(cell, 0)], 0.0))
        for key, values in (("images", images), ("flux", flux), ("mag_ab", mag), ("half_light_radius", size)):
            kept[key].append(values[take])
        n_kept += int(take.sum())
    out = {k: np.concatenate(v)[:n] for k, v in kept.items()}
    out["acceptance"] = np.float64(n_kept / drawn)
    out["unreachable_fraction"] = np.float64(unreachable)
    return out
