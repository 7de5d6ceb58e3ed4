"""Regier's test (Regier, McAuliffe & Prabhat 2015): whether the model beats a Gaussian blob.

For each held-out image, fit a scaled bivariate Gaussian (six parameters: amplitude,
centre x/y, log widths, correlation) by BFGS with an analytic gradient, and compare it
with the model's reconstruction (a) in squared error and (b) in Gaussian log-likelihood
with a per-image variance fitted by maximum likelihood, σ² = SSE / n_pixels.  The paper's
anchor is 971/1000 images won by the model.

With a homoscedastic per-image variance, log-likelihood is a monotone function of the
squared error, so the two win fractions agree; the log-likelihoods are reported as
well because their difference (nats per pixel) says by how much the model wins.

The test is lenient: a 3-component PCA of the same stamps already beats the blob on most
images, so baseline reconstructions (`baselines`, e.g. out-of-fold PCA-3) are scored in
the same run against the same fits.  Where the per-pixel noise σ of each stamp is known,
the Gaussian log-likelihood with that σ (χ²) says how close each reconstruction comes to
the noise: χ²/pixel = 1 is a reconstruction good to the noise level.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """Scaled bivariate Gaussian on a pixel grid.

    Parameters
    ----------
    theta : (6,) float
        (A, x0, y0, log σx, log σy, atanh ρ): amplitude, centre in pixels (x along columns),
        log widths in pixels and the correlation's inverse tanh.
    shape : tuple of int
        (H, W) of the grid.

    Returns
    -------
    numpy.ndarray
        (H, W) float64 image.
    """
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
    """Least-squares fit of a scaled bivariate Gaussian to one 2-D image by BFGS.

    Parameters
    ----------
    image : (H, W) float
    start : (6,) float, optional
        Starting `theta` (see `gaussian_image`); default from the peak and second moments.

    Returns
    -------
    GaussianFit
        Best-fit parameters and squared error.
    """
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
    """Maximised Gaussian log-likelihood with the variance fitted per image: σ² = SSE / n.

    Parameters
    ----------
    sse : (N,) float
        Squared error of each image.
    n_pixels : int
        Pixels per image (n).

    Returns
    -------
    numpy.ndarray
        (N,) log-likelihood in nats.
    """
    sigma2 = np.maximum(np.asarray(sse, np.float64) / n_pixels, 1e-300)
    return -0.5 * n_pixels * (np.log(2 * np.pi * sigma2) + 1.0)


def known_sigma_loglik(sse: np.ndarray, n_pixels: int, sigma: np.ndarray) -> np.ndarray:
    """Gaussian log-likelihood of each stamp with known per-pixel noise σ.

    −SSE / (2σ²) − n_pixels · log(σ √(2π)).

    Parameters
    ----------
    sse : (N,) float
        Squared error of each stamp.
    n_pixels : int
        Pixels per stamp.
    sigma : (N,) float
        Noise σ of each stamp, in the stamps' units.

    Returns
    -------
    numpy.ndarray
        (N,) log-likelihood in nats.
    """
    sigma = np.asarray(sigma, np.float64)
    return -0.5 * np.asarray(sse, np.float64) / sigma**2 - n_pixels * np.log(sigma * np.sqrt(2 * np.pi))


def regier_test(images: np.ndarray, recons: np.ndarray, baselines: Mapping[str, np.ndarray] | None = None,
                sigma: np.ndarray | None = None) -> dict[str, object]:
    """Compare reconstructions with per-image best-fit bivariate Gaussians.

    Parameters
    ----------
    images, recons : (N, H, W) or (N, C, H, W) float
        With channels, one Gaussian is fitted per channel and the squared errors summed.
    baselines : mapping name -> array shaped like `images`, optional
        Other reconstructions (e.g. PCA-3) scored against the same Gaussian fits.
    sigma : (N,) float, optional
        Known per-pixel noise σ of each stamp (image units): adds ``known_sigma``.

    Returns
    -------
    dict
        Win counts and fractions of the model, mean log-likelihood gain, per-image squared
        errors (lists ``sse_model``, ``sse_gaussian``, ``sse_<baseline>``) for figures;
        ``baselines``: name -> the same win counts/fractions; ``known_sigma``: mean
        log-likelihood per pixel and mean χ²/pixel of the model, the Gaussian and each
        baseline, and the model's wins over each baseline.

    Raises
    ------
    ValueError
        If shapes differ or σ is not positive and finite.
    """
    images = np.asarray(images, np.float64)
    recons = np.asarray(recons, np.float64)
    others = {k: np.asarray(v, np.float64) for k, v in (baselines or {}).items()}
    for name, arr in {"reconstructions": recons, **others}.items():
        if images.shape != arr.shape:
            raise ValueError(f"images {images.shape} and {name} {arr.shape} differ in shape")
    if images.ndim == 3:
        images, recons = images[:, None], recons[:, None]
        others = {k: v[:, None] for k, v in others.items()}
    n, n_pixels = len(images), int(np.prod(images.shape[1:]))
    sse_model = ((images - recons) ** 2).reshape(n, -1).sum(axis=1)
    sse_other = {k: ((images - v) ** 2).reshape(n, -1).sum(axis=1) for k, v in others.items()}
    sse_gauss = np.array([sum(fit_gaussian(ch).sse for ch in img) for img in images])
    ll_model, ll_gauss = gaussian_loglik(sse_model, n_pixels), gaussian_loglik(sse_gauss, n_pixels)
    wins_sse = int((sse_model < sse_gauss).sum())
    wins_ll = int((ll_model > ll_gauss).sum())
    out: dict[str, object] = {
        "n_images": n,
        "wins_squared_error": wins_sse,
        "fraction_squared_error": wins_sse / n if n else float("nan"),
        "wins_loglik": wins_ll,
        "fraction_loglik": wins_ll / n if n else float("nan"),
        "mean_loglik_gain_per_pixel": float((ll_model - ll_gauss).mean() / n_pixels) if n else float("nan"),
        "sse_model": sse_model.tolist(),
        "sse_gaussian": sse_gauss.tolist(),
    }
    out["baselines"] = {}
    for name, sse in sse_other.items():
        wins = int((sse < sse_gauss).sum())
        out["baselines"][name] = {"wins_squared_error": wins, "fraction_squared_error": wins / n if n else float("nan")}
        out[f"sse_{name}"] = sse.tolist()
    if sigma is not None:
        sigma = np.asarray(sigma, np.float64).reshape(n)
        if not (np.isfinite(sigma).all() and (sigma > 0).all()):
            raise ValueError("known noise σ must be positive and finite for every stamp")
        known: dict[str, object] = {}
        for name, sse in {"model": sse_model, "gaussian": sse_gauss, **sse_other}.items():
            known[name] = {"mean_loglik_per_pixel": float(known_sigma_loglik(sse, n_pixels, sigma).mean() / n_pixels),
                           "mean_chi2_per_pixel": float((sse / sigma**2).mean() / n_pixels)}
        for name, sse in sse_other.items():  # σ is per stamp, so per stamp this ranks by squared error
            known[f"model_wins_over_{name}"] = int((sse_model < sse).sum())
        out["known_sigma"] = known
    return out
