"""How generated stamps are drawn from a model for the fidelity test: from its prior, or ex post.

From its own prior (`model.sample`, optionally at a sampling temperature), or ex post from
a mixture fitted to its training stamps' latent means.

Ex-post sampling (Ghosh et al. 2020, "From variational to deterministic autoencoders"):
the aggregate posterior q(z) = E_x q(z|x) of a trained VAE rarely matches its prior, and
decoding prior draws that fall where no training galaxy's posterior lies gives the blurry,
off-population images the fidelity test rejects.  A Gaussian mixture fitted to the training
stamps' posterior means μ follows q(z) instead.  For AstroVaDEr the mixture's components are
the model's own: component c has weight mean(γ_c), mean and covariance the γ_c-weighted
moments of μ (one M-step from the model's responsibilities γ = p(c | μ), Jiang et al. 2017),
so each component is drawn where its galaxies actually sit.  Other continuous-latent models
get a scikit-learn `GaussianMixture`.  The temperature τ scales each component's standard
deviation (τ < 1: nearer the component centres); a PixelCNN prior's temperature is its
softmax temperature.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from galhpc.models.base import GalaxyModel, Samples
from galhpc.models.nuisance import random_angles
from galhpc.runtime.errors import DataError

log = logging.getLogger("galhpc.fidelity")

MODES = ("prior", "expost")


@dataclass(frozen=True)
class SamplingOptions:
    """How to draw: `mode` prior | expost, temperature τ, ex-post mixture components."""

    mode: str = "prior"
    temperature: float = 1.0
    components: int = 10


class ExPostSampler:
    """Draws z from a Gaussian mixture over training latent means and decodes it.

    Parameters
    ----------
    model : GalaxyModel
        A model with a continuous latent (`encode` giving μ (B, L), `decode(z[, pose])`).
    training : numpy.ndarray
        (T, C, H, W) float32 training stamps in the store's units.
    options : SamplingOptions
        Temperature τ and the number of components (AstroVaDEr: its own n_clusters).
    seed : int
        Seed of the scikit-learn mixture fit.

    Raises
    ------
    DataError
        For a model with a discrete latent (a PixelCNN prior models codes, not μ) or too few
        training stamps for the mixture.
    """

    def __init__(self, model: GalaxyModel, training: np.ndarray, options: SamplingOptions, seed: int = 0) -> None:
        if model.name == "vqvae_prior":
            raise DataError("ex-post sampling needs a continuous latent; a vqvae_prior already models its codes: "
                            "use --sampling prior (and --temperature)")
        self.model, self.temperature = model, float(options.temperature)
        device = next(model.parameters()).device
        mus, depths, oriented = [], [], False
        with torch.no_grad():
            for lo in range(0, len(training), 256):
                enc = model.encode(torch.as_tensor(training[lo:lo + 256], dtype=torch.float32, device=device))
                mus.append(enc.mu.float().cpu().numpy().astype(np.float64))
                oriented = enc.pose is not None
                if enc.depth is not None:
                    depths.append(enc.depth.float().cpu())
        mu = np.concatenate(mus)
        self.oriented = oriented
        # a depth-conditioned latent (AstroVaDEr's depth_prior) is decoded at training stamps' depths
        self.depths = torch.cat(depths) if depths else None
        if model.has_mixture:  # AstroVaDEr: its components, weighted by their γ
            with torch.no_grad():
                gamma = model.cluster_probs(torch.as_tensor(mu, dtype=torch.float32, device=device))
            self.weights, self.means, self.covariances = gamma_moments(mu, gamma.cpu().numpy().astype(np.float64))
        else:
            from sklearn.mixture import GaussianMixture

            k = min(int(options.components), len(mu) // 5)
            if k < 1:
                raise DataError(f"ex-post sampling: {len(mu)} training stamps are too few for a mixture")
            gmm = GaussianMixture(k, covariance_type="full", reg_covar=1e-5, random_state=seed).fit(mu)
            self.weights, self.means, self.covariances = gmm.weights_, gmm.means_, gmm.covariances_
        self.cholesky = np.linalg.cholesky(self.covariances + 1e-9 * np.eye(mu.shape[1]))
        log.info("ex-post sampler: %d components over %d training latents, temperature %g", len(self.weights),
                 len(mu), self.temperature)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Samples:
        """Draw n latents from the mixture (σ scaled by τ) and decode them.

        Each draw picks a component by weight, then z = mean + τ L ε with L the Cholesky
        factor of the component's covariance and ε standard normal; models with a pose are
        decoded at random angles, models with a depth-conditioned latent at the depths of
        training stamps drawn at random.

        Parameters
        ----------
        n : int
            Number of images.
        generator : torch.Generator, optional
            Seeds the draw (one integer is taken from it to seed numpy); None: seed 0.

        Returns
        -------
        Samples
            images (n, C, H, W) on the model's device, z (n, L) float32, and component (n,)
            int64, the mixture component each was drawn from.
        """
        device = next(self.model.parameters()).device
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item()) \
            if generator is not None else 0
        rng = np.random.default_rng(seed)
        comp = rng.choice(len(self.weights), n, p=self.weights / self.weights.sum())
        eps = rng.standard_normal((n, self.means.shape[1]))
        z = self.means[comp] + self.temperature * np.einsum("nij,nj->ni", self.cholesky[comp], eps)
        z_t = torch.as_tensor(z, dtype=torch.float32, device=device)
        nuisances = {}
        if self.oriented:
            nuisances["pose"] = random_angles(n, generator, device)
        if self.depths is not None:
            nuisances["depth"] = self.depths[rng.integers(0, len(self.depths), n)].to(device)
        with torch.no_grad():
            images = self.model.decode(z_t, **nuisances)
        return Samples(images, z_t, torch.as_tensor(comp, dtype=torch.long, device=device))


def gamma_moments(mu: np.ndarray, gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mixture weights, means and covariances of latents weighted by responsibilities (one M-step).

    w_c = mean_i γ_ic, m_c = Σ γ_ic μ_i / Σ γ_ic, S_c the γ-weighted covariance plus 1e-6 I
    (Jiang et al. 2017's M-step on the model's own responsibilities).

    Parameters
    ----------
    mu : numpy.ndarray
        (N, L) latent means.
    gamma : numpy.ndarray
        (N, K) responsibilities, rows summing to 1.

    Returns
    -------
    weights : numpy.ndarray
        (K,) float64 summing to 1; components with no responsibility mass get weight 0.
    means : numpy.ndarray
        (K, L) float64.
    covariances : numpy.ndarray
        (K, L, L) float64, regularised by 1e-6 on the diagonal.
    """
    mass = gamma.sum(0)
    weights = mass / mass.sum()
    safe = np.maximum(mass, 1e-12)
    means = (gamma.T @ mu) / safe[:, None]
    diff = mu[None, :, :] - means[:, None, :]
    covariances = np.einsum("kn,kni,knj->kij", gamma.T, diff, diff) / safe[:, None, None]
    covariances += 1e-6 * np.eye(mu.shape[1])[None]
    return weights, means, covariances


def apply_temperature(model: GalaxyModel, options: SamplingOptions) -> None:
    """Prior sampling at temperature τ: a PixelCNN prior's softmax temperature.

    Sets ``model.temperature`` in place; τ = 1 leaves the model untouched.

    Parameters
    ----------
    model : GalaxyModel
        The model to sample from.
    options : SamplingOptions
        Its ``temperature`` is used.

    Raises
    ------
    DataError
        For another model at τ ≠ 1 (its prior has no temperature hook: use --sampling expost).
    """
    if options.temperature == 1.0:
        return
    if not hasattr(model, "temperature"):
        raise DataError(f"model {model.name!r} has no prior sampling temperature; use --sampling expost "
                        "(the temperature then scales the ex-post mixture's σ)")
    model.temperature = float(options.temperature)
