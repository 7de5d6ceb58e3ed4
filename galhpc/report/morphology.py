"""Non-parametric morphology (statmorph) of real and generated stamps, and their KS distances.

statmorph needs a background-subtracted image, a segmentation map and a noise estimate
(a weight map or a gain).  Our stamps carry none of these, so each is derived from the
stamp itself: the background level and noise σ from the border pixels (median, MAD),
the segment as the connected region above max(`nsigma`·σ, `peak_fraction`·peak) of a
lightly smoothed copy that contains the centre (or else the largest one), and a
constant weight map σ.  The peak-fraction floor keeps segments comparable between
noisy real stamps and noise-free generated ones.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import ndimage

from galhpc.extras import require
from galhpc.report.metrics import ks_distance
from galhpc.runtime import progress

log = logging.getLogger("galhpc.report")

# report name -> statmorph attribute
STATISTICS: dict[str, str] = {
    "concentration": "concentration",
    "asymmetry": "asymmetry",
    "smoothness": "smoothness",
    "gini": "gini",
    "m20": "m20",
    "ellipticity": "ellipticity_asymmetry",
    "half_light_radius": "rhalf_circ",
}


def sky_level(image: np.ndarray, border: int = 4) -> tuple[float, float]:
    """Median and robust σ (1.4826·MAD) of the pixels within `border` of the edge."""
    mask = np.ones(image.shape, bool)
    mask[border:-border, border:-border] = False
    edge = image[mask]
    median = float(np.median(edge))
    return median, float(1.4826 * np.median(np.abs(edge - median)))


def segment_galaxy(image: np.ndarray, nsigma: float = 2.0, peak_fraction: float = 0.05
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """Background-subtract a 2-D stamp and segment its central source.

    Returns (image minus sky, int segmentation map with the source labelled 1, noise σ).
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


def measure(image: np.ndarray) -> dict[str, float]:
    """statmorph statistics of one 2-D stamp; NaN everywhere when statmorph flags it bad."""
    statmorph = require("statmorph", "report", "the morphology statistics of galhpc-report")

    nan = {name: float("nan") for name in STATISTICS}
    sub, segmap, sigma = segment_galaxy(image)
    if segmap.sum() < 5:
        return nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            morph = statmorph.SourceMorphology(sub, segmap, 1, weightmap=np.full(sub.shape, sigma))
        except Exception as err:  # statmorph raises assorted errors on degenerate stamps
            log.debug("statmorph failed on a stamp: %s", err)
            return nan
        if morph.flag >= 2:
            return nan
        return {name: float(getattr(morph, attr)) for name, attr in STATISTICS.items()}


def morphology_table(images: np.ndarray, desc: str = "statmorph") -> dict[str, np.ndarray]:
    """statmorph statistics of a stack (N, H, W) or (N, C, H, W) (channels averaged);
    its progress (a second or so a stamp) is shown as `galhpc.runtime.progress` under `desc`."""
    images = np.asarray(images, np.float64)
    if images.ndim == 4:
        images = images.mean(axis=1)
    rows = [measure(img) for img in progress(images, total=len(images), desc=desc, unit="stamp")]
    return {name: np.array([r[name] for r in rows]) for name in STATISTICS}


def median_sky_sigma(images: np.ndarray) -> float:
    """Median border-pixel noise σ of a stack (N, H, W) or (N, C, H, W)."""
    images = np.asarray(images, np.float64)
    if images.ndim == 4:
        images = images.mean(axis=1)
    return float(np.median([sky_level(img)[1] for img in images]))


def add_noise(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Images plus white Gaussian noise σ: puts noise-free generated stamps on the real stamps'
    footing (statmorph flags a noise-free stamp whose smooth background is not exactly zero as
    "not background-subtracted", and smoothness depends directly on the noise)."""
    return np.asarray(images, np.float64) + rng.normal(0.0, sigma, np.shape(images))


def compare_tables(real: dict[str, np.ndarray], generated: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """KS distance per statistic between real and generated tables."""
    return {name: ks_distance(real[name], generated[name]) for name in STATISTICS}
