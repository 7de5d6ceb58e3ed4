"""VQ-VAE of Cheng et al. (2019/2020, Table 1/2), with an optional PSF output layer.

Encoder: conv 4x4/2 (64), conv 4x4/2 (128), conv 3x3 (128), 2 residual blocks
(3x3 -> 32, 1x1 -> 128), 1x1 pre-quantisation conv to D = `latent_dim` (64).  Each of the
(H/4) x (W/4) vectors is replaced by its nearest codebook entry (K = `num_codes`, found with
`galhpc.kernels.nearest_code`); the decoder mirrors the encoder with transposed convs.
`downsample: 2` drops the second strided conv (an (H/2) x (W/2) code map: a compact core
of a few pixels is drawn by one code instead of straddling four 4x4 cells).  `output:
unstretch` makes the decoder draw in the encoder's arcsinh-stretched space (`Unstretch`).
Loss = reconstruction MSE + codebook loss ||sg[z_e] - e||^2 (or an EMA codebook) +
β ||z_e - sg[e]||^2 (β = 0.25), with straight-through gradients.

Codebook usage is logged with every loss (perplexity, dead codes); codes unused for a
while are restarted on random encoder outputs.  With a `psf` the decoder's output is
convolved with the PSF before the loss, so `decode` returns the deconvolved galaxy and
`observe` the PSF-convolved one (see `galhpc.models.psf_layer`); `reconstruct(x)` is
PSF ⊛ decode(encode(x).mu), the observed-space image the loss compares with x.  A Tikhonov term
`tikhonov` * ||d - PSF ⊛ d||^2 regularises the deconvolution.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galhpc.kernels import nearest_code
from galhpc.models.base import Batch, Encoding, GalaxyModel, LossOutput, StepState
from galhpc.models.blocks import check_images
from galhpc.models.nuisance import Canonicaliser
from galhpc.models.pixels import masked_mean, pixel_sigma, valid_pixels
from galhpc.models.psf_layer import PSFLayer
from galhpc.runtime.errors import DataError
from galhpc.runtime.world import LOCAL, Collective

log = logging.getLogger("galhpc.models.vqvae")


class VectorQuantizer(nn.Module):
    """Codebook of K vectors of size D: nearest-code quantisation with usage tracking.

    `ema=True` updates the codebook by exponential moving averages of assigned vectors
    (no codebook gradient); otherwise the codebook is a parameter trained by the codebook
    loss.  `usage` is an EMA (decay `usage_decay`) of how many vectors each code receives per
    step; codes below `dead_threshold` (default: one vector per step) are dead and, every
    `restart_every` training steps, restarted on random encoder outputs of the current batch.
    Usage starts at zero, so the first restart seeds the whole codebook from the data.
    Under data parallelism the trainer hands it the ranks' `collective` (`use_collective`),
    which sums counts and EMA sums over ranks and broadcasts rank 0's restarts; alone it is
    the identity.
    """

    collective: Collective = LOCAL

    def __init__(self, num_codes: int, code_dim: int, *, ema: bool = False, decay: float = 0.99,
                 eps: float = 1e-5, usage_decay: float = 0.99, dead_threshold: float = 1.0,
                 restart_every: int = 50) -> None:
        super().__init__()
        if num_codes < 2:
            raise ValueError(f"num_codes must be >= 2, got {num_codes}")
        self.num_codes, self.code_dim = num_codes, code_dim
        self.ema, self.decay, self.eps = ema, decay, eps
        self.usage_decay, self.dead_threshold, self.restart_every = usage_decay, dead_threshold, restart_every
        init = torch.empty(num_codes, code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("usage", torch.zeros(num_codes))  # unused codes start dead: first restart is a data init
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def lookup(self, flat: torch.Tensor) -> torch.Tensor:
        """Nearest codebook entry of each row (`galhpc.kernels.nearest_code`).

        Parameters
        ----------
        flat : torch.Tensor
            Encoder vectors, one per row: (N, D) float32.

        Returns
        -------
        torch.Tensor
            (N,) int64 code indices in [0, K).
        """
        index, _ = nearest_code(flat, self.codebook)
        return index

    def embed(self, index: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of an index tensor of any shape.

        Parameters
        ----------
        index : torch.Tensor
            int64 code indices, any shape (...).

        Returns
        -------
        torch.Tensor
            (..., D) float32 codebook rows.
        """
        return F.embedding(index, self.codebook)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Quantise encoder maps to their nearest codes, with straight-through gradients (van den Oord et al. 2017).

        In training mode it also updates usage (and the EMA codebook) and restarts dead codes.

        Parameters
        ----------
        z_e : torch.Tensor
            Pre-quantisation maps (B, D, h, w).

        Returns
        -------
        z_q : torch.Tensor
            (B, D, h, w) quantised maps; gradients pass to z_e unchanged.
        index : torch.Tensor
            (B, h, w) int64 code indices.
        terms : dict of str to torch.Tensor
            Scalars ``commitment`` ||z_e − sg[e]||², ``codebook`` ||sg[z_e] − e||² (0 with EMA),
            ``perplexity`` of this batch's code use and ``dead_codes``.
        """
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        index = self.lookup(flat)
        quantised = self.embed(index)
        terms = {"commitment": F.mse_loss(flat, quantised.detach())}
        if self.ema:
            terms["codebook"] = flat.new_zeros(())
        else:
            terms["codebook"] = F.mse_loss(quantised, flat.detach())
        counts = torch.bincount(index, minlength=self.num_codes).to(flat.dtype)
        if self.training:
            self._update(flat.detach(), index, counts)
        probs = counts / counts.sum()
        terms["perplexity"] = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        terms["dead_codes"] = (self.usage < self.dead_threshold).sum().to(flat.dtype)
        z_q = flat + (quantised - flat).detach()
        z_q = z_q.reshape(b, h, w, d).permute(0, 3, 1, 2)
        return z_q, index.reshape(b, h, w), terms

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, index: torch.Tensor, counts: torch.Tensor) -> None:
        counts = self.collective.allreduce_sum(counts.clone())
        self.usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        if self.ema:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, index, flat)
            sums = self.collective.allreduce_sum(sums)
            self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n
            self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))
        self.steps += 1
        if self.restart_every and int(self.steps) % self.restart_every == 0:
            self._restart_dead(flat)

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor) -> None:
        dead = torch.nonzero(self.usage < self.dead_threshold).flatten()
        if dead.numel() == 0:
            return
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        fresh = self.collective.broadcast(flat[pick].contiguous())
        codebook = self.codebook.data
        codebook[dead] = fresh
        mean_usage = float(self.usage.mean())
        self.usage[dead] = max(mean_usage, 2 * self.dead_threshold)
        if self.ema:
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = fresh
        log.info("restarted %d dead codes of %d", dead.numel(), self.num_codes)


class ResidualBlock(nn.Module):
    """x + conv1x1(ReLU(conv3x3(ReLU(x)))), hidden width `hidden`."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(), nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input plus the residual branch.

        Parameters
        ----------
        x : torch.Tensor
            Trunk features at code resolution, (B, channels, h, w).

        Returns
        -------
        torch.Tensor
            Same shape as x; no activation after the sum (Cheng et al. 2020, Table 1).
        """
        return x + self.body(x)


DOWNSAMPLING = (2, 4)  # stride of the code grid: H/4 (Cheng et al.) or H/2 (finer codes for compact cores)


def vqvae_encoder(channels: int, code_dim: int, hidden: int = 128, res_hidden: int = 32, n_res: int = 2,
                  downsample: int = 4) -> nn.Sequential:
    """The VQ-VAE encoder of Cheng et al. (2020): image to pre-quantisation map.

    Parameters
    ----------
    channels : int
        Bands C of the images.
    code_dim : int
        D, the size of each code vector.
    hidden, res_hidden : int
        Channels of the trunk and of the residual blocks' hidden layer.
    n_res : int
        Number of residual blocks.
    downsample : {2, 4}
        Stride s of the code grid.

    Returns
    -------
    torch.nn.Sequential
        (B, C, H, W) -> (B, D, H/s, W/s).
    """
    strided = [nn.Conv2d(channels, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
               nn.Conv2d(hidden // 2, hidden, 4, stride=2, padding=1), nn.ReLU()]
    if downsample == 2:
        strided = [nn.Conv2d(channels, hidden, 4, stride=2, padding=1), nn.ReLU()]
    return nn.Sequential(
        *strided,
        nn.Conv2d(hidden, hidden, 3, padding=1),
        *[ResidualBlock(hidden, res_hidden) for _ in range(n_res)], nn.ReLU(),
        nn.Conv2d(hidden, code_dim, 1),
    )


def vqvae_decoder(channels: int, code_dim: int, hidden: int = 128, res_hidden: int = 32, n_res: int = 2,
                  downsample: int = 4) -> nn.Sequential:
    """The VQ-VAE decoder mirroring `vqvae_encoder`: quantised map to image.

    Parameters
    ----------
    channels : int
        Output bands C.
    code_dim : int
        D of the input map.
    hidden, res_hidden : int
        Channels of the trunk / residual hidden layers.
    n_res : int
        Residual blocks before the transposed convs.
    downsample : {2, 4}
        The encoder's stride s.

    Returns
    -------
    torch.nn.Sequential
        (B, D, H/s, W/s) -> (B, C, H, W), before the output activation.
    """
    upsample = [nn.ConvTranspose2d(hidden, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(hidden // 2, channels, 4, stride=2, padding=1)]
    if downsample == 2:
        upsample = [nn.ConvTranspose2d(hidden, channels, 4, stride=2, padding=1)]
    return nn.Sequential(
        nn.Conv2d(code_dim, hidden, 3, padding=1),
        *[ResidualBlock(hidden, res_hidden) for _ in range(n_res)], nn.ReLU(),
        *upsample,
    )


# Decoder output: "softplus" keeps deconvolved (pre-PSF) images non-negative, which removes
# the high-frequency patterns a PSF would otherwise hide from the loss.
OUTPUT_ACTIVATIONS = {"linear": nn.Identity, "softplus": nn.Softplus, "sigmoid": nn.Sigmoid}


class Unstretch(nn.Module):
    """y -> s·sinh(y / s), the inverse of the encoder's s·arcsinh(x / s) input stretch.

    The decoder draws in the stretched space, so a code's quantisation error is an absolute
    error at the sky level and a relative one in a bright core (whose pixels span two
    decades from galaxy to galaxy, more than a 64-code book resolves linearly).  |y / s| is
    clipped at `limit` so a diverging step cannot overflow.
    """

    def __init__(self, stretch: float, limit: float = 12.0) -> None:
        super().__init__()
        self.stretch, self.limit = float(stretch), float(limit)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """s·sinh(y / s) with |y / s| clipped at `limit`.

        Parameters
        ----------
        y : torch.Tensor
            Decoder output in the stretched space, any shape.

        Returns
        -------
        torch.Tensor
            Same shape, in linear stored units.
        """
        return self.stretch * torch.sinh((y / self.stretch).clamp(-self.limit, self.limit))


# Reconstruction term: "mse" (pixel MSE, Cheng et al.) or "chi2" (mean of ((x − f) / σ)² with
# the store's σ, per pixel or per object: faint and bright objects weigh by their S/N).
RECON_KINDS = ("mse", "chi2")


class VQVAE(GalaxyModel):
    """VQ-VAE (van den Oord et al. 2017) in Cheng et al.'s (2020) configuration, with an optional PSF layer.

    `encode` gives the flattened quantised embeddings (B, D * H/s * W/s), s = `downsample`;
    the parameters are described in the module docstring.  `__init__` raises ValueError for
    an unknown recon, output or downsample, an image_size not a multiple of `downsample`, or
    output "unstretch" without `stretch`.
    """

    name = "vqvae"
    generative = False

    def __init__(self, image_size: int = 64, channels: int = 1, latent_dim: int = 64, *,
                 num_codes: int = 512, beta: float = 0.25, hidden: int = 128, res_hidden: int = 32,
                 n_res: int = 2, ema: bool = False, decay: float = 0.99, dead_threshold: float = 1.0,
                 restart_every: int = 50, psf: str | dict[str, Any] | None = None,
                 output: str = "linear", tikhonov: float = 0.1, orient: bool = False,
                 stretch: float | None = None, match_sigma: float | None = None,
                 recon: str = "mse", model_error: float = 0.0, downsample: int = 4,
                 psf_image: np.ndarray | None = None) -> None:
        super().__init__()
        if recon not in RECON_KINDS:
            raise ValueError(f"vqvae: recon must be one of {RECON_KINDS}, got {recon!r}")
        self.recon_kind, self.model_error = recon, float(model_error)
        self.canon = Canonicaliser(orient, stretch, match_sigma, (channels, image_size, image_size))
        if downsample not in DOWNSAMPLING:
            raise ValueError(f"vqvae: downsample must be one of {DOWNSAMPLING}, got {downsample}")
        if image_size % downsample:
            raise ValueError(f"vqvae: image_size must be a multiple of {downsample} (downsample), got {image_size}")
        self.image_size, self.channels, self.code_dim = image_size, channels, latent_dim
        self.params = dict(num_codes=num_codes, beta=beta, hidden=hidden, res_hidden=res_hidden, n_res=n_res,
                           ema=ema, decay=decay, dead_threshold=dead_threshold, restart_every=restart_every,
                           psf=psf, output=output, tikhonov=tikhonov, orient=orient, stretch=stretch,
                           match_sigma=match_sigma, recon=recon, model_error=model_error,
                           downsample=downsample)
        self.grid = image_size // downsample
        self.beta, self.tikhonov = beta, tikhonov
        self.encoder = vqvae_encoder(channels, latent_dim, hidden, res_hidden, n_res, downsample)
        self.quantizer = VectorQuantizer(num_codes, latent_dim, ema=ema, decay=decay,
                                         dead_threshold=dead_threshold, restart_every=restart_every)
        self.decoder = vqvae_decoder(channels, latent_dim, hidden, res_hidden, n_res, downsample)
        self.psf_layer = PSFLayer(psf, psf_image) if psf is not None else None
        if output == "unstretch":
            if stretch is None:
                raise ValueError("vqvae: output 'unstretch' inverts the input stretch; give stretch too")
            self.output: nn.Module = Unstretch(stretch)
        elif output in OUTPUT_ACTIVATIONS:
            self.output = OUTPUT_ACTIVATIONS[output]()
        else:
            raise ValueError(f"vqvae: output must be one of {sorted([*OUTPUT_ACTIVATIONS, 'unstretch'])}, "
                             f"got {output!r}")

    def use_collective(self, collective: Collective) -> None:
        """The codebook's EMA sums, usage counts and restarts agree over these ranks.

        Parameters
        ----------
        collective : Collective
            The data-parallel ranks' reductions, handed to the quantiser.
        """
        self.quantizer.collective = collective

    def rebuild_params(self) -> dict[str, Any]:
        """Constructor params that rebuild this model from its state dict alone (no PSF file).

        Returns
        -------
        dict
            The keyword arguments given at build, with ``psf`` replaced by
            `PSFLayer.spec_for_checkpoint` when there is a PSF layer.
        """
        params = dict(self.params)
        if self.psf_layer is not None:
            params["psf"] = self.psf_layer.spec_for_checkpoint()
        return params

    @property
    def num_codes(self) -> int:
        """K, the codebook size."""
        return self.quantizer.num_codes

    @property
    def batch_columns(self) -> tuple[str, ...]:
        """Per-object PSFs (`psf`) for a kind-store PSF layer, and `noise_sigma` for chi2.

        The PSFs are read when the PSF layer takes them from the data; `noise_sigma` feeds the
        chi2 reconstruction.
        """
        return self.reconstruct_columns + (("noise_sigma",) if self.recon_kind == "chi2" else ())

    def store_mismatch(self, recipe: list[str], columns: set[str]) -> str | None:
        """Chi2 needs the store's noise σ (dataset `sigma` or column `noise_sigma`).

        Parameters
        ----------
        recipe : list of str
            The store's prep steps (not checked: both likelihoods take any units).
        columns : set of str
            The store's label columns and per-object datasets.

        Returns
        -------
        str or None
            One line when recon is "chi2" and the store has no σ, else None.
        """
        if self.recon_kind == "chi2" and not ({"noise_sigma", "sigma"} & columns):
            return "recon 'chi2' needs the store's noise σ (dataset sigma or column noise_sigma); the store has neither"
        return None

    @property
    def reconstruct_columns(self) -> tuple[str, ...]:
        """``("psf",)`` when the PSF layer takes per-object PSFs from the data (kind store), else none."""
        return ("psf",) if self.psf_layer is not None and not self.psf_layer.fixed else ()

    def quantise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Images to their straight-through quantised map, code indices and loss terms.

        With `orient` the map is of the canonically oriented image and θ is in terms["pose"].

        Parameters
        ----------
        x : torch.Tensor
            Images (B, C, H, W) float32, stored units.

        Returns
        -------
        z_q : torch.Tensor
            (B, D, H/s, W/s) float32.
        index : torch.Tensor
            (B, H/s, W/s) int64.
        terms : dict of str to torch.Tensor
            The quantiser's terms (see `VectorQuantizer.forward`), plus ``pose`` (B,) radians
            for orient models.

        Raises
        ------
        ValueError
            For a batch whose shape is not the model's (B, C, H, W), via `check_images`.
        """
        check_images(x, (self.channels, self.image_size, self.image_size), "vqvae")
        x_in, theta = self.canon(x)
        z_q, index, terms = self.quantizer(self.encoder(x_in))
        if theta is not None:
            terms["pose"] = theta
        return z_q, index, terms

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Code map of images: what the PixelCNN prior models.

        Parameters
        ----------
        x : torch.Tensor
            (B, C, H, W) float32 images.

        Returns
        -------
        torch.Tensor
            (B, H/s, W/s) int64 indices, s = `downsample`.
        """
        return self.quantise(x)[1]

    def decode_codes(self, index: torch.Tensor, pose: torch.Tensor | None = None) -> torch.Tensor:
        """Code map to deconvolved images, turned to position angle `pose` when given.

        Parameters
        ----------
        index : torch.Tensor
            A map of codebook indices (B, h, w), int64, e.g. from the PixelCNN.
        pose : torch.Tensor, optional
            (B,) radians (orient models).

        Returns
        -------
        torch.Tensor
            (B, C, H, W) float32 before the PSF, stored units.
        """
        return self.canon.restore(self.output(self.decoder(self.quantizer.embed(index).permute(0, 3, 1, 2))), pose)

    def encode(self, x: torch.Tensor) -> Encoding:
        """Quantised embeddings of images, flattened.

        Parameters
        ----------
        x : torch.Tensor
            Stamps (B, C, H, W) float32 in stored units.

        Returns
        -------
        Encoding
            `mu` (B, D·h·w) float32; `pose` θ (B,) radians for orient models, else None.
        """
        z_q, _, terms = self.quantise(x)
        return Encoding(mu=z_q.flatten(1), pose=terms.get("pose"))

    def decode(self, z: torch.Tensor, pose: torch.Tensor | None = None) -> torch.Tensor:
        """Flattened quantised embeddings to images before the PSF, turned to `pose` when given.

        Parameters
        ----------
        z : torch.Tensor
            (B, D·h·w) as `encode` gives.
        pose : torch.Tensor, optional
            θ (B,) in radians.

        Returns
        -------
        torch.Tensor
            (B, C, H, W) float32, the deconvolved image in stored units.
        """
        images = self.output(self.decoder(z.reshape(z.shape[0], self.code_dim, self.grid, self.grid)))
        return self.canon.restore(images, pose)

    def observe(self, images: torch.Tensor, psf: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output as the survey sees it: PSF-convolved when the model has a PSF layer.

        Parameters
        ----------
        images : torch.Tensor
            What `decode` gives: the galaxy before the PSF, (B, C, H, W).
        psf : torch.Tensor, optional
            Per-object PSFs (B, h, w) or one (h, w) in pixels; required for kind store.

        Returns
        -------
        torch.Tensor
            (B, C, H, W): PSF ⊛ images, or images unchanged without a PSF layer.
        """
        return images if self.psf_layer is None else self.psf_layer(images, psf)

    def reconstruct(self, x: torch.Tensor, columns: Mapping[str, Any] | None = None, *,
                    encoding: Encoding | None = None) -> torch.Tensor:
        """PSF ⊛ decode(encode(x).mu) with a PSF layer, else decode(encode(x).mu).

        The observed image the loss compares with x; per-object PSFs come from
        `columns["psf"]` as in the loss.

        Parameters
        ----------
        x : torch.Tensor
            (B, C, H, W) images in stored units.
        columns : mapping, optional
            The rest of x's batch; ``"psf"`` (B, h, w) for kind store.
        encoding : Encoding, optional
            encode(x), if already computed.

        Returns
        -------
        torch.Tensor
            (B, C, H, W) float32 in x's units.
        """
        psf = None if columns is None else columns.get("psf")
        if psf is not None:
            psf = torch.as_tensor(psf, device=x.device)
        enc = self.encode(x) if encoding is None else encoding
        return self.observe(self.decode(enc.mu, enc.pose), psf)

    def loss(self, batch: Batch, state: StepState) -> LossOutput:
        """Reconstruction + codebook + β·commitment (van den Oord et al. 2017), + Tikhonov with a PSF layer.

        Parameters
        ----------
        batch : Batch
            ``"image"`` (B, C, H, W); ``"psf"`` for kind store; ``"mask"``, ``"sigma"``,
            ``"noise_sigma"`` where used.
        state : StepState
            Unused (no schedule weights).

        Returns
        -------
        LossOutput
            `total` scalar; `terms` ``recon`` (masked pixel MSE in stored units², or mean χ²),
            ``codebook``, ``commitment``, ``perplexity``, ``dead_codes`` and, with a PSF layer,
            ``tikhonov``; `recon` the observed image (B, C, H, W).

        Raises
        ------
        DataError
            For "chi2" when the batch has no σ.
        """
        x = batch["image"]
        z_q, _, terms = self.quantise(x)
        deconvolved = self.canon.restore(self.output(self.decoder(z_q)), terms.pop("pose", None))
        recon = self.observe(deconvolved, batch.get("psf"))
        weight = valid_pixels(batch, x, self.canon.window)
        if self.recon_kind == "chi2":
            sigma = pixel_sigma(batch, x, self.model_error)
            if sigma is None:
                raise DataError("vqvae: recon 'chi2' needs the store's noise σ (dataset sigma or column noise_sigma)")
            terms["recon"] = masked_mean(((recon - x) / sigma).pow(2), weight)
        else:
            terms["recon"] = masked_mean((recon - x).pow(2), weight)
        total = terms["recon"] + terms["codebook"] + self.beta * terms["commitment"]
        if self.psf_layer is not None and self.tikhonov:
            # What the PSF changes, penalised: a Wiener-like filter d = P*x / (|P|^2 + λ|1 - P|^2)
            # that keeps the decoder from hiding patterns (checkerboards) where the PSF is ~0.
            terms["tikhonov"] = F.mse_loss(deconvolved, recon)
            total = total + self.tikhonov * terms["tikhonov"]
        return LossOutput(total, terms, recon)

    def forward(self, batch: Batch, state: StepState | None = None) -> LossOutput:
        """`loss(batch, state)` for wrappers that call the module (data-parallel training).

        Parameters
        ----------
        batch : Batch
            The loader batch `loss` takes (image, PSFs, σ, mask).
        state : StepState, optional
            Default `StepState()`.

        Returns
        -------
        LossOutput
            What `loss` returns.
        """
        return self.loss(batch, state or StepState())
