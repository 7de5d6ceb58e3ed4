"""Model calls of the report, batched and gradient-free: reconstruct, decode, sample."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from galhpc.models.base import GalaxyModel
from galhpc.runtime.batching import run_batched, to_numpy


def encode(model: GalaxyModel, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """Posterior means (and log-variances) of images.

    Parameters
    ----------
    model : GalaxyModel
        Any model of galhpc.models, run without gradients.
    images : (N, C, H, W) float32
    batch_size : int

    Returns
    -------
    mu : numpy.ndarray
        (N, L) float32.
    logvar : numpy.ndarray or None
        (N, L) float32, None for a model without one (a deterministic encoder).
    """
    parts = run_batched(model, lambda x, _: model.encode(x), images, batch_size=batch_size)
    mus = [to_numpy(enc.mu.float()) for enc in parts]
    logvars = [to_numpy(enc.logvar.float()) for enc in parts if enc.logvar is not None]
    return np.concatenate(mus), (np.concatenate(logvars) if logvars else None)


def decode(model: GalaxyModel, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Images of latents.

    Parameters
    ----------
    model : GalaxyModel
        In eval mode on its device; gradients off.
    z : (N, L) float
    batch_size : int

    Returns
    -------
    numpy.ndarray
        (N, C, H, W) float32.
    """
    out = run_batched(model, lambda z_, _: model.decode(z_).float().cpu(), z, batch_size=batch_size,
                      dtype=torch.float32)
    return torch.cat(out).numpy()


def reconstruct(model: GalaxyModel, images: np.ndarray, batch_size: int = 256,
                columns: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """`model.reconstruct(x)`: the deterministic reconstruction in the images' own space.

    As the model's loss compares it (decode(encode(x).μ) for most models; PSF ⊛ decode(μ) for
    a PSF VQ-VAE; normalisation undone for hvae/segae), so images − reconstructions is a residual.

    Parameters
    ----------
    model : GalaxyModel
        In eval mode on its device; gradients off.
    images : (N, C, H, W) float32
    batch_size : int
    columns : mapping of str to numpy.ndarray, optional
        The store columns the model's `reconstruct` needs (`reconstruct_columns`, e.g.
        per-object PSFs), each row-aligned with images.

    Returns
    -------
    numpy.ndarray
        (N, C, H, W) float32.
    """
    out = run_batched(model, lambda x, part: model.reconstruct(x, part or None).float().cpu(), images,
                      batch_size=batch_size, columns=columns)
    return torch.cat(out).numpy()


def class_condition(model: GalaxyModel) -> tuple[str, int] | None:
    """The label column and class count of a class-conditional generator.

    E.g. the conditional PixelCNN prior, whose `sample(component=c)` draws class c.

    Parameters
    ----------
    model : GalaxyModel

    Returns
    -------
    tuple of (str, int), or None
        (label column, number of classes); None for any other model.
    """
    condition = model.sample_condition
    if model.generative and condition is not None and condition.kind == "class":
        return str(condition.column), int(condition.num_classes)
    return None


def float_condition(model: GalaxyModel) -> str | None:
    """The label column of a float-conditioned generator.

    E.g. a PixelCNN prior with a condition of kind "float", whose `sample(n, column=value)`
    draws at that value.

    Parameters
    ----------
    model : GalaxyModel

    Returns
    -------
    str or None
        None for any other model.
    """
    condition = model.sample_condition
    if model.generative and condition is not None and condition.kind == "float":
        return str(condition.column)
    return None


@torch.no_grad()
def sample(model: GalaxyModel, n: int, seed: int, component: int | None = None,
           **conditions: Any) -> tuple[np.ndarray, np.ndarray]:
    """Generated images and their components.

    Parameters
    ----------
    model : GalaxyModel
        In eval mode on its device; gradients off.
    n : int
        Images to draw.
    seed : int
        Seed of a torch.Generator on the model's device.
    component : int, optional
        Fixes the mixture component (or class).
    **conditions
        column=value: the condition of a conditional generator.

    Returns
    -------
    images : numpy.ndarray
        (n, C, H, W) float32.
    components : numpy.ndarray
        (n,) int64 (-1 where the model has none).
    """
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    kwargs = dict(conditions) if component is None else {"component": component, **conditions}
    out = model.sample(n, generator, **kwargs)
    return out.images.float().cpu().numpy(), out.component.cpu().numpy().astype(np.int64)
