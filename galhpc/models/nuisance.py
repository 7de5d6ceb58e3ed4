"""Nuisances kept out of the latent: orientation, noise level and dynamic range.

Orientation.
A galaxy's position angle on the sky says nothing about its morphology, yet it dominates
the pixel variance of elongated galaxies: a latent that must reconstruct pixels spends
its capacity on it, and clusters split on it.  Models with `orient: true` therefore
measure the angle θ of each input from its light (Gaussian-weighted second moments),
encode the image rotated to a canonical frame (major axis along x), decode in that
frame, and rotate the decoded image back by θ: the latent μ is free of orientation and
θ travels beside it as `Encoding.pose` (Cheng et al. 2021 and Walmsley et al. 2022 use
rotation augmentation for the same end; here the invariance is exact up to the moment
estimate's noise).  Generation draws θ uniformly.  Only the stamp's inscribed disc is
valid in both frames (a rotation brings the corners in from outside the stamp), so the
encoder sees, and the decoder draws, the disc alone (`galhpc.models.pixels.circular_window`,
tapered over its last 2 pixels): rotated back, the model image has no square frame edges
and no corners interpolated from outside, and orient models count only the disc in their
likelihood.

Noise level.  On flux-normalised stamps the sky σ differs from object to object by the
spread of their fluxes (25x in a log-uniform set), and an encoder that sees it clusters
by signal-to-noise: faint objects' latents scatter or shrink to the prior.  With
`match_sigma` the encoder sees every stamp degraded to one common sky σ (Gaussian noise
of variance match_sigma² − σ², σ measured on the stamp's border like prep's
`border_noise`), so nothing in its input tells a bright object from a faint one except
its shape — the standard way to compare galaxies at a common depth (e.g. the
artificially redshifted images of Galaxy Zoo).  Training draws new noise every step;
inference adds one fixed noise field (a buffer saved with the model), so encodings are
deterministic.  The likelihood still compares the decoder output with the undegraded
stamp.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from galhpc.models.pixels import circular_window


def centred_grid(h: int, w: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel offsets from the stamp centre.

    Parameters
    ----------
    h, w : int
        Stamp height and width in pixels.
    device : torch.device, optional

    Returns
    -------
    tuple of torch.Tensor
        y and x offsets, each (h, w) float32, in pixels (0 at (h − 1) / 2, (w − 1) / 2).
    """
    ys = torch.arange(h, dtype=torch.float32, device=device) - (h - 1) / 2.0
    xs = torch.arange(w, dtype=torch.float32, device=device) - (w - 1) / 2.0
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return yy, xx


def position_angle(x: torch.Tensor, weight_sigma: float | None = None) -> torch.Tensor:
    """Position angle of the light of each image, from Gaussian-weighted second moments.

    Parameters
    ----------
    x : Tensor, (B, C, H, W), float
        Images centred on the object (bands are summed).
    weight_sigma : float, optional
        σ of the circular Gaussian weight about the stamp centre, in pixels; default
        H / 8, which keeps the sky noise of the stamp's outskirts out of the moments.

    Returns
    -------
    Tensor, (B,), float32
        θ in radians, in (-π/2, π/2]: the angle from the +x axis (columns) towards +y
        (rows) of the major axis.  Arbitrary (but finite) for round or empty images.
    """
    img = x.detach().float().sum(dim=1)
    b, h, w = img.shape
    sigma = weight_sigma if weight_sigma is not None else h / 8.0
    yy, xx = centred_grid(h, w, x.device)
    weighted = img * torch.exp(-0.5 * (xx**2 + yy**2) / sigma**2)
    mxx = (weighted * xx * xx).flatten(1).sum(1)
    myy = (weighted * yy * yy).flatten(1).sum(1)
    mxy = (weighted * xx * yy).flatten(1).sum(1)
    return 0.5 * torch.atan2(2.0 * mxy, mxx - myy)


INTERPOLATIONS = ("bilinear", "bicubic")


def rotate(x: torch.Tensor, theta: torch.Tensor, padding: str = "reflection", mode: str = "bilinear") -> torch.Tensor:
    """Rotate each image by θ about its centre (bilinear or bicubic).

    Parameters
    ----------
    x : Tensor, (B, C, H, W), float
    theta : Tensor, (B,), radians
        Positive θ turns the image content from +x towards +y (rows), so an object of
        position angle φ becomes one of position angle φ + θ.

    padding : str
        What fills the corners that come from outside the stamp: "reflection" (the stamp's
        own outskirts: sky, for observed images) or "zeros" (the sky level of a model
        image, so no copy of the model's frame edges can appear).
    mode : str
        "bilinear", or "bicubic": a bilinear rotation to a frame and back averages each
        pixel with its neighbours, which flattens cores a few pixels wide; bicubic keeps them.

    Returns
    -------
    Tensor, (B, C, H, W), same dtype as x
    """
    cos, sin = torch.cos(theta).to(x.dtype), torch.sin(theta).to(x.dtype)
    zero = torch.zeros_like(cos)
    # affine_grid maps output coordinates to input ones: sample at R(-θ) · p
    matrix = torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)
    grid = F.affine_grid(matrix, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=False)


def random_angles(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Position angles uniform in [-π/2, π/2), for generation.

    Parameters
    ----------
    n : int
        How many angles.
    generator : torch.Generator or None
        Source of the draws (on `device`).
    device : torch.device
        Where the angles go.

    Returns
    -------
    torch.Tensor
        (n,) float32, in radians.
    """
    return (torch.rand(n, generator=generator, device=device) - 0.5) * math.pi


def border_noise(x: torch.Tensor, border: int = 8) -> torch.Tensor:
    """Sky σ of each stamp: the smallest standard deviation over the border patches of its frame.

    The border x border patches tile the stamp's frame (galhpc.data.preprocess.border_noise,
    batched); bands are averaged first.

    Parameters
    ----------
    x : torch.Tensor
        (B, C, H, W) float images.
    border : int
        Patch side in pixels; H and W must hold at least 2 patches.

    Returns
    -------
    torch.Tensor
        (B,) float32, in x's units.
    """
    img = x.detach().float().mean(dim=1)
    b, h, w = img.shape
    nx, ny = w // border, h // border
    patches = [img[:, :border, i * border:(i + 1) * border] for i in range(nx)]
    patches += [img[:, h - border:, i * border:(i + 1) * border] for i in range(nx)]
    patches += [img[:, j * border:(j + 1) * border, :border] for j in range(1, ny - 1)]
    patches += [img[:, j * border:(j + 1) * border, w - border:] for j in range(1, ny - 1)]
    stds = torch.stack([p.flatten(1).std(dim=1, unbiased=False) for p in patches], dim=1)
    return stds.min(dim=1).values


DEPTH_COVARIATES = ("log_snr", "log_sky_sigma")


def depth_covariates(x: torch.Tensor, aperture: float | None = None) -> torch.Tensor:
    """How deep each stamp is: log10 S/N in a central aperture and log10 of its sky σ.

    Measured on the pixels alone (the sky σ by `border_noise`, the S/N as the aperture's
    summed light over σ·√n), so training, the catalogue and the report all measure the same
    thing whatever columns a store carries.  On flux-normalised stamps both follow the
    object's flux: the nuisance a depth-conditioned mixture prior
    (galhpc.mixture.depth.DepthStandardiser) keeps out of the latent.

    Parameters
    ----------
    x : torch.Tensor
        (B, C, H, W) float images centred on the object (bands are summed), stored units.
    aperture : float, optional
        Aperture radius in pixels; default H / 6 (8 px on a 48-pixel stamp).

    Returns
    -------
    torch.Tensor
        (B, 2) float32: log10 S/N (S/N floored at 0.01, so empty or negative stamps stay
        finite) and log10 σ (floored at 10⁻⁸ of the stamp's peak), in `DEPTH_COVARIATES` order.
    """
    img = x.detach().float().sum(dim=1)
    b, h, w = img.shape
    radius = aperture if aperture is not None else h / 6.0
    yy, xx = centred_grid(h, w, x.device)
    inside = (xx**2 + yy**2 < radius**2).float()
    peak = img.flatten(1).abs().amax(dim=1).clamp(min=1e-30)
    sigma = torch.maximum(border_noise(x), 1e-8 * peak)
    snr = (img * inside).flatten(1).sum(dim=1) / (sigma * inside.sum().sqrt())
    return torch.stack([snr.clamp(min=0.01).log10(), sigma.log10()], dim=1)


class Canonicaliser(torch.nn.Module):
    """The input side of a model that keeps nuisances out of its latent.

    `forward(x)` returns (the encoder's input, θ): x degraded to the common sky σ
    `match_sigma` when set, rotated by −θ to the canonical frame when `orient`, then
    stretched by s·arcsinh(x / s) when `stretch` is set (a survey-wide softening in stored
    units, e.g. ~2 σ of the sky: linear at the noise level, so noise keeps its Gaussian
    shape, logarithmic in bright cores, so the encoder sees faint structure).
    `restore(y, θ)` rotates a canonical decoder output back, its disc only.  `window`
    ((H, W), orient models; else None) is the disc: the pixels a likelihood counts.  The
    likelihood is always taken in the store's linear units.

    Parameters
    ----------
    orient : bool
        Rotate to the canonical frame (θ from `position_angle`).
    stretch : float or None
        arcsinh softening s in stored pixel units; None: no stretch.
    match_sigma : float or None
        Common sky σ (stored units) the encoder's input is degraded to; None: off.
    image_shape : (C, H, W)
        Shape of the inputs (for the fixed inference noise field).
    interpolation : str
        `rotate`'s mode, "bilinear" or "bicubic".
    """

    def __init__(self, orient: bool = False, stretch: float | None = None, match_sigma: float | None = None,
                 image_shape: tuple[int, int, int] = (1, 64, 64), interpolation: str = "bilinear") -> None:
        super().__init__()
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"input interpolation {interpolation!r} is not one of {INTERPOLATIONS}")
        self.interpolation = interpolation
        for name, value in (("stretch", stretch), ("match_sigma", match_sigma)):
            if value is not None and value <= 0:
                raise ValueError(f"input {name} must be > 0, got {value}")
        self.orient, self.stretch, self.match_sigma = bool(orient), stretch, match_sigma
        if self.orient:
            if image_shape[1] != image_shape[2]:
                raise ValueError(f"orient needs square stamps, got {image_shape[1]}x{image_shape[2]}")
            self.register_buffer("window", circular_window(image_shape[1]), persistent=False)
        else:
            self.window = None
        if match_sigma is not None:
            field = torch.randn(image_shape, generator=torch.Generator().manual_seed(0x5EED))
            self.register_buffer("inference_noise", field)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The encoder's input and the measured angle of a batch.

        Parameters
        ----------
        x : torch.Tensor
            Images (B, C, H, W) in stored units.

        Returns
        -------
        x_in : torch.Tensor
            (B, C, H, W): degraded to `match_sigma`, rotated by −θ and windowed (orient),
            stretched, as configured; x itself when none is.
        theta : torch.Tensor or None
            (B,) radians for orient models, measured after degradation; else None.
        """
        if self.match_sigma is not None:
            # degrade first, so θ is as precise for a bright galaxy as for a faint one
            extra = (self.match_sigma**2 - border_noise(x) ** 2).clamp(min=0.0).sqrt().to(x.dtype)
            noise = torch.randn_like(x) if self.training else self.inference_noise.to(x.dtype).expand_as(x)
            x = x + extra.view(-1, 1, 1, 1) * noise
        theta = position_angle(x) if self.orient else None
        if theta is not None:
            x = rotate(x, -theta, mode=self.interpolation) * self.window
        if self.stretch is not None:
            x = self.stretch * torch.asinh(x / self.stretch)
        return x, theta

    def restore(self, y: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
        """Rotate a canonical-frame decoder output back to position angle θ, its disc only.

        Parameters
        ----------
        y : torch.Tensor
            (B, C, H, W) in the canonical frame.
        theta : torch.Tensor or None
            (B,) radians; None (or a model without `orient`) leaves y unchanged.

        Returns
        -------
        torch.Tensor
            (B, C, H, W), zero outside the disc when rotated.
        """
        if theta is None or not self.orient:
            return y
        return rotate(y * self.window, theta, padding="zeros", mode=self.interpolation)
