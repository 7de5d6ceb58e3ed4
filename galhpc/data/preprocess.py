"""Preprocessing recipes of the galaxy-morphology literature, as small pure numpy functions.

Images are float arrays whose last two axes are (H, W); multi-band images are (C, H, W).
Every function returns a new array and leaves its input untouched.  The numba kernels in
`galhpc.kernels` are tested against these reference versions.
"""

from __future__ import annotations

import numpy as np


def to_grey(img_bands: np.ndarray) -> np.ndarray:
    """Mean over the band axis (-3): g, r, i (or any bands) to one grey image.

    Parameters
    ----------
    img_bands : numpy.ndarray
        Images (..., C, H, W), any float or integer dtype.

    Returns
    -------
    numpy.ndarray
        (..., H, W) float32, the band mean (accumulated in float64), in the input's units.

    Raises
    ------
    ValueError
        The input has fewer than three axes (no band axis).
    """
    img_bands = np.asarray(img_bands)
    if img_bands.ndim < 3:
        raise ValueError(f"to_grey needs a band axis (..., C, H, W); got shape {img_bands.shape}")
    return img_bands.mean(axis=-3, dtype=np.float64).astype(np.float32)


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The central size x size pixels; for odd margins the extra pixel is cut at the end.

    Parameters
    ----------
    img : numpy.ndarray
        Image(s) (..., H, W), any dtype.
    size : int
        Side of the crop in pixels, at most min(H, W).

    Returns
    -------
    numpy.ndarray
        A copy (..., size, size) of the same dtype.

    Raises
    ------
    ValueError
        `size` exceeds H or W.
    """
    h, w = img.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"cannot crop {size}x{size} from an image of {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top : top + size, left : left + size].copy()


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Area-resampling weights (n_out, n_in), each row summing to 1.

    The overlap of each output pixel's footprint with each input pixel, divided by the
    footprint length (flux per pixel is averaged).
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
    return overlap / (n_in / n_out)


def resize_area(img: np.ndarray, size: int, variance: bool = False) -> np.ndarray:
    """Resize the last two axes to size x size by exact area averaging (any scale factor).

    Each output pixel is the mean of the input over its footprint, with fractional input
    pixels weighted by their overlap; the image mean is preserved.  With `variance`, `img`
    is a per-pixel variance map and the result is the variance of that weighted mean for
    independent pixel noise, Σ w² σ² (1/f² of the mean variance only for an integer factor
    f: 48 -> 32 pixels gives 25/81, not 1/2.25).

    Parameters
    ----------
    img : numpy.ndarray
        Image(s) (..., H, W), float, in any units (or squared units with `variance`).
    size : int
        Output side in pixels (smaller or larger than H and W).
    variance : bool
        `img` is a variance map σ² (its weights are squared).

    Returns
    -------
    numpy.ndarray
        (..., size, size) float32 (computed in float64), in the units of `img`.
    """
    h, w = img.shape[-2:]
    if (h, w) == (size, size):
        return np.array(img, dtype=np.float32)
    rows = _area_matrix(h, size)
    cols = _area_matrix(w, size)
    if variance:
        rows, cols = np.square(rows), np.square(cols)
    out = rows @ np.asarray(img, dtype=np.float64) @ cols.T
    return out.astype(np.float32)


def random_flips(batch: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """Flip each image of a batch (B, ..., H, W) horizontally and vertically, each with p=1/2.

    The draws come from `generator` (two Bernoulli draws per image: horizontal, vertical),
    so the same generator state gives the same flips.

    Parameters
    ----------
    batch : numpy.ndarray
        Images (B, ..., H, W), any dtype.
    generator : numpy.random.Generator
        Source of the 2 B uniform draws.

    Returns
    -------
    numpy.ndarray
        A flipped copy, same shape and dtype.
    """
    draws = generator.random((batch.shape[0], 2)) < 0.5
    out = np.array(batch, copy=True)
    hflip, vflip = draws[:, 0], draws[:, 1]
    out[hflip] = out[hflip][..., ::-1]
    out[vflip] = out[vflip][..., ::-1, :]
    return out


def arcsinh_stretch(img: np.ndarray, scale: float) -> np.ndarray:
    """arcsinh(img / scale): linear below `scale`, logarithmic above (Lupton et al. 1999).

    Parameters
    ----------
    img : numpy.ndarray
        Image(s), float, in flux units (counts, nanomaggies, ...).
    scale : float
        Softening in the same units (> 0).

    Returns
    -------
    numpy.ndarray
        The stretched image, same shape, float32, dimensionless.

    Raises
    ------
    ValueError
        `scale` is not positive.
    """
    if scale <= 0:
        raise ValueError(f"arcsinh scale must be > 0, got {scale}")
    return np.arcsinh(np.asarray(img, dtype=np.float64) / scale).astype(np.float32)


def minmax_coefficients(img: np.ndarray) -> tuple[float, float]:
    """The (offset, scale) such that (img - offset) * scale spans [0, 1].

    Parameters
    ----------
    img : numpy.ndarray
        Image(s), any shape, float; all bands share one pair.

    Returns
    -------
    (float, float)
        The minimum (input units) and 1 / (max - min) (inverse input units); scale 0 for a
        flat image.
    """
    lo, hi = float(np.min(img)), float(np.max(img))
    return lo, (1.0 / (hi - lo) if hi > lo else 0.0)


def minmax(img: np.ndarray) -> np.ndarray:
    """Scale an image (all bands together) linearly to [0, 1]; a flat image becomes zeros.

    Parameters
    ----------
    img : numpy.ndarray
        Image(s), any shape, float.

    Returns
    -------
    numpy.ndarray
        Same shape, float32, dimensionless in [0, 1] (see `minmax_coefficients`).
    """
    offset, scale = minmax_coefficients(img)
    return ((np.asarray(img, dtype=np.float64) - offset) * scale).astype(np.float32)


FLUX_FLOOR_SIGMA = 5.0  # flux normalisation floor: 5 σ of the summed noise (see flux_coefficient)


def flux_coefficient(img: np.ndarray, noise: float) -> float:
    """The flux F that `flux` normalisation divides by.

    F is the sum of the sky-subtracted pixels (an unbiased flux estimate), floored at 5 σ of
    that sum's noise, FLUX_FLOOR_SIGMA · noise · sqrt(n_pixels), so a stamp with no
    detectable source is not blown up to unit flux.

    Parameters
    ----------
    img : ndarray, (H, W) or (C, H, W), float
        Background-subtracted image in input units (counts, nanomaggies, ...).
    noise : float
        Per-pixel noise σ of `img` in the same units (e.g. `border_noise`).

    Returns
    -------
    float
        F in input units; > 0 unless the image is all zeros and noiseless.
    """
    total = float(np.sum(img, dtype=np.float64))
    return max(total, FLUX_FLOOR_SIGMA * float(noise) * float(np.sqrt(np.asarray(img).size)))


def size_scaled_crop(img: np.ndarray, r90: float, factor: float, size: int,
                     variance: bool = False) -> tuple[np.ndarray, float]:
    """A centred box of side `factor` x R90, resampled to size x size.

    The Galaxy Zoo convention of cutouts scaled to each galaxy's extent (e.g. Walmsley et
    al. 2022).

    Parameters
    ----------
    img : ndarray, (H, W) or (C, H, W), float
        The cutout, centred on the galaxy.
    r90 : float
        Radius enclosing 90 % of the light, in pixels of `img` (a catalogue column).
    factor : float
        Box side in units of R90 (e.g. 3: the box reaches 1.5 R90 from the centre).
    size : int
        Output side in pixels.
    variance : bool
        `img` is a variance map: resampled as the variance of the area average
        (`resize_area`).

    Returns
    -------
    (ndarray (..., size, size) float32, float)
        The resampled box (area-averaged, so the mean surface brightness per pixel is
        kept) and the scale factor: input pixels per output pixel.

    Raises
    ------
    ValueError
        If r90 is not finite and positive.
    """
    if not np.isfinite(r90) or r90 <= 0:
        raise ValueError(f"R90 must be finite and > 0, got {r90}")
    h, w = img.shape[-2:]
    side = int(np.clip(np.ceil(factor * r90), 4, min(h, w)))
    box = centre_crop(img, side)
    return resize_area(box, size, variance), side / size


def _border_patches(img: np.ndarray, border: int) -> list[np.ndarray]:
    """Non-overlapping border x border patches tiling the frame of width `border`."""
    h, w = img.shape
    nx, ny = w // border, h // border
    if nx < 2 or ny < 2:
        raise ValueError(f"image {h}x{w} is too small for {border}x{border} border patches")
    patches = []
    for i in range(nx):  # top and bottom rows of patches, corners included
        x = i * border
        patches.append(img[:border, x : x + border])
        patches.append(img[h - border :, x : x + border])
    for j in range(1, ny - 1):  # left and right columns, corners excluded
        y = j * border
        patches.append(img[y : y + border, :border])
        patches.append(img[y : y + border, w - border :])
    return patches


def border_noise(img: np.ndarray, border: int = 8) -> float:
    """Background noise σ of an image, from its frame.

    The minimum standard deviation over the border x border patches tiling the image
    frame: the least contaminated patch of sky.

    Parameters
    ----------
    img : numpy.ndarray
        (H, W) or (C, H, W) float (bands averaged first), background-subtracted or not.
    border : int
        Patch side and frame width in pixels.

    Returns
    -------
    float
        σ in the image's units.

    Raises
    ------
    ValueError
        The image is smaller than 2 x 2 patches, or not 2-D/3-D.
    """
    img = single_band(img)
    return float(min(np.std(p, dtype=np.float64) for p in _border_patches(img, border)))


def snr(img: np.ndarray, border: int = 8) -> float:
    """Peak of the image block-averaged to 16x16, over the border noise.

    Parameters
    ----------
    img : numpy.ndarray
        (H, W) or (C, H, W) float (bands averaged first).
    border : int
        Patch side of `border_noise`, in pixels.

    Returns
    -------
    float
        Dimensionless signal-to-noise ratio; inf for a noiseless image.
    """
    img = single_band(img)
    peak = float(resize_area(img, 16).max())
    noise = border_noise(img, border)
    return peak / noise if noise > 0 else float("inf")


def non_uniformity(img: np.ndarray) -> float:
    """Max / mean of the image: large for compact sources, about 1 for flat frames.

    Parameters
    ----------
    img : numpy.ndarray
        (H, W) or (C, H, W) float (bands averaged first).

    Returns
    -------
    float
        Dimensionless ratio; inf when the mean is 0.
    """
    img = single_band(img)
    mean = float(np.mean(img, dtype=np.float64))
    return float(np.max(img)) / mean if mean != 0 else float("inf")


PIXEL_VARIANCE = 1.0 / 12.0  # px^2: variance of a unit pixel box, per axis
MIN_WEIGHT_VARIANCE = 0.25  # px^2: the narrowest fit (and weight) width allows, σ = 0.5 px (see width)


def width(img: np.ndarray, max_iter: int = 50, tol: float = 1e-5) -> float:
    """σ (pixels) of the major axis of the best-fitting elliptical 2-D Gaussian.

    The fit is by adaptive moments (Bernstein & Jarvis 2002): weight the image with the
    current Gaussian, take weighted moments, update the Gaussian from them (the update
    is exact for a Gaussian source, so it converges in a few steps); the fixed point is
    the least-squares Gaussian for a Gaussian-like source and ignores noise far out.
    Returns sqrt of the largest eigenvalue of the fitted covariance.  It is the width of
    the image as sampled: for a pixel-integrated Gaussian of covariance S it is that of
    S + I/12 (the unit pixel box adds 1/12 px^2 per axis), e.g. 2.021 px for σ = 2 px.

    Resolution limit.  On an under-sampled source the discrete weighted moments of a
    narrow weight fall short of the continuous ones the update assumes, so unchecked the
    weight narrows every step and the fit collapses.  Two floors stop it:

    - the fitted covariance (which is the next weight) keeps its eigenvalues >= 0.25 px^2
      (MIN_WEIGHT_VARIANCE, σ >= 0.5 px): a unit pixel box has variance 1/12 px^2, σ = 0.29
      px, and a Gaussian narrower than 3 x that is not sampled by the grid (its discrete
      sums differ from its integrals by ~exp(-2π² σ²): 0.7 % at σ² = 1/4, 19 % at 1/12);
    - the weighted moments keep theirs >= 1/12 px^2 (PIXEL_VARIANCE): the light of a pixel
      is spread over its box, so it cannot be localised better than that (this makes a
      single bright pixel, whose weighted moments are exactly 0, fittable).

    So the width is never below 0.5 px, and 0.5 means unresolved: a single bright pixel
    (point source) gives exactly 0.5.  Compact sources of σ ≲ 0.8 px are resolved only
    roughly (results depend on the sub-pixel position, and one centred on a pixel can
    fall to the 0.5 floor); a fit whose weight stays above the floors, i.e. any well-
    sampled source, is unchanged by them.  NaN only where there is nothing to fit: no
    positive flux, non-finite pixels, or a weighted flux <= 0 (e.g. a negative source).

    Parameters
    ----------
    img : numpy.ndarray
        (H, W) or (C, H, W) float (bands averaged first).
    max_iter : int
        At most this many adaptive-moment updates.
    tol : float
        Stop when the covariance changes by less than this, relative.

    Returns
    -------
    float
        σ of the major axis in pixels (>= 0.5), or NaN (see above).
    """
    img = np.asarray(single_band(img), dtype=np.float64)
    h, w = img.shape
    x, y = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    positive = np.clip(img, 0.0, None)
    total = positive.sum()
    if total <= 0:
        return float("nan")
    cx, cy = positive.sum(axis=0) @ x / total, positive.sum(axis=1) @ y / total
    start = max(min(h, w) / 8.0, 1.0) ** 2
    cov = (start, 0.0, start)  # (xx, xy, yy) of a symmetric 2x2 matrix
    for _ in range(max_iter):
        ixx, ixy, iyy = _inv2(cov)
        dx, dy = x - cx, y - cy
        exponent = ixx * (dx * dx)[None, :] + iyy * (dy * dy)[:, None] + 2 * ixy * np.outer(dy, dx)
        wi = np.exp(-0.5 * exponent) * img
        col, row = wi.sum(axis=0), wi.sum(axis=1)  # separable sums: moments from marginals
        norm = col.sum()
        if norm <= 0:
            return float("nan")
        mx, my = col @ dx / norm, row @ dy / norm
        weighted = (col @ (dx * dx) / norm - mx * mx, dy @ wi @ dx / norm - mx * my, row @ (dy * dy) / norm - my * my)
        if not np.all(np.isfinite(weighted)):
            return float("nan")
        weighted = _floor_eigenvalues(weighted, PIXEL_VARIANCE)
        # For a Gaussian source S: weighted^-1 = S^-1 + cov^-1, so this step is exact for
        # Gaussians; where it is not positive definite fall back to the classic 2 x weighted.
        wxx, wxy, wyy = _inv2(weighted)
        solved = (wxx - ixx, wxy - ixy, wyy - iyy)
        positive_definite = solved[0] > 0 and _det2(solved) > 0
        new = _inv2(solved) if positive_definite else tuple(2.0 * v for v in weighted)
        new = _floor_eigenvalues(new, MIN_WEIGHT_VARIANCE)
        change = max(abs(a - b) for a, b in zip(new, cov, strict=False)) / max(abs(v) for v in cov)
        cov, cx, cy = new, cx + mx, cy + my
        if change < tol:
            break
    xx, xy, yy = cov
    return float(np.sqrt(0.5 * (xx + yy) + np.sqrt(0.25 * (xx - yy) ** 2 + xy * xy)))


def _floor_eigenvalues(m: tuple[float, float, float], floor: float) -> tuple[float, float, float]:
    """The symmetric 2x2 matrix m with its eigenvalues raised to at least `floor`.

    Same eigenvectors; m itself, untouched, where both already are.
    """
    xx, xy, yy = m
    mean, radius = 0.5 * (xx + yy), np.hypot(0.5 * (xx - yy), xy)
    low, high = mean - radius, mean + radius
    if low >= floor:
        return m
    if high <= floor:
        return floor, 0.0, floor
    # m + (floor - low) P, P = (high I - m) / (high - low) the projector on low's eigenvector
    lift = (floor - low) / (2.0 * radius)
    return xx + lift * (high - xx), xy - lift * xy, yy + lift * (high - yy)


def _det2(m: tuple[float, float, float]) -> float:
    return m[0] * m[2] - m[1] * m[1]


def _inv2(m: tuple[float, float, float]) -> tuple[float, float, float]:
    """Inverse of the symmetric 2x2 matrix ((xx, xy), (xy, yy)), as (xx, xy, yy)."""
    det = _det2(m)
    return m[2] / det, -m[1] / det, m[0] / det


def single_band(img: np.ndarray) -> np.ndarray:
    """One 2-D image for the quality metrics: multi-band input is averaged to grey.

    Parameters
    ----------
    img : numpy.ndarray
        (H, W) or (C, H, W).

    Returns
    -------
    numpy.ndarray
        (H, W): `img` itself, or `to_grey(img)` float32.

    Raises
    ------
    ValueError
        Any other number of axes.
    """
    img = np.asarray(img)
    if img.ndim == 3:
        return to_grey(img)
    if img.ndim != 2:
        raise ValueError(f"expected an (H, W) or (C, H, W) image, got shape {img.shape}")
    return img
