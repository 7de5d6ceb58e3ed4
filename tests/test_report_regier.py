"""Regier's test: the Gaussian fit recovers known blobs; win counts follow constructed cases."""

import numpy as np
import pytest
from scipy import optimize

from galhpc.report import regier


def _theta(a, x0, y0, sx, sy, rho):
    return np.array([a, x0, y0, np.log(sx), np.log(sy), np.arctanh(rho)])


def test_analytic_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(20, 24))
    ys, xs = np.mgrid[:20, :24].astype(float)
    theta = _theta(1.3, 11.0, 9.0, 3.0, 2.0, 0.4)
    err = optimize.check_grad(lambda t: regier._sse_and_grad(t, image, xs, ys)[0],
                              lambda t: regier._sse_and_grad(t, image, xs, ys)[1], theta)
    assert err < 1e-4 * np.linalg.norm(regier._sse_and_grad(theta, image, xs, ys)[1])


def test_fit_recovers_rotated_gaussian():
    truth = _theta(2.0, 20.3, 14.7, 5.0, 2.5, -0.6)
    image = regier.gaussian_image(truth, (32, 40))
    fit = regier.fit_gaussian(image)
    got = [fit.amplitude, fit.x0, fit.y0, fit.sigma_x, fit.sigma_y, fit.rho]
    np.testing.assert_allclose(got, [2.0, 20.3, 14.7, 5.0, 2.5, -0.6], rtol=1e-3, atol=1e-3)
    assert fit.sse < 1e-8


def _two_blob_images(n, rng):
    """Non-Gaussian galaxies (bulge + offset companion) with noise, and their clean truth."""
    clean = np.stack([
        regier.gaussian_image(_theta(1.0, 16, 16, 2.0, 2.0, 0.0), (32, 32))
        + regier.gaussian_image(_theta(0.6, 16 + rng.uniform(5, 9), 16, 4.0, 1.5, 0.3), (32, 32))
        for _ in range(n)
    ])
    return clean + rng.normal(0, 0.02, clean.shape), clean


def test_counts_follow_constructed_reconstructions():
    rng = np.random.default_rng(1)
    noisy, clean = _two_blob_images(6, rng)
    recons = clean.copy()
    recons[3:] = 0.0  # a useless model on half the images
    out = regier.regier_test(noisy, recons)
    assert out["n_images"] == 6
    assert out["wins_squared_error"] == 3 and out["fraction_squared_error"] == pytest.approx(0.5)
    assert out["wins_loglik"] == 3
    sse = np.array(out["sse_model"])
    np.testing.assert_allclose(sse, ((noisy - recons) ** 2).sum(axis=(1, 2)))


def test_channels_and_shape_check():
    rng = np.random.default_rng(2)
    noisy, clean = _two_blob_images(2, rng)
    out = regier.regier_test(noisy[:, None], clean[:, None])
    assert out["wins_squared_error"] == 2
    with pytest.raises(ValueError, match="differ in shape"):
        regier.regier_test(noisy, clean[:1])


def test_loglik_with_fitted_variance():
    sse = np.array([4.0])
    n = 16
    sigma2 = sse / n
    x = np.linspace(-1, 1, n)
    x = x / np.sqrt((x**2).sum()) * 2.0  # residuals with SSE 4
    direct = -0.5 * (np.log(2 * np.pi * sigma2) + x**2 / sigma2).sum()
    assert regier.gaussian_loglik(sse, n)[0] == pytest.approx(direct)


@pytest.mark.parametrize("n_good, n", [(5, 7), (1, 6)])
def test_asymmetric_win_counts_and_the_sign_of_the_gain(n_good, n):
    """The model reconstructs `n_good` of `n` images to the noise and returns zeros for the rest:
    it wins exactly those, and the mean log-likelihood gain per pixel is
    −½·mean(log(SSE_model / SSE_gauss)) (σ² fitted per image), positive when it mostly wins."""
    rng = np.random.default_rng(3)
    noisy, clean = _two_blob_images(n, rng)
    recons = clean.copy()
    recons[n_good:] = 0.0
    out = regier.regier_test(noisy, recons)
    assert out["wins_squared_error"] == out["wins_loglik"] == n_good
    assert out["fraction_squared_error"] == pytest.approx(n_good / n)
    sse_model, sse_gauss = np.array(out["sse_model"]), np.array(out["sse_gaussian"])
    assert (sse_model[:n_good] < sse_gauss[:n_good]).all() and (sse_model[n_good:] > sse_gauss[n_good:]).all()
    # SSE of the Gaussian itself: at least the noise, well below the image's own power
    assert (sse_gauss > 0.5 * 0.02**2 * 32 * 32).all() and (sse_gauss < 0.2 * (noisy**2).sum(axis=(1, 2))).all()
    gain = -0.5 * np.mean(np.log(sse_model / sse_gauss))
    assert out["mean_loglik_gain_per_pixel"] == pytest.approx(gain, rel=1e-9)
    assert np.sign(out["mean_loglik_gain_per_pixel"]) == (1 if n_good > n / 2 else -1)


def test_known_sigma_chi2_uses_per_pixel_sigma_and_leaves_masked_pixels_out():
    """χ²/pixel and the model's wins with a per-pixel σ map and a mask, against numpy by hand."""
    rng = np.random.default_rng(4)
    n, size = 6, 16
    images = rng.normal(0, 1, (n, size, size))
    sigma = rng.uniform(0.5, 2.0, (n, size, size))
    valid = rng.random((n, size, size)) > 0.2
    recons = images + rng.normal(0, 0.3, images.shape)
    recons[~valid] += 50.0  # junk where the mask is: must not count
    pca = images + rng.normal(0, 0.6, images.shape)
    out = regier.regier_test(images, recons, {"pca": pca}, sigma, valid)["known_sigma"]
    chi2 = [np.sum(((images[i] - recons[i]) / sigma[i])[valid[i]] ** 2) / valid[i].sum() for i in range(n)]
    assert out["model"]["mean_chi2_per_pixel"] == pytest.approx(np.mean(chi2), rel=1e-12)
    loglik = [np.sum(-0.5 * ((images[i] - recons[i]) / sigma[i]) ** 2 - np.log(sigma[i] * np.sqrt(2 * np.pi)),
                     where=valid[i]) / valid[i].sum() for i in range(n)]
    assert out["model"]["mean_loglik_per_pixel"] == pytest.approx(np.mean(loglik), rel=1e-12)
    pca_chi2 = [np.sum(((images[i] - pca[i]) / sigma[i])[valid[i]] ** 2) for i in range(n)]
    model_chi2 = [c * valid[i].sum() for i, c in enumerate(chi2)]
    assert out["model_wins_over_pca"] == int(np.sum(np.array(model_chi2) < np.array(pca_chi2))) == n
