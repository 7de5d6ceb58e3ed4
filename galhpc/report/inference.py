"""Model calls of the report, batched and gradient-free: reconstruct, decode, sample."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from galhpc.models.base import GalaxyModel
from galhpc.runtime.batching import run_batched, to_numpy


def encode(model: GalaxyModel, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """Posterior means (and log-variances, or None) of images (N, C, H, W)."""
    parts = run_batched(model, lambda x, _: model.encode(x), images, batch_size=batch_size)
    mus = [to_numpy(enc.mu.float()) for enc in parts]
    logvars = [to_numpy(enc.logvar.float()) for enc in parts if enc.logvar is not None]
    return np.concatenate(mus), (np.concatenate(logvars) if logvars else None)


def decode(model: GalaxyModel, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Images (N, C, H, W) of latents (N, L)."""
    out = run_batched(model, lambda z_, _: model.decode(z_).float().cpu(), z, batch_size=batch_size,
                      dtype=torch.float32)
    return torch.cat(out).numpy()


def reconstruct(model: GalaxyModel, images: np.ndarray, batch_size: int = 256,
                columns: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """`model.reconstruct(x)`: the deterministic reconstruction in the images' own space, as
    the model's loss compares it (decode(encode(x).μ) for most models; PSF ⊛ decode(μ) for a
    PSF VQ-VAE; normalisation undone for hvae/segae), so images − reconstructions is a residual.
    `columns`: the store columns the model's `reconstruct` needs (`reconstruct_columns`, e.g.
    per-object PSFs), each row-aligned with images.
    """
    out = run_batched(model, lambda x, part: model.reconstruct(x, part or None).float().cpu(), images,
                      batch_size=batch_size, columns=columns)
    return torch.cat(out).numpy()


def class_condition(model: GalaxyModel) -> tuple[str, int] | None:
    """(label column, number of classes) of a class-conditional generator (e.g. the conditional
    PixelCNN prior, whose `sample(component=c)` draws class c), else None.
    """
    condition = model.sample_condition
    if model.generative and condition is not None and condition.kind == "class":
        return str(condition.column), int(condition.num_classes)
    return None


def float_condition(model: GalaxyModel) -> str | None:
    """Label column of a float-conditioned generator (e.g. a PixelCNN prior with a condition of
    kind "float", whose `sample(n, column=value)` draws at that value), else None.
    """
    condition = model.sample_condition
    if model.generative and condition is not None and condition.kind == "float":
        return str(condition.column)
    return None


@torch.no_grad()
def sample(model: GalaxyModel, n: int, seed: int, component: int | None = None,
           **conditions: Any) -> tuple[np.ndarray, np.ndarray]:
    """N generated images (N, C, H, W) and their components; `component` fixes the mixture
    component (or class), `conditions` (column=value) the condition of a conditional generator.
    """
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    kwargs = dict(conditions) if component is None else {"component": component, **conditions}
    out = model.sample(n, generator, **kwargs)
    return out.images.float().cpu().numpy(), out.component.cpu().numpy().astype(np.int64)
