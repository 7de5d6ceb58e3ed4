"""Which pixels a likelihood counts and with which σ: the store's per-pixel `mask` and `sigma`.

A training store may hold, beside `images`, a per-pixel noise map `sigma` (same units as
the images) and a `mask` (uint8, non-zero = bad pixel: saturated, no data, a masked
neighbour; those pixels are filled with noise of the local σ).  Batches then carry
"sigma" and "mask" tensors shaped like "image".  Every likelihood and every
reconstruction error excludes masked pixels; Gaussian/χ² likelihoods use the per-pixel σ
when the batch has it, else the per-object `noise_sigma` column the prep's intensity
steps write.  Models with `orient` also drop the pixels outside the stamp's inscribed
circle (`circular_window`), the only ones valid in both the observed and the canonical
frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

PIXEL_DATASETS = ("sigma", "mask")  # optional per-pixel datasets of a store that batches carry


def valid_pixels(batch: Mapping[str, Any], x: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor | None:
    """Weights (B, C, H, W) in {0, 1} of the pixels a likelihood counts, or None (all count).

    Parameters
    ----------
    batch : mapping
        A loader batch; its optional "mask" (B, C, H, W) or (B, H, W), non-zero = bad.
    x : Tensor, (B, C, H, W)
        The images (for shape, dtype and device).
    window : Tensor, (H, W), optional
        A fixed weight map (e.g. `circular_window`) multiplied in.

    Returns
    -------
    Tensor (B, C, H, W) of x's dtype, or None when there is neither mask nor window.
    """
    mask = batch.get("mask") if batch is not None else None
    weight = None
    if mask is not None:
        mask = torch.as_tensor(mask, device=x.device)
        if mask.dim() == x.dim() - 1:
            mask = mask.unsqueeze(1)
        weight = (mask == 0).to(x.dtype).expand_as(x)
    if window is not None:
        w = window.to(device=x.device, dtype=x.dtype).expand_as(x)
        weight = w if weight is None else weight * w
    return weight


def pixel_sigma(batch: Mapping[str, Any], x: torch.Tensor, model_error: float = 0.0) -> torch.Tensor | None:
    """σ of every pixel: the batch's per-pixel "sigma", else its per-object "noise_sigma", else None.

    Floored at 1e-12 (a zero σ is a fill value).  `model_error` ε adds a fractional error
    in quadrature, σ² + (ε·max(x, 0))²: the part of a bright core no model of a few latents
    reproduces to the photon noise (a survey's flat-field/PSF systematic floor), so the
    brightest objects do not outweigh the rest by their S/N² in the likelihood.

    Parameters
    ----------
    batch : mapping
        A loader batch: "sigma" (B, C, H, W) or (B, H, W), or "noise_sigma" (B,), in the
        images' stored units.
    x : torch.Tensor
        The images (B, C, H, W).
    model_error : float
        ε, dimensionless.

    Returns
    -------
    torch.Tensor or None
        σ broadcastable to x, x's dtype and units; None when the batch has neither.
    """
    sigma = batch.get("sigma") if batch is not None else None
    if sigma is not None:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.dim() == x.dim() - 1:
            sigma = sigma.unsqueeze(1)
    else:
        noise = batch.get("noise_sigma") if batch is not None else None
        if noise is None:
            return None
        sigma = torch.as_tensor(noise, dtype=x.dtype, device=x.device).view(-1, *([1] * (x.dim() - 1)))
    if model_error > 0:
        sigma = torch.sqrt(sigma.pow(2) + (model_error * x.clamp(min=0)).pow(2))
    return sigma.clamp(min=1e-12)


def masked_sum(per_pixel: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-object sum of per-pixel terms over the counted pixels.

    Parameters
    ----------
    per_pixel : torch.Tensor
        (B, C, H, W) terms.
    weight : torch.Tensor or None
        (B, C, H, W) weights from `valid_pixels`; None counts every pixel.

    Returns
    -------
    torch.Tensor
        (B,) sums.
    """
    if weight is not None:
        per_pixel = per_pixel * weight
    return per_pixel.flatten(1).sum(dim=1)


def masked_mean(per_pixel: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean over the counted pixels of the whole batch; the plain mean without weights.

    Parameters
    ----------
    per_pixel : torch.Tensor
        Per-pixel terms, (B, C, H, W).
    weight : torch.Tensor or None
        `valid_pixels` weights of the same shape, or None.

    Returns
    -------
    torch.Tensor
        Scalar: Σ w·t / max(Σ w, 1).
    """
    if weight is None:
        return per_pixel.mean()
    return (per_pixel * weight).sum() / weight.sum().clamp(min=1.0)


def circular_window(size: int, taper: float = 2.0) -> torch.Tensor:
    """Weights of the stamp's inscribed disc: 1 inside, a cos² taper to 0 at its edge, 0 in the corners.

    1 within the inscribed circle less `taper` pixels, falling to 0 at radius size / 2.  A
    rotation about the centre maps this disc onto itself, so an image multiplied by it has
    no frame edges whatever the angle: the pixels outside it are the ones that come from
    outside the stamp in one of the two frames.

    Parameters
    ----------
    size : int
        Side of the stamp, in pixels.
    taper : float
        Width of the taper, in pixels.

    Returns
    -------
    torch.Tensor
        (size, size) float32 in [0, 1].
    """
    c = (size - 1) / 2.0
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32) - c,
                            torch.arange(size, dtype=torch.float32) - c, indexing="ij")
    r = torch.sqrt(xx**2 + yy**2)
    outer = size / 2.0
    inner = outer - taper
    ramp = ((outer - r) / max(taper, 1e-6)).clamp(0.0, 1.0)
    return torch.where(r <= inner, torch.ones_like(r), torch.sin(0.5 * torch.pi * ramp) ** 2)
