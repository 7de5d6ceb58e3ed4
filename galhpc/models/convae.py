"""Convolutional autoencoder: the clustering baseline of Cheng et al. (2020).

Encoder: one conv 4x4/2 layer per entry of `filters` (32, 64, 64 by default, LeakyReLU 0.2)
to a (64, H/8, W/8) map (H/2^n for n filters).  With `dense: true` the map is flattened
and a dense layer gives `latent_dim` (64) features; without, a 1x1 conv to
`bottleneck_channels` keeps the features convolutional ((bottleneck_channels * H/8 * W/8)
of them).  The decoder mirrors it with transposed convs.  Loss: pixel MSE over the pixels
that count (galhpc.models.pixels: masked ones excluded).  `encode(x).mu` are the features
a post-hoc (stick-breaking) BayesianGaussianMixture clusters.  `orient`, `stretch` and `match_sigma` keep orientation,
dynamic range and noise level out of the features (galhpc.models.nuisance); the MSE is
then taken in the input's frame, after the decoder output is rotated back.
"""

from __future__ import annotations

import torch
from torch import nn

from galhpc.models.base import Batch, Encoding, GalaxyModel, LossOutput, StepState
from galhpc.models.blocks import check_image_size, check_images
from galhpc.models.nuisance import Canonicaliser
from galhpc.models.pixels import masked_mean, valid_pixels


def _conv_stack(channels: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels, channels[1:], strict=False):
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
    return layers


def _deconv_stack(channels: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(channels, channels[1:], strict=False)):
        layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
        if i < len(channels) - 2:
            layers.append(nn.LeakyReLU(0.2))
    return layers


class ConvAE(GalaxyModel):
    """Deterministic conv autoencoder; features are dense (latent_dim) or a small conv map."""

    name = "convae"

    def __init__(self, image_size: int = 64, channels: int = 1, latent_dim: int = 64, *,
                 dense: bool = True, filters: tuple[int, int, int] | list[int] = (32, 64, 64),
                 bottleneck_channels: int = 4, orient: bool = False, stretch: float | None = None,
                 match_sigma: float | None = None) -> None:
        super().__init__()
        if not filters or any(int(f) < 1 for f in filters):
            raise ValueError(f"convae: filters must be a non-empty list of positive widths, got {list(filters)}")
        self.canon = Canonicaliser(orient, stretch, match_sigma, (channels, image_size, image_size))
        self.image_size, self.channels, self.dense = image_size, channels, dense
        # one stride-2 conv per entry of `filters`
        self.grid = check_image_size(image_size, len(filters), "convae", "filters")
        self.top = int(filters[-1])
        widths = [channels, *map(int, filters)]
        map_size = self.top * self.grid**2
        if dense:
            self.feature_dim = latent_dim
            bottleneck = [nn.Flatten(), nn.Linear(map_size, latent_dim)]
            expand = [nn.Linear(latent_dim, map_size), nn.LeakyReLU(0.2),
                      nn.Unflatten(1, (self.top, self.grid, self.grid))]
        else:
            self.feature_dim = bottleneck_channels * self.grid**2
            bottleneck = [nn.Conv2d(self.top, bottleneck_channels, 1), nn.Flatten()]
            expand = [nn.Unflatten(1, (bottleneck_channels, self.grid, self.grid)),
                      nn.Conv2d(bottleneck_channels, self.top, 1), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*_conv_stack(widths), *bottleneck)
        self.decoder = nn.Sequential(*expand, *_deconv_stack(widths[::-1]))

    def encode(self, x: torch.Tensor) -> Encoding:
        """Features of a batch (deterministic), after the nuisance canonicalisation.

        Parameters
        ----------
        x : torch.Tensor
            A batch of (channels, image_size, image_size) stamps, float32, stored units.

        Returns
        -------
        Encoding
            `mu` (B, feature_dim) float32; `pose` θ (B,) radians with `orient`, else None.

        Raises
        ------
        ValueError
            When x is not (B, channels, image_size, image_size).
        """
        check_images(x, (self.channels, self.image_size, self.image_size), "convae")
        x_in, theta = self.canon(x)
        return Encoding(mu=self.encoder(x_in), pose=theta)

    def decode(self, z: torch.Tensor, pose: torch.Tensor | None = None) -> torch.Tensor:
        """Images of features; with `pose` θ rotated to position angle θ.

        Parameters
        ----------
        z : torch.Tensor
            Features (B, feature_dim).
        pose : torch.Tensor, optional
            Position angles (B,) in radians (orient models).

        Returns
        -------
        torch.Tensor
            (B, C, H, W) float32 in the store's units (linear output).
        """
        return self.canon.restore(self.decoder(z), pose)

    def loss(self, batch: Batch, state: StepState) -> LossOutput:
        """Pixel MSE of the reconstruction over the pixels that count (Cheng et al. 2020).

        Masked pixels and, for orient models, the pixels outside the disc are excluded
        (`galhpc.models.pixels`).

        Parameters
        ----------
        batch : Batch
            ``"image"`` (B, C, H, W); optional ``"mask"``.
        state : StepState
            Unused (the loss has no schedule weights).

        Returns
        -------
        LossOutput
            `total` = `terms["recon"]`, the mean squared error in squared stored units; `recon`
            the reconstruction (B, C, H, W) in x's frame.
        """
        x = batch["image"]
        enc = self.encode(x)
        recon = self.decode(enc.mu, enc.pose)
        mse = masked_mean((recon - x).pow(2), valid_pixels(batch, x, self.canon.window))
        return LossOutput(mse, {"recon": mse}, recon)

    def forward(self, batch: Batch, state: StepState | None = None) -> LossOutput:
        """`loss(batch, state)`, for wrappers that call the module.

        Parameters
        ----------
        batch : Batch
            ``"image"`` and optional ``"mask"``, as `loss` reads them.
        state : StepState, optional
            Defaults to a fresh `StepState()`.

        Returns
        -------
        LossOutput
            As `loss` gives it.
        """
        return self.loss(batch, state or StepState())
