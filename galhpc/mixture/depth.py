"""A latent standardised at each object's depth: the mixture prior conditioned on S/N and sky σ.

On real survey stamps brightness and morphology are not independent (faint galaxies are
small), and an encoder's latent carries the depth twice over: through the galaxies that
are seen at each depth, and through how noisily each is seen (a faint stamp's μ shrinks
towards the mean and scatters).  A mixture fitted to such latents clusters by S/N — on the
Hubble Deep Field held-out stamps η² of log S/N was 0.35 and of log sky σ 0.57 under
AstroVaDEr's clusters, and PCA-10 + GMM did no better.

`DepthStandardiser` conditions the prior on the depth d (`galhpc.models.nuisance
.depth_covariates`: log S/N and log sky σ, observed on every stamp):

    c ~ π,   u | c ~ N(μ_c, σ_c²),   z = m(d) + s(d) ⊙ u,

with the location m(d) and log scale log s(d) quadratic in the standardised depth (per
latent axis).  The latent the catalogue keeps is u = (z − m(d)) / s(d): how an object
differs from the galaxies seen at its own depth, so the mixture over u has the same
weights at every depth (p(c | d) = π_c) — a mixture of regressions in the latent
(heteroscedastic location–scale regression, as used to take redshift or survey depth out
of photometric features before clustering).  The VaDE KL is unchanged in u (KL is
invariant under the bijection z ↔ u), and the decoder is given z, so reconstruction is
untouched.  `fit` sets m and s by least squares on encoded training stamps (the scale from
log residual², corrected for E[log χ²₁] = −1.27); training then refines them through the
KL, as it does μ_c and σ_c².
"""

from __future__ import annotations

import torch
from torch import nn

N_DEPTH = 2  # log S/N, log sky σ
N_FEATURES = 6  # 1, d₁, d₂, d₁², d₁d₂, d₂²
CLAMP = 4.0  # standardised depths beyond ±4 are treated as ±4: the quadratic is not extrapolated
LOG_CHI2_1_MEAN = -1.2704  # E[log χ²₁] = −γ_E − log 2


class DepthStandardiser(nn.Module):
    """u = (z − m(d)) / s(d), with m and log s quadratic in the standardised depth d.

    Parameters
    ----------
    latent_dim : int
        L.

    Notes
    -----
    Before `fit` it is the identity (m = 0, s = 1).  Parameters: `location` and
    `log_scale`, (6, L) float32 coefficients of the features (1, d₁, d₂, d₁², d₁d₂, d₂²);
    buffers: the training depths' mean and standard deviation (2,), and the Cholesky factor
    (2, 2) of their covariance, from which `draw` samples depths for generation.
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.location = nn.Parameter(torch.zeros(N_FEATURES, latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(N_FEATURES, latent_dim))
        self.register_buffer("depth_mean", torch.zeros(N_DEPTH))
        self.register_buffer("depth_std", torch.ones(N_DEPTH))
        self.register_buffer("depth_chol", torch.eye(N_DEPTH))

    def features(self, depth: torch.Tensor) -> torch.Tensor:
        """Quadratic features of standardised, clamped depths.

        Parameters
        ----------
        depth : torch.Tensor
            (B, 2) `depth_covariates`.

        Returns
        -------
        torch.Tensor
            (B, 6) float32: 1, d₁, d₂, d₁², d₁d₂, d₂² with d = (depth − mean) / std in [−4, 4].
        """
        d = ((depth.float() - self.depth_mean) / self.depth_std).clamp(-CLAMP, CLAMP)
        one = torch.ones_like(d[:, :1])
        return torch.cat([one, d, d[:, :1] ** 2, d[:, :1] * d[:, 1:], d[:, 1:] ** 2], dim=1)

    def location_scale(self, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """m(d) and log s(d) of a batch.

        Parameters
        ----------
        depth : torch.Tensor
            (B, 2) depth covariates.

        Returns
        -------
        tuple of torch.Tensor
            (B, L) location and (B, L) log scale, latent units.
        """
        f = self.features(depth)
        return f @ self.location, f @ self.log_scale

    def standardise(self, mu: torch.Tensor, logvar: torch.Tensor | None,
                    depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """q(z|x) = N(μ, e^logvar) seen in u: N((μ − m) / s, e^logvar / s²).

        Parameters
        ----------
        mu : torch.Tensor
            (B, L) means of z.
        logvar : torch.Tensor or None
            (B, L) log variances of z.
        depth : torch.Tensor
            (B, 2) depth covariates.

        Returns
        -------
        tuple
            (B, L) means and (B, L) log variances (or None) of u.
        """
        loc, log_s = self.location_scale(depth)
        u = (mu - loc) * torch.exp(-log_s)
        return u, (None if logvar is None else logvar - 2.0 * log_s)

    def restore(self, u: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """The decoder's latent z = m(d) + s(d) ⊙ u of a standardised one.

        Parameters
        ----------
        u : torch.Tensor
            (B, L) standardised latents.
        depth : torch.Tensor
            (B, 2) depth covariates.

        Returns
        -------
        torch.Tensor
            (B, L) z.
        """
        loc, log_s = self.location_scale(depth)
        return loc + torch.exp(log_s) * u

    @torch.no_grad()
    def fit(self, z: torch.Tensor, depth: torch.Tensor) -> None:
        """Least-squares m and log s of encoded training stamps, and the depths' distribution.

        Parameters
        ----------
        z : torch.Tensor
            (N, L) encoded means of training stamps (N > 6).
        depth : torch.Tensor
            (N, 2) their depth covariates.

        Raises
        ------
        ValueError
            When N ≤ 6 (the quadratic is not determined).
        """
        if len(z) <= N_FEATURES:
            raise ValueError(f"depth standardiser: needs more than {N_FEATURES} stamps, got {len(z)}")
        depth, z = depth.double(), z.double()
        self.depth_mean.copy_(depth.mean(0).float())
        self.depth_std.copy_(depth.std(0).clamp(min=1e-6).float())
        self.depth_chol.copy_(torch.linalg.cholesky(torch.cov(depth.t()) + 1e-9 * torch.eye(N_DEPTH,
                                                                                           dtype=depth.dtype)).float())
        f = self.features(depth.float()).double()
        loc = torch.linalg.lstsq(f, z).solution
        resid2 = (z - f @ loc).pow(2).clamp(min=1e-12)
        log_var = torch.linalg.lstsq(f, resid2.log()).solution
        log_var[0] -= LOG_CHI2_1_MEAN  # E[log r²] = log σ² + E[log χ²₁]
        self.location.copy_(loc.float())
        self.log_scale.copy_((0.5 * log_var).float())

    def draw(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Depths drawn from a Gaussian fitted to the training stamps' (for generation).

        Parameters
        ----------
        n : int
            How many.
        generator : torch.Generator, optional

        Returns
        -------
        torch.Tensor
            (n, 2) float32 depth covariates.
        """
        eps = torch.randn(n, N_DEPTH, generator=generator, device=self.depth_mean.device)
        return self.depth_mean + eps @ self.depth_chol.t()

    def typical(self, n: int) -> torch.Tensor:
        """The training stamps' mean depth, n times (a latent decoded without a depth).

        Parameters
        ----------
        n : int

        Returns
        -------
        torch.Tensor
            (n, 2) float32.
        """
        return self.depth_mean.expand(n, N_DEPTH).clone()

