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

    def image(self, shape: tuple[int, int]) -> np.ndarray:
        """The fitted Gaussian on a pixel grid.

        Parameters
        ----------
        shape : tuple of int
            (H, W) of the grid.

        Returns
        -------
        numpy.ndarray
            (H, W) float64 image.
        """
        rho = np.arctanh(np.clip(self.rho, -0.999999, 0.999999))
        theta = np.array([self.amplitude, self.x0, self.y0, np.log(self.sigma_x), np.log(self.sigma_y), rho])
        return gaussian_image(theta, shape)


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


def known_sigma_chi2(images: np.ndarray, recons: np.ndarray, sigma: np.ndarray,
                     valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """χ², Gaussian log-likelihood and pixel count of each stamp with known per-pixel noise σ.

    χ² = Σ (x − r)² / σ² and log L = −χ²/2 − Σ log(σ √(2π)), both over the valid pixels.

    Parameters
    ----------
    images, recons : (N, C, H, W) float
        Stamps and their reconstructions.
    sigma : (N, C, H, W) float
        Noise σ of every pixel, in the stamps' units (positive and finite where valid).
    valid : (N, C, H, W) bool
        The pixels that count (a store's `mask` left out).

    Returns
    -------
    chi2, loglik, n_valid : numpy.ndarray
        (N,) float64 χ², (N,) float64 log-likelihood in nats, (N,) int64 pixels counted.
    """
    n = len(images)
    safe = np.where(valid, sigma, 1.0)
    chi2 = np.where(valid, ((images - recons) / safe) ** 2, 0.0).reshape(n, -1).sum(axis=1)
    log_norm = np.where(valid, np.log(safe * np.sqrt(2 * np.pi)), 0.0).reshape(n, -1).sum(axis=1)
    return chi2, -0.5 * chi2 - log_norm, valid.reshape(n, -1).sum(axis=1)


def regier_test(images: np.ndarray, recons: np.ndarray, baselines: Mapping[str, np.ndarray] | None = None,
                sigma: np.ndarray | None = None, valid: np.ndarray | None = None) -> dict[str, object]:
    """Compare reconstructions with per-image best-fit bivariate Gaussians.

    Parameters
    ----------
    images, recons : (N, H, W) or (N, C, H, W) float
        With channels, one Gaussian is fitted per channel and the squared errors summed.
    baselines : mapping name -> array shaped like `images`, optional
        Other reconstructions (e.g. PCA-3) scored against the same Gaussian fits.
    sigma : (N,) float or array shaped like `images`, optional
        Known noise σ (image units), per stamp or per pixel (a store's `sigma` map): adds
        ``known_sigma``.
    valid : bool array shaped like `images`, optional
        The pixels ``known_sigma`` counts (True; a store's `mask` left out); default all.

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
    fits = [[fit_gaussian(ch) for ch in img] for img in images]
    sse_gauss = np.array([sum(fit.sse for fit in row) for row in fits])
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
        sigma = np.asarray(sigma, np.float64)
        per_stamp = sigma.size == n
        sigma = np.broadcast_to(sigma.reshape(n, 1, 1, 1) if per_stamp else sigma.reshape(images.shape), images.shape)
        counted = np.ones(images.shape, bool) if valid is None else np.asarray(valid, bool).reshape(images.shape)
        if not (np.isfinite(sigma[counted]).all() and (sigma[counted] > 0).all()):
            raise ValueError("known noise σ must be positive and finite for every stamp")
        gaussians = np.stack([np.stack([fit.image(ch.shape) for fit, ch in zip(row, img, strict=True)])
                              for row, img in zip(fits, images, strict=True)])
        known: dict[str, object] = {}
        chi2 = {}
        for name, rec in {"model": recons, "gaussian": gaussians, **others}.items():
            chi2[name], loglik, pixels = known_sigma_chi2(images, rec, sigma, counted)
            pixels = pixels.clip(min=1)
            known[name] = {"mean_loglik_per_pixel": float((loglik / pixels).mean()),
                           "mean_chi2_per_pixel": float((chi2[name] / pixels).mean())}
        for name in others:
            known[f"model_wins_over_{name}"] = int((chi2["model"] < chi2[name]).sum())
        out["known_sigma"] = known
    return out
