"""Batched numba quality metrics against the per-image numpy references in galhpc.data.preprocess."""

import os

import numpy as np
import pytest

os.environ.setdefault("NUMBA_NUM_THREADS", "2")

from galhpc.kernels import quality  # noqa: E402

preprocess = pytest.importorskip("galhpc.data.preprocess")

METRICS = [
    (quality.border_noise, lambda img: preprocess.border_noise(img, border=6), {"border": 6}),
    (quality.snr, lambda img: preprocess.snr(img, border=6), {"border": 6}),
    (quality.non_uniformity, preprocess.non_uniformity, {}),
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
