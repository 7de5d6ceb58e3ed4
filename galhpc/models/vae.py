"""The VAE family: a convolutional VAE (Danilov 2020) and a Gaussian-likelihood VAE (Regier et al. 2015).

Both encode to a diagonal Gaussian q(z|x) and use a unit-Gaussian prior; the KL weight
arrives from the schedule as `state.weight("kl")` and multiplies the model's own β.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from galhpc.models.base import Batch, Encoding, GalaxyModel, LossOutput, Samples, StepState
from galhpc.models.blocks import ConvHead, ConvTrunk, he_init, reparameterise, xavier_init
from galhpc.priors import gaussian_log_likelihood, kl_unit_gaussian
from galhpc.runtime.precision import float32

OBJECTIVES = ("elbo", "beta", "flow")


class ConvEncoder(ConvTrunk):
    """`ConvTrunk` then dense heads for μ and log σ² of q(z|x) (Danilov 2020).

    Parameters
    ----------
    image_size : int
        Side H = W of the stamps in pixels; a positive multiple of 2**len(filters).
    channels : int
        Bands C.
    latent_dim : int
        L.
    filters : list of int
        Channels of each stride-2 block.
    slope : float
        Negative slope of the LeakyReLU.
    """

    def __init__(self, image_size: int, channels: int, latent_dim: int, filters: list[int], slope: float) -> None:
        super().__init__(image_size, channels, filters, slope, model="vae", param="filters")
        self.mu = nn.Linear(self.out_features, latent_dim)
        self.logvar = nn.Linear(self.out_features, latent_dim)

    def forward(self, x: torch.Tensor) -> Encoding:
        """Posterior of a batch.

        Parameters
        ----------
        x : torch.Tensor
            A batch of stamps, (B, C, H, W).

        Returns
        -------
        Encoding
            `mu` and `logvar`, each (B, L) float32.
        """
        h = super().forward(x)
        return Encoding(self.mu(h), self.logvar(h))


class _UnitGaussianVAE(GalaxyModel):
    """What both VAEs share: an encoder module giving q(z|x) and the N(0, I) prior they sample."""

    generative = True
    latent_dim: int
    encoder: nn.Module

    def encode(self, x: torch.Tensor) -> Encoding:
        """Diagonal Gaussian posterior q(z|x) of a batch.

        Parameters
        ----------
        x : torch.Tensor
            Images (B, C, H, W) float32 in the store's units ([0, 1] for BCE).

        Returns
        -------
        Encoding
            `mu` and `logvar` (B, L) float32; `pose` None.
        """
        return self.encoder(x)

    def sample(self, n: int, generator: torch.Generator | None = None, **conditions: Any) -> Samples:
        """Images decoded from z ~ N(0, I).

        Parameters
        ----------
        n : int
            How many images to draw.
        generator : torch.Generator, optional
            Source of z (on the model's device).
        **conditions
            Ignored (the prior is unconditional).

        Returns
        -------
        Samples
            `images` (n, C, H, W) float32 from `decode`, `z` (n, L), `component` (n,) int64 all -1.
        """
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return Samples(self.decode(z), z, torch.full((n,), -1, dtype=torch.long, device=device))


class ConvVAE(_UnitGaussianVAE):
    """Convolutional VAE of Danilov (2020) with ELBO, β-VAE (Higgins et al. 2017) or Flow-VAE objectives.

    objective: "elbo" (KL weight 1), "beta" (KL weight `beta`, 1e-2 by default) or "flow"
    (the KL term is floored, max(flow_lambda, KL), so the optimiser stops pressing the
    posterior onto the prior once KL is below `flow_lambda` nats).  recon: "bce" (images
    in [0, 1]) or "mse", summed over pixels.  He init, Xavier on the output layer.

    Parameters
    ----------
    image_size : int
        Side H = W of the stamps in pixels, a positive multiple of 2**len(filters).
    channels : int
        Bands C.
    latent_dim : int
        L.
    filters : list of int
        Channels of the stride-2 conv blocks (`ConvTrunk`), mirrored by the decoder.
    objective : {"elbo", "beta", "flow"}
        How the KL enters the loss (see above).
    beta : float
        The β of the "beta" objective.
    flow_lambda : float
        KL floor of the "flow" objective, in nats.
    recon : {"bce", "mse"}
        Reconstruction term, summed over pixels.
    slope : float
        LeakyReLU negative slope.

    Raises
    ------
    ValueError
        For an unknown objective or recon, or an image_size the filters cannot halve.
    """

    name = "vae"

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 1,
        latent_dim: int = 64,
        *,
        filters: list[int] = (32, 32, 64, 64),
        objective: str = "elbo",
        beta: float = 1e-2,
        flow_lambda: float = 1.0,
        recon: str = "bce",
        slope: float = 0.2,
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"vae: objective {objective!r} is not one of {OBJECTIVES}")
        if recon not in ("bce", "mse"):
            raise ValueError(f"vae: recon {recon!r} is not 'bce' or 'mse'")
        self.image_size, self.channels, self.latent_dim = image_size, channels, latent_dim
        self.objective, self.beta, self.flow_lambda, self.recon_kind = objective, beta, flow_lambda, recon
        self.encoder = ConvEncoder(image_size, channels, latent_dim, list(filters), slope)
        self.decoder = ConvHead(image_size, channels, latent_dim, list(filters), slope, model="vae", param="filters")
        he_init(self, slope)
        xavier_init(self.decoder.out)


    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images of latents: the sigmoid of the decoder's logits.

        Parameters
        ----------
        z : torch.Tensor
            Latents (B, L) float32.

        Returns
        -------
        torch.Tensor
            (B, C, H, W) float32 in [0, 1], the units of min-max scaled stores.
        """
        return torch.sigmoid(self.decoder(z))

    @float32
    def recon_loss(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-object reconstruction loss from decoder logits, summed over pixels.

        Parameters
        ----------
        logits : torch.Tensor
            Decoder output before the sigmoid, (B, C, H, W).
        x : torch.Tensor
            Target images (B, C, H, W); in [0, 1] for "bce".

        Returns
        -------
        torch.Tensor
            (B,) float32: binary cross-entropy in nats ("bce") or squared error of the sigmoid
            output in squared image units ("mse").

        Raises
        ------
        ValueError
            For "bce" on images outside [0, 1] (beyond 1e-4), naming their range.
        """
        if self.recon_kind == "bce":
            low, high = float(x.min()), float(x.max())
            if low < -1e-4 or high > 1 + 1e-4:
                raise ValueError(
                    f"vae: BCE reconstruction needs images in [0, 1], got range [{low:.3g}, {high:.3g}]; "
                    "use recon: mse or a min-max normalised store"
                )
            per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            per_pixel = (torch.sigmoid(logits) - x).pow(2)
        return per_pixel.flatten(1).sum(dim=1)

    def kl_term(self, kl: torch.Tensor) -> torch.Tensor:
        """The batch-mean KL after the objective's weighting or floor (before the schedule weight).

        Parameters
        ----------
        kl : torch.Tensor
            Per-object KL(q(z|x) || N(0, I)) (B,) in nats.

        Returns
        -------
        torch.Tensor
            Scalar: mean KL ("elbo"), β times it ("beta", Higgins et al. 2017) or
            max(flow_lambda, mean KL) ("flow").
        """
        mean_kl = kl.mean()
        if self.objective == "beta":
            return self.beta * mean_kl
        if self.objective == "flow":
            return torch.clamp(mean_kl, min=self.flow_lambda)
        return mean_kl

    def loss(self, batch: Batch, state: StepState) -> LossOutput:
        """The negative ELBO of one batch, with the objective's KL weighting.

        total = mean recon + state.weight("kl") * kl_term(KL), one z drawn per object.

        Parameters
        ----------
        batch : Batch
            ``"image"`` (B, C, H, W) float32, in [0, 1] for "bce".
        state : StepState
            ``weights["kl"]``: the schedule's KL weight (s3VDC's β ramp), multiplying the model's own.

        Returns
        -------
        LossOutput
            `total` scalar; `terms` ``recon`` (mean per-object sum over pixels) and ``kl``
            (mean KL in nats, unweighted); `recon` the sigmoid of the sampled decoding (B, C, H, W).
        """
        x = batch["image"]
        enc = self.encode(x)
        logits = self.decoder(reparameterise(enc.mu, enc.logvar))
        recon = self.recon_loss(logits, x).mean()
        kl = kl_unit_gaussian(enc.mu, enc.logvar)
        total = recon + state.weight("kl") * self.kl_term(kl)
        return LossOutput(total, {"recon": recon, "kl": kl.mean()}, torch.sigmoid(logits))



class MLPEncoder(nn.Module):
    """Fully connected encoder for the Gaussian VAE's "fc" architecture."""

    def __init__(self, n_in: int, latent_dim: int, hidden: list[int], slope: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip([n_in, *hidden[:-1]], hidden, strict=False):
            layers += [nn.Linear(a, b), nn.LeakyReLU(slope)]
        self.features = nn.Sequential(*layers)
        self.mu = nn.Linear(hidden[-1], latent_dim)
        self.logvar = nn.Linear(hidden[-1], latent_dim)

    def forward(self, x: torch.Tensor) -> Encoding:
        """Posterior of flattened stamps.

        Parameters
        ----------
        x : torch.Tensor
            (B, C, H, W) float32, flattened to (B, C*H*W).

        Returns
        -------
        Encoding
            `mu`, `logvar`: (B, L) float32 each.
        """
        h = self.features(x.flatten(1))
        return Encoding(self.mu(h), self.logvar(h))


class MLPDecoder(nn.Module):
    """Fully connected decoder producing `out_channels` maps of the image size."""

    def __init__(self, latent_dim: int, out_channels: int, image_size: int, hidden: list[int], slope: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        widths = list(reversed(hidden))
        for a, b in zip([latent_dim, *widths[:-1]], widths, strict=False):
            layers += [nn.Linear(a, b), nn.LeakyReLU(slope)]
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(widths[-1], out_channels * image_size**2)
        self.shape = (out_channels, image_size, image_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Raw output maps of latents.

        Parameters
        ----------
        z : torch.Tensor
            Latent codes z, (B, latent_dim) float32.

        Returns
        -------
        torch.Tensor
            (B, out_channels, H, W) float32, before any output function.
        """
        return self.out(self.features(z)).view(-1, *self.shape)


class GaussianVAE(_UnitGaussianVAE):
    """VAE with a per-pixel Gaussian likelihood (Regier et al. 2015).

    The decoder outputs a mean (sigmoid) and a variance (exponential of a bounded log σ²
    that never goes below `min_logvar`); loss = −log N(x; f_μ(z), f_Σ(z)) + KL.

    Parameters
    ----------
    image_size : int
        Side H = W in pixels (a positive multiple of 2**len(filters) for "conv").
    channels : int
        Bands C.
    latent_dim : int
        L.
    arch : {"conv", "fc"}
        The conv encoder/decoder of `ConvVAE`, or fully connected layers.
    filters : list of int
        Conv channels per halving ("conv").
    hidden : list of int
        Hidden widths of the "fc" encoder (mirrored by the decoder).
    min_logvar : float
        Soft floor of the pixel log σ² (natural log of squared image units).
    slope : float
        LeakyReLU negative slope.

    Raises
    ------
    ValueError
        For an unknown arch or an image_size the filters cannot halve.
    """

    name = "gaussian_vae"

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 1,
        latent_dim: int = 64,
        *,
        arch: str = "conv",
        filters: list[int] = (32, 32, 64, 64),
        hidden: list[int] = (512, 256),
        min_logvar: float = -9.0,
        slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.image_size, self.channels, self.latent_dim = image_size, channels, latent_dim
        self.min_logvar = min_logvar
        if arch == "conv":
            self.encoder = ConvEncoder(image_size, channels, latent_dim, list(filters), slope)
            self.decoder = ConvHead(image_size, 2 * channels, latent_dim, list(filters), slope, model="vae",
                                    param="filters")
        elif arch == "fc":
            self.encoder = MLPEncoder(channels * image_size**2, latent_dim, list(hidden), slope)
            self.decoder = MLPDecoder(latent_dim, 2 * channels, image_size, list(hidden), slope)
        else:
            raise ValueError(f"gaussian_vae: arch {arch!r} is not 'conv' or 'fc'")
        he_init(self, slope)
        xavier_init(self.decoder.out)


    def decode_distribution(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel mean and log-variance of p(x|z).

        Parameters
        ----------
        z : torch.Tensor
            (B, L) float32 latents.

        Returns
        -------
        mean : torch.Tensor
            (B, C, H, W) float32 in [0, 1] (sigmoid).
        logvar : torch.Tensor
            (B, C, H, W) float32 log σ², min_logvar + softplus(raw − min_logvar) > min_logvar.
        """
        out = self.decoder(z)
        mean_raw, logvar_raw = out[:, : self.channels], out[:, self.channels :]
        logvar = self.min_logvar + F.softplus(logvar_raw - self.min_logvar)
        return torch.sigmoid(mean_raw), logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean image of latents.

        Parameters
        ----------
        z : torch.Tensor
            Latents, (B, L) float32.

        Returns
        -------
        torch.Tensor
            Mean of p(x|z), (B, C, H, W) float32 in [0, 1].
        """
        return self.decode_distribution(z)[0]

    def loss(self, batch: Batch, state: StepState) -> LossOutput:
        """Gaussian negative log-likelihood plus weighted KL, one z per object (Regier et al. 2015).

        Parameters
        ----------
        batch : Batch
            ``"image"`` (B, C, H, W) float32 in the store's units.
        state : StepState
            ``weights["kl"]``: the schedule's weight of the KL term.

        Returns
        -------
        LossOutput
            `total` = nll + weight·kl (scalar); `terms` ``nll`` (mean per-object nats) and ``kl``
            (mean nats); `recon` the decoded mean (B, C, H, W).
        """
        x = batch["image"]
        enc = self.encode(x)
        mean, logvar = self.decode_distribution(reparameterise(enc.mu, enc.logvar))
        nll = -gaussian_log_likelihood(x, mean, logvar).mean()
        kl = kl_unit_gaussian(enc.mu, enc.logvar).mean()
        total = nll + state.weight("kl") * kl
        return LossOutput(total, {"nll": nll, "kl": kl}, mean)

