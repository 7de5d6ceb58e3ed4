"""The model interface every galhpc model implements: what the trainer, catalogues and report rely on.

The trainer, the catalogue jobs and the report know models only through this:
`encode`, `decode`, `loss(batch, state)`, `reconstruct` (what reconstruction errors are
measured on) and, for generative models, `sample`.
Loss weights that change over training (KL weights of the s3VDC schedule) arrive in
`StepState`, so models hold no schedule logic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from galhpc.runtime.world import World


class Encoding(NamedTuple):
    """Posterior parameters of a batch.

    mu : (B, L) float32 latent means (the catalogue's `mu`).
    logvar : (B, L) float32 log σ² of q(z|x), or None for deterministic encoders.
    pose : (B,) float32 position angle θ (radians) measured on the input by models that
        keep orientation out of the latent (`orient: true`, galhpc.models.nuisance), else None;
        `decode(z, pose=θ)` puts it back.
    depth : (B, 2) float32 log S/N and log sky σ measured on the input by models whose mixture
        prior is conditioned on depth (AstroVaDEr's `depth_prior`, galhpc.mixture.depth), else
        None; `decode(z, depth=d)` puts it back.
    """

    mu: torch.Tensor
    logvar: torch.Tensor | None = None
    pose: torch.Tensor | None = None
    depth: torch.Tensor | None = None


class LossOutput(NamedTuple):
    """Total loss to minimise and its named pieces (detached floats are logged)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    recon: torch.Tensor | None = None


class Samples(NamedTuple):
    """Generated images (B, C, H, W), their latents, and mixture component (or -1)."""

    images: torch.Tensor
    z: torch.Tensor
    component: torch.Tensor


@dataclass
class StepState:
    """Where training is: supplied by the schedule to `GalaxyModel.loss`."""

    epoch: int = 0
    step: int = 0
    phase: str = "train"
    weights: dict[str, float] = field(default_factory=dict)

    def weight(self, name: str, default: float = 1.0) -> float:
        """The schedule's weight of one loss term.

        Parameters
        ----------
        name : str
            Term name, e.g. ``"kl"`` (s3VDC's β ramp) or ``"gmm"`` (0 during α-training).
        default : float
            Returned when the schedule sets no weight of that name.

        Returns
        -------
        float
            The weight (dimensionless).
        """
        return self.weights.get(name, default)


Batch = dict[str, Any]  # "image": (B, C, H, W) float tensor; "object_id": (B,) int64; labels


class SampleCondition(NamedTuple):
    """What a conditional generator's `sample(**conditions)` is conditioned on.

    `kind` "class": `sample(n, component=c)` draws class c of `num_classes`; "float":
    `sample(n, **{column: value})` draws at that label value.
    """

    kind: str
    column: str
    num_classes: int = 0


class GalaxyModel(nn.Module):
    """Base class: subclasses set `name` and implement the methods they support."""

    name: str = "model"
    generative: bool = False
    has_mixture: bool = False

    @property
    def batch_columns(self) -> tuple[str, ...]:
        """Store columns besides the image (labels, `truth`, `masks`, `psf`) that `loss` reads.

        The trainer asks the loader for exactly these in every batch.
        """
        return ()

    def store_mismatch(self, recipe: list[str], columns: set[str]) -> str | None:
        """Why a store cannot train this model, or None.

        The likelihood's assumptions about the prep recipe (e.g. linear flux units with the sky
        at 0 and a known σ), checked before training starts.

        Parameters
        ----------
        recipe : list of str
            The store's prep recipe steps, in order (e.g. ``["crop", "flux"]``).
        columns : set of str
            The store's label columns and per-object datasets (e.g. ``noise_sigma``, ``sigma``, ``mask``).

        Returns
        -------
        str or None
            One line naming what is missing; the trainer refuses the store with it.
        """
        return None

    def encode(self, x: torch.Tensor) -> Encoding:
        """Posterior of a batch of images.

        Parameters
        ----------
        x : torch.Tensor
            Images (B, C, H, W), float32, on the model's device, in the store's preprocessed
            units (the prep recipe's stretch and scaling; most recipes give values in [0, 1]).

        Returns
        -------
        Encoding
            `mu` (B, L) float32 latent means (a VQ-VAE: (B, D, h, w) pre-quantisation maps);
            `logvar` (B, L) float32 log-variances (natural log of latent units squared), or
            None for deterministic encoders.
        """
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images of latents.

        Parameters
        ----------
        z : torch.Tensor
            Latents (B, L) float32 (the shape of `encode(x).mu`).

        Returns
        -------
        torch.Tensor
            The model's clean images (B, C, H, W) float32 in the units of `encode`'s input
            (before any PSF output layer; see `reconstruct`).
        """
        raise NotImplementedError

    def loss(self, batch: Batch, state: StepState) -> LossOutput:
        """The training loss of one batch.

        Parameters
        ----------
        batch : dict
            ``"image"`` (B, C, H, W) float32 as for `encode`; ``"object_id"`` (B,) int64; the
            store columns named by `batch_columns`.
        state : StepState
            Epoch, step, phase and the schedule's loss weights (e.g. ``weights["kl"]``).

        Returns
        -------
        LossOutput
            `total`: scalar float32 tensor to minimise (per-object mean, so independent of B);
            `terms`: named scalar pieces that are logged; `recon`: optional reconstruction (B, C, H, W).
        """
        raise NotImplementedError

    # -- declared hooks: the trainer and the report call these, never hasattr/getattr ------
    def use_group(self, group: World) -> None:
        """Hand the model the data-parallel ranks' process group (`allreduce_sum`, `broadcast_object`).

        The trainer calls this once with its backend's world; models whose training updates need
        other ranks' statistics (the VQ-VAE's EMA codebook) keep it.  Default: ignore it.

        Parameters
        ----------
        group : World
            The ranks' process group (`galhpc.runtime.world.LOCAL`, the identity, when training alone).
        """

    def init_mixture(self, embeddings: np.ndarray, *, seed: int = 0) -> None:
        """Adopt a mixture fitted to encoded means (s3VDC mini-batch initialisation, Cao et al. 2020).

        Called by the trainer on the schedule's INIT_MIXTURE event for models with `has_mixture`.

        Parameters
        ----------
        embeddings : numpy.ndarray
            (N, L) float32 latent means of k training mini-batches.
        seed : int
            Seed of the mixture fit.

        Raises
        ------
        NotImplementedError
            For models without a mixture prior (the default).
        """
        raise NotImplementedError(f"model {self.name!r} has no mixture prior")

    @property
    def data_init_batches(self) -> int:
        """How many unaugmented training batches `init_from_data` wants before the first step (0: none)."""
        return 0

    def init_from_data(self, batches: list[Batch]) -> None:
        """Initialise parameters from training data before the first step.

        E.g. a linear path as the PCA of the stamps.  The trainer calls it on a fresh run of a
        model with `data_init_batches` > 0, on every rank with the same batches, and then
        broadcasts rank 0's parameters.

        Parameters
        ----------
        batches : list of Batch
            `data_init_batches` unaugmented training batches, ``"image"`` (B, C, H, W) float32.

        Raises
        ------
        NotImplementedError
            For models without a data-driven initialisation (the default).
        """
        raise NotImplementedError(f"model {self.name!r} has no data-driven initialisation")

    @property
    def sample_condition(self) -> SampleCondition | None:
        """What `sample(**conditions)` is conditioned on, for conditional generators; None by default."""
        return None

    @property
    def reconstruct_columns(self) -> tuple[str, ...]:
        """Per-object store columns besides the image that `reconstruct` reads from its `columns`.

        A VQ-VAE's per-object `psf`, say; callers that measure reconstruction errors read
        exactly these.  None by default.
        """
        return ()

    def reconstruct(self, x: torch.Tensor, columns: Mapping[str, Any] | None = None, *,
                    encoding: Encoding | None = None) -> torch.Tensor:
        """The deterministic reconstruction of x in x's own space, as the loss compares it with x.

        What every reconstruction error (the trainer's `holdout_mse`, the catalogue's
        `recon_mse`, the report's reconstructions) is measured on.  Default:
        decode(encode(x).mu), with the encoding's pose and depth when it has them.  Models whose decoder
        output is not in x's space override it (a PSF output layer applied, a per-stamp
        normalisation undone), while `decode` keeps meaning the model's clean image.

        Parameters
        ----------
        x : torch.Tensor
            Images (B, C, H, W) float32 in the store's units.
        columns : mapping, optional
            The rest of x's batch (e.g. a loader batch), for the per-object inputs named by
            `reconstruct_columns`.
        encoding : Encoding, optional
            encode(x) where the caller already has it (saves encoding x twice).

        Returns
        -------
        torch.Tensor
            (B, C, H, W) float32 in x's units.
        """
        enc = self.encode(x) if encoding is None else encoding
        nuisances = {name: value for name, value in (("pose", enc.pose), ("depth", enc.depth)) if value is not None}
        return self.decode(enc.mu, **nuisances)

    def sample(self, n: int, generator: torch.Generator | None = None, **conditions: Any) -> Samples:
        """N generated objects, for generative models.

        Parameters
        ----------
        n : int
            Number of objects.
        generator : torch.Generator, optional
            Source of all randomness (on the model's device), so a seed gives the same objects.
        **conditions
            ``component=c`` fixes the mixture component or class; a conditional generator's
            label column (see `sample_condition`) fixes its condition.

        Returns
        -------
        Samples
            `images` (n, C, H, W) float32 in `decode`'s units; `z` the latents drawn; `component`
            (n,) int64 mixture component or -1.
        """
        raise NotImplementedError(f"model {self.name!r} is not generative")

    def cluster_probs(self, mu: torch.Tensor) -> torch.Tensor:
        """Responsibilities γ of the model's own mixture, for mixture models.

        Parameters
        ----------
        mu : torch.Tensor
            Latent means (B, L) float32.

        Returns
        -------
        torch.Tensor
            γ (B, K) float32, rows summing to 1.

        Raises
        ------
        NotImplementedError
            For models without a mixture prior (the default).
        """
        raise NotImplementedError(f"model {self.name!r} has no mixture prior")

    def extra_columns(self, x: torch.Tensor, encoding: Encoding) -> dict[str, torch.Tensor]:
        """Model-specific per-object outputs that `galhpc-encode` writes as datasets; none by default.

        E.g. a star/galaxy probability.

        Parameters
        ----------
        x : torch.Tensor
            The encoded images (B, C, H, W) float32.
        encoding : Encoding
            encode(x).

        Returns
        -------
        dict of str to torch.Tensor
            Dataset name -> (B, ...) tensor, one row per object.
        """
        return {}
