"""Figures of a fidelity test (matplotlib, Agg).

Overlaid histograms per statistic, and generated stamps beside their nearest training and
held-out real stamps.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from galhpc.extras import require
from galhpc.fidelity import compare
from galhpc.runtime.files import atomic_path

if TYPE_CHECKING:
    from galhpc.fidelity.score import FidelityResult


def _pyplot():
    matplotlib = require("matplotlib", "report", "the figures of galhpc-fidelity")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    """Lay the figure out, write it atomically (format from path's suffix) and close it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip("."))
    plt.close(fig)
    return path


def histograms(result: FidelityResult, path: Path) -> Path:
    """One panel per statistic: real and generated histograms overlaid on the same bins.

    Each panel's title gives the KS distance against its real-vs-real floor; the figure's
    title the classifier AUC against its floor.

    Parameters
    ----------
    result : FidelityResult
        The scored test (its rows, real and generated tables, classifier AUCs).
    path : pathlib.Path
        Output image; the format is taken from its suffix (e.g. ".png"), written atomically.

    Returns
    -------
    pathlib.Path
        `path`, now holding one panel per statistic.

    Raises
    ------
    galhpc.extras.MissingExtraError
        If matplotlib (the "report" extra) is not installed.
    """
    plt = _pyplot()
    rows = result.rows
    ncol = 4
    nrow = -(-len(rows) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
    for ax, row in zip(axes.ravel(), rows, strict=False):
        name = row["statistic"]
        real, gen = result.real_table[name], result.generated_table[name]
        both = np.concatenate([real[np.isfinite(real)], gen[np.isfinite(gen)]])
        if len(both):
            bins = np.linspace(*np.percentile(both, [1, 99]), 25) if np.ptp(both) > 0 else 10
            ax.hist(real[np.isfinite(real)], bins, density=True, alpha=0.5, label="real")
            ax.hist(gen[np.isfinite(gen)], bins, density=True, histtype="step", lw=1.5, label="generated")
        ax.set_title(f"{name}\nKS {row['ks']:.2f} (floor {row['floor_ks']:.2f})", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(rows):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Generated against held-out real; classifier AUC {result.classifier['auc']:.2f} "
                 f"(floor {result.classifier_floor['auc']:.2f})", fontsize=10)
    return _save(plt, fig, path)


def nearest_grid(generated: np.ndarray, real: np.ndarray, training: np.ndarray, path: Path, n_show: int = 8) -> Path:
    """Grid of generated stamps above their nearest training and held-out real stamps.

    Nearest is by Euclidean pixel distance; the distances are in the panel titles.  Stamps
    are shown on an arcsinh stretch scaled by each stamp's standard deviation.

    Parameters
    ----------
    generated : numpy.ndarray
        Generated stamps, (n, H, W) or (n, C, H, W) (band-averaged for display and distance).
    real : numpy.ndarray
        Held-out real stamps, same layout.
    training : numpy.ndarray
        Training stamps, same layout.
    path : pathlib.Path
        Output image; the format is taken from its suffix, written atomically.
    n_show : int, optional
        Generated stamps shown, one per column (default 8).

    Returns
    -------
    pathlib.Path
        `path`, now holding the grid (3 rows, a column per generated stamp shown).

    Raises
    ------
    galhpc.extras.MissingExtraError
        If matplotlib (the "report" extra) is not installed.
    """
    plt = _pyplot()
    from galhpc.fidelity.morphology import as_2d_stack

    gen = as_2d_stack(generated)[:n_show]
    train2d, real2d = as_2d_stack(training), as_2d_stack(real)
    d_train, i_train = compare.nearest_distances(gen, train2d)
    d_real, i_real = compare.nearest_distances(gen, real2d)
    panels = [("generated", gen, None), ("nearest training", train2d[i_train], d_train),
              ("nearest held-out real", real2d[i_real], d_real)]
    fig, axes = plt.subplots(3, len(gen), figsize=(1.4 * len(gen), 4.6), squeeze=False)
    for r, (label, stamps, dist) in enumerate(panels):
        for c, stamp in enumerate(stamps):
            ax = axes[r, c]
            ax.imshow(np.arcsinh(stamp / max(np.std(stamp), 1e-12)), cmap="gray_r", origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if dist is not None:
                ax.set_title(f"d={dist[c]:.3g}", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=8)
    return _save(plt, fig, path)
