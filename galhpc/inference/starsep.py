"""Star/galaxy separation: baselines, scores and ROC evaluation on held-out data (issue 8).

Scores are "larger = more galaxy-like" and are produced without labels:
- the hierarchical model's `p_galaxy` (sign of its peaked latent, oriented by concentration);
- the baselines of the seed: latents of a VAE (plain or with the double-peaked "revised
  KL") embedded to one dimension by Isomap or t-SNE, oriented by the same concentration
  rule, and classified by thresholding at a prior star fraction.
Labels are used only by `roc` / `accuracy_at_fraction`, to evaluate.

Models are trained for these evaluations by `galhpc.train.arrays.fit_arrays` (in memory)
or the trainer; embeddings come from `galhpc.runtime.batching.run_batched`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from galhpc.extras import require
from galhpc.models.base import GalaxyModel
from galhpc.models.hvae import concentration, normalise_stamps
from galhpc.runtime.batching import run_batched, to_numpy

MANIFOLDS = ("isomap", "tsne")


def encode_arrays(model: GalaxyModel, images: np.ndarray,
                  batch_size: int = 256) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Posterior means and the model's extra columns of images, in eval mode.

    Parameters
    ----------
    model : GalaxyModel
        The encoder.
    images : numpy.ndarray
        (N, C, H, W) float32.
    batch_size : int, optional
        Images per forward pass.

    Returns
    -------
    (numpy.ndarray, dict of str to numpy.ndarray)
        μ (N, L) and the extra columns (N, ...) by name.
    """
    def one(x: torch.Tensor, _: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        enc = model.encode(x)
        return to_numpy(enc.mu), {name: to_numpy(v) for name, v in model.extra_columns(x, enc).items()}

    parts = run_batched(model, one, images, batch_size=batch_size, dtype=torch.float32)
    extras: dict[str, list[np.ndarray]] = {}
    for _, extra in parts:
        for name, value in extra.items():
            extras.setdefault(name, []).append(value)
    return np.concatenate([mu for mu, _ in parts]), {k: np.concatenate(v) for k, v in extras.items()}


def stamp_concentration(images: np.ndarray, stretch: float = 10.0) -> np.ndarray:
    """The label-free orientation statistic of `galhpc.models.hvae.concentration`.

    Parameters
    ----------
    images : numpy.ndarray
        (N, C, H, W) stamps.
    stretch : float, optional
        The arcsinh stretch of `normalise_stamps`.

    Returns
    -------
    numpy.ndarray
        (N,) concentration.
    """
    x = normalise_stamps(torch.as_tensor(images, dtype=torch.float32), stretch)
    return concentration(x).numpy()


def embed_1d(latents: np.ndarray, method: str = "isomap", n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """One-dimensional manifold embedding of latents by Isomap or t-SNE (sklearn).

    Parameters
    ----------
    latents : numpy.ndarray
        (N, L), standardised first.
    method : str, optional
        ``isomap`` or ``tsne``.
    n_neighbors : int, optional
        Isomap neighbours.
    seed : int, optional
        t-SNE random state.

    Returns
    -------
    numpy.ndarray
        (N,) coordinate.

    Raises
    ------
    ValueError
        An unknown method.
    """
    from sklearn.manifold import TSNE, Isomap
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(latents)
    if method == "isomap":
        return Isomap(n_neighbors=n_neighbors, n_components=1).fit_transform(x)[:, 0]
    if method == "tsne":
        return TSNE(n_components=1, perplexity=30.0, init="pca", random_state=seed).fit_transform(x)[:, 0]
    raise ValueError(f"unknown manifold method {method!r}; known: {MANIFOLDS}")


def orient_by_concentration(score: np.ndarray, conc: np.ndarray) -> np.ndarray:
    """Flip a 1-D score so that it decreases with concentration (galaxies high), label-free.

    Parameters
    ----------
    score : numpy.ndarray
        (N,) score.
    conc : numpy.ndarray
        (N,) `stamp_concentration`.

    Returns
    -------
    numpy.ndarray
        (N,) `score` or ``-score``.
    """
    return -score if np.corrcoef(score, conc)[0, 1] > 0 else score


def threshold_by_fraction(score: np.ndarray, star_fraction: float) -> np.ndarray:
    """Classify with a prior star fraction: the lowest `star_fraction` of scores are stars.

    Parameters
    ----------
    score : numpy.ndarray
        (N,) score, galaxies high.
    star_fraction : float
        In (0, 1).

    Returns
    -------
    numpy.ndarray
        is_galaxy (N,) bool.

    Raises
    ------
    ValueError
        A fraction outside (0, 1).
    """
    if not 0.0 < star_fraction < 1.0:
        raise ValueError(f"star_fraction must lie in (0, 1), got {star_fraction}")
    return score > np.quantile(score, star_fraction)


@dataclass
class RocCurve:
    """A method's ROC on held-out data (galaxy = positive class)."""

    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


def roc(name: str, is_galaxy: np.ndarray, score: np.ndarray) -> RocCurve:
    """A method's ROC curve and AUC (galaxy = positive class).

    Parameters
    ----------
    name : str
        The method, for the legend.
    is_galaxy : numpy.ndarray
        (N,) bool truth.
    score : numpy.ndarray
        (N,) score, galaxies high.

    Returns
    -------
    RocCurve
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(is_galaxy, score)
    return RocCurve(name, fpr, tpr, float(roc_auc_score(is_galaxy, score)))


def plot_rocs(curves: list[RocCurve], path: str | Path, title: str = "Star/galaxy separation (held-out)") -> Path:
    """One PNG with the ROC of every method and its AUC in the legend.

    Parameters
    ----------
    curves : list of RocCurve
        The methods.
    path : str or Path
        The PNG to write.
    title : str, optional
        Title of the full-range panel.

    Returns
    -------
    Path
        `path`.
    """
    matplotlib = require("matplotlib", "report", "star/galaxy separation figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    for ax, zoom in zip(axes, (False, True), strict=False):
        for curve in curves:
            ax.plot(curve.fpr, curve.tpr, label=f"{curve.name} (AUC {curve.auc:.4f})")
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
        ax.set(xlabel="false positive rate (stars called galaxies)", ylabel="true positive rate (galaxies)")
        if zoom:
            ax.set(xlim=(0, 0.1), ylim=(0.9, 1.0), title="top-left corner")
        else:
            ax.set(title=title)
            ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


SEGMENT_CLASSES = ("background", "star", "galaxy")


def segmentation_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pixel accuracy, IoU per class and mean IoU of class maps against truth.

    Parameters
    ----------
    predicted : numpy.ndarray
        (N, H, W) class maps (0 background, 1 star, 2 galaxy).
    truth : numpy.ndarray
        (N, H, W) true class maps.

    Returns
    -------
    dict of str to float
        ``pixel_accuracy``, ``iou_<class>`` and ``mean_iou``.

    Raises
    ------
    ValueError
        Maps of different shapes.
    """
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted masks {predicted.shape} and truth masks {truth.shape} differ in shape")
    scores = {"pixel_accuracy": float(np.mean(predicted == truth))}
    ious = []
    for k, name in enumerate(SEGMENT_CLASSES):
        union = np.sum((predicted == k) | (truth == k))
        iou = float(np.sum((predicted == k) & (truth == k)) / union) if union else float("nan")
        scores[f"iou_{name}"] = iou
        ious.append(iou)
    scores["mean_iou"] = float(np.nanmean(ious))
    return scores


def plot_segmentation(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, path: str | Path,
                      rows: int = 6) -> Path:
    """Rows of (stamp, truth map, predicted map) in one PNG.

    Stamps are an arcsinh g-r-i composite where there are >= 4 bands (else the band sum);
    maps are black/blue/orange = background/star/galaxy.

    Parameters
    ----------
    images : numpy.ndarray
        (N, C, H, W) stamps.
    truth, predicted : numpy.ndarray
        (N, H, W) class maps.
    path : str or Path
        The PNG to write.
    rows : int, optional
        Stamps shown.

    Returns
    -------
    Path
        `path`.
    """
    matplotlib = require("matplotlib", "report", "star/galaxy separation figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["black", "tab:blue", "tab:orange"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = min(rows, len(images))
    fig, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows), squeeze=False)
    for i in range(rows):
        x = normalise_stamps(torch.as_tensor(images[i : i + 1], dtype=torch.float32), 10.0)[0].numpy()
        rgb = np.stack([x[3], x[2], x[1]], axis=-1) if x.shape[0] >= 4 else np.repeat(x.sum(0, keepdims=True).T, 3, -1)
        axes[i, 0].imshow(np.clip(rgb, 0, 1), origin="lower")
        axes[i, 1].imshow(truth[i], cmap=cmap, vmin=0, vmax=2, origin="lower", interpolation="nearest")
        axes[i, 2].imshow(predicted[i], cmap=cmap, vmin=0, vmax=2, origin="lower", interpolation="nearest")
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ("stamp (i, r, g)", "truth", "predicted"), strict=False):
        ax.set_title(title, fontsize=9)
    fig.suptitle("background / star (blue) / galaxy (orange)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
