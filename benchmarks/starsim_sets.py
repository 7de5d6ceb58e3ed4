"""Simulated star/galaxy sets for the star-separation benchmarks, in blocks by a process pool."""

from __future__ import annotations

from multiprocessing import Pool

from galhpc.data.sources import Block
from galhpc.data.starsim import StarSimOptions, simulate_block

BLOCK_ROWS = 250


def simulate_set(opts: StarSimOptions, size: int, seed: int, n: int, workers: int) -> list[Block]:
    """Stamps 0..n-1 (size x size, the bands of `opts`) of the set `seed`, simulated in blocks of
    `BLOCK_ROWS` objects by `workers` processes; the blocks in order."""
    tasks = [(opts, size, seed, a, min(a + BLOCK_ROWS, n)) for a in range(0, n, BLOCK_ROWS)]
    with Pool(workers) as pool:
        return pool.starmap(simulate_block, tasks)
