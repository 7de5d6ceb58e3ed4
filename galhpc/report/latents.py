"""Latent-space constructions for generation figures: traversals, interpolations, pairings.

Pure numpy: each function returns the latent vectors to decode; `inference` decodes them.
"""

from __future__ import annotations

import numpy as np


def traversal(mu: np.ndarray, dims: list[int], steps: int) -> np.ndarray:
    """Latents (len(dims), steps, L): latent d swept from its sample min to max, the others at their mean."""
    mu = np.asarray(mu, np.float32)
    centre = mu.mean(axis=0)
    grid = np.repeat(np.repeat(centre[None, None], len(dims), axis=0), steps, axis=1)
    for row, d in enumerate(dims):
        grid[row, :, d] = np.linspace(mu[:, d].min(), mu[:, d].max(), steps)
    return grid


def interpolate(start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
    """`steps` latents on the straight line from `start` to `end`, both included."""
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return (1 - t) * np.asarray(start, np.float32)[None] + t * np.asarray(end, np.float32)[None]


def route(centres: np.ndarray, order: list[int], steps_per_leg: int) -> np.ndarray:
    """Latents (n_legs, steps_per_leg, L): straight legs between consecutive centres of `order`."""
    return np.stack([interpolate(centres[a], centres[b], steps_per_leg) for a, b in zip(order[:-1], order[1:], strict=False)])


def nearest_partners(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Index into `candidates` of the Euclidean-nearest candidate of each query."""
    q = np.asarray(queries, np.float64)
    c = np.asarray(candidates, np.float64)
    d2 = (q**2).sum(1)[:, None] - 2 * q @ c.T + (c**2).sum(1)[None]
    return np.argmin(d2, axis=1)
