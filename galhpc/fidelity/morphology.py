"""Per-stamp statistics of real and generated galaxies: morphology, flux, size–flux, power spectrum.

The morphology is statmorph's; the size–flux relation enters as the surface brightness
inside r½; the power spectrum is azimuthally averaged.

statmorph (Rodriguez-Gomez et al. 2019) needs a background-subtracted image, a
segmentation map and a noise estimate (a weight map or a gain).  Our stamps carry none of
these, so each is derived from the stamp itself: the background level and noise σ from
the border pixels (median, MAD), the segment as the connected region above
max(`nsigma`·σ, `peak_fraction`·peak) of a lightly smoothed copy that contains the centre
(or else the largest one), and a constant weight map σ.  The peak-fraction floor keeps
segments comparable between noisy real stamps and noise-free generated ones.

Every stamp of a set is measured the same way, so two sets are comparable only when
their stamps share size, PSF and sky noise: `add_noise` puts noise-free generated stamps
on the real stamps' sky σ first.  A stack is measured by `processes` worker processes
(statmorph's Sérsic fit is the cost), with a progress bar.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import warnings

import numpy as np
from scipy import ndimage, stats

from galhpc.extras import require
from galhpc.runtime.process import progress

log = logging.getLogger("galhpc.fidelity")

# statistic name -> statmorph attribute
STATMORPH: dict[str, str] = {
    "concentration": "concentration",
    "asymmetry": "asymmetry",
    "smoothness": "smoothness",
    "gini": "gini",
    "m20": "m20",
    "ellipticity": "ellipticity_asymmetry",
    "half_light_radius": "rhalf_circ",
    "sersic_n": "sersic_n",
    "flux": "flux_circ",
}
# the azimuthally averaged power spectrum in bands of spatial frequency (cycles per pixel)
POWER_BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.0625), (0.0625, 0.125), (0.125, 0.25), (0.25, 0.5))
POWER_NAMES = tuple(f"log_power_k{i + 1}" for i in range(len(POWER_BANDS)))
# every per-stamp statistic, in table order; `log_sb_rhalf` = log10 of the mean surface brightness
# inside r½ ((flux / 2) / (π r½²)): where sizes and fluxes are drawn without their relation, it moves
# `measured` = 1 where statmorph measured the stamp (a central segment, flag < 2), else 0: a
# generator whose stamps statmorph cannot measure must not be scored on its few measurable ones
STATISTICS: tuple[str, ...] = (*STATMORPH, "log_sb_rhalf", *POWER_NAMES, "measured")
# the statmorph flux of an object without a segment (a blank stamp): not measurable
_NAN = dict.fromkeys(STATISTICS, float("nan")) | {"measured": 0.0}


def sky_level(image: np.ndarray, border: int = 4) -> tuple[float, float]:
    """Median and robust σ (1.4826·MAD) of the pixels within `border` of the edge of a 2-D stamp.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) stamp, any flux unit.
    border : int, optional
        Width of the edge frame, in pixels (default 4).

    Returns
    -------
    level : float
        Median of the frame pixels (the sky level), in the stamp's unit.
    sigma : float
        1.4826 x median absolute deviation of the frame pixels (the sky noise σ).
    """
    mask = np.ones(image.shape, bool)
    mask[border:-border, border:-border] = False
    edge = image[mask]
    median = float(np.median(edge))
    return median, float(1.4826 * np.median(np.abs(edge - median)))


def segment_galaxy(image: np.ndarray, nsigma: float = 2.0, peak_fraction: float = 0.05
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """Background-subtract a 2-D stamp and segment its central source.

    The segment is the connected region (8-connected) above max(nsigma·σ, peak_fraction·peak)
    of the sky-subtracted stamp smoothed by a σ = 1 pixel Gaussian that contains the centre
    pixel, or else the largest such region.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) stamp, any flux unit.
    nsigma : float, optional
        Detection threshold in units of the border noise σ (default 2).
    peak_fraction : float, optional
        Detection floor as a fraction of the sky-subtracted peak (default 0.05).

    Returns
    -------
    sub : numpy.ndarray
        (H, W) float64 stamp minus its border-median sky level.
    segmap : numpy.ndarray
        (H, W) int32 segmentation map, the source labelled 1 and the rest 0 (all 0 when
        nothing is above the threshold).
    sigma : float
        Noise σ of the border pixels, floored at 1e-3 of the peak (for noise-free stamps).
    """
    image = np.asarray(image, np.float64)
    level, sigma = sky_level(image)
    sub = image - level
    peak = float(sub.max())
    sigma = max(sigma, 1e-3 * max(peak, 1e-12))
    detect = ndimage.gaussian_filter(sub, 1.0)
    labels, n = ndimage.label(detect > max(nsigma * sigma, peak_fraction * peak), structure=np.ones((3, 3)))
    segmap = np.zeros(image.shape, np.int32)
    if n:
        centre = labels[image.shape[0] // 2, image.shape[1] // 2]
        keep = centre if centre else int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
        segmap[labels == keep] = 1
    return sub, segmap, sigma


def power_spectrum(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectrum of a 2-D stamp (its border-median sky removed).

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) stamp, any flux unit.

    Returns
    -------
    k : numpy.ndarray
        (min(H, W) // 2,) float64 centre of each annulus, cycles per pixel (0 to 0.5).
    power : numpy.ndarray
        (min(H, W) // 2,) float64 mean |FFT|² in the annulus, in (flux unit)².
    """
    image = np.asarray(image, np.float64)
    sub = image - sky_level(image)[0]
    power2d = np.abs(np.fft.fftshift(np.fft.fft2(sub))) ** 2
    h, w = image.shape
    ky, kx = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(h)), np.fft.fftshift(np.fft.fftfreq(w)), indexing="ij")
    radius = np.hypot(ky, kx)
    n_bins = min(h, w) // 2
    edges = np.linspace(0.0, 0.5, n_bins + 1)
    index = np.clip(np.digitize(radius.ravel(), edges) - 1, 0, n_bins)
    sums = np.bincount(index, power2d.ravel(), n_bins + 1)[:n_bins]
    counts = np.bincount(index, minlength=n_bins + 1)[:n_bins]
    return 0.5 * (edges[:-1] + edges[1:]), sums / np.maximum(counts, 1)


def band_powers(image: np.ndarray) -> dict[str, float]:
    """log10 of the mean azimuthally averaged power in each band of `POWER_BANDS`.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) stamp, any flux unit (its border-median sky is removed first, as in
        `power_spectrum`).

    Returns
    -------
    dict of str to float
        `POWER_NAMES` -> log10 mean power of the annuli whose centre lies in the band
        (cycles per pixel); NaN where the band holds no annulus or no power.
    """
    k, power = power_spectrum(image)
    out = {}
    for name, (lo, hi) in zip(POWER_NAMES, POWER_BANDS, strict=True):
        inside = (k >= lo) & (k < hi)
        out[name] = float(np.log10(power[inside].mean())) if inside.any() and power[inside].mean() > 0 \
            else float("nan")
    return out


def measure(image: np.ndarray) -> dict[str, float]:
    """Every statistic of `STATISTICS` for one 2-D stamp.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) stamp with sky noise (see `add_noise` for noise-free ones).

    Returns
    -------
    dict
        name -> value; the statmorph ones are NaN when statmorph flags the stamp bad (flag
        >= 2) and `sersic_n` when its Sérsic fit failed; r½ in pixels, flux in the stamp's
        units; the power-spectrum bands are measured on every stamp; `measured` is 1.0 where
        statmorph measured the stamp, else 0.0.

    Raises
    ------
    galhpc.extras.MissingExtraError
        If statmorph (the "report" extra) is not installed.

    References
    ----------
    .. [1] Rodriguez-Gomez, V., Snyder, G. F., Lotz, J. M., et al. (2019), "The optical
       morphologies of galaxies in the IllustrisTNG simulation", MNRAS 483, 4140 (statmorph).
    """
    statmorph = require("statmorph", "report", "the morphology statistics of galhpc-fidelity and galhpc-report")

    out = dict(_NAN) | band_powers(image)
    sub, segmap, sigma = segment_galaxy(image)
    if segmap.sum() < 5:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            morph = statmorph.SourceMorphology(sub, segmap, 1, weightmap=np.full(sub.shape, sigma))
            if morph.flag >= 2:
                return out
            out.update({name: float(getattr(morph, attr)) for name, attr in STATMORPH.items()}, measured=1.0)
        except Exception as err:  # statmorph raises assorted errors on degenerate stamps
            log.debug("statmorph failed on a stamp: %s", err)
            return out
        if morph.flag_sersic >= 2:
            out["sersic_n"] = float("nan")
    flux, rhalf = out["flux"], out["half_light_radius"]
    out["log_sb_rhalf"] = float(np.log10(0.5 * flux / (np.pi * rhalf**2))) if flux > 0 and rhalf > 0 \
        else float("nan")
    return out


def _measure_rows(images: np.ndarray) -> list[dict[str, float]]:
    return [measure(img) for img in images]


def as_2d_stack(images: np.ndarray) -> np.ndarray:
    """(N, H, W) float64 stamps of (N, H, W) or (N, C, H, W) ones (channels averaged).

    Parameters
    ----------
    images : numpy.ndarray
        (N, H, W) or (N, C, H, W) stamps (channels averaged), any flux unit.

    Returns
    -------
    numpy.ndarray
        (N, H, W) float64.

    Raises
    ------
    ValueError
        If images is neither 3-D nor 4-D.
    """
    images = np.asarray(images, np.float64)
    if images.ndim == 4:
        images = images.mean(axis=1)
    if images.ndim != 3:
        raise ValueError(f"stamps must be (N, H, W) or (N, C, H, W), got shape {images.shape}")
    return images


def default_processes() -> int:
    """Worker processes for `morphology_table`: the CPUs this process may use.

    Returns
    -------
    int
        The size of this process's CPU affinity set, or os.cpu_count() (at least 1) where
        the platform has no affinity.
    """
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def morphology_table(images: np.ndarray, desc: str = "statmorph", processes: int = 1) -> dict[str, np.ndarray]:
    """Every statistic of `STATISTICS` for a stack of stamps, measured in parallel.

    Parameters
    ----------
    images : numpy.ndarray
        (N, H, W) or (N, C, H, W) stamps (channels averaged).
    desc : str
        Label of the progress bar (`galhpc.runtime.progress`; a second or so a stamp).
    processes : int
        Worker processes (forked; 1 measures in this process).  Order is kept.

    Returns
    -------
    dict
        name -> (N,) float64 values (NaN where not measurable).
    """
    images = as_2d_stack(images)
    n = len(images)
    blocks = [images[i:i + 8] for i in range(0, n, 8)]
    rows: list[dict[str, float]] = []
    with progress(total=n, desc=desc, unit="stamp") as bar:
        if processes > 1 and len(blocks) > 1:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with multiprocessing.get_context(method).Pool(min(processes, len(blocks))) as pool:
                for part in pool.imap(_measure_rows, blocks):
                    rows.extend(part)
                    bar.update(len(part))
        else:
            for image in images:
                rows.append(measure(image))
                bar.update(1)
    return {name: np.array([r[name] for r in rows], np.float64).reshape(n) for name in STATISTICS}


def median_sky_sigma(images: np.ndarray) -> float:
    """Median border-pixel noise σ of a stack of stamps.

    Parameters
    ----------
    images : numpy.ndarray
        (N, H, W) or (N, C, H, W) stamps, any flux unit, channels averaged by `as_2d_stack`.

    Returns
    -------
    float
        Median over stamps of `sky_level`'s σ, in the stamps' flux unit.
    """
    return float(np.median([sky_level(img)[1] for img in as_2d_stack(images)]))


def add_noise(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Images plus white Gaussian noise of standard deviation `sigma`.

    This puts noise-free generated stamps on the real stamps' footing: statmorph flags a
    noise-free stamp whose smooth background is not exactly zero as "not
    background-subtracted", and smoothness depends directly on the noise.

    Parameters
    ----------
    images : numpy.ndarray
        Stamps of any shape, any flux unit.
    sigma : float
        Noise standard deviation, in the stamps' flux unit.
    rng : numpy.random.Generator
        Source of the noise.

    Returns
    -------
    numpy.ndarray
        float64, the shape of `images`.
    """
    return np.asarray(images, np.float64) + rng.normal(0.0, sigma, np.shape(images))


def match_noise(images: np.ndarray, real_sigma: float, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """Stamps with white noise added up to the real stamps' median sky σ.

    The added σ is sqrt(real_sigma² - own²), so the sum matches in quadrature.

    Parameters
    ----------
    images : numpy.ndarray
        (N, H, W) or (N, C, H, W) stamps (channels averaged), any flux unit.
    real_sigma : float
        Target median sky σ (e.g. `median_sky_sigma` of the real stamps), in the same unit.
    rng : numpy.random.Generator
        Source of the noise.

    Returns
    -------
    stamps : numpy.ndarray
        float64, the shape of `images`, noise added.
    own : float
        The stamps' own median sky σ before.
    added : float
        σ of the noise added (0 when they are already as noisy).
    """
    own = median_sky_sigma(images)
    added = float(np.sqrt(max(real_sigma**2 - own**2, 0.0)))
    return (add_noise(images, added, rng) if added > 0 else np.asarray(images, np.float64)), own, added


def ks_distance(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Two-sample Kolmogorov–Smirnov distance and p-value (scipy), ignoring non-finite values.

    Parameters
    ----------
    a, b : numpy.ndarray
        Samples of one statistic (any shape, flattened by the finite-value mask).

    Returns
    -------
    dict
        "ks" (scipy.stats.ks_2samp statistic), "p_value", and the finite sample sizes
        "n_a", "n_b"; ks and p_value are NaN when either sample has no finite value.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return {"ks": float("nan"), "p_value": float("nan"), "n_a": len(a), "n_b": len(b)}
    res = stats.ks_2samp(a, b)
    return {"ks": float(res.statistic), "p_value": float(res.pvalue), "n_a": len(a), "n_b": len(b)}


def compare_tables(real: dict[str, np.ndarray], generated: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """KS distance per statistic present in both tables.

    Parameters
    ----------
    real, generated : dict of str to numpy.ndarray
        Statistic name -> (N,) values, as from `morphology_table`.

    Returns
    -------
    dict of str to dict
        Statistic name -> `ks_distance` of its real and generated values, for the names of
        `real` also in `generated`.
    """
    return {name: ks_distance(real[name], generated[name]) for name in real if name in generated}
