"""Per-pixel knowledge of a stamp: bad pixels and their fill, the sky level, neighbours.

Survey cutouts come with a σ map (ERR/WHT) and a mask (DQ); galhpc-prep keeps both
beside the images (store datasets `sigma` and `mask`, docs/schema.md) and uses them here:

- `bad_pixel_verdict`: how many pixels are bad (mask != 0, NaN/inf) and whether the object
  must be rejected (more than `max_bad_fraction` bad, or the centre pixel bad).  Saturated
  pixels (`MASK_SATURATED`, from a DQ's saturation bits) are the object's own brightest
  pixels, not missing data: they neither count towards `max_bad_fraction` nor reject a
  saturated core (a bright star, a galaxy's nucleus) unless `prep.saturated` is "reject";
- `fill_bad_pixels`: bad pixels replaced by the sky plus Gaussian noise of the local σ, so
  the encoder sees a plausible image while the mask keeps them out of every likelihood
  (saturated pixels keep their clipped value, a lower bound: a flat-topped core, not a hole);
- `border_sky`: the sky level as the sigma-clipped median of the border frame (astropy
  `sigma_clipped_stats`, masked pixels left out);
- `neighbour_mask`: every source that is not the target, by photutils detection and
  deblending on the stamp (the target is the segment under the centre pixel, else the
  one nearest to it).
"""

from __future__ import annotations

import numpy as np

from galhpc.extras import require

SKY_CLIP_SIGMA = 3.0  # sigma-clipping threshold of the border sky estimate
NEIGHBOUR_NPIXELS = 5  # connected pixels for a neighbour detection
NEIGHBOUR_GROW = 1  # pixels by which each neighbour's segment is dilated (its faint wings)
MASK_BAD, MASK_SATURATED = 1, 2  # values of a source's mask before the store (which keeps non-zero = bad)


def _plane_bad(mask: np.ndarray | None, image: np.ndarray) -> np.ndarray:
    """(H, W) bool: a pixel is bad if any band is non-finite or masked."""
    bad = ~np.isfinite(image)
    if mask is not None:
        bad |= mask != 0
    return bad.any(axis=0) if bad.ndim == 3 else bad


def saturated_pixels(mask: np.ndarray | None, image: np.ndarray) -> np.ndarray:
    """Saturated pixels: flagged `MASK_SATURATED` in every band, with a finite value.

    Parameters
    ----------
    mask : numpy.ndarray or None
        The source's mask, (H, W) or (C, H, W) uint8 (`MASK_BAD`, `MASK_SATURATED` or 0);
        None: no mask.
    image : numpy.ndarray
        The stamp, same shape as `mask`, float.

    Returns
    -------
    numpy.ndarray
        (H, W) bool.
    """
    if mask is None:
        return np.zeros(image.shape[-2:], bool)
    sat = (mask == MASK_SATURATED) & np.isfinite(image)
    return sat.all(axis=0) if sat.ndim == 3 else sat


def bad_pixel_verdict(image: np.ndarray, mask: np.ndarray | None, max_bad_fraction: float,
                      saturated: str = "mask") -> str | None:
    """Why an object must be rejected for its bad pixels, or None when it is kept.

    Parameters
    ----------
    image : ndarray, (H, W) or (C, H, W), float
        The stamp; NaN/inf pixels (FITS BLANK already NaN) are bad.
    mask : ndarray like `image`, integer, or None
        Non-zero = bad pixel (DQ, MASK, FLAGS; a WHT of 0); `MASK_SATURATED` = saturated.
    max_bad_fraction : float
        Largest fraction of bad pixels kept (saturated pixels not counted).
    saturated : {"mask", "reject"}
        "mask" keeps an object with a saturated core (its saturated pixels masked);
        "reject" rejects it, saying so.

    Returns
    -------
    str or None
        E.g. "2 NaN/inf pixels + 3 masked pixels: 0.9 % of the image > max_bad_fraction
        0.5 %", "... the centre pixel is bad" or "12 saturated pixels: the centre pixel is
        saturated (prep.saturated: reject)"; None when the object is kept.
    """
    sat = saturated_pixels(mask, image)
    nonfinite = ~np.isfinite(image)
    masked = np.zeros_like(nonfinite) if mask is None else (mask != 0) & ~nonfinite
    masked &= ~np.broadcast_to(sat, masked.shape)
    bad = _plane_bad(mask, image) & ~sat
    h, w = bad.shape
    core = (slice((h - 1) // 2, h // 2 + 1), slice((w - 1) // 2, w // 2 + 1))
    if saturated == "reject" and sat[core].any():
        return f"{int(sat.sum())} saturated pixels: the centre pixel is saturated (prep.saturated: reject)"
    if not bad.any():
        return None
    parts = []
    if nonfinite.any():
        parts.append(f"{int(nonfinite.sum())} NaN/inf pixels")
    if masked.any():
        parts.append(f"{int(masked.sum())} masked pixels")
    fraction = bad.mean()
    if bad[core].any():
        return " + ".join(parts) + ": the centre pixel is bad"
    if fraction > max_bad_fraction:
        return " + ".join(parts) + (f": {100 * fraction:.2g} % of the image > max_bad_fraction "
                                    f"{100 * max_bad_fraction:.2g} %")
    return None


def border_frame(shape: tuple[int, int], border: int) -> np.ndarray:
    """The frame of width `border` (at most a quarter of the side) at a stamp's edges.

    Parameters
    ----------
    shape : (int, int)
        The stamp's (H, W) in pixels.
    border : int
        Frame width in pixels (clipped to [1, min(H, W) // 4]).

    Returns
    -------
    numpy.ndarray
        (H, W) bool, True on the frame.
    """
    h, w = shape
    b = max(1, min(border, h // 4, w // 4))
    frame = np.ones((h, w), dtype=bool)
    frame[b : h - b, b : w - b] = False
    return frame


def border_sky(image: np.ndarray, bad: np.ndarray, border: int) -> tuple[float, float]:
    """Sky level and its per-pixel σ on the border frame, sigma-clipped (astropy).

    Parameters
    ----------
    image : ndarray, (H, W) or (C, H, W), float
        The stamp (bands are averaged).
    bad : ndarray, (H, W), bool
        Pixels left out.
    border : int
        Frame width in pixels.

    Returns
    -------
    (float, float)
        The sigma-clipped median and standard deviation (3 σ, `astropy.stats.sigma_clipped_stats`);
        (0, NaN) when the frame has no good pixel.
    """
    from astropy.stats import sigma_clipped_stats

    plane = image.mean(axis=0) if image.ndim == 3 else image
    use = border_frame(plane.shape, border) & ~bad & np.isfinite(plane)
    if not use.any():
        return 0.0, float("nan")
    _, median, std = sigma_clipped_stats(plane[use], sigma=SKY_CLIP_SIGMA)
    return float(median), float(std)


def fill_bad_pixels(image: np.ndarray, sigma: np.ndarray, bad: np.ndarray, sky: float,
                    rng: np.random.Generator) -> np.ndarray:
    """The stamp with its bad pixels replaced by `sky` + N(0, σ) of the local σ.

    Parameters
    ----------
    image, sigma : ndarray, (H, W) or (C, H, W), float
        The stamp and its per-pixel σ (same units); a non-finite σ at a bad pixel is
        replaced by the median σ of the good pixels.
    bad : ndarray, (H, W), bool
        Pixels to fill.
    sky : float
        Sky level of the stamp (same units).
    rng : numpy.random.Generator
        Source of the noise (seeded per object, so a re-run fills alike).

    Returns
    -------
    ndarray like `image`, float32
    """
    out = np.array(image, dtype=np.float32, copy=True)
    if not bad.any():
        return out
    sel = np.broadcast_to(bad, out.shape)
    good_sigma = sigma[~sel & np.isfinite(sigma)]
    typical = float(np.median(good_sigma)) if good_sigma.size else 0.0
    local = np.where(np.isfinite(sigma), sigma, typical)[sel]
    out[sel] = sky + rng.standard_normal(local.shape) * local
    return out


def neighbour_mask(image: np.ndarray, sigma: np.ndarray, nsigma: float, sky: float = 0.0) -> np.ndarray:
    """(H, W) bool: pixels of every detected source other than the target at the centre.

    Parameters
    ----------
    image, sigma : ndarray, (H, W) or (C, H, W), float
        The stamp (bad pixels filled) and its per-pixel σ; bands are averaged.
    nsigma : float
        Detection threshold in units of σ (photutils `detect_sources`, then
        `deblend_sources`, both on the stamp minus `sky`).
    sky : float
        Sky level subtracted before detection.

    Returns
    -------
    ndarray, (H, W), bool
        True on the (slightly grown) segments of all other sources; all False when nothing
        or only the target is found.
    """
    require("photutils", "hdf", "the prep neighbours step")
    from photutils.segmentation import deblend_sources, detect_sources
    from scipy import ndimage

    plane = (image.mean(axis=0) if image.ndim == 3 else image) - sky
    noise = sigma.mean(axis=0) if sigma.ndim == 3 else sigma
    h, w = plane.shape
    segments = detect_sources(plane, nsigma * noise, n_pixels=NEIGHBOUR_NPIXELS)
    if segments is None:
        return np.zeros((h, w), dtype=bool)
    segments = deblend_sources(plane, segments, n_pixels=NEIGHBOUR_NPIXELS, progress_bar=False)
    labels = segments.data
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    target = labels[int(round(cy)), int(round(cx))]
    if target == 0:  # no segment under the centre: the nearest one is the target
        ys, xs = np.nonzero(labels)
        nearest = np.argmin((ys - cy) ** 2 + (xs - cx) ** 2)
        target = labels[ys[nearest], xs[nearest]]
    others = (labels != 0) & (labels != target)
    if NEIGHBOUR_GROW and others.any():
        others = ndimage.binary_dilation(others, iterations=NEIGHBOUR_GROW) & (labels != target)
    return others
