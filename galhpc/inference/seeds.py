"""Randomness keyed by object index, never by rank or batch position in a rank's work.

Every random draw of a catalogue comes from a seed derived from (run seed, object index,
stream) with numpy's SeedSequence, so it does not depend on how many ranks run the job or
which rank makes the object.
"""

from __future__ import annotations

import numpy as np

SAMPLE_STREAM = 0  # the model's `sample` call (latents, component, PixelCNN codes)
NOISE_STREAM = 1  # survey-emulation noise


def derived_seed(seed: int, index: int, stream: int = SAMPLE_STREAM) -> int:
    """A 63-bit seed for object (or block starting at object) `index` of run `seed`.

    Parameters
    ----------
    seed : int
        The run seed, >= 0.
    index : int
        Object index, >= 0.
    stream : int, optional
        Which draws (SAMPLE_STREAM, NOISE_STREAM, ...).

    Returns
    -------
    int
        In [0, 2**63), from numpy's SeedSequence of (seed, stream, index).

    Raises
    ------
    ValueError
        A negative seed or index.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seeds and object indices must be non-negative, got seed={seed}, index={index}")
    state = np.random.SeedSequence([seed, stream, index]).generate_state(2, np.uint32)
    return int((int(state[0]) << 32 | int(state[1])) & (2**63 - 1))
