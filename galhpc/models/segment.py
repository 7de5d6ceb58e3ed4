"""Pixel segmentation of stamps into background / star / galaxy: `SegmentationAE`.

A convolutional autoencoder with residual blocks reconstructs the (normalised) stamp
through a dense bottleneck; every pixel's hypercolumn — the encoder's and decoder's
features at all scales, upsampled to full resolution and stacked — feeds a 1x1-conv head
giving three class logits per pixel.  The reconstruction trains the features on any
stamps; the head learns from truth masks (`batch["masks"]`, (B, H, W) with 0 background, 1 star, 2 galaxy, e.g.
GalSim's from `galhpc.data.starsim`) where a batch carries them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from galhpc.models.base import Batch, Encoding, GalaxyModel, LossOutput, StepState
from galhpc.models.blocks import check_image_size
from galhpc.models.hvae import denormalise_stamps, normalise_stamps

N_CLASSES = 3  # background, star, galaxy
GROUPS = 4  # GroupNorm groups: per-sample statistics, so training and inference agree


class ResidualBlock(nn.Module):
    """x + norm(conv(LeakyReLU(norm(conv(x))))): two 3x3 'same' convs around an identity path."""

    def __init__(self, channels: int, slope: float = 0.2):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.GroupNorm(GROUPS, channels),
            nn.LeakyReLU(slope),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.GroupNorm(GROUPS, channels),
        )
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output at the same shape.

        Parameters
        ----------
        x : torch.Tensor
            GroupNorm-ed feature maps of one scale, (B, channels, H, W).

        Returns
        -------
        torch.Tensor
            LeakyReLU(x + body(x)), (B, channels, H, W).
        """
        return self.act(x + self.body(x))


def conv_bn(c_in: int, c_out: int, stride: int = 1, slope: float = 0.2) -> nn.Sequential:
    """3x3 conv (no bias) -> GroupNorm -> LeakyReLU, halving the size when stride is 2.

    Parameters
    ----------
    c_in, c_out : int
        Channels in and out.
    stride : int
        1 ('same' size) or 2 (halves H and W).
    slope : float
        LeakyReLU negative slope.

    Returns
    -------
    torch.nn.Sequential
        (B, c_in, H, W) -> (B, c_out, H/stride, W/stride).
    """
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(GROUPS, c_out),
                         nn.LeakyReLU(slope))


class SegmentationAE(GalaxyModel):
    """Residual autoencoder with a hypercolumn head for per-pixel classes.

    Encoder: 3x3 conv + residual block per scale, stride-2 between scales, then a dense
    bottleneck of `latent_dim`; the decoder mirrors it (nearest upsampling).  The
    reconstruction passes through the bottleneck only, so `decode(encode(x).mu)` is a true
    reconstruction; the segmentation head sees every encoder and decoder feature map.
    params: widths (channels per scale, full resolution first), head_width, seg_weight
    (weight of the mask cross-entropy against the reconstruction MSE), stretch.
    """

    name = "segae"
    batch_columns = ("masks",)  # store datasets the trainer should put in every batch

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 5,
        latent_dim: int = 64,
        widths: list[int] | None = None,
        head_width: int = 32,
        seg_weight: float = 1.0,
        stretch: float = 10.0,
    ) -> None:
        super().__init__()
        widths = list(widths or [16, 32, 64])
        self.side = check_image_size(image_size, len(widths) - 1, "segae", "widths")
        self.stretch, self.seg_weight, self.width = float(stretch), float(seg_weight), widths[-1]
        self.stem = nn.Sequential(conv_bn(channels, widths[0]), ResidualBlock(widths[0]))
        self.down = nn.ModuleList(nn.Sequential(conv_bn(a, b, stride=2), ResidualBlock(b))
                                  for a, b in zip(widths[:-1], widths[1:], strict=False))
        flat = widths[-1] * self.side**2
        self.to_code = nn.Linear(flat, latent_dim)
        self.from_code = nn.Sequential(nn.Linear(latent_dim, flat), nn.LeakyReLU(0.2))
        self.up = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv_bn(b, a), ResidualBlock(a))
            for a, b in zip(reversed(widths[:-1]), reversed(widths[1:]), strict=False)
        )
        self.recon_head = nn.Conv2d(widths[0], channels, 1)
        hypercolumn = 2 * sum(widths)  # encoder and decoder features of every scale
        self.seg_head = nn.Sequential(nn.Conv2d(hypercolumn, head_width, 1), nn.LeakyReLU(0.2),
                                      nn.Conv2d(head_width, N_CLASSES, 1))

    def _encoder_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of normalised stamps, full resolution first."""
        maps = [self.stem(x)]
        for block in self.down:
            maps.append(block(maps[-1]))
        return maps

    def _decoder_maps(self, code: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps decoded from codes (B, latent_dim), coarsest first."""
        maps = [self.from_code(code).view(-1, self.width, self.side, self.side)]
        for block in self.up:
            maps.append(block(maps[-1]))
        return maps

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised input, reconstruction and per-pixel class logits of raw stamps in one pass.

        Parameters
        ----------
        x : torch.Tensor
            Stamps as stored (B, C, H, W); normalised here.

        Returns
        -------
        target : torch.Tensor
            `normalise_stamps(x, stretch)`, (B, C, H, W).
        recon : torch.Tensor
            The reconstruction through the bottleneck, (B, C, H, W), normalised space.
        logits : torch.Tensor
            (B, 3, H, W) class logits: background, star, galaxy.
        """
        target = normalise_stamps(x, self.stretch)
        encoded = self._encoder_maps(target)
        decoded = self._decoder_maps(self.to_code(encoded[-1].flatten(1)))
        size = target.shape[-2:]
        columns = torch.cat([F.interpolate(m, size=size, mode="nearest") for m in encoded + decoded], dim=1)
        return target, self.recon_head(decoded[-1]), self.seg_head(columns)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Most probable class per pixel.

        Parameters
        ----------
        x : torch.Tensor
            Stamps to classify pixel by pixel, (B, C, H, W), flux units.

        Returns
        -------
        torch.Tensor
            (B, H, W) uint8: 0 background, 1 star, 2 galaxy.
        """
        return self.forward_maps(x)[2].argmax(dim=1).to(torch.uint8)

    def encode(self, x: torch.Tensor) -> Encoding:
        """The bottleneck code of raw stamps (deterministic).

        Parameters
        ----------
        x : torch.Tensor
            (B, C, H, W) raw stamps, flux units.

        Returns
        -------
        Encoding
            `mu` (B, latent_dim); no `logvar`.
        """
        encoded = self._encoder_maps(normalise_stamps(x, self.stretch))
        return Encoding(self.to_code(encoded[-1].flatten(1)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised stamps reconstructed from codes.

        Parameters
        ----------
        z : torch.Tensor
            Bottleneck codes as `encode` gives them, (B, latent_dim).

        Returns
        -------
        torch.Tensor
            (B, C, H, W) in the normalised space of `normalise_stamps`.
        """
        return self.recon_head(self._decoder_maps(z)[-1])

    def reconstruct(self, x: torch.Tensor, columns: Mapping[str, Any] | None = None, *,
                    encoding: Encoding | None = None) -> torch.Tensor:
        """decode(encode(x).mu) with the per-stamp normalisation undone, in x's flux units.

        The loss's reconstruction of the normalised stamp, put back with x's peak and the
        inverse arcsinh.

        Parameters
        ----------
        x : torch.Tensor
            The stamps, unnormalised: (B, C, H, W).
        columns : mapping, optional
            Unused.
        encoding : Encoding, optional
            encode(x), if at hand.

        Returns
        -------
        torch.Tensor
            (B, C, H, W), x's flux units.
        """
        mu = (self.encode(x) if encoding is None else encoding).mu
        return denormalise_stamps(self.decode(mu), x, self.stretch)

    def loss(self, batch: Batch, state: StepState) -> LossOutput:
        """Reconstruction MSE plus, where the batch has truth masks, the weighted mask cross-entropy.

        Parameters
        ----------
        batch : Batch
            ``"image"`` raw stamps (B, C, H, W); optional ``"masks"`` (B, H, W) integer classes
            (0 background, 1 star, 2 galaxy).
        state : StepState
            ``weights["seg"]`` (default 1) multiplies `seg_weight`.

        Returns
        -------
        LossOutput
            `total` scalar; `terms` ``recon_mse`` (mean per pixel, normalised units²) and, with
            masks, ``mask_ce`` (nats per pixel); `recon` (B, C, H, W) normalised space.
        """
        target, recon, logits = self.forward_maps(batch["image"])
        mse = (recon - target).pow(2).flatten(1).sum(dim=1).mean() / target[0].numel()
        terms = {"recon_mse": mse}
        total = mse
        if "masks" in batch:
            ce = F.cross_entropy(logits, batch["masks"].long())
            terms["mask_ce"] = ce
            total = total + self.seg_weight * state.weight("seg", 1.0) * ce
        return LossOutput(total, terms, recon)

    def extra_columns(self, x: torch.Tensor, encoding: Encoding) -> dict[str, torch.Tensor]:
        """Per object: the class map and its star/galaxy pixel fractions, for `galhpc-encode`.

        Parameters
        ----------
        x : torch.Tensor
            The raw stamps (B, C, H, W) the class map is computed from, flux units.
        encoding : Encoding
            Unused (the map is computed from x).

        Returns
        -------
        dict of str to torch.Tensor
            ``segmentation`` (B, H, W) uint8, ``star_pixel_fraction`` and
            ``galaxy_pixel_fraction`` (B,) float32 in [0, 1].
        """
        seg = self.segment(x)
        pixels = float(seg[0].numel())
        return {
            "segmentation": seg,
            "star_pixel_fraction": (seg == 1).flatten(1).sum(dim=1) / pixels,
            "galaxy_pixel_fraction": (seg == 2).flatten(1).sum(dim=1) / pixels,
        }
