"""Training on in-memory arrays: the small loop of the star/galaxy benchmarks and tests."""

from __future__ import annotations

import logging

import numpy as np
import torch

from galhpc.models.base import GalaxyModel, StepState
from galhpc.train.schedule import kl_warmup

log = logging.getLogger("galhpc.train.arrays")


def fit_arrays(
    model: GalaxyModel,
    images: np.ndarray,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    kl_warmup_epochs: int = 0,
    extras: dict[str, np.ndarray] | None = None,
) -> list[dict[str, float]]:
    """Train `model` on in-memory images (N, C, H, W) with Adam; returns the mean loss terms per epoch.

    The small single-process loop of the star/galaxy benchmarks and tests (no store, no
    checkpoints; `galhpc.train.trainer` is the full one).  `extras` are further per-object
    arrays put in every batch under their names (e.g. "masks"); the KL weight is
    `galhpc.train.schedule.kl_warmup` over `kl_warmup_epochs`.

    Parameters
    ----------
    model : GalaxyModel
        Trained in place.
    images : numpy.ndarray
        (N, C, H, W) float.
    epochs : int
        Passes over the images.
    batch_size : int
        Images per step.
    lr : float
        Adam's learning rate.
    seed : int
        Seed of the initial weights, the batch order and the noise.
    kl_warmup_epochs : int
        Epochs of the linear KL warm-up (0: none).
    extras : dict of str to numpy.ndarray, optional
        Per-object arrays (N, ...) added to every batch under their names.

    Returns
    -------
    list of dict of str to float
        One dict of mean loss terms per epoch.
    """
    torch.manual_seed(seed)
    data = torch.as_tensor(images, dtype=torch.float32)
    others = {name: torch.as_tensor(values) for name, values in (extras or {}).items()}
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = []
    step = 0
    model.train()
    for epoch in range(epochs):
        kl = kl_warmup(epoch, kl_warmup_epochs)
        sums: dict[str, float] = {}
        order = torch.randperm(len(data), generator=generator)
        batches = [order[i : i + batch_size] for i in range(0, len(data) - batch_size + 1, batch_size)]
        for index in batches:
            batch = {"image": data[index], **{name: values[index] for name, values in others.items()}}
            out = model.loss(batch, StepState(epoch=epoch, step=step, weights={"kl": kl}))
            optimiser.zero_grad(set_to_none=True)
            out.total.backward()
            optimiser.step()
            step += 1
            for name, value in {"total": out.total, **out.terms}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
        history.append({name: total / len(batches) for name, total in sums.items()})
        log.info("%s epoch %d: %s", model.name, epoch, {k: round(v, 4) for k, v in history[-1].items()})
    model.eval()
    return history
