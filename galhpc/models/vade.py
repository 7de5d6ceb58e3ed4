"""AstroVaDEr (Spindler et al. 2021): a VGG-like VAE with a trainable Gaussian-mixture prior (VaDE).

Encoder: 3 blocks of two 'same' convs + 2x2 max-pool, filters (64, 64, 16), kernels
(3, 5, 5), LeakyReLU 0.1, dense μ and log σ² (latent 20).  Decoder: dense, then the
mirrored blocks with bilinear 2x upsampling.  L2 0.01 on conv/dense weights.

Reconstruction (`recon`): "bce" on logits (sigmoid output; the paper's, for images
min-max scaled to [0, 1]), "mse" through the sigmoid, or a Gaussian likelihood on a
linear output in the store's units (flux-normalised stamps): "gaussian" with one known
sky σ (`sigma`, stored units) for every pixel, or "chi2" with the store's own σ (its
per-pixel `sigma` dataset, else each object's `noise_sigma` column, with an optional
fractional `model_error` in quadrature; masked pixels never count, galhpc.models.pixels).
A Gaussian with the real noise σ weighs reconstruction against the KL in nats, so the KL
does not collapse once its weight reaches 1, as it does under BCE on noisy pixels
(docs/models.md has the measurements).  `orient: true` encodes each stamp in its
canonical orientation and `stretch` compresses the encoder's input
(galhpc.models.nuisance).  Prior: p(c) = softmax(π logits), p(z|c) = N(μ_c, σ_c²) with
σ_c² = exp(·) > 0.  With `depth_prior: true` the prior is conditioned on each stamp's
depth d (log S/N, log sky σ): z = m(d) + s(d) ⊙ u with u ~ the mixture, and μ, γ and the
clusters are u's (galhpc.mixture.depth), so the clusters hold the same share of objects at
every depth.  `uniform_pi: true` fixes p(c) = 1/K (no component can grow through its weight
into one that holds most of the set).

During s3VDC α-training the schedule sends `weights["gmm"] = 0` and the KL is taken
against N(0, I); `init_mixture` then fits the mixture (the trainer
calls it on the schedule's event) and later phases use the VaDE KL with γ computed from
the min-max scaled log p(c, z) (s3VDC), so γ has no NaN however far z lies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galhpc.mixture.depth import DepthStandardiser
from galhpc.mixture.diagonal import fit_diag_gmm, gmm_responsibilities
from galhpc.models.base import Batch, Encoding, GalaxyModel, LossOutput, Samples, StepState
from galhpc.models.blocks import check_image_size, he_init, reparameterise, upsample_block, vgg_block, xavier_init
from galhpc.models.nuisance import Canonicaliser, depth_covariates, random_angles, rotate
from galhpc.models.pixels import masked_sum, pixel_sigma, valid_pixels
from galhpc.priors import gmm_log_joint, kl_unit_gaussian, minmax_scale, vade_kl
from galhpc.runtime.errors import DataError
from galhpc.runtime.precision import float32

RECON_KINDS = ("bce", "mse", "gaussian", "chi2")
GAPPY_ITERATIONS = 10  # EM passes of the linear path's gappy PCA, as many as the report's gappy PCA-10 baseline
DEPTH_INIT_BATCHES = 20  # training batches the depth prior is fitted on without a linear path
LINEAR_OUTPUT = ("gaussian", "chi2")


class AstroVaDEr(GalaxyModel):
    """VaDE (Jiang et al. 2017) with the AstroVaDEr architecture (Spindler et al. 2021); `n_clusters` components.

    Trained on the s3VDC schedule (Cao et al. 2020): α-training against N(0, I), the
    mixture fitted to mini-batch encodings (`init_mixture`), then the VaDE KL with γ from
    the min-max scaled log p(c, z).  The parameters are those of the module docstring;
    `__init__` raises ValueError for inconsistent ones (filters vs kernels, an unknown
    recon, sigma ≤ 0, model_error outside [0, 1), a linear path without a linear output).
    """

    name = "astrovader"
    generative = True
    has_mixture = True

    def __init__(
        self,
        image_size: int = 128,
        channels: int = 1,
        latent_dim: int = 20,
        *,
        n_clusters: int = 10,
        filters: list[int] = (64, 64, 16),
        kernels: list[int] = (3, 5, 5),
        slope: float = 0.1,
        l2: float = 0.01,
        recon: str = "bce",
        sigma: float = 1.0,
        gamma_lambda: float = 50.0,
        orient: bool = False,
        stretch: float | None = None,
        match_sigma: float | None = None,
        model_error: float = 0.0,
        linear_path: bool = False,
        linear_init_batches: int = 20,
        interpolation: str = "bilinear",
        depth_prior: bool = False,
        uniform_pi: bool = False,
    ) -> None:
        super().__init__()
        filters, kernels = list(filters), list(kernels)
        if len(filters) != len(kernels):
            raise ValueError(f"astrovader: {len(filters)} filters but {len(kernels)} kernels")
        if recon not in RECON_KINDS:
            raise ValueError(f"astrovader: recon {recon!r} is not one of {RECON_KINDS}")
        if sigma <= 0:
            raise ValueError(f"astrovader: sigma must be > 0, got {sigma}")
        if not 0 <= model_error < 1:
            raise ValueError(f"astrovader: model_error must be in [0, 1), got {model_error}")
        if linear_path and recon not in LINEAR_OUTPUT:
            raise ValueError(f"astrovader: linear_path needs a linear-output recon {LINEAR_OUTPUT}, got {recon!r}")
        self.model_error = float(model_error)
        self.sigma = float(sigma)
        self.canon = Canonicaliser(orient, stretch, match_sigma, (channels, image_size, image_size), interpolation)
        self.image_size, self.channels, self.latent_dim = image_size, channels, latent_dim
        self.n_clusters, self.l2, self.recon_kind, self.gamma_lambda = n_clusters, l2, recon, gamma_lambda
        self.side = check_image_size(image_size, len(filters), "astrovader")
        widths = [channels, *filters]
        self.encoder = nn.Sequential(
            *(vgg_block(a, b, k, slope) for a, b, k in zip(widths[:-1], widths[1:], kernels, strict=False)),
            nn.Flatten(),
        )
        flat = filters[-1] * self.side**2
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)
        self.fc_decode = nn.Sequential(nn.Linear(latent_dim, flat), nn.LeakyReLU(slope))
        up_widths = [filters[-1], *reversed(filters[:-1]), filters[0]]
        self.decoder = nn.Sequential(
            *(upsample_block(a, b, k, slope)
              for a, b, k in zip(up_widths[:-1], up_widths[1:], reversed(kernels), strict=False))
        )
        self.out = nn.Conv2d(up_widths[-1], channels, 3, padding=1)
        he_init(self, slope)
        xavier_init(self.out)
        if recon == "chi2":
            # start at the sky (0): a random first output costs (1/σ)² per pixel, ~10⁵ on a bright
            # star's tiny σ, and those first gradients fill Adam's second moments for ~1000 steps
            nn.init.zeros_(self.out.weight)
        xavier_init(self.fc_mu)
        xavier_init(self.fc_logvar)
        self.linear = LinearPath(channels * image_size**2, latent_dim, linear_init_batches) if linear_path else None
        if self.linear is not None:
            # the conv paths start silent: μ and the image are PCA's until training adds to them
            nn.init.zeros_(self.fc_mu.weight)
            nn.init.zeros_(self.out.weight)
        self.depth = DepthStandardiser(latent_dim) if depth_prior else None
        # uniform_pi: p(c) = 1/K throughout, so no component can grow (through its weight) into
        # one that swallows the set
        self.pi_logits = nn.Parameter(torch.zeros(n_clusters), requires_grad=not uniform_pi)
        self.mu_c = nn.Parameter(torch.randn(n_clusters, latent_dim))
        self.log_var_c = nn.Parameter(torch.zeros(n_clusters, latent_dim))

    # -- mixture parameters ------------------------------------------------------------
    @property
    def log_pi(self) -> torch.Tensor:
        """Log mixture weights log p(c), (K,): the log-softmax of `pi_logits`."""
        return torch.log_softmax(self.pi_logits, dim=0)

    @property
    def var_c(self) -> torch.Tensor:
        """Component variances σ_c² (K, L) > 0, in latent units squared."""
        return self.log_var_c.exp()

    @torch.no_grad()
    def init_mixture(self, embeddings: np.ndarray, *, seed: int = 0) -> None:
        """Fit a diagonal GMM to encoded means (s3VDC mini-batch init, Cao et al. 2020) and adopt it.

        Parameters
        ----------
        embeddings : numpy.ndarray
            (N, L) float32 latent means, N ≥ n_clusters.
        seed : int
            Seed of the GMM fit (`galhpc.mixture.diagonal.fit_diag_gmm`).
        """
        if self.depth is not None:
            # u divides by the spread of the latents at each depth, which is small at the faint
            # end: a few odd faint stamps land far out (|u| ~ 20 on the HDF set) and the GMM's
            # k-means start gave one of them a component of its own, which then collapsed to
            # zero variance; winsorised at the 0.5/99.5th percentiles per axis, they start in
            # the nearest component instead
            low, high = np.percentile(embeddings, [0.5, 99.5], axis=0)
            embeddings = np.clip(embeddings, low, high)
        gmm = fit_diag_gmm(embeddings, self.n_clusters, seed=seed)
        if self.pi_logits.requires_grad:
            self.pi_logits.copy_(gmm.log_pi)
        self.mu_c.copy_(gmm.mu)
        self.log_var_c.copy_(gmm.var.log())

    # -- interface ---------------------------------------------------------------------
    @property
    def batch_columns(self) -> tuple[str, ...]:
        """Per-object ``noise_sigma`` for the "chi2" likelihood; nothing else."""
        return ("noise_sigma",) if self.recon_kind == "chi2" else ()

    def store_mismatch(self, recipe: list[str], columns: set[str]) -> str | None:
        """Why a store cannot train this likelihood, or None.

        A linear-output likelihood (gaussian, chi2) assumes flux-normalised pixels (the prep's
        `flux` step: the sky at 0, pixels in % of the object's flux) and, for chi2, the store's
        noise σ; a store without them trains to meaningless losses.

        Parameters
        ----------
        recipe : list of str
            The store's prep steps in order.
        columns : set of str
            Its label columns and per-object datasets.

        Returns
        -------
        str or None
            One line naming what the store lacks; None for "bce"/"mse" or a fitting store.
        """
        if self.recon_kind not in LINEAR_OUTPUT:
            return None
        if "flux" not in recipe or "minmax" in recipe:
            return (f"recon {self.recon_kind!r} assumes flux-normalised pixels (prep recipe with the 'flux' "
                    f"step and no 'minmax'), but the store's recipe is {recipe}")
        if self.recon_kind == "chi2" and not ({"noise_sigma", "sigma"} & columns):
            return "recon 'chi2' needs the store's noise σ (dataset sigma or column noise_sigma); the store has neither"
        return None

    def encode(self, x: torch.Tensor) -> Encoding:
        """Posterior q(z|x) of a batch, in the canonical frame for orient models.

        Parameters
        ----------
        x : torch.Tensor
            Images (B, C, H, W) float32 in the store's units.

        Returns
        -------
        Encoding
            `mu`, `logvar` (B, L) float32 (μ includes the linear path's projection when there
            is one), standardised at the stamp's depth with `depth_prior`; `pose` θ (B,)
            radians for orient models, else None; `depth` (B, 2) `depth_covariates` with
            `depth_prior`, else None.
        """
        mu, logvar, theta = self.encode_z(x)
        if self.depth is None:
            return Encoding(mu, logvar, theta)
        depth = depth_covariates(x)
        mu, logvar = self.depth.standardise(mu, logvar, depth)
        return Encoding(mu, logvar, theta, depth)

    def encode_z(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """q(z|x) in the decoder's latent z, before any depth standardisation.

        Parameters
        ----------
        x : torch.Tensor
            Images (B, C, H, W) float32 in the store's units.

        Returns
        -------
        tuple
            μ and log σ² (B, L) float32, and θ (B,) or None as in `encode`.
        """
        x_in, theta = self.canon(x)
        h = self.encoder(x_in)
        mu = self.fc_mu(h)
        if self.linear is not None:
            mu = mu + self.linear.project(self.linear_input(x, theta))
        return mu, self.fc_logvar(h), theta

    def decoder_latent(self, u: torch.Tensor, depth: torch.Tensor | None) -> torch.Tensor:
        """The decoder's z of a latent in the catalogue's frame (`encode`'s μ, a prior draw).

        Parameters
        ----------
        u : torch.Tensor
            (B, L) latents.
        depth : torch.Tensor or None
            (B, 2) depth covariates with `depth_prior`; None decodes at the training
            stamps' mean depth.

        Returns
        -------
        torch.Tensor
            (B, L): u itself without `depth_prior`, else m(d) + s(d) ⊙ u.
        """
        if self.depth is None:
            return u
        return self.depth.restore(u, self.depth.typical(len(u)) if depth is None else depth)

    def linear_input(self, x: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
        """What the linear path sees: the stamp in the canonical frame, in the store's linear units.

        Its disc for orient models, neither σ-matched nor stretched — a PCA of the pixels the
        likelihood compares.  Degraded to `match_sigma`, the added noise passes straight into μ
        and the reconstruction (HDF held-out strip, PCA-10 start: 41 % of stamps won against
        PCA-10 with it, 47 % without).

        Parameters
        ----------
        x : torch.Tensor
            Images (B, C, H, W) in stored units.
        theta : torch.Tensor or None
            Their position angles (B,) in radians, or None (no rotation).

        Returns
        -------
        torch.Tensor
            (B, C, H, W), rotated by −θ and windowed when θ is given, else x itself.
        """
        return x if theta is None else rotate(x, -theta, mode=self.canon.interpolation) * self.canon.window

    def decoder_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output before the output function, in the canonical frame.

        Parameters
        ----------
        z : torch.Tensor
            The latent vectors, (B, latent_dim).

        Returns
        -------
        torch.Tensor
            (B, C, H, W) float32: logits (bce/mse) or stored-unit pixels (gaussian/chi2), with
            the linear path's expansion added when there is one.
        """
        h = self.fc_decode(z).view(-1, self.encoder_width, self.side, self.side)
        logits = self.out(self.decoder(h))
        if self.linear is not None:
            logits = logits + self.linear.expand(z).view_as(logits)
        return logits

    # -- the linear path (linear_path: true) ----------------------------------------------
    @property
    def data_init_batches(self) -> int:
        """Training batches `init_from_data` wants (`linear_init_batches`, 20 for a depth prior alone, or 0)."""
        if self.linear is not None:
            return self.linear.init_batches
        return DEPTH_INIT_BATCHES if self.depth is not None else 0

    @torch.no_grad()
    def init_from_data(self, batches: list[Batch]) -> None:
        """Initialise the linear path and the depth prior from training stamps.

        The linear path becomes PCA-L of the stamps in its frame (`linear_input`), then the
        depth prior's location and scale are fitted to their encodings (`DepthStandardiser.fit`).

        At initialisation `reconstruct(x)` is then the PCA-L reconstruction of that frame
        (rotated back, orient models).

        Parameters
        ----------
        batches : list of Batch
            Unaugmented training batches ("image" (B, C, H, W) float32).

        Raises
        ------
        ValueError
            When the model has neither a linear path nor a depth prior.
        """
        if self.linear is None and self.depth is None:
            raise ValueError("astrovader: init_from_data needs linear_path or depth_prior")
        was_training = self.training
        self.eval()  # θ and the σ-matching noise as inference measures them
        if self.linear is not None:
            frames, valid = [], []
            for b in batches:
                theta = self.canon(b["image"])[1]
                frames.append(self.linear_input(b["image"], theta).flatten(1))
                weight = valid_pixels(b, b["image"])
                if weight is not None:  # a pixel counts in the canonical frame where it was valid
                    valid.append(self.linear_input(weight, theta).flatten(1) > 0.99)
                else:
                    valid.append(torch.ones_like(frames[-1], dtype=torch.bool))
            self.linear.fit(torch.cat(frames).double(), torch.cat(valid))
        if self.depth is not None:
            z = torch.cat([self.encode_z(b["image"])[0] for b in batches])
            self.depth.fit(z, torch.cat([depth_covariates(b["image"]) for b in batches]))
        self.train(was_training)

    @property
    def encoder_width(self) -> int:
        """Channels of the encoder's last map (the decoder's first), from `fc_mu`'s input size."""
        return self.fc_mu.in_features // self.side**2

    def output(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder output in the store's units: linear for Gaussian likelihoods, else sigmoid.

        Parameters
        ----------
        logits : torch.Tensor
            (B, C, H, W) from `decoder_logits`.

        Returns
        -------
        torch.Tensor
            (B, C, H, W) float32: the logits themselves ("gaussian", "chi2") or their sigmoid in [0, 1].
        """
        return logits if self.recon_kind in LINEAR_OUTPUT else torch.sigmoid(logits)

    def decode(self, z: torch.Tensor, pose: torch.Tensor | None = None,
               depth: torch.Tensor | None = None) -> torch.Tensor:
        """Images of latents; with `pose` rotated from the canonical frame to position angle θ.

        Parameters
        ----------
        z : torch.Tensor
            Latents (B, L) float32, in the catalogue's frame (`encode`'s μ).
        pose : torch.Tensor, optional
            θ (B,) in radians (orient models).
        depth : torch.Tensor, optional
            (B, 2) depth covariates (`depth_prior` models; default the training mean depth).

        Returns
        -------
        torch.Tensor
            (B, C, H, W) float32 in the store's units (see `output`).
        """
        return self.canon.restore(self.output(self.decoder_logits(self.decoder_latent(z, depth))), pose)

    def weight_penalty(self) -> torch.Tensor:
        """L2 on the conv and dense weights (Keras-style kernel regulariser), mixture excluded.

        Returns
        -------
        torch.Tensor
            Scalar `l2` · Σ w² over every Conv2d and Linear weight (biases and mixture excluded).
        """
        total = self.fc_mu.weight.new_zeros(())
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                total = total + module.weight.pow(2).sum()
        return self.l2 * total

    @float32
    def recon_loss(self, logits: torch.Tensor, x: torch.Tensor, batch: Batch | None = None) -> torch.Tensor:
        """Per-object reconstruction loss from decoder logits in x's frame, over the pixels that count.

        The batch's "mask" is excluded and, for orient models, everything outside the disc
        (`galhpc.models.pixels`).  "chi2" takes σ from the batch: per-pixel "sigma" when the
        store has it, else the per-object "noise_sigma" column; "gaussian" the fixed `sigma`.

        Parameters
        ----------
        logits : torch.Tensor
            (B, C, H, W) decoder output in x's frame (before `output`).
        x : torch.Tensor
            Target images (B, C, H, W) in stored units.
        batch : Batch, optional
            The loader batch, for "mask", "sigma" and "noise_sigma".

        Returns
        -------
        torch.Tensor
            (B,) float32: nats (bce, gaussian, chi2 — the latter two as ½χ², without the
            normalisation constant) or summed squared error (mse).

        Raises
        ------
        DataError
            For "chi2" when the batch carries neither "sigma" nor "noise_sigma".
        """
        batch = batch or {}
        weight = valid_pixels(batch, x, self.canon.window)
        if self.recon_kind == "bce":
            per_pixel = F.binary_cross_entropy_with_logits(logits, x.clamp(0, 1), reduction="none")
        elif self.recon_kind == "mse":
            per_pixel = (torch.sigmoid(logits) - x).pow(2)
        else:
            sigma = self.sigma if self.recon_kind == "gaussian" else pixel_sigma(batch, x, self.model_error)
            if sigma is None:
                raise DataError("recon 'chi2' needs the store's noise σ (the per-pixel dataset sigma or the "
                                "column noise_sigma that galhpc-prep's intensity steps write); use recon "
                                "'gaussian' with a fixed sigma for stores without it")
            per_pixel = 0.5 * ((logits - x) / sigma).pow(2)
        return masked_sum(per_pixel, weight)

    @float32
    def scaled_log_gamma(self, z: torch.Tensor) -> torch.Tensor:
        """Log γ from the min-max scaled log p(c, z) (s3VDC, Cao et al. 2020): finite for any z.

        Parameters
        ----------
        z : torch.Tensor
            Latents (B, L).

        Returns
        -------
        torch.Tensor
            (B, K) float32 log responsibilities, each row a log-softmax.
        """
        scaled = minmax_scale(gmm_log_joint(z, self.log_pi, self.mu_c, self.var_c), self.gamma_lambda)
        return torch.log_softmax(scaled, dim=1)

    def loss(self, batch: Batch, state: StepState) -> LossOutput:
        """The VaDE negative ELBO (Jiang et al. 2017) on the s3VDC schedule, plus the L2 penalty.

        recon + w_kl·KL + l2, one z per object.  With ``weights["gmm"] > 0`` the KL is VaDE's
        against the mixture, γ from `scaled_log_gamma`; otherwise (α-training) against N(0, I),
        with the mixture kept in the graph at zero gradient for data-parallel wrappers.

        Parameters
        ----------
        batch : Batch
            ``"image"`` (B, C, H, W); ``"mask"``, ``"sigma"``, ``"noise_sigma"`` where the
            likelihood uses them.
        state : StepState
            ``weights["kl"]`` (KL weight, s3VDC's β ramp) and ``weights["gmm"]`` (0: α-training).

        Returns
        -------
        LossOutput
            `total` scalar; `terms` ``recon`` (mean per-object, see `recon_loss`), ``kl`` (mean
            nats) and ``l2``; `recon` the sampled decoding (B, C, H, W) in stored units.
        """
        x = batch["image"]
        enc = self.encode(x)
        z = reparameterise(enc.mu, enc.logvar)
        logits = self.canon.restore(self.decoder_logits(self.decoder_latent(z, enc.depth)), enc.pose)
        recon = self.recon_loss(logits, x, batch).mean()
        if state.weight("gmm") > 0:
            kl = vade_kl(enc.mu, enc.logvar, self.scaled_log_gamma(z), self.log_pi, self.mu_c, self.var_c).mean()
            anchor = 0.0
        else:
            kl = kl_unit_gaussian(enc.mu, enc.logvar).mean()
            # keep the (unused) mixture in the graph: data-parallel wrappers expect a gradient
            # for every parameter in every step; this one is exactly zero
            anchor = 0.0 * (self.pi_logits.sum() + self.mu_c.sum() + self.log_var_c.sum())
        l2 = self.weight_penalty()
        total = recon + state.weight("kl") * kl + l2 + anchor
        return LossOutput(total, {"recon": recon, "kl": kl, "l2": l2}, self.output(logits))

    def cluster_probs(self, mu: torch.Tensor) -> torch.Tensor:
        """Exact posterior γ = p(c | z = μ) under the learned mixture.

        Parameters
        ----------
        mu : torch.Tensor
            Latent means (B, L).

        Returns
        -------
        torch.Tensor
            (B, K) float32, rows summing to 1.
        """
        return gmm_responsibilities(mu, self.log_pi, self.mu_c, self.var_c)

    def sample(
        self, n: int, generator: torch.Generator | None = None, component: int | None = None, **conditions: Any
    ) -> Samples:
        """C ~ Categorical(π) (or the given component), z ~ N(μ_c, σ_c²), images = decode(z).

        With `depth_prior` each object's depth is drawn from a Gaussian fitted to the training
        stamps' (`DepthStandardiser.draw`) and z is restored at it.

        Parameters
        ----------
        n : int
            Objects to draw.
        generator : torch.Generator, optional
            Source of every draw (components, z, and θ for orient models).
        component : int, optional
            Fix the mixture component, in [0, n_clusters).
        **conditions
            Ignored.

        Returns
        -------
        Samples
            `images` (n, C, H, W) stored units, turned to uniform position angles for orient
            models; `z` (n, L); `component` (n,) int64.

        Raises
        ------
        ValueError
            For a component outside [0, n_clusters).
        """
        device = self.mu_c.device
        if component is None:
            comp = torch.multinomial(self.log_pi.exp().detach().cpu(), n, replacement=True, generator=_cpu(generator))
        else:
            if not 0 <= int(component) < self.n_clusters:
                raise ValueError(f"astrovader: component {component} outside 0..{self.n_clusters - 1}")
            comp = torch.full((n,), int(component), dtype=torch.long)
        comp = comp.to(device)
        eps = torch.randn(n, self.latent_dim, generator=generator, device=device)
        z = self.mu_c[comp] + self.var_c[comp].sqrt() * eps
        pose = random_angles(n, generator, device) if self.canon.orient else None
        depth = self.depth.draw(n, generator) if self.depth is not None else None
        return Samples(self.decode(z, pose, depth), z, comp)


class LinearPath(nn.Module):
    """A linear encoder/decoder pair beside AstroVaDEr's conv paths, initialised as PCA.

    μ gains W_e (x − m) and the decoder output gains m + W_d z, with x a stamp flattened to
    D pixels in the encoder's linear frame.  `fit` sets m to the mean of the training
    stamps and W_d = V Λ^½, W_e = Λ^-½ Vᵀ from their L leading principal components V
    (eigenvalues Λ), so z is whitened (unit variance per axis, the scale of the prior) and
    decoding the encoding is exactly the PCA-L reconstruction; the conv paths, which start
    at zero, then learn only what a linear basis misses (a PCA of galaxy images is the
    classic morphology baseline: Connolly et al. 1995).

    Parameters
    ----------
    n_pixels : int
        D = C·H·W.
    latent_dim : int
        L (the number of components).
    init_batches : int
        Training batches `AstroVaDEr.init_from_data` is given.
    """

    def __init__(self, n_pixels: int, latent_dim: int, init_batches: int) -> None:
        super().__init__()
        if init_batches < 1:
            raise ValueError(f"astrovader: linear_init_batches must be >= 1, got {init_batches}")
        self.init_batches = int(init_batches)
        self.mean = nn.Parameter(torch.zeros(n_pixels))
        self.enc = nn.Parameter(torch.zeros(latent_dim, n_pixels))
        self.dec = nn.Parameter(torch.zeros(n_pixels, latent_dim))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Latent offsets W_e (x − m) of images.

        Parameters
        ----------
        x : torch.Tensor
            (B, ...) images of D pixels in the path's frame (flattened inside).

        Returns
        -------
        torch.Tensor
            (B, L), whitened (unit variance per axis on the training stamps).
        """
        return (x.flatten(1) - self.mean) @ self.enc.t()

    def expand(self, z: torch.Tensor) -> torch.Tensor:
        """Images m + W_d z of latents.

        Parameters
        ----------
        z : torch.Tensor
            Latents (B, L) in whitened units.

        Returns
        -------
        torch.Tensor
            (B, D) flattened images in stored units.
        """
        return self.mean + z @ self.dec.t()

    @torch.no_grad()
    def fit(self, flat: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Adopt PCA-L of the training stamps; components beyond the data's rank get zero weight.

        With `valid`, a gappy PCA (Everson & Sirovich 1995; Connolly & Szalay 1999): masked
        pixels (saturated cores, the fill of masked neighbours) start at the pixel's mean over
        the stamps where it is valid and are replaced by their PCA-L reconstruction
        `GAPPY_ITERATIONS` times, so the basis describes the pixels the likelihood counts.

        Parameters
        ----------
        flat : torch.Tensor
            (N, D) float64 stamps, N > L.
        valid : torch.Tensor, optional
            (N, D) bool, True where a pixel counts; default all.

        Raises
        ------
        ValueError
            When N ≤ L.
        """
        n, latent = len(flat), self.enc.shape[0]
        if n <= latent:
            raise ValueError(f"astrovader: the linear path's PCA needs more than {latent} stamps, got {n}")
        if valid is not None and not bool(valid.all()):
            counts = valid.sum(0).clamp(min=1)
            filled = torch.where(valid, flat, (torch.where(valid, flat, 0.0).sum(0) / counts).expand_as(flat))
            for _ in range(GAPPY_ITERATIONS):
                centre = filled.mean(0)
                basis = torch.linalg.svd(filled - centre, full_matrices=False)[2][:latent]
                filled = torch.where(valid, flat, centre + (filled - centre) @ basis.t() @ basis)
            flat = filled
        mean = flat.mean(0)
        _, s, vt = torch.linalg.svd(flat - mean, full_matrices=False)
        scale = s[:latent] / (n - 1) ** 0.5  # √λ: the components' standard deviations
        safe = scale.clamp(min=1e-12 * float(scale[0]))
        keep = (scale > 1e-9 * float(scale[0])).double()
        v = vt[:latent]
        self.mean.copy_(mean.float())
        self.enc.copy_((keep[:, None] * v / safe[:, None]).float())
        self.dec.copy_((v.t() * scale).float())


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    """torch.multinomial on CPU probabilities needs a CPU generator (or none)."""
    if generator is None or generator.device.type == "cpu":
        return generator
    return torch.Generator().manual_seed(generator.initial_seed())
