"""Batched numba quality metrics against the per-image numpy references in galhpc.data.preprocess."""

import os

import numpy as np
import pytest

os.environ.setdefault("NUMBA_NUM_THREADS", "2")

from galhpc.data import preprocess  # noqa: E402
from galhpc.kernels import quality  # noqa: E402

METRICS = [
    (quality.border_noise, lambda img: preprocess.border_noise(img, border=6), {"border": 6}),
    (quality.snr, lambda img: preprocess.snr(img, border=6), {"border": 6}),
    (quality.non_uniformity, preprocess.non_uniformity, {}),
    (quality.width, preprocess.width, {}),
]


def galaxy_batch(rng, shape):
    """Noisy frames with a bright elliptical blob at a random place: realistic metric values."""
    b, h, w = shape[0], shape[-2], shape[-1]
    y, x = np.mgrid[0:h, 0:w]
    images = rng.normal(0.0, rng.uniform(0.5, 2.0, size=(b, 1, 1)), size=(b, h, w)) + 1.0
    cy, cx = rng.uniform(h / 3, 2 * h / 3, size=b), rng.uniform(w / 3, 2 * w / 3, size=b)
    images += 40 * np.exp(-((y - cy[:, None, None]) ** 2 / 8 + (x - cx[:, None, None]) ** 2 / 18))
    if len(shape) == 4:
        images = images[:, None] * rng.uniform(0.5, 1.5, size=(1, shape[1], 1, 1))
    return images.astype(np.float32)


def varied_batch(rng, shape):
    """GalSim-like sources: Sérsic profiles (n = 0.5 is a Gaussian, 1 a disc, 4 de Vaucouleurs)
    of varied size, axis ratio, angle and centre on noise of varied level; then a zero frame
    (nothing to fit) and a flat one."""
    b, h, w = shape[0], shape[-2], shape[-1]
    y, x = np.mgrid[0:h, 0:w]
    images = np.empty((b, h, w))
    for k in range(b - 2):
        n, radius = rng.choice([0.5, 1.0, 2.0, 4.0]), rng.uniform(2, min(h, w) / 6)
        ratio, angle = rng.uniform(0.3, 1), rng.uniform(0, np.pi)
        dx, dy = x - rng.uniform(w / 3, 2 * w / 3), y - rng.uniform(h / 3, 2 * h / 3)
        r = np.hypot(dx * np.cos(angle) + dy * np.sin(angle), (dy * np.cos(angle) - dx * np.sin(angle)) / ratio)
        profile = 10 * np.exp(-(2 * n - 1 / 3) * ((r / radius) ** (1 / n) - 1))
        images[k] = profile + rng.normal(0, rng.uniform(0, 1), (h, w))
    images[-2], images[-1] = 0.0, 1.0
    if len(shape) == 4:
        images = images[:, None] * rng.uniform(0.5, 1.5, size=(1, shape[1], 1, 1))
    return images.astype(np.float32)


@pytest.mark.parametrize("shape", [(24, 64, 64), (12, 45, 61), (6, 3, 40, 36), (5, 128, 96)])
def test_width_matches_the_reference_to_rounding(shape):
    images = varied_batch(np.random.default_rng(sum(shape)), shape)
    expected = np.array([preprocess.width(img) for img in images])
    got = quality.width(images)
    np.testing.assert_allclose(got, expected, rtol=1e-9)  # and NaN where the reference is: the zero frame
    assert np.isfinite(np.delete(got, -2)).all()  # peaky, noisy Sérsics included (the resolution floors)
    assert np.isnan(got[-2]) and np.isfinite(got[-1])
    assert np.unique(got[np.isfinite(got)]).size > len(got) // 2
    # every frame stops well before max_iter: no long chaotic path amplifies the rounding
    np.testing.assert_array_equal(quality.width(images, max_iter=500), got)


@pytest.mark.parametrize("max_iter,tol", [(0, 1e-5), (1, 1e-5), (3, 1e-5), (50, 0.0), (50, 0.1)])
def test_width_stops_where_the_reference_stops(max_iter, tol):
    images = varied_batch(np.random.default_rng(7), (8, 40, 48))
    expected = [preprocess.width(img, max_iter, tol) for img in images]
    np.testing.assert_allclose(quality.width(images, max_iter, tol), expected, rtol=1e-9)


def test_width_of_frames_without_a_fit_is_nan_like_the_reference():
    images = np.zeros((5, 24, 24), dtype=np.float32)
    images[:, 10:14, 10:14] = 1.0
    images[0, 3, 4], images[1, 3, 4], images[2, 3, 4] = np.nan, np.inf, -np.inf
    images[3] = -1.0  # no positive flux at all
    images[4] = -images[4]  # a negative source on a zero sky: none either
    with np.errstate(invalid="ignore"):
        expected = [preprocess.width(img) for img in images]
    assert np.isnan(expected).all()
    assert np.isnan(quality.width(images)).all()


ICOVS = [(0.1, 0.0, 0.1), (2.0, 1.9, 2.0), (25.0, -3.0, 0.5), (1e-4, 0.0, 1e-4), (0.05, 0.02, -0.01),
         (-0.005, 0.0, 0.01)]


@pytest.mark.parametrize("icov", ICOVS)
@pytest.mark.parametrize("centre", [(20.3, 14.7), (-3.0, 40.0)])
def test_gaussian_moments_equal_the_direct_formula(icov, centre):
    """The per-row recurrence (positive-definite icov, narrow or broad, centre on or off the
    image) and the per-pixel fallback (indefinite icov) give width's weighted moments."""
    img = np.random.default_rng(0).random((33, 40)).astype(np.float32)
    (ixx, ixy, iyy), (cx, cy) = icov, centre
    dx, dy = np.arange(40)[None, :] - cx, np.arange(33)[:, None] - cy
    wi = np.exp(-0.5 * (ixx * dx * dx + iyy * dy * dy + 2 * ixy * dx * dy)) * img
    norm = wi.sum()
    mx, my = (wi * dx).sum() / norm, (wi * dy).sum() / norm
    pairs = ((dx, dx, mx, mx), (dx, dy, mx, my), (dy, dy, my, my))
    var = [(wi * a * b).sum() / norm - ma * mb for a, b, ma, mb in pairs]
    got = quality._gaussian_moments(img, cx, cy, ixx, ixy, iyy, np.empty((5, 40)))
    np.testing.assert_allclose(got[:3], (norm, mx, my), rtol=1e-9)
    # a (co)variance is E[d d] - m m: its rounding is absolute, float eps x m^2
    np.testing.assert_allclose(got[3:], var, rtol=1e-9, atol=1e-12 * max(mx * mx, my * my))


def test_metrics_are_the_four_batch_functions():
    images = varied_batch(np.random.default_rng(3), (6, 2, 32, 32))
    got = quality.metrics(images, border=6)
    assert list(got) == ["snr", "width", "non_uniformity", "border_noise"]
    np.testing.assert_array_equal(got["snr"], quality.snr(images, border=6))
    np.testing.assert_array_equal(got["width"], quality.width(images))
    np.testing.assert_array_equal(got["non_uniformity"], quality.non_uniformity(images))
    np.testing.assert_array_equal(got["border_noise"], quality.border_noise(images, border=6))


@pytest.mark.parametrize("metric,reference,kwargs", METRICS)
@pytest.mark.parametrize("shape", [(20, 48, 48), (7, 45, 61), (5, 3, 40, 36), (4, 16, 16)])
def test_matches_the_numpy_reference(metric, reference, kwargs, shape):
    rng = np.random.default_rng(sum(shape))
    images = galaxy_batch(rng, shape)
    expected = np.array([reference(img) for img in images])
    got = metric(images, **kwargs)
    assert got.shape == (shape[0],) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.unique(got).size > 1  # the batch really varies: no metric is constant here


def test_degenerate_images_give_inf_like_the_reference():
    flat = np.ones((2, 32, 32), dtype=np.float32)  # noiseless
    zero_mean = np.zeros((1, 32, 32), dtype=np.float32)
    zero_mean[0, 0, 0], zero_mean[0, 0, 1] = 1.0, -1.0
    assert np.all(np.isinf(quality.snr(flat)))
    assert preprocess.snr(flat[0]) == np.inf
    assert quality.non_uniformity(zero_mean)[0] == preprocess.non_uniformity(zero_mean[0]) == np.inf
    np.testing.assert_array_equal(quality.border_noise(flat), [0.0, 0.0])


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="too small for 8x8 border patches"):
        quality.border_noise(np.zeros((2, 12, 40)))
    with pytest.raises(ValueError, match=r"expected a batch \(B, H, W\)"):
        quality.non_uniformity(np.zeros((12, 40)))


def test_width_of_compact_sources_matches_the_reference():
    """Under-sampled pixel-integrated Gaussians, peaky Sérsics and single pixels, where the
    resolution floors (fit >= 0.25 px^2, weighted moments >= 1/12 px^2) decide the result."""
    from test_data_preprocess import _pixel_gauss, _sersic

    images = [_pixel_gauss(s, q, 0.5, off) for s in (0.5, 0.6, 0.7, 1.0, 2.0, 4.0) for q in (1.0, 0.6)
              for off in ((0.0, 0.0), (0.5, 0.5), (0.1, 0.3))]
    images += [_sersic(n, hlr, size=40) for n in (2, 3, 4) for hlr in (1.0, 2.0, 4.0)]
    for where in ((7, 8), (0, 39), (20, 20)):
        images.append(np.zeros((40, 40)))
        images[-1][where] = 3.0
    images = np.stack(images)
    expected = np.array([preprocess.width(img) for img in images])
    got = quality.width(images)
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert np.isfinite(got).all() and got.min() == 0.5 and (got[-3:] == 0.5).all()
    assert quality.MIN_WEIGHT_VARIANCE == preprocess.MIN_WEIGHT_VARIANCE
    assert quality.PIXEL_VARIANCE == preprocess.PIXEL_VARIANCE
