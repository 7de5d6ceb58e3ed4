"""Regier's test (Regier, McAuliffe & Prabhat 2015): does the model beat a Gaussian blob?

For each held-out image, fit a scaled bivariate Gaussian (six parameters: amplitude,
centre x/y, log widths, correlation) by BFGS with an analytic gradient, and compare it
with the model's reconstruction (a) in squared error and (b) in Gaussian log-likelihood
with a per-image variance fitted by maximum likelihood, σ² = SSE / n_pixels.  The paper's
anchor is 971/1000 images won by the model.

With a homoscedastic per-image variance, log-likelihood is a monotone function of the
squared error, so the two win fractions agree; the log-likelihoods are reported as
well because their difference (nats per pixel) says by how much the model wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize


@dataclass
class GaussianFit:
    """Best-fit parameters (amplitude, x0, y0, sigma_x, sigma_y, rho) and squared error."""

    amplitude: float
    x0: float
    y0: float
    sigma_x: float
    sigma_y: float
    rho: float
    sse: float
    converged: bool


def gaussian_image(theta: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Scaled bivariate Gaussian on a pixel grid; theta = (A, x0, y0, log σx, log σy, atanh ρ)."""
    return _profile(theta, *np.mgrid[: shape[0], : shape[1]].astype(np.float64)[::-1])[0]


def _profile(theta: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    amp, x0, y0, log_sx, log_sy, t = theta
    rho = np.tanh(t)
    u = (xs - x0) / np.exp(log_sx)
    v = (ys - y0) / np.exp(log_sy)
    one_m = max(1.0 - rho * rho, 1e-12)
    q = (u * u - 2 * rho * u * v + v * v) / one_m
    e = np.exp(-0.5 * np.minimum(q, 1400.0))
    return amp * e, e, u, v, q, rho, one_m


def _sse_and_grad(theta: np.ndarray, image: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    g, e, u, v, q, rho, one_m = _profile(theta, xs, ys)
    r = g - image
    dg_dq = -0.5 * g
    dq_du = 2 * (u - rho * v) / one_m
    dq_dv = 2 * (v - rho * u) / one_m
    sx, sy = np.exp(theta[3]), np.exp(theta[4])
    partials = (
        e,
        dg_dq * dq_du * (-1.0 / sx),
        dg_dq * dq_dv * (-1.0 / sy),
        dg_dq * dq_du * (-u),
        dg_dq * dq_dv * (-v),
        dg_dq * (2 * rho * q - 2 * u * v),
    )
    grad = np.array([2.0 * float((r * p).sum()) for p in partials])
    return float((r * r).sum()), grad


def _moment_start(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Start from the image's peak and the second moments of its positive part."""
    w = np.clip(image, 0, None)
    total = w.sum()
    if total <= 0:
        h, wd = image.shape
        return np.array([float(image.max()), wd / 2, h / 2, np.log(wd / 4), np.log(h / 4), 0.0])
    x0, y0 = (w * xs).sum() / total, (w * ys).sum() / total
    vxx = max((w * (xs - x0) ** 2).sum() / total, 0.25)
    vyy = max((w * (ys - y0) ** 2).sum() / total, 0.25)
    vxy = (w * (xs - x0) * (ys - y0)).sum() / total
    rho = np.clip(vxy / np.sqrt(vxx * vyy), -0.9, 0.9)
    return np.array([float(image.max()), x0, y0, 0.5 * np.log(vxx), 0.5 * np.log(vyy), np.arctanh(rho)])


def fit_gaussian(image: np.ndarray, start: np.ndarray | None = None) -> GaussianFit:
    """Least-squares fit of a scaled bivariate Gaussian to one 2-D image by BFGS."""
    image = np.asarray(image, np.float64)
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]].astype(np.float64)
    theta0 = _moment_start(image, xs, ys) if start is None else np.asarray(start, np.float64)
    # BFGS line-search probes can reach extreme widths (exp(log σ) -> 0 or inf); the
    # non-finite SSE there makes it backtrack, so numpy's warnings about it are noise.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        res = optimize.minimize(_sse_and_grad, theta0, args=(image, xs, ys), jac=True, method="BFGS")
    a, x0, y0, lsx, lsy, t = res.x
    return GaussianFit(float(a), float(x0), float(y0), float(np.exp(lsx)), float(np.exp(lsy)), float(np.tanh(t)),
                       float(res.fun), bool(res.success))


def gaussian_loglik(sse: np.ndarray, n_pixels: int) -> np.ndarray:
    """Maximised Gaussian log-likelihood with the variance fitted per image: σ² = SSE / n."""
    sigma2 = np.maximum(np.asarray(sse, np.float64) / n_pixels, 1e-300)
    return -0.5 * n_pixels * (np.log(2 * np.pi * sigma2) + 1.0)


def regier_test(images: np.ndarray, recons: np.ndarray) -> dict[str, object]:
    """Compare reconstructions with per-image best-fit bivariate Gaussians.

    `images` and `recons` are (N, H, W) or (N, C, H, W); with channels, one Gaussian is
    fitted per channel and the squared errors summed.  Returns win fractions, counts and
    per-image squared errors / log-likelihoods (lists) for figures.
    """
    images = np.asarray(images, np.float64)
    recons = np.asarray(recons, np.float64)
    if images.shape != recons.shape:
        raise ValueError(f"images {images.shape} and reconstructions {recons.shape} differ in shape")
    if images.ndim == 3:
        images, recons = images[:, None], recons[:, None]
    n, n_pixels = len(images), int(np.prod(images.shape[1:]))
    sse_model = ((images - recons) ** 2).reshape(n, -1).sum(axis=1)
    sse_gauss = np.array([sum(fit_gaussian(ch).sse for ch in img) for img in images])
    ll_model, ll_gauss = gaussian_loglik(sse_model, n_pixels), gaussian_loglik(sse_gauss, n_pixels)
    wins_sse = int((sse_model < sse_gauss).sum())
    wins_ll = int((ll_model > ll_gauss).sum())
    return {
        "n_images": n,
        "wins_squared_error": wins_sse,
        "fraction_squared_error": wins_sse / n if n else float("nan"),
        "wins_loglik": wins_ll,
        "fraction_loglik": wins_ll / n if n else float("nan"),
        "mean_loglik_gain_per_pixel": float((ll_model - ll_gauss).mean() / n_pixels) if n else float("nan"),
        "sse_model": sse_model.tolist(),
        "sse_gaussian": sse_gauss.tolist(),
    }
