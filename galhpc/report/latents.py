"""Latent-space constructions for generation figures: traversals, interpolations, pairings.

Pure numpy: each function returns the latent vectors to decode; `galhpc.report.model_calls` decodes them.
"""

from __future__ import annotations

import itertools

import numpy as np


def traversal(mu: np.ndarray, dims: list[int], steps: int) -> np.ndarray:
    """Latents with latent d swept from its sample min to max, the others at their mean.

    Parameters
    ----------
    mu : (N, L) float
        Sample of posterior means.
    dims : list of int
        The latents swept, one row each.
    steps : int
        Points per sweep.

    Returns
    -------
    numpy.ndarray
        (len(dims), steps, L) float32.
    """
    mu = np.asarray(mu, np.float32)
    centre = mu.mean(axis=0)
    grid = np.repeat(np.repeat(centre[None, None], len(dims), axis=0), steps, axis=1)
    for row, d in enumerate(dims):
        grid[row, :, d] = np.linspace(mu[:, d].min(), mu[:, d].max(), steps)
    return grid


def interpolate(start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
    """`steps` latents on the straight line from `start` to `end`, both included.

    Parameters
    ----------
    start, end : (L,) float
    steps : int

    Returns
    -------
    numpy.ndarray
        (steps, L) float32.
    """
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return (1 - t) * np.asarray(start, np.float32)[None] + t * np.asarray(end, np.float32)[None]


def route(centres: np.ndarray, order: list[int], steps_per_leg: int) -> np.ndarray:
    """Straight legs between consecutive centres of `order`.

    Parameters
    ----------
    centres : (K, L) float
    order : list of int
        The order in which the centres are visited.
    steps_per_leg : int

    Returns
    -------
    numpy.ndarray
        (len(order) - 1, steps_per_leg, L) float32.
    """
    return np.stack([interpolate(centres[a], centres[b], steps_per_leg) for a, b in itertools.pairwise(order)])


def nearest_partners(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Index into `candidates` of the Euclidean-nearest candidate of each query.

    Parameters
    ----------
    queries : (Q, L) float
    candidates : (M, L) float

    Returns
    -------
    numpy.ndarray
        (Q,) int64.
    """
    q = np.asarray(queries, np.float64)
    c = np.asarray(candidates, np.float64)
    d2 = (q**2).sum(1)[:, None] - 2 * q @ c.T + (c**2).sum(1)[None]
    return np.argmin(d2, axis=1)
