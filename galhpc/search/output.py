"""Search results on disk: the units of a result table's columns and a PNG mosaic.

The table itself is written and read by `galhpc.io.table` (HDF5, FITS or CSV by suffix).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from galhpc.runtime.files import atomic_path


def table_units(columns: Mapping[str, np.ndarray], meta: Mapping[str, object]) -> dict[str, str]:
    """Units of the table columns that have one (`galhpc.io.columns`).

    Parameters
    ----------
    columns : mapping of str to numpy.ndarray
        The result table's columns.
    meta : mapping of str to object
        The catalogue's /meta: the units of the store columns it carries.

    Returns
    -------
    dict of str to str
        ra, dec in deg; a carried store column the unit its store recorded.
    """
    from galhpc.io.columns import column_info

    return {name: unit for name in columns if (unit := column_info(name, meta).unit)}


def write_mosaic(path: str | Path, query_stamps: np.ndarray, neighbour_stamps: np.ndarray, labels: list[str],
                 captions: np.ndarray) -> Path:
    """PNG: one row per query, its stamp then its k neighbours' stamps.

    Each panel is titled (the query's label in red, each neighbour's caption) and drawn on
    a logarithmic colour scale (`matplotlib.colors.AsinhNorm`: linear within the stamp's sky
    noise, logarithmic above it, so a galaxy's faint outskirts and a star's saturated core
    both show).

    Parameters
    ----------
    path : str or Path
        The PNG to write (atomically).
    query_stamps : numpy.ndarray
        Shape (Q, C, H, W) or (Q, H, W), float.
    neighbour_stamps : numpy.ndarray
        Shape (Q, k, C, H, W) or (Q, k, H, W); NaN for an empty slot.
    labels : list of str
        The Q query names.
    captions : numpy.ndarray of str
        Shape (Q, k): neighbour captions (id and distance).

    Returns
    -------
    Path
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_q, k = captions.shape
    fig, axes = plt.subplots(n_q, k + 1, figsize=(1.4 * (k + 1), 1.5 * n_q), squeeze=False)
    for i in range(n_q):
        for j in range(k + 1):
            ax = axes[i, j]
            stamp = query_stamps[i] if j == 0 else neighbour_stamps[i, j - 1]
            plane, norm = _display(stamp)
            ax.imshow(plane, cmap="gray", origin="lower", norm=norm)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(labels[i] if j == 0 else captions[i, j - 1], fontsize=6, color="C3" if j == 0 else "k")
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path


def _display(stamp: np.ndarray):
    """(H, W) plane of a stamp (the channel mean.

    Zeros when it has NaN: an empty slot) and its arcsinh colour scale: linear up to the sky noise (the MAD σ),
    logarithmic above.
    """
    from matplotlib.colors import AsinhNorm

    stamp = np.asarray(stamp, np.float64)
    if stamp.ndim == 3:
        stamp = stamp.mean(axis=0)
    if not np.isfinite(stamp).all():
        return np.zeros_like(stamp), AsinhNorm(linear_width=1.0, vmin=0.0, vmax=1.0)
    lo, hi = np.percentile(stamp, [1, 99.8])
    sky = 1.4826 * float(np.median(np.abs(stamp - np.median(stamp))))
    hi = hi if hi > lo else lo + 1e-12
    return stamp, AsinhNorm(linear_width=sky if sky > 0 else (hi - lo) / 100.0, vmin=lo, vmax=hi)
