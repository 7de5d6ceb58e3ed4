"""Batched, parallel (numba) versions of the preprocessing quality metrics.

Each function takes a batch (B, H, W), or (B, C, H, W) averaged to grey first, and returns
one float64 value per image, equal to the per-image numpy reference in
galhpc.data.preprocess (border_noise, snr, non_uniformity) to float rounding.  Used to
screen whole catalogues of cutouts, where the per-image Python loop dominates.
"""

from __future__ import annotations

import numba
import numpy as np

SNR_BLOCKS = 16  # snr's peak is taken on the image area-averaged to 16 x 16, like preprocess.snr


def border_noise(images: np.ndarray, border: int = 8) -> np.ndarray:
    """Background σ per image: the smallest std over the border x border patches of its frame."""
    grey = _grey_batch(images)
    _check_border(grey.shape, border)
    out = np.empty(grey.shape[0])
    _border_noise_batch(grey, border, out)
    return out


def snr(images: np.ndarray, border: int = 8) -> np.ndarray:
    """Peak of each image area-averaged to 16 x 16 over its border noise (inf where noiseless)."""
    grey = _grey_batch(images)
    _check_border(grey.shape, border)
    h, w = grey.shape[-2:]
    rows, cols = _area_weights(h, SNR_BLOCKS), _area_weights(w, SNR_BLOCKS)
    out = np.empty(grey.shape[0])
    _snr_batch(grey, border, rows, cols, (h, w) == (SNR_BLOCKS, SNR_BLOCKS), out)
    return out


def non_uniformity(images: np.ndarray) -> np.ndarray:
    """max / mean per image (inf where the mean is 0): large for compact sources, ~1 for flat frames."""
    grey = _grey_batch(images)
    out = np.empty(grey.shape[0])
    _non_uniformity_batch(grey, out)
    return out


def _grey_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 4:  # the band mean of preprocess.to_grey, per image
        images = images.mean(axis=1, dtype=np.float64).astype(np.float32)
    if images.ndim != 3:
        raise ValueError(f"expected a batch (B, H, W) or (B, C, H, W), got shape {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        images = images.astype(np.float64)
    return np.ascontiguousarray(images)


def _check_border(shape: tuple[int, ...], border: int) -> None:
    h, w = shape[-2:]
    if border < 1 or w // border < 2 or h // border < 2:
        raise ValueError(f"image {h}x{w} is too small for {border}x{border} border patches")


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in): overlap of each output pixel's footprint with each input pixel over the
    footprint length (rows sum to 1), the exact area average of preprocess.resize_area."""
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
def _snr_batch(images, border, rows, cols, already_small, out):
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
        noise = _border_noise_one(img, border)
        out[b] = peak / noise if noise > 0 else np.inf


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
