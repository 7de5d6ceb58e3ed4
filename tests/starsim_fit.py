"""Train a star/galaxy model on one simulated set and return it with an independent held-out set."""

from __future__ import annotations

from collections.abc import Callable

import torch


def fit_on_simulated(make_model: Callable[[], torch.nn.Module], opts, size: int, seeds: tuple[int, int],
                     n: tuple[int, int], extras: tuple[str, ...] = (), **fit):
    """Simulate a training and a held-out set, build the model under seed 0 and fit it on the first.

    `seeds` and `n` are those of the (training, held-out) sets of `size` x `size` stamps; the
    training block's `extras` columns (e.g. "masks") and `fit` (epochs, lr) go to `fit_arrays`.
    Returns the trained model and the held-out `galhpc.data.sources.Block`.
    """
    from galhpc.data.starsim import simulate_block
    from galhpc.train.arrays import fit_arrays

    train = simulate_block(opts, size, seeds[0], 0, n[0])
    test = simulate_block(opts, size, seeds[1], 0, n[1])
    torch.manual_seed(0)
    model = make_model()
    fit_arrays(model, train.images, extras={name: train.extras[name] for name in extras} or None, **fit)
    return model, test
