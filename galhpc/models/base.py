"""The model interface every galhpc model implements (see DESIGN.md).

The trainer, the catalogue jobs and the report know models only through this:
`encode`, `decode`, `loss(batch, state)` and, for generative models, `sample`.
Loss weights that change over training (KL weights of the s3VDC schedule) arrive in
`StepState`, so models hold no schedule logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn


class Encoding(NamedTuple):
    """Posterior parameters of a batch; `logvar` is None for deterministic encoders."""

    mu: torch.Tensor
    logvar: torch.Tensor | None = None


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
        return self.weights.get(name, default)


Batch = dict[str, Any]  # "image": (B, C, H, W) float tensor; "object_id": (B,) int64; labels


class GalaxyModel(nn.Module):
    """Base class: subclasses set `name` and implement the methods they support."""

    name: str = "model"
    generative: bool = False
    has_mixture: bool = False

    @property
    def batch_columns(self) -> tuple[str, ...]:
        """Store columns besides the image (labels, `truth`, `masks`, `psf`) that `loss`
        reads from its batches; the trainer asks the loader for exactly these."""
        return ()

    def encode(self, x: torch.Tensor) -> Encoding:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, batch: Batch, state: StepState) -> LossOutput:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None, **conditions: Any) -> Samples:
        raise NotImplementedError(f"model {self.name!r} is not generative")

    def cluster_probs(self, mu: torch.Tensor) -> torch.Tensor:
        """Responsibilities γ (B, K) of the model's own mixture, for mixture models."""
        raise NotImplementedError(f"model {self.name!r} has no mixture prior")

    def extra_columns(self, x: torch.Tensor, encoding: Encoding) -> dict[str, torch.Tensor]:
        """Model-specific per-object outputs (B, ...) that `galhpc-encode` writes as datasets,
        e.g. a star/galaxy probability; none by default."""
        return {}
