"""Batched, parallel (numba) versions of the preprocessing quality metrics.

Each function takes a batch (B, H, W), or (B, C, H, W) averaged to grey first, and returns
one float64 value per image, equal to the per-image numpy reference in
galhpc.data.preprocess (border_noise, snr, non_uniformity, width) to float rounding.  Used
to screen whole catalogues of cutouts, where the per-image Python loop dominates;
`metrics` gives all four at once, as galhpc-prep labels and filters them.
"""

from __future__ import annotations

import numba
import numpy as np

SNR_BLOCKS = 16  # snr's peak is taken on the image area-averaged to 16 x 16, like preprocess.snr
PIXEL_VARIANCE = 1.0 / 12.0  # px^2, width's floor on the weighted moments, = preprocess.PIXEL_VARIANCE
MIN_WEIGHT_VARIANCE = 0.25  # px^2, width's floor on the fit (and weight), = preprocess.MIN_WEIGHT_VARIANCE


def border_noise(images: np.ndarray, border: int = 8) -> np.ndarray:
    """Background σ per image: the smallest std over the border x border patches of its frame.

    Parameters
    ----------
    images : numpy.ndarray
        (B, H, W), or (B, C, H, W) averaged over bands to grey first; any flux unit.
    border : int, optional
        Side of the square sky patches tiling the frame, in pixels (default 8).

    Returns
    -------
    numpy.ndarray
        (B,) float64 noise σ in the images' flux unit, equal to preprocess.border_noise per image.

    Raises
    ------
    ValueError
        If images is not (B, H, W) or (B, C, H, W), or a frame holds fewer than 2 patches per side.
    """
    return _border_noise(_grey_batch(images), border)


def snr(images: np.ndarray, border: int = 8) -> np.ndarray:
    """Peak of each image area-averaged to 16 x 16 over its border noise (inf where noiseless).

    The area average is exact (preprocess.resize_area's) and its values are rounded to
    float32 as there; the noise is `border_noise`'s.

    Parameters
    ----------
    images : numpy.ndarray
        (B, H, W), or (B, C, H, W) averaged over bands to grey first; any flux unit.
    border : int, optional
        Side of the sky patches the noise σ is measured on, as in `border_noise` (default 8).

    Returns
    -------
    numpy.ndarray
        (B,) float64 dimensionless signal-to-noise, equal to preprocess.snr per image.

    Raises
    ------
    ValueError
        As `border_noise` does.
    """
    grey = _grey_batch(images)
    noise = _border_noise(grey, border)
    return _over_noise(_peak16(grey), noise)


def non_uniformity(images: np.ndarray) -> np.ndarray:
    """Max / mean per image (inf where the mean is 0): large for compact sources, ~1 for flat frames.

    Parameters
    ----------
    images : numpy.ndarray
        (B, H, W), or (B, C, H, W) averaged over bands to grey first; any flux unit.

    Returns
    -------
    numpy.ndarray
        (B,) float64 dimensionless ratio, equal to preprocess.non_uniformity per image.

    Raises
    ------
    ValueError
        If images is not (B, H, W) or (B, C, H, W).
    """
    grey = _grey_batch(images)
    out = np.empty(grey.shape[0])
    _non_uniformity_batch(grey, out)
    return out


def width(images: np.ndarray, max_iter: int = 50, tol: float = 1e-5) -> np.ndarray:
    """Major-axis σ (pixels) of each image's adaptive-moment Gaussian fit (Bernstein & Jarvis 2002).

    The iteration and stopping rule are those of preprocess.width, with its resolution floors (fit >= 0.25 px^2,
    weighted moments >= 1/12 px^2: widths >= 0.5 px, 0.5 for a single bright pixel) and
    NaN only where there is nothing to fit (no positive flux, non-finite pixels, weighted
    flux <= 0).

    Equal to the reference to float rounding wherever the fit converges; a frame that never
    does (pure noise) can wander chaotically for max_iter steps, amplifying the rounding.

    Parameters
    ----------
    images : numpy.ndarray
        (B, H, W), or (B, C, H, W) averaged over bands to grey first; any flux unit.
    max_iter : int, optional
        Most adaptive-moment updates per image (default 50).
    tol : float, optional
        Stop when the largest change of the fitted covariance, relative to its largest entry,
        is below this (default 1e-5).

    Returns
    -------
    numpy.ndarray
        (B,) float64 σ in pixels (>= 0.5), NaN where there is nothing to fit.

    Raises
    ------
    ValueError
        If images is not (B, H, W) or (B, C, H, W).

    References
    ----------
    .. [1] Bernstein, G. M., & Jarvis, M. (2002), "Shapes and shears, stars and smears:
       optimal measurements for weak lensing", AJ 123, 583.
    """
    grey = _grey_batch(images)
    out = np.empty(grey.shape[0])
    _width_batch(grey, max_iter, tol, out)
    return out


def metrics(images: np.ndarray, border: int = 8) -> dict[str, np.ndarray]:
    """snr, width, non_uniformity and border_noise of a batch, in that order.

    The grey batch and the border noise (which snr divides by) are computed once for all four.

    Parameters
    ----------
    images : numpy.ndarray
        (B, H, W), or (B, C, H, W) averaged over bands to grey first; any flux unit.
    border : int, optional
        Side of the sky patches of `border_noise`, whose σ snr divides by (default 8).

    Returns
    -------
    dict of str to numpy.ndarray
        "snr", "width" (pixels), "non_uniformity" and "border_noise" (flux unit), each (B,)
        float64, as the functions of the same names give them.

    Raises
    ------
    ValueError
        If images is not (B, H, W) or (B, C, H, W), or a frame holds fewer than 2 patches per side.
    """
    grey = _grey_batch(images)
    noise = _border_noise(grey, border)
    return {"snr": _over_noise(_peak16(grey), noise), "width": width(grey),
            "non_uniformity": non_uniformity(grey), "border_noise": noise}


def _grey_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 4:  # the band mean of preprocess.to_grey, per image
        images = images.mean(axis=1, dtype=np.float64).astype(np.float32)
    if images.ndim != 3:
        raise ValueError(f"expected a batch (B, H, W) or (B, C, H, W), got shape {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        images = images.astype(np.float64)
    return np.ascontiguousarray(images)


def _border_noise(grey: np.ndarray, border: int) -> np.ndarray:
    h, w = grey.shape[-2:]
    if border < 1 or w // border < 2 or h // border < 2:
        raise ValueError(f"image {h}x{w} is too small for {border}x{border} border patches")
    out = np.empty(grey.shape[0])
    _border_noise_batch(grey, border, out)
    return out


def _peak16(grey: np.ndarray) -> np.ndarray:
    """Peak of each image area-averaged to 16 x 16 (float32 values, like resize_area's)."""
    h, w = grey.shape[-2:]
    rows, cols = _area_weights(h, SNR_BLOCKS), _area_weights(w, SNR_BLOCKS)
    out = np.empty(grey.shape[0])
    _peak_batch(grey, rows, cols, (h, w) == (SNR_BLOCKS, SNR_BLOCKS), out)
    return out


def _over_noise(peak: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Peak / noise, inf where the noise is not > 0 (a noiseless frame), as preprocess.snr."""
    out = np.full_like(peak, np.inf)
    return np.divide(peak, noise, out=out, where=noise > 0)


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) area-average weights: the exact area average of preprocess.resize_area.

    Each entry is the overlap of an output pixel's footprint with an input pixel over the
    footprint length (rows sum to 1).
    """
    step = n_in / n_out
    edges = np.arange(n_out + 1) * step
    j = np.arange(n_in)[None, :]
    overlap = np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j)
    return np.clip(overlap, 0.0, None) / step


@numba.njit(cache=True)
def _patch_std(img, y, x, border):
    total = 0.0
    for i in range(y, y + border):
        for j in range(x, x + border):
            total += img[i, j]
    mean = total / (border * border)
    squares = 0.0
    for i in range(y, y + border):
        for j in range(x, x + border):
            diff = img[i, j] - mean
            squares += diff * diff
    return np.sqrt(squares / (border * border))


@numba.njit(cache=True)
def _border_noise_one(img, border):
    h, w = img.shape
    nx, ny = w // border, h // border
    lowest = np.inf
    for i in range(nx):  # top and bottom rows of patches, corners included
        lowest = min(lowest, _patch_std(img, 0, i * border, border), _patch_std(img, h - border, i * border, border))
    for j in range(1, ny - 1):  # left and right columns, corners excluded
        lowest = min(lowest, _patch_std(img, j * border, 0, border), _patch_std(img, j * border, w - border, border))
    return lowest


@numba.njit(parallel=True, cache=True)
def _border_noise_batch(images, border, out):
    for b in numba.prange(images.shape[0]):
        out[b] = _border_noise_one(images[b], border)


@numba.njit(parallel=True, cache=True)
def _peak_batch(images, rows, cols, already_small, out):
    for b in numba.prange(images.shape[0]):
        img = images[b]
        if already_small:
            peak = np.float64(np.float32(img.max()))
        else:
            left = rows @ img.astype(np.float64)  # (16, W), then (16, 16) like resize_area
            peak = -np.inf
            for i in range(rows.shape[0]):
                for j in range(cols.shape[0]):
                    value = 0.0
                    for x in range(cols.shape[1]):
                        value += left[i, x] * cols[j, x]
                    peak = max(peak, np.float64(np.float32(value)))  # resize_area returns float32
        out[b] = peak


@numba.njit(parallel=True, cache=True)
def _non_uniformity_batch(images, out):
    for b in numba.prange(images.shape[0]):
        img = images[b]
        total = 0.0
        peak = -np.inf
        for i in range(img.shape[0]):
            for j in range(img.shape[1]):
                total += img[i, j]
                peak = max(peak, img[i, j])
        mean = total / img.size
        out[b] = peak / mean if mean != 0 else np.inf


@numba.njit(cache=True, error_model="numpy")
def _inv2(xx, xy, yy):
    """Inverse of the symmetric 2x2 matrix ((xx, xy), (xy, yy)).

    numpy's inf/nan on a zero determinant, like preprocess._inv2 on float64 scalars.
    """
    det = xx * yy - xy * xy
    return yy / det, -xy / det, xx / det


@numba.njit(cache=True, error_model="numpy")
def _floor_eigenvalues(xx, xy, yy, floor):
    """preprocess._floor_eigenvalues: ((xx, xy), (xy, yy)) with its eigenvalues raised to `floor`.

    Eigenvectors are kept; the matrix is untouched where both eigenvalues already are >= floor.
    """
    mean, radius = 0.5 * (xx + yy), np.hypot(0.5 * (xx - yy), xy)
    low, high = mean - radius, mean + radius
    if low >= floor:
        return xx, xy, yy
    if high <= floor:
        return floor, 0.0, floor
    lift = (floor - low) / (2.0 * radius)
    return xx + lift * (high - xx), xy - lift * xy, yy + lift * (high - yy)


@numba.njit(cache=True, error_model="numpy")
def _width_one(img, max_iter, tol):
    """preprocess.width on one grey image: same start, update, fallbacks and stopping rule."""
    h, w = img.shape
    if not np.all(np.isfinite(img)):
        return np.nan  # where the reference ends up too: its sums turn NaN, or its norm <= 0
    col, row = np.zeros(w), np.zeros(h)
    for i in range(h):  # the flux-weighted centre of the positive pixels
        for j in range(w):
            value = max(np.float64(img[i, j]), 0.0)
            col[j] += value
            row[i] += value
    total = col.sum()
    if total <= 0:
        return np.nan
    cx, cy = np.dot(col, np.arange(w, dtype=np.float64)) / total, np.dot(row, np.arange(h, dtype=np.float64)) / total
    start = max(min(h, w) / 8.0, 1.0) ** 2
    xx, xy, yy = start, 0.0, start
    work = np.empty((5, w))
    for _ in range(max_iter):
        ixx, ixy, iyy = _inv2(xx, xy, yy)
        norm, mx, my, wxx, wxy, wyy = _gaussian_moments(img, cx, cy, ixx, ixy, iyy, work)
        if norm <= 0:
            return np.nan
        if not (np.isfinite(wxx) and np.isfinite(wxy) and np.isfinite(wyy)):
            return np.nan
        wxx, wxy, wyy = _floor_eigenvalues(wxx, wxy, wyy, PIXEL_VARIANCE)
        # exact for a Gaussian source; 2 x weighted where the difference is not positive definite
        sxx, sxy, syy = _inv2(wxx, wxy, wyy)
        sxx, sxy, syy = sxx - ixx, sxy - ixy, syy - iyy
        if sxx > 0 and sxx * syy - sxy * sxy > 0:
            nxx, nxy, nyy = _inv2(sxx, sxy, syy)
        else:
            nxx, nxy, nyy = 2.0 * wxx, 2.0 * wxy, 2.0 * wyy
        nxx, nxy, nyy = _floor_eigenvalues(nxx, nxy, nyy, MIN_WEIGHT_VARIANCE)
        change = max(abs(nxx - xx), abs(nxy - xy), abs(nyy - yy)) / max(abs(xx), abs(xy), abs(yy))
        xx, xy, yy, cx, cy = nxx, nxy, nyy, cx + mx, cy + my
        if change < tol:
            break
    return np.sqrt(0.5 * (xx + yy) + np.sqrt(0.25 * (xx - yy) ** 2 + xy * xy))


@numba.njit(cache=True, error_model="numpy")
def _gaussian_moments(img, cx, cy, ixx, ixy, iyy, work):
    """(norm, mean dx, mean dy, var dx, cov, var dy) of img x exp(-q/2): preprocess.width's moments.

    q = d^T icov d and d = pixel - (cx, cy); the sums are taken per column so the pixel loop
    has no running sum (`work` is (5, W) scratch).

    Where icov is positive definite (always, unless a 2 x weighted fallback on a noise frame
    made the fit indefinite), q is split
    per row as ixx (dx + ixy dy / ixx)^2 + det / ixx dy^2: a 1-D Gaussian along the row
    (_gaussian_line: a few exps per row instead of one per pixel).
    """
    h, w = img.shape
    dx, line, col, ycol, yycol = work[0], work[1], work[2], work[3], work[4]
    for j in range(w):
        dx[j] = j - cx
    col[:], ycol[:], yycol[:] = 0.0, 0.0, 0.0
    det = ixx * iyy - ixy * ixy
    separable = ixx > 0 and det > 0
    for i in range(h):
        dy = i - cy
        if separable:
            _gaussian_line(ixy * dy / ixx + dx[0], ixx, det / ixx * (dy * dy), line)
        else:
            for j in range(w):
                line[j] = np.exp(-0.5 * (ixx * (dx[j] * dx[j]) + iyy * (dy * dy) + 2.0 * ixy * (dy * dx[j])))
        for j in range(w):
            value = line[j] * img[i, j]
            col[j] += value
            ycol[j] += dy * value
            yycol[j] += (dy * dy) * value
    norm = sx = sy = sxx = sxy = syy = 0.0
    for j in range(w):
        norm += col[j]
        sx += col[j] * dx[j]
        sxx += col[j] * (dx[j] * dx[j])
        sy += ycol[j]
        sxy += ycol[j] * dx[j]
        syy += yycol[j]
    mx, my = sx / norm, sy / norm
    return norm, mx, my, sxx / norm - mx * mx, sxy / norm - mx * my, syy / norm - my * my


@numba.njit(cache=True)
def _gaussian_line(t0, a, c, out):
    """out[j] = exp(-(a (t0 + j)^2 + c) / 2) for a > 0, c >= 0, with 4 exps.

    Neighbours differ by a ratio that itself shrinks by exp(-a) per step.  The recurrence runs outward from the
    pixel nearest the peak, so every value and ratio is <= 1 (no overflow); the relative
    error grows like n^2 / 2 x float eps (~1e-11 for n = 256).
    """
    n = out.size
    peak = int(min(max(np.rint(-t0), 0.0), n - 1.0))
    t = t0 + peak
    out[peak] = np.exp(-0.5 * (a * t * t + c))
    step = np.exp(-a)
    value, ratio = out[peak], np.exp(-0.5 * a * (2.0 * t + 1.0))  # out[j + 1] / out[j] at j = peak
    for j in range(peak + 1, n):
        value *= ratio
        ratio *= step
        out[j] = value
    value, ratio = out[peak], np.exp(0.5 * a * (2.0 * t - 1.0))  # out[j - 1] / out[j] at j = peak
    for j in range(peak - 1, -1, -1):
        value *= ratio
        ratio *= step
        out[j] = value


@numba.njit(parallel=True, cache=True)
def _width_batch(images, max_iter, tol, out):
    for b in numba.prange(images.shape[0]):
        out[b] = _width_one(images[b], max_iter, tol)
