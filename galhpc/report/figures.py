"""Figure drawing of the science report (matplotlib, Agg): arrays in, one PNG out per call.

No metric is computed here beyond what a plot needs (histogram bins); every function
takes ready arrays and a path, draws, saves and closes its figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from galhpc.extras import require

matplotlib = require("matplotlib", "report", "galhpc-report's figures")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from galhpc.runtime.files import atomic_path  # noqa: E402

DPI = 110


def _display(image: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) -> something imshow draws: grey for 1 channel, RGB of the first 3."""
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        return image
    if image.shape[0] == 1:
        return image[0]
    rgb = np.moveaxis(image[:3], 0, -1)
    if rgb.shape[-1] == 2:
        rgb = np.concatenate([rgb, rgb[..., :1]], axis=-1)
    low, high = np.percentile(rgb, [0.5, 99.5])
    return np.clip((rgb - low) / max(high - low, 1e-12), 0, 1)


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    try:
        with atomic_path(path, fsync=False) as tmp:  # a full disk: OSError naming `path`, no partial PNG
            fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def image_grid(rows: Sequence[np.ndarray], row_labels: Sequence[str], path: Path, title: str = "",
               cmap: str = "gray", symmetric: Sequence[bool] | None = None, cell: float = 1.1,
               ids: Sequence[Sequence[object] | None] | None = None) -> Path:
    """One row of stamps per entry of `rows`; empty cells stay blank.

    Each row shares one colour scale, logarithmic for the flux-like stamps (an arcsinh
    stretch, `matplotlib.colors.AsinhNorm`: linear within the sky noise of all flux rows
    together, logarithmic above it, so faint outskirts and bright cores both show); rows
    flagged in `symmetric` (residuals) use a linear diverging colour map centred on zero, to
    ±the 99.5th percentile of |residual| in the row.

    Parameters
    ----------
    rows : sequence of numpy.ndarray
        Each (n, C, H, W) or (n, H, W); rows may differ in n.
    row_labels : sequence of str
        Label at the left of each row.
    path : Path
        PNG written atomically (no partial file on a full disk).
    title : str
    cmap : str
        Colour map of the non-symmetric rows.
    symmetric : sequence of bool, optional
        Per row: a residual row (diverging colour map centred on zero).
    cell : float
        Size of one stamp in inches.
    ids : sequence, optional
        Per row, the object id (or any short label) printed above each stamp; None for a row
        of model-made stamps without one.

    Returns
    -------
    Path
        `path`.
    """
    from matplotlib.colors import AsinhNorm

    n_cols = max((len(r) for r in rows), default=1) or 1
    height = cell * len(rows) * (1.15 if ids is not None else 1.0) + 0.4
    # the arcsinh stretch's linear part: the sky noise of all flux rows together (MAD), so a
    # model's smooth reconstruction is stretched like the noisy input it reconstructs
    flux_rows = [np.asarray(img, np.float32).ravel() for i, row in enumerate(rows) for img in row
                 if not (symmetric is not None and symmetric[i])]
    pooled = np.concatenate(flux_rows) if flux_rows else np.zeros(1)
    sky = 1.4826 * float(np.median(np.abs(pooled - np.median(pooled))))
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(cell * n_cols + 1.2, height), squeeze=False)
    for i, row in enumerate(rows):
        sym = bool(symmetric[i]) if symmetric is not None else False
        # residuals keep their sign: channels averaged rather than mapped to RGB
        shown = [np.asarray(img, np.float32).reshape(-1, *np.shape(img)[-2:]).mean(axis=0) if sym else _display(img)
                 for img in row]
        if sym:
            # the 99.5th percentile, not the maximum: one hot or masked pixel would wash the row out
            limit = float(np.percentile(np.abs(np.concatenate([img.ravel() for img in shown])), 99.5)) if shown else 1.0
            limit = limit if limit > 0 else 1.0
            scale = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
        else:  # one scale per row, so that brightness differences along a row stay visible
            pixels = np.concatenate([img.ravel() for img in shown]) if shown else np.zeros(1)
            low, high = np.percentile(pixels, [0.5, 99.8])
            high = high if high > low else low + 1e-12
            width = sky if sky > 0 else (high - low) / 100.0
            scale = {"cmap": cmap, "norm": AsinhNorm(linear_width=width, vmin=low, vmax=high)}
        row_ids = ids[i] if ids is not None and i < len(ids) else None
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(shown):
                ax.imshow(shown[j], **(scale if shown[j].ndim == 2 else {}))
                if row_ids is not None and j < len(row_ids):
                    ax.set_title(str(row_ids[j]), fontsize=6, pad=1)
        axes[i, 0].set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def loss_curves(columns: Mapping[str, np.ndarray], x_name: str, phases: np.ndarray | None, path: Path) -> Path:
    """Each loss term against `x_name` (step or epoch), one panel per term, phases shaded.

    The report's one loss-curve figure: the trainer writes losses.csv and draws nothing;
    `galhpc.report.losses.loss_table` turns its rows into `columns`.

    Parameters
    ----------
    columns : mapping of str to numpy.ndarray
        (T,) float per column, the x axis `x_name` among them.
    x_name : str
        The x-axis column.
    phases : numpy.ndarray or None
        (T,) schedule phase of each row, shaded; None draws no shading.
    path : Path
        PNG written atomically (no partial file on a full disk).

    Returns
    -------
    Path
        `path`.
    """
    terms = [k for k in columns if k != x_name]
    fig, axes = plt.subplots(len(terms), 1, figsize=(7, 1.8 * len(terms) + 0.5), sharex=True, squeeze=False)
    x = columns[x_name]
    for ax, term in zip(axes[:, 0], terms, strict=True):
        y = columns[term]
        ax.plot(x, y, lw=1, marker="o" if len(x) <= 30 else None, ms=3)
        if np.all(y[np.isfinite(y)] > 0) and np.nanmax(y) / max(np.nanmin(y), 1e-300) > 10:
            ax.set_yscale("log")
        ax.set_ylabel(term, fontsize=8)
        if phases is not None:
            _shade_phases(ax, x, phases)
    axes[-1, 0].set_xlabel(x_name)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def _shade_phases(ax: plt.Axes, x: np.ndarray, phases: np.ndarray) -> None:
    """Shade the cells of each contiguous run of one phase, one colour per phase.

    A row's cell reaches halfway to its neighbours, so one-row phases (per-epoch logs) are visible too.
    """
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(phases.tolist()))
    half = np.diff(x) / 2 if len(x) > 1 else np.array([0.5])
    edges = np.concatenate([[x[0] - half[0]], x[:-1] + half, [x[-1] + half[-1]]])
    starts = [0] + [i for i in range(1, len(phases)) if phases[i] != phases[i - 1]]
    labelled = set()
    for n, start in enumerate(starts):
        stop = starts[n + 1] if n + 1 < len(starts) else len(phases)
        name = phases[start]
        ax.axvspan(edges[start], edges[stop], color=colours[names.index(name) % len(colours)], alpha=0.12,
                   label=None if name in labelled else str(name))
        labelled.add(name)


def bar(values: Sequence[float], labels: Sequence[str], path: Path, ylabel: str, title: str = "",
        hline: float | None = None, hline_label: str = "", xlabel: str = "") -> Path:
    """Bar chart of `values`, one bar per label, with an optional horizontal reference line.

    Parameters
    ----------
    values : sequence of float
    labels : sequence of str
        Tick label of each bar.
    path : Path
        PNG written atomically (no partial file on a full disk).
    ylabel : str
    title : str
    hline : float, optional
        Height of a dashed reference line (e.g. the overall mean).
    hline_label : str
        Legend text of the line.
    xlabel : str

    Returns
    -------
    Path
        `path`.
    """
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(values) + 2), 3))
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(values)), labels, fontsize=7, rotation=90 if len(values) > 20 else 0)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    if hline is not None:
        ax.axhline(hline, color="k", ls="--", lw=1, label=hline_label)
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def matrix(values: np.ndarray, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Heatmap in [0, 1] with the value written in each cell (for K up to about 20).

    Parameters
    ----------
    values : (K, K) float
        NaN cells stay blank.
    path : Path
        PNG written atomically (no partial file on a full disk).
    xlabel, ylabel, title : str

    Returns
    -------
    Path
        `path`.
    """
    k_rows, k_cols = values.shape
    fig, ax = plt.subplots(figsize=(0.45 * k_cols + 2.5, 0.45 * k_rows + 1.5))
    im = ax.imshow(values, cmap="viridis", vmin=0, vmax=1)
    if max(k_rows, k_cols) <= 20:
        for i in range(k_rows):
            for j in range(k_cols):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="w" if values[i, j] < 0.5 else "k")
    ax.set_xticks(range(k_cols))
    ax.set_yticks(range(k_rows))
    ax.tick_params(labelsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def histograms_per_cluster(values: np.ndarray, clusters: np.ndarray, path: Path, label: str,
                           max_panels: int = 20) -> Path:
    """One small histogram of `values` per cluster (largest clusters first), shared bins.

    Parameters
    ----------
    values : (N,) float
        Non-finite values are left out.
    clusters : (N,) int
    path : Path
        PNG written atomically (no partial file on a full disk).
    label : str
        Name of the values (x-axis label).
    max_panels : int
        Clusters drawn at most.

    Returns
    -------
    Path
        `path`.
    """
    keep = np.isfinite(values)
    ids, counts = np.unique(clusters[keep], return_counts=True)
    ids = np.sort(ids[np.argsort(-counts)][:max_panels])
    finite = values[keep]
    discrete = np.allclose(finite, np.round(finite)) and len(np.unique(finite)) <= 20
    if discrete:
        bins = np.arange(finite.min() - 0.5, finite.max() + 1.5)
    else:
        bins = np.linspace(finite.min(), finite.max(), 21)
    n_cols = min(5, len(ids))
    n_rows = int(np.ceil(len(ids) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.2 * n_cols, 1.8 * n_rows + 0.4), squeeze=False, sharex=True)
    for ax in axes.ravel()[len(ids):]:
        ax.set_visible(False)
    for ax, k in zip(axes.ravel(), ids, strict=False):
        ax.hist(values[keep & (clusters == k)], bins=bins, color="tab:green")
        ax.set_title(f"cluster {k} (n={int((keep & (clusters == k)).sum())})", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{label} per cluster", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def scatter_2d(xy: np.ndarray, colourings: Mapping[str, np.ndarray], path: Path, title: str) -> Path:
    """One panel per colouring of the same 2-D embedding (discrete colourings get a legend).

    Parameters
    ----------
    xy : (N, 2) float
        The embedding (e.g. a t-SNE of μ).
    colourings : mapping of str to numpy.ndarray
        Name -> (N,) colour values (integer classes or floats).
    path : Path
        PNG written atomically (no partial file on a full disk).
    title : str
        Title above the panels.

    Returns
    -------
    Path
        `path`.
    """
    n = len(colourings)
    n_cols = min(4, n)
    n_rows = int(np.ceil(n / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 3.4 * n_rows + 0.4), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    for ax, (name, colour) in zip(axes.ravel(), colourings.items(), strict=False):
        uniq = np.unique(colour)
        if colour.dtype.kind in "biu" and len(uniq) <= 20:
            for k in uniq:
                sel = colour == k
                ax.scatter(xy[sel, 0], xy[sel, 1], s=4, label=str(k))
            ax.legend(fontsize=6, markerscale=2, loc="best")
        else:
            sc = ax.scatter(xy[:, 0], xy[:, 1], s=4, c=colour, cmap="viridis")
            fig.colorbar(sc, ax=ax, fraction=0.046)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def regier_scatter(sse_model: np.ndarray, sse_gaussian: np.ndarray, path: Path, title: str,
                   baseline: np.ndarray | None = None, baseline_label: str = "baseline") -> Path:
    """Per-stamp squared error of the reconstructions against that of the best-fit Gaussian.

    Below the diagonal the reconstruction wins (Regier et al. 2015); log axes.

    Parameters
    ----------
    sse_model : (N,) float
        Squared error of the model's reconstruction of each stamp.
    sse_gaussian : (N,) float
        Squared error of the best-fit bivariate Gaussian.
    path : Path
        PNG written atomically (no partial file on a full disk).
    title : str
    baseline : (N,) float, optional
        Squared error of a baseline reconstruction (e.g. out-of-fold PCA-3).
    baseline_label : str

    Returns
    -------
    Path
        `path`.
    """
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.scatter(sse_gaussian, sse_model, s=5, alpha=0.6, label="model")
    if baseline is not None:
        ax.scatter(sse_gaussian, baseline, s=5, alpha=0.5, marker="x", color="tab:grey", label=baseline_label)
    both = np.concatenate([sse_model, sse_gaussian, [] if baseline is None else baseline])
    both = both[both > 0]
    lims = (both.min() * 0.8, both.max() * 1.25) if len(both) else (1e-3, 1)
    ax.plot(lims, lims, "k--", lw=1, label="equal error")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("squared error, best-fit bivariate Gaussian")
    ax.set_ylabel("squared error, reconstruction")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def distributions(real: Mapping[str, np.ndarray], generated: Mapping[str, np.ndarray],
                  ks: Mapping[str, Mapping[str, float]], path: Path, title: str) -> Path:
    """Overlaid normalised histograms of each statistic, real against generated, KS in titles.

    Parameters
    ----------
    real, generated : mapping of str to numpy.ndarray
        Statistic name -> (N,) values (statmorph tables); NaNs are left out.
    ks : mapping of str to mapping
        Statistic name -> {"ks": distance, ...} (`galhpc.fidelity.morphology.compare_tables`).
    path : Path
        PNG written atomically (no partial file on a full disk).
    title : str

    Returns
    -------
    Path
        `path`.
    """
    names = list(real)
    n_cols = min(4, len(names))
    n_rows = int(np.ceil(len(names) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3 * n_cols, 2.4 * n_rows + 0.4), squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        a, b = real[name][np.isfinite(real[name])], generated[name][np.isfinite(generated[name])]
        if len(a) and len(b):
            bins = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 21)
            ax.hist(a, bins=bins, density=True, histtype="step", lw=1.5, label=f"real ({len(a)})")
            ax.hist(b, bins=bins, density=True, histtype="step", lw=1.5, label=f"generated ({len(b)})")
        ax.set_title(f"{name}  KS={ks[name]['ks']:.2f}", fontsize=8)
        ax.tick_params(labelsize=6)
    if axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, 0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def statistics_vs_condition(x: np.ndarray, real: Sequence[Mapping[str, Sequence[float]]],
                            generated: Sequence[Mapping[str, Sequence[float]]], edges: np.ndarray, path: Path,
                            xlabel: str, title: str) -> Path:
    """Median of each statistic per condition bin against the bin's condition value.

    Real and generated, error bars from the 25th to the 75th percentile; bin edges dotted.

    Parameters
    ----------
    x : (K,) float
        Condition value of each bin.
    real, generated : sequence of mapping
        real[i][name] / generated[i][name] = (25th percentile, median, 75th percentile) of bin i.
    edges : (K + 1,) float
        Bin edges.
    path : Path
        PNG written atomically (no partial file on a full disk).
    xlabel, title : str

    Returns
    -------
    Path
        `path`.
    """
    names = list(real[0]) if len(real) else []
    n_cols = min(4, max(len(names), 1))
    n_rows = max(int(np.ceil(len(names) / n_cols)), 1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3 * n_cols, 2.4 * n_rows + 0.4), squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    x = np.asarray(x, np.float64)
    span = float(edges[-1] - edges[0]) or 1.0
    for ax, name in zip(axes.ravel(), names, strict=False):
        for series, label, shift, marker in ((real, "real", -0.01, "o"), (generated, "generated", 0.01, "s")):
            q = np.array([series[i][name] for i in range(len(x))], np.float64).reshape(len(x), 3)
            err = np.abs(np.stack([q[:, 1] - q[:, 0], q[:, 2] - q[:, 1]]))
            ax.errorbar(x + shift * span, q[:, 1], yerr=err, marker=marker, ms=4, capsize=2, lw=1, label=label)
        for e in edges:
            ax.axvline(e, color="grey", lw=0.5, ls=":")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=7)
        ax.tick_params(labelsize=6)
    if names:
        axes[0, 0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def truth_bars(result: Mapping[str, object], path: Path, flag: float = 0.10) -> Path:
    """Grouped bars of a `truth.truth_recovery` result.

    Probe R² and kNN accuracy (model against PCA; chance as a black tick), cluster NMI per
    class column and η² per nuisance column (model against PCA+GMM; dashed line at `flag`).
    Undefined scores are left blank.

    Parameters
    ----------
    result : mapping
        `galhpc.report.truth.truth_recovery`'s result.
    path : Path
        PNG written atomically (no partial file on a full disk).
    flag : float
        η² above which a nuisance is flagged.

    Returns
    -------
    Path
        `path`.
    """
    m, p, g = result["model"], result["pca"], result["pca_gmm"]
    dim, k = result["pca_components"], result["n_clusters"]
    panels = [
        ("probe R² (5-fold, ridge)", m["probe_r2"], p["probe_r2"], f"PCA-{dim}", None),
        ("kNN accuracy (5-fold)", {c: v["accuracy"] for c, v in m["knn"].items()},
         {c: v["accuracy"] for c, v in p["knn"].items()}, f"PCA-{dim}", {c: v["chance"] for c, v in m["knn"].items()}),
        ("cluster NMI (higher: follows the class)", m.get("nmi", {}), g["nmi"], f"PCA-{dim}+GMM(K={k})", None),
        ("nuisance η² (should stay low)", m.get("eta2", {}), g["eta2"], f"PCA-{dim}+GMM(K={k})", None),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5))
    for ax, (title, ours, base, base_name, chance) in zip(axes.ravel(), panels, strict=True):
        names = list(base)
        x = np.arange(len(names))
        values = [np.asarray([np.nan if d.get(c) is None else d[c] for c in names], np.float64) for d in (ours, base)]
        for i, (v, label, colour) in enumerate(((values[0], "model", "tab:blue"), (values[1], base_name, "tab:grey"))):
            ax.bar(x + (i - 0.5) * 0.38, np.nan_to_num(v), width=0.38, color=colour, label=label)
            for xi, vi in zip(x, v, strict=True):
                ax.text(xi + (i - 0.5) * 0.38, max(vi, 0) if np.isfinite(vi) else 0.0,
                        f"{vi:.2f}" if np.isfinite(vi) else "n/a", ha="center", va="bottom", fontsize=6)
        if chance:
            ax.scatter(x, [chance[c] for c in names], marker="_", s=400, color="k", zorder=3, label="chance")
        if title.startswith("nuisance"):
            ax.axhline(flag, color="tab:red", ls="--", lw=1, label=f"flag {flag:g}")
        ax.set_xticks(x, names, fontsize=7, rotation=20 if len(names) > 4 else 0)
        ax.set_title(title, fontsize=9)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylim(max(min(0.0, float(np.nanmin([*values[0], *values[1], 0.0]))), -0.5) - 0.02, 1.08)
        ax.legend(fontsize=7)
        if not names:
            ax.text(0.5, 0.5, "no such columns", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"Truth recovery on {result['n_objects']} held-out objects", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
