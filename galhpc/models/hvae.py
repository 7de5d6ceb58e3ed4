"""Unsupervised star/galaxy separation with a double-peaked latent prior.

After "A robust hierarchical VAE for unsupervised star galaxy classification" (the paper
docs/models.md follows, "Star/galaxy separation and segmentation").

`HierarchicalAEVAE` ("hvae"): a convolutional autoencoder compresses multi-band stamps to
a 30-dimensional BatchNorm-standardised code; a small VAE models that code with the prior
½N(−m, s²) + ½N(m, s²) on its first latent dimension(s) and N(0, 1) on the rest.  The
sign of the peaked latent is the class.  Both levels train together from one loss; the
VAE sees the code detached, so it models the autoencoder without reshaping it (the
paper's two-stage training, in one pass).

`PeakedVAE`: the single-level baselines, a convolutional VAE on the images themselves,
with the same double-peaked prior ("VAE with revised KL") or with `peaked_dims=0` a plain
unit-Gaussian VAE; their latents go to manifold learning in `galhpc.inference.starsep`.

Which side of zero holds the galaxies is decided without labels: stars are point
sources, so the side whose objects have the more concentrated light is the star side.
Each model tracks the mean concentration of both sides during training (buffers saved
with the weights) and reports `p_galaxy` through `extra_columns`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from galhpc import priors
from galhpc.models.base import Batch, Encoding, GalaxyModel, LossOutput, Samples, StepState
from galhpc.models.blocks import ConvHead, ConvTrunk, reparameterise


def _stamp_peak(x: torch.Tensor) -> torch.Tensor:
    """Brightest pixel of all bands per object, shaped to broadcast against x."""
    return x.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def normalise_stamps(x: torch.Tensor, stretch: float) -> torch.Tensor:
    """Per object: divide by the brightest pixel of all bands, then an arcsinh stretch.

    asinh(stretch·x/peak)/asinh(stretch), so brightness drops out and faint wings show.

    Parameters
    ----------
    x : torch.Tensor
        Stamps (B, C, H, W) float in the store's flux units.
    stretch : float
        Softening of the arcsinh (dimensionless, in units of the peak).

    Returns
    -------
    torch.Tensor
        (B, C, H, W) of x's dtype, dimensionless; 1 at each stamp's peak.
    """
    return torch.asinh(stretch * x / _stamp_peak(x)) / math.asinh(stretch)


def denormalise_stamps(y: torch.Tensor, x: torch.Tensor, stretch: float) -> torch.Tensor:
    """The inverse of `normalise_stamps(x, stretch)` applied to y: back in x's flux units.

    Normalised-space images y (e.g. reconstructions of x) get x's own peaks, so
    denormalise_stamps(normalise_stamps(x), x) == x.  The argument of sinh is kept within
    ±80, where float32 stays finite (it overflows near 89): a diverging head's output would
    otherwise make reconstruction errors inf rather than merely large.

    Parameters
    ----------
    y : torch.Tensor
        (B, C, H, W) in the normalised space.
    x : torch.Tensor
        The stamps y stands for, (B, C, H, W) in flux units (their peaks are used).
    stretch : float
        The `stretch` of the normalisation.

    Returns
    -------
    torch.Tensor
        (B, C, H, W) in x's flux units.
    """
    return _stamp_peak(x) * torch.sinh((y * math.asinh(stretch)).clamp(-80.0, 80.0)) / stretch


def concentration(x: torch.Tensor) -> torch.Tensor:
    """Fraction of the central half's positive light that falls in the central eighth: high for point sources.

    Bands are summed, negative pixels clipped to 0.

    Parameters
    ----------
    x : torch.Tensor
        Stamps (B, C, H, W), any linear units.

    Returns
    -------
    torch.Tensor
        (B,) dimensionless, in [0, 1].
    """
    grey = x.sum(dim=1).clamp_min(0.0)
    h, w = grey.shape[-2:]
    core = grey[:, 7 * h // 16 : 9 * h // 16 + 1, 7 * w // 16 : 9 * w // 16 + 1].sum(dim=(1, 2))
    half = grey[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].sum(dim=(1, 2))
    return core / half.clamp_min(1e-12)


class DoublePeakedLatent(nn.Module):
    """Prior of a latent vector: double-peaked on the first `peaked_dims` dims, N(0, 1) on the rest.

    ½N(−m, s²) + ½N(m, s²) per peaked dim, trained with one of the paper's four terms
    (sc | dkl | aw | pw, `galhpc.priors.double_peaked_term`).  It also tracks, without
    labels, which sign of the first peaked dim holds galaxies: a running mean of
    `concentration` per side; the less concentrated side is galaxies.
    """

    def __init__(self, peaked_dims: int, term: str, peak_mean: float, peak_scale: float, momentum: float = 0.02):
        super().__init__()
        self.peaked_dims = peaked_dims
        self.term_name = term
        self.term = priors.double_peaked_term(term)
        self.m, self.s = float(peak_mean), float(peak_scale)
        self.momentum = momentum
        self.register_buffer("side_concentration", torch.zeros(2))  # [negative side, positive side]
        self.register_buffer("side_seen", torch.zeros(2, dtype=torch.bool))

    def bound(self, mu: torch.Tensor) -> torch.Tensor:
        """Keep μ inside the peaks where the AW term needs it.

        AW needs |μ| < m on the peaked dims: μ → m·tanh(μ/m) there; other terms unchanged.

        Parameters
        ----------
        mu : torch.Tensor
            Posterior means (B, L); only the peaked dims can change.

        Returns
        -------
        torch.Tensor
            (B, L), bounded on the peaked dims for term "aw", else `mu` itself.
        """
        if self.term_name != "aw" or self.peaked_dims == 0:
            return mu
        d = self.peaked_dims
        return torch.cat([self.m * torch.tanh(mu[:, :d] / self.m), mu[:, d:]], dim=1)

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior's two per-object terms: the peaked term and the unit-Gaussian KL of the other dims.

        Parameters
        ----------
        mu, logvar : torch.Tensor
            Posterior means and log σ², (B, L) each.

        Returns
        -------
        peaked : torch.Tensor
            (B,) the configured term (sc | dkl | aw | pw) on the first `peaked_dims` dims (zeros if none).
        gaussian : torch.Tensor
            (B,) KL(q || N(0, I)) in nats over the remaining dims.
        """
        d = self.peaked_dims
        peaked = self.term(mu[:, :d], logvar[:, :d], self.m, self.s) if d else mu.new_zeros(mu.shape[0])
        return peaked, priors.kl_unit_gaussian(mu[:, d:], logvar[:, d:])

    @torch.no_grad()
    def track_sides(self, mu: torch.Tensor, conc: torch.Tensor) -> None:
        """Update the running concentration of each side of zero of the first peaked dim.

        An exponential moving average (`momentum`) per side; the first batch that reaches a
        side sets it.

        Parameters
        ----------
        mu : torch.Tensor
            Latent means (B, L); the first dim decides.
        conc : torch.Tensor
            `concentration` of the same objects, (B,).
        """
        if self.peaked_dims == 0:
            return
        positive = mu[:, 0] >= 0
        for side, members in ((0, ~positive), (1, positive)):
            if members.any():
                mean = conc[members].mean()
                if not self.side_seen[side]:
                    self.side_concentration[side] = mean
                    self.side_seen[side] = True
                else:
                    self.side_concentration[side].lerp_(mean, self.momentum)

    def galaxy_sign(self) -> float:
        """Which side of the first peaked dim holds galaxies (the less concentrated one).

        Returns
        -------
        float
            +1.0 if galaxies sit at positive values, else −1.0.
        """
        return 1.0 if self.side_concentration[1] <= self.side_concentration[0] else -1.0

    def p_galaxy(self, mu: torch.Tensor) -> torch.Tensor:
        """Posterior weight of the galaxy peak at z = μ₀: sigmoid(±2mμ₀/s²).

        Parameters
        ----------
        mu : torch.Tensor
            Latent means (B, L); only the first dim is used.

        Returns
        -------
        torch.Tensor
            (B,) probabilities in [0, 1].

        Raises
        ------
        ValueError
            When the prior has no peaked dimension.
        """
        if self.peaked_dims == 0:
            raise ValueError("a model without a peaked latent dimension gives no p_galaxy")
        return torch.sigmoid(self.galaxy_sign() * 2.0 * self.m * mu[:, 0] / self.s**2)

    def sample(self, n: int, latent_dim: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws from the prior and their class.

        Parameters
        ----------
        n : int
            Number of draws.
        latent_dim : int
            L.
        generator : torch.Generator or None
            Source of the draws (on the buffers' device).

        Returns
        -------
        z : torch.Tensor
            (n, latent_dim) float32: ±m + s·ε on the peaked dims (sign uniform), N(0, 1) elsewhere.
        component : torch.Tensor
            (n,) int64: 1 galaxy, 0 star from the first peaked dim; all −1 without peaked dims.
        """
        z = torch.randn(n, latent_dim, generator=generator, device=self.side_concentration.device)
        if self.peaked_dims == 0:
            return z, torch.full((n,), -1, dtype=torch.long)
        d = self.peaked_dims
        signs = torch.randint(0, 2, (n, d), generator=generator, device=z.device) * 2.0 - 1.0
        z[:, :d] = signs * self.m + self.s * z[:, :d]
        component = (signs[:, 0] == self.galaxy_sign()).long()
        return z, component


def mlp(sizes: list[int], slope: float = 0.2) -> nn.Sequential:
    """Linear layers with LeakyReLU between them (none after the last).

    Parameters
    ----------
    sizes : list of int
        Widths from input to output, at least two.
    slope : float
        LeakyReLU negative slope.

    Returns
    -------
    torch.nn.Sequential
        (B, sizes[0]) -> (B, sizes[-1]).
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


class _StarGalaxyModel(GalaxyModel):
    """What both star/galaxy models share: input normalisation, prior, p_galaxy, sampling."""

    generative = True
    prior: DoublePeakedLatent
    latent_dim: int
    stretch: float

    def __init__(self, image_size: int, channels: int, latent_dim: int, widths: list[int], peaked_dims: int,
                 stretch: float, *, min_peaked_dims: int) -> None:
        """Check `peaked_dims` and build the conv trunk both models encode stamps with.

        Parameters
        ----------
        image_size, channels, latent_dim, widths, peaked_dims, stretch
            The subclass's parameters of those names (widths as a list).
        min_peaked_dims : int
            Fewest peaked dimensions the model accepts (1 for hvae, 0 for peaked_vae).

        Raises
        ------
        ValueError
            If peaked_dims is outside [min_peaked_dims, latent_dim].
        """
        super().__init__()
        if not min_peaked_dims <= peaked_dims <= latent_dim:
            raise ValueError(f"{self.name}: peaked_dims must be in [{min_peaked_dims}, latent_dim={latent_dim}], "
                             f"got {peaked_dims}")
        self.latent_dim, self.stretch = latent_dim, float(stretch)
        self.trunk = ConvTrunk(image_size, channels, widths, model="hvae", param="widths")

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The stamps as the networks see them and the loss compares them.

        Parameters
        ----------
        x : torch.Tensor
            Raw stamps (B, C, H, W), in the store's flux units.

        Returns
        -------
        torch.Tensor
            `normalise_stamps(x, stretch)`, (B, C, H, W) dimensionless.
        """
        return normalise_stamps(x, self.stretch)

    def _posterior(self, heads: torch.Tensor) -> Encoding:
        """Encoding of an encoder's (B, 2L) output [μ | log σ²]: μ bounded by the prior, log σ² in [−12, 8]."""
        mu, logvar = heads.chunk(2, dim=1)
        return Encoding(self.prior.bound(mu), logvar.clamp(-12.0, 8.0))

    def normalised_reconstruction(self, x: torch.Tensor, encoding: Encoding | None = None) -> torch.Tensor:
        """The deterministic reconstruction of raw stamps in the normalised space the loss compares.

        Parameters
        ----------
        x : torch.Tensor
            Stamps as stored, (B, C, H, W) float32, flux units.
        encoding : Encoding, optional
            encode(x), when the caller has it.

        Returns
        -------
        torch.Tensor
            decode(encode(x).mu), (B, C, H, W), comparable with `prepare(x)`.
        """
        return self.decode((self.encode(x) if encoding is None else encoding).mu)

    def reconstruct(self, x: torch.Tensor, columns: Mapping[str, Any] | None = None, *,
                    encoding: Encoding | None = None) -> torch.Tensor:
        """`normalised_reconstruction(x)` with the per-stamp normalisation undone.

        x's own peak and the inverse arcsinh stretch put it in x's flux units, so
        (x − reconstruct(x)) is a residual, and scaling a stamp by c > 0 scales its
        reconstruction by c.

        Parameters
        ----------
        x : torch.Tensor
            (B, C, H, W) stamps before normalisation, flux units.
        columns : mapping, optional
            Unused (the model reads no other column).
        encoding : Encoding, optional
            encode(x), when already computed.

        Returns
        -------
        torch.Tensor
            (B, C, H, W) in x's flux units.
        """
        return denormalise_stamps(self.normalised_reconstruction(x, encoding), x, self.stretch)

    def extra_columns(self, x: torch.Tensor, encoding: Encoding) -> dict[str, torch.Tensor]:
        """`p_galaxy` per object, for `galhpc-encode`.

        Parameters
        ----------
        x : torch.Tensor
            The stamps (B, C, H, W) (unused here).
        encoding : Encoding
            Their encoding; `mu` (B, L).

        Returns
        -------
        dict of str to torch.Tensor
            ``{"p_galaxy": (B,)}``, or empty without a peaked dimension.
        """
        if self.prior.peaked_dims == 0:
            return {}
        return {"p_galaxy": self.prior.p_galaxy(encoding.mu)}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, **conditions: Any) -> Samples:
        """Stamps (in the normalised space) decoded from draws of the double-peaked prior.

        `DoublePeakedLatent.sample` draws each stamp's peak (its class) and z around it.

        Parameters
        ----------
        n : int
            How many stamps to generate from the prior.
        generator : torch.Generator or None
            Source of the prior draws.
        **conditions
            Ignored.

        Returns
        -------
        Samples
            `images` (n, C, H, W) in the normalised space; `z` (n, L); `component` (n,) int64,
            1 = galaxy peak, 0 = star peak (−1 without peaked dims).
        """
        z, component = self.prior.sample(n, self.latent_dim, generator)
        return Samples(self.decode(z), z, component)


class HierarchicalAEVAE(_StarGalaxyModel):
    """AE (30-d BatchNorm code) + VAE on the code with a double-peaked prior (the paper's model).

    params: code_dim, widths (conv channels per halving), hidden (VAE MLP width),
    peaked_dims, prior_term (sc|dkl|aw|pw), peak_mean m, peak_scale s, code_sigma (the
    VAE's Gaussian likelihood σ on the standardised code), vae_weight, beta, stretch.
    """

    name = "hvae"

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 5,
        latent_dim: int = 4,
        code_dim: int = 30,
        widths: list[int] | None = None,
        hidden: int = 64,
        peaked_dims: int = 1,
        prior_term: str = "pw",
        peak_mean: float = 1.0,
        peak_scale: float = 0.5,
        code_sigma: float = 0.5,
        vae_weight: float = 1.0,
        beta: float = 1.0,
        stretch: float = 10.0,
    ) -> None:
        widths = list(widths or [32, 64, 64])
        super().__init__(image_size, channels, latent_dim, widths, peaked_dims, stretch, min_peaked_dims=1)
        self.code_sigma, self.vae_weight, self.beta = float(code_sigma), float(vae_weight), float(beta)
        self.to_code = nn.Sequential(nn.Linear(self.trunk.out_features, code_dim),
                                     nn.BatchNorm1d(code_dim, affine=False))
        self.image_head = ConvHead(image_size, channels, code_dim, widths, model="hvae", param="widths")
        self.code_encoder = mlp([code_dim, hidden, hidden, 2 * latent_dim])
        self.code_decoder = mlp([latent_dim, hidden, hidden, code_dim])
        self.prior = DoublePeakedLatent(peaked_dims, prior_term, peak_mean, peak_scale)

    def ae_code(self, x: torch.Tensor) -> torch.Tensor:
        """The autoencoder's standardised code of raw stamps.

        Parameters
        ----------
        x : torch.Tensor
            The stamps to encode: (B, C, H, W), flux units, normalised inside.

        Returns
        -------
        torch.Tensor
            (B, code_dim) float32, BatchNorm-standardised (no affine).
        """
        return self.to_code(self.trunk(self.prepare(x)))

    def encode_code(self, code: torch.Tensor) -> Encoding:
        """The small VAE's posterior of autoencoder codes.

        Parameters
        ----------
        code : torch.Tensor
            (B, code_dim) standardised codes (`ae_code`).

        Returns
        -------
        Encoding
            `mu` (B, L) (bounded for the AW term) and `logvar` (B, L) clamped to [−12, 8].
        """
        return self._posterior(self.code_encoder(code))

    def encode(self, x: torch.Tensor) -> Encoding:
        """The VAE posterior of raw stamps, through the autoencoder's code.

        Parameters
        ----------
        x : torch.Tensor
            Raw multi-band stamps, (B, C, H, W), in flux units.

        Returns
        -------
        Encoding
            `mu`, `logvar` (B, L) float32 of the VAE on top; the first dim's sign is the class.
        """
        return self.encode_code(self.ae_code(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised stamps from VAE latents (through the code decoder and the image head).

        Parameters
        ----------
        z : torch.Tensor
            Latents of the small VAE, (B, latent_dim).

        Returns
        -------
        torch.Tensor
            (B, C, H, W) in the normalised space of `prepare`.
        """
        return self.image_head(self.code_decoder(z))

    def normalised_reconstruction(self, x: torch.Tensor, encoding: Encoding | None = None) -> torch.Tensor:
        """The autoencoder's reconstruction image_head(ae_code(x)): what the loss compares with the stamp.

        The one image the loss compares with the normalised stamp (`ae_mse`).  The VAE on top
        is compared with the code, not with pixels, so decode(encode(x).mu) (through the small
        VAE latent) is not what the loss measures.

        Parameters
        ----------
        x : torch.Tensor
            Raw stamps (B, C, H, W), flux units.
        encoding : Encoding, optional
            Unused.

        Returns
        -------
        torch.Tensor
            (B, C, H, W) in the normalised space.
        """
        return self.image_head(self.ae_code(x))

    def loss(self, batch: Batch, state: StepState) -> LossOutput:
        """Both levels' loss in one pass: the autoencoder's MSE plus the weighted VAE on the detached code.

        ae_mse + vae_weight·(code_nll + β·w_kl·(peaked + gaussian KL)); in training mode it also
        updates the prior's side concentrations.

        Parameters
        ----------
        batch : Batch
            ``"image"`` (B, C, H, W) raw stamps in flux units.
        state : StepState
            ``weights["kl"]`` (default 1) multiplies β.

        Returns
        -------
        LossOutput
            `total` scalar; `terms` ``ae_mse`` (per-object pixel sum, normalised units²),
            ``code_nll`` (Gaussian of σ = code_sigma), ``prior_<term>`` and ``kl_gauss`` (batch
            means); `recon` the autoencoder's (B, C, H, W) in the normalised space.
        """
        x = batch["image"]
        target = self.prepare(x)
        code = self.to_code(self.trunk(target))
        recon = self.image_head(code)
        ae_mse = (recon - target).pow(2).flatten(1).sum(dim=1).mean()
        enc = self.encode_code(code.detach())
        code_recon = self.code_decoder(reparameterise(enc.mu, enc.logvar))
        code_nll = 0.5 * ((code_recon - code.detach()) / self.code_sigma).pow(2).sum(dim=1).mean()
        peaked, gaussian = self.prior.kl(enc.mu, enc.logvar)
        kl_weight = self.beta * state.weight("kl", 1.0)
        vae = code_nll + kl_weight * (peaked.mean() + gaussian.mean())
        if self.training:
            self.prior.track_sides(enc.mu, concentration(target))
        terms = {"ae_mse": ae_mse, "code_nll": code_nll, f"prior_{self.prior.term_name}": peaked.mean(),
                 "kl_gauss": gaussian.mean()}
        return LossOutput(ae_mse + self.vae_weight * vae, terms, recon)

    def extra_columns(self, x: torch.Tensor, encoding: Encoding) -> dict[str, torch.Tensor]:
        """`p_galaxy` and the autoencoder code, per object, for `galhpc-encode`.

        Parameters
        ----------
        x : torch.Tensor
            Raw stamps (B, C, H, W).
        encoding : Encoding
            encode(x).

        Returns
        -------
        dict of str to torch.Tensor
            ``p_galaxy`` (B,) and ``ae_code`` (B, code_dim).
        """
        return {**super().extra_columns(x, encoding), "ae_code": self.ae_code(x)}


class PeakedVAE(_StarGalaxyModel):
    """Single-level conv VAE on the stamps, the baseline of the hierarchical model.

    A double-peaked prior on `peaked_dims` latent dims (the "revised KL" baseline) or,
    with peaked_dims=0, a plain unit-Gaussian VAE; a Gaussian pixel likelihood of σ
    `pixel_sigma` in the normalised space.
    """

    name = "peaked_vae"

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 5,
        latent_dim: int = 8,
        widths: list[int] | None = None,
        peaked_dims: int = 0,
        prior_term: str = "dkl",
        peak_mean: float = 1.0,
        peak_scale: float = 0.5,
        pixel_sigma: float = 0.1,
        beta: float = 1.0,
        stretch: float = 10.0,
    ) -> None:
        widths = list(widths or [32, 64, 64])
        super().__init__(image_size, channels, latent_dim, widths, peaked_dims, stretch, min_peaked_dims=0)
        self.pixel_sigma, self.beta = float(pixel_sigma), float(beta)
        self.heads = nn.Linear(self.trunk.out_features, 2 * latent_dim)
        self.image_head = ConvHead(image_size, channels, latent_dim, widths, model="hvae", param="widths")
        self.prior = DoublePeakedLatent(peaked_dims, prior_term, peak_mean, peak_scale)

    def encode(self, x: torch.Tensor) -> Encoding:
        """Posterior of raw stamps.

        Parameters
        ----------
        x : torch.Tensor
            Raw stamps (B, C, H, W) in flux units (normalised inside).

        Returns
        -------
        Encoding
            `mu` (B, L), bounded for the AW term, and `logvar` (B, L) in [−12, 8].
        """
        return self._posterior(self.heads(self.trunk(self.prepare(x))))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised stamps of latents.

        Parameters
        ----------
        z : torch.Tensor
            Latent vectors, (B, latent_dim) float32.

        Returns
        -------
        torch.Tensor
            (B, C, H, W), the normalised space `prepare` gives.
        """
        return self.image_head(z)

    def loss(self, batch: Batch, state: StepState) -> LossOutput:
        """Gaussian pixel NLL (σ = pixel_sigma) plus the β-weighted prior terms, one z per object.

        In training mode it also updates the prior's side concentrations.

        Parameters
        ----------
        batch : Batch
            ``"image"`` raw stamps (B, C, H, W).
        state : StepState
            ``weights["kl"]`` (default 1) multiplies β.

        Returns
        -------
        LossOutput
            `total` scalar; `terms` ``nll``, ``prior_<term>``, ``kl_gauss`` (batch means); `recon`
            the sampled decoding (B, C, H, W), normalised space.
        """
        target = self.prepare(batch["image"])
        enc = self._posterior(self.heads(self.trunk(target)))
        recon = self.image_head(reparameterise(enc.mu, enc.logvar))
        nll = 0.5 * ((recon - target) / self.pixel_sigma).pow(2).flatten(1).sum(dim=1).mean()
        peaked, gaussian = self.prior.kl(enc.mu, enc.logvar)
        kl_weight = self.beta * state.weight("kl", 1.0)
        if self.training:
            self.prior.track_sides(enc.mu, concentration(target))
        terms = {"nll": nll, f"prior_{self.prior.term_name}": peaked.mean(), "kl_gauss": gaussian.mean()}
        return LossOutput(nll + kl_weight * (peaked.mean() + gaussian.mean()), terms, recon)
