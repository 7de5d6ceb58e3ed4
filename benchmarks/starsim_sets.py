"""Simulated star/galaxy sets for the star-separation benchmarks, in blocks by a process pool."""

from __future__ import annotations

from multiprocessing import Pool

import numpy as np

from galhpc.data.sources import Block
from galhpc.data.starsim import StarSimOptions, simulate_block

BLOCK_ROWS = 250


def simulate_set(opts: StarSimOptions, size: int, seed: int, n: int, workers: int) -> list[Block]:
    """Stamps 0..n-1 (size x size, the bands of `opts`) of the set `seed`, simulated in blocks of
    `BLOCK_ROWS` objects by `workers` processes; the blocks in order."""
    tasks = [(opts, size, seed, a, min(a + BLOCK_ROWS, n)) for a in range(0, n, BLOCK_ROWS)]
    with Pool(workers) as pool:
        return pool.starmap(simulate_block, tasks)


def simulate_arrays(opts: StarSimOptions, size: int, seed: int, n: int,
                    workers: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Simulate the set `seed` (see `simulate_set`) as whole arrays.

    Parameters
    ----------
    opts : StarSimOptions
        What the stamps hold.
    size : int
        Stamp side in pixels.
    seed : int
        The set: sets of other seeds are independent draws.
    n : int
        Number of stamps.
    workers : int
        Simulation processes.

    Returns
    -------
    images : numpy.ndarray
        (n, bands, size, size) stamps.
    truth : dict of str to numpy.ndarray
        The blocks' labels and extras (e.g. ``is_star`` (n,), ``masks`` (n, size, size)), each whole.
    """
    blocks = simulate_set(opts, size, seed, n, workers)
    columns = {**blocks[0].labels, **blocks[0].extras}
    truth = {name: np.concatenate([{**b.labels, **b.extras}[name] for b in blocks]) for name in columns}
    return np.concatenate([b.images for b in blocks]), truth
