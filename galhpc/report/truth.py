"""Truth recovery: what a model's latents and clusters know about held-out ground truth.

Measured next to two baselines on the same pixels (numpy + scikit-learn, no model code).

For N held-out objects the caller gives the model's latents μ (N, L), its clusters (N,),
the pixels the model saw (N, H*W) and the store's label columns.  The same numbers are
computed for

- the model: probes and kNN on μ, NMI/ARI/η² of its clusters;
- ``pca``: PCA with L components fitted on the same pixels (probes and kNN on its scores,
  out-of-fold reconstruction MSE);
- ``pca_gmm``: a GaussianMixture with the model's K on those PCA scores (NMI/ARI/η²).

Column roles (`column_roles`): class columns are integer labels with 2..20 distinct
values; numeric truth columns are float labels that are neither nuisance nor excluded;
nuisance columns (S/N, flux, noise, PSF) are what clusters should *not* follow, reported
as η² (fraction of their variance explained by the clusters, of log10 for positive-valued
columns) and flagged above `ETA2_FLAG`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from galhpc.mixture.metrics import label_agreement

# flux_norm, minmax_*: prep's per-object intensity coefficients (a flux and a sky level)
NUISANCE = ("snr", "flux", "border_noise", "psf_fwhm", "noise_sigma", "flux_norm", "minmax_offset", "minmax_scale")
# angle: circular; positions and companion geometry: sign-symmetric offsets, not morphology;
# companion_flux: a flux; width/non_uniformity: image-quality measurements of the prep step;
# pixel_scale, resample_factor: how the stamp was sampled, not what it shows
EXCLUDED = ("angle", "shift_x", "shift_y", "companion_dx", "companion_dy", "companion_flux", "width",
            "non_uniformity", "object_id", "source_index", "pixel_scale", "resample_factor")
MAX_CLASSES = 20
N_FOLDS = 5
KNN_K = 10
ETA2_FLAG = 0.10  # clusters explaining more than 10 % of a nuisance's variance are flagged
RIDGE_ALPHAS = np.logspace(-3, 3, 13)
GMM_FULL_MAX_DIM = 32


@dataclass(frozen=True)
class ColumnRoles:
    """Names of the label columns per role."""

    classes: tuple[str, ...]
    truths: tuple[str, ...]
    nuisances: tuple[str, ...]


def column_roles(labels: Mapping[str, np.ndarray], nuisance: Sequence[str] = NUISANCE,
                 exclude: Sequence[str] = EXCLUDED, class_columns: Sequence[str] | None = None,
                 truth_columns: Sequence[str] | None = None) -> ColumnRoles:
    """Split label columns into class, numeric-truth and nuisance roles.

    Parameters
    ----------
    labels : mapping name -> (N,) array
        Label columns (integer, bool or float).
    nuisance : sequence of str
        Columns the clusters should not follow (those present are used).
    exclude : sequence of str
        Columns in no role (circular angles, offsets, quality metrics).
    class_columns, truth_columns : sequence of str, optional
        Explicit lists; None applies the rules: integer/bool columns with 2..`MAX_CLASSES`
        distinct values (negative values = missing) are classes, float columns not in
        `nuisance` or `exclude` are numeric truths.

    Returns
    -------
    ColumnRoles
    """
    skip = set(nuisance) | set(exclude)
    if class_columns is None:
        class_columns = [n for n, v in labels.items() if n not in skip and np.asarray(v).dtype.kind in "biu"
                         and 2 <= len(np.unique(np.asarray(v)[np.asarray(v) >= 0])) <= MAX_CLASSES]
    if truth_columns is None:
        truth_columns = [n for n, v in labels.items() if n not in skip and np.asarray(v).dtype.kind == "f"]
    return ColumnRoles(tuple(c for c in class_columns if c in labels), tuple(c for c in truth_columns if c in labels),
                       tuple(c for c in nuisance if c in labels))


def _standardised(model):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), model)


def probe_r2(features: np.ndarray, target: np.ndarray, seed: int = 0, n_folds: int = N_FOLDS) -> float:
    """Cross-validated R² of a linear probe features -> target.

    StandardScaler + RidgeCV (alphas `RIDGE_ALPHAS`), `n_folds`-fold KFold shuffled with
    `seed`; the mean of the folds' R².  Rows with a non-finite target are left out.

    Parameters
    ----------
    features : (N, D) float
        What the probe reads (latents μ, PCA scores).
    target : (N,) float
        A numeric truth column; NaN where unknown.
    seed : int
        Shuffle of the folds.
    n_folds : int
        Folds of the cross-validation.

    Returns
    -------
    float
        Mean out-of-fold R² (NaN with fewer than 2 `n_folds` usable rows or a constant target).
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_score

    x, y = np.asarray(features, np.float64), np.asarray(target, np.float64)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(y) < 2 * n_folds or np.ptp(y) == 0:
        return float("nan")
    cv = KFold(n_folds, shuffle=True, random_state=seed)
    return float(cross_val_score(_standardised(RidgeCV(alphas=RIDGE_ALPHAS)), x, y, cv=cv, scoring="r2").mean())


def knn_accuracy(features: np.ndarray, classes: np.ndarray, seed: int = 0, k: int = KNN_K,
                 n_folds: int = N_FOLDS) -> dict[str, float]:
    """Cross-validated kNN accuracy for a class column, with the majority-class rate as chance.

    StandardScaler + KNeighborsClassifier(k), StratifiedKFold(`n_folds`, shuffled with
    `seed`) when every class has `n_folds` members, else KFold; negative classes are missing.

    Parameters
    ----------
    features : (N, D) float
        What the classifier reads (latents μ, PCA scores).
    classes : (N,) int
        A class column; negative where missing.
    seed : int
        Shuffle of the folds.
    k : int
        Neighbours (fewer when a training fold is smaller).
    n_folds : int
        Folds of the cross-validation.

    Returns
    -------
    dict
        ``accuracy`` (mean out-of-fold), ``chance`` (majority-class rate), ``n``, ``n_classes``;
        accuracy NaN with fewer than 2 `n_folds` rows or one class.
    """
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    x, y = np.asarray(features, np.float64), np.asarray(classes, np.int64)
    keep = y >= 0
    x, y = x[keep], y[keep]
    _, counts = np.unique(y, return_counts=True)
    out = {"n": int(len(y)), "n_classes": int(len(counts)),
           "chance": float(counts.max() / len(y)) if len(y) else float("nan"), "accuracy": float("nan")}
    if len(y) < 2 * n_folds or len(counts) < 2:
        return out
    splitter = StratifiedKFold if counts.min() >= n_folds else KFold
    cv = splitter(n_folds, shuffle=True, random_state=seed)
    model = _standardised(KNeighborsClassifier(n_neighbors=min(k, len(y) - len(y) // n_folds - 1)))
    out["accuracy"] = float(cross_val_score(model, x, y, cv=cv, scoring="accuracy").mean())
    return out


def eta_squared(values: np.ndarray, clusters: np.ndarray) -> float:
    """Correlation ratio η² = between-cluster variance / total variance of `values`.

    Parameters
    ----------
    values : (N,) float
        Rows with a non-finite value or a negative cluster are left out.
    clusters : (N,) int

    Returns
    -------
    float
        In [0, 1]; NaN for fewer than 2 rows or constant values (e.g. one PSF for all).
    """
    v, c = np.asarray(values, np.float64), np.asarray(clusters, np.int64)
    keep = np.isfinite(v) & (c >= 0)
    v, c = v[keep], c[keep]
    if len(v) < 2 or np.ptp(v) == 0:
        return float("nan")
    total = float(((v - v.mean()) ** 2).sum())
    _, inverse, counts = np.unique(c, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=v) / counts
    return float((counts * (means - v.mean()) ** 2).sum() / total)


def nuisance_scale(values: np.ndarray) -> tuple[np.ndarray, str]:
    """log10 of a column whose finite values are all positive (S/N, flux, σ), else the column.

    Parameters
    ----------
    values : (N,) float

    Returns
    -------
    values : numpy.ndarray
        (N,) float64, non-finite values kept as NaN.
    scale : str
        "log10" or "linear".
    """
    v = np.asarray(values, np.float64)
    finite = v[np.isfinite(v)]
    if len(finite) and finite.min() > 0:
        return np.log10(np.where(np.isfinite(v), v, np.nan)), "log10"
    return v, "linear"


def cluster_scores(clusters: np.ndarray, labels: Mapping[str, np.ndarray], roles: ColumnRoles) -> dict[str, Any]:
    """NMI/ARI of `clusters` against every class column and η² of every nuisance column.

    NMI and ARI are `galhpc.mixture.metrics.label_agreement`'s (rows with a negative class or
    cluster left out).

    Parameters
    ----------
    clusters : (N,) int
        Negative where an object has none.
    labels : mapping of str to numpy.ndarray
        Label columns, (N,) each.
    roles : ColumnRoles
        Which columns are classes and nuisances.

    Returns
    -------
    dict
        ``n_clusters``; ``nmi``/``ari``: class name -> float; ``eta2``: nuisance name -> float;
        ``eta2_scale``: nuisance name -> "log10"/"linear"; ``nuisance_flagged``: the nuisances
        with η² > `ETA2_FLAG`.
    """
    c = np.asarray(clusters, np.int64)
    out: dict[str, Any] = {"n_clusters": int(len(np.unique(c[c >= 0]))), "nmi": {}, "ari": {}, "eta2": {},
                           "eta2_scale": {}}
    for name in roles.classes:
        agreement = label_agreement(np.asarray(labels[name], np.int64), c)
        out["nmi"][name], out["ari"][name] = agreement["nmi"], agreement["ari"]
    for name in roles.nuisances:
        values, out["eta2_scale"][name] = nuisance_scale(labels[name])
        out["eta2"][name] = eta_squared(values, c)
    out["nuisance_flagged"] = [n for n, v in out["eta2"].items() if np.isfinite(v) and v > ETA2_FLAG]
    return out


def feature_scores(features: np.ndarray, labels: Mapping[str, np.ndarray], roles: ColumnRoles,
                   seed: int = 0) -> dict[str, Any]:
    """Probe R² per numeric truth column and kNN accuracy per class column of `features`.

    Parameters
    ----------
    features : (N, D) float
    labels : mapping of str to numpy.ndarray
    roles : ColumnRoles
    seed : int
        Shuffle of the folds.

    Returns
    -------
    dict
        ``probe_r2``: truth name -> `probe_r2`; ``knn``: class name -> `knn_accuracy`.
    """
    return {"probe_r2": {n: probe_r2(features, labels[n], seed) for n in roles.truths},
            "knn": {n: knn_accuracy(features, labels[n], seed) for n in roles.classes}}


def pca_scores(pixels: np.ndarray, n_components: int, seed: int = 0) -> np.ndarray:
    """Scores of a PCA fitted on `pixels` (full SVD, deterministic).

    Parameters
    ----------
    pixels : (N, P) float
        Flattened stamps.
    n_components : int
        L, the model's latent size.
    seed : int

    Returns
    -------
    numpy.ndarray
        (N, n_components) float64.
    """
    from sklearn.decomposition import PCA

    return PCA(n_components=n_components, svd_solver="full", random_state=seed).fit_transform(
        np.asarray(pixels, np.float64))


def gmm_covariance(dim: int) -> str:
    """Covariance type of the GaussianMixtures here.

    "full" up to `GMM_FULL_MAX_DIM` dimensions, "diag" above (a full covariance of e.g. a
    VQ-VAE's 4096-d latents is neither estimable from a few hundred objects nor affordable).

    Parameters
    ----------
    dim : int
        Dimensions of the data.

    Returns
    -------
    str
    """
    return "full" if dim <= GMM_FULL_MAX_DIM else "diag"


def pca_gmm_clusters(scores: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Hard clusters of a GaussianMixture fitted on `scores`.

    sklearn's GaussianMixture(n_clusters, covariance `gmm_covariance(D)`, random_state=seed).

    Parameters
    ----------
    scores : (N, D) float
    n_clusters : int
    seed : int

    Returns
    -------
    numpy.ndarray
        (N,) int64 clusters.
    """
    from sklearn.mixture import GaussianMixture

    x = np.asarray(scores, np.float64)
    return GaussianMixture(n_components=n_clusters, covariance_type=gmm_covariance(x.shape[1]),
                           random_state=seed).fit_predict(x)


def pca_reconstruction(pixels: np.ndarray, n_components: int, seed: int = 0, n_folds: int = N_FOLDS) -> np.ndarray:
    """Out-of-fold PCA reconstructions.

    Each row is reconstructed by a PCA with `n_components` fitted on the other folds (KFold
    shuffled with `seed`), so no stamp is reconstructed by components fitted on itself.

    Parameters
    ----------
    pixels : (N, P) float
    n_components : int
        Capped at the fold's rows and P.
    seed : int
    n_folds : int

    Returns
    -------
    numpy.ndarray
        (N, P) float64.
    """
    from sklearn.decomposition import PCA
    from sklearn.model_selection import KFold

    x = np.asarray(pixels, np.float64)
    out = np.empty_like(x)
    for fit, held in KFold(min(n_folds, len(x)), shuffle=True, random_state=seed).split(x):
        pca = PCA(n_components=min(n_components, len(fit), x.shape[1]), svd_solver="full").fit(x[fit])
        out[held] = pca.inverse_transform(pca.transform(x[held]))
    return out


def truth_recovery(latents: np.ndarray, components: np.ndarray | None, pixels: np.ndarray,
                   labels: Mapping[str, np.ndarray], n_clusters: int | None = None, seed: int = 0,
                   recons: np.ndarray | None = None, roles: ColumnRoles | None = None) -> dict[str, Any]:
    """Truth recovery of a model and of PCA / PCA+GMM on the same held-out objects.

    Parameters
    ----------
    latents : (N, L) float
        The model's posterior means μ.
    components : (N,) int or None
        The model's clusters (negative = none); None leaves the model's cluster scores out.
    pixels : (N, P) float
        The held-out images as the model sees them, flattened (P = C*H*W).
    labels : mapping name -> (N,) array
        Store label columns of the same objects.
    n_clusters : int, optional
        K of the model (its mixture size); default the number of distinct `components`.
        PCA+GMM uses this K.
    seed : int
        Seed of the folds, PCA and GaussianMixture.
    recons : (N, P) float, optional
        The model's reconstructions of `pixels`: adds ``mse`` to the model and an
        out-of-fold PCA-L ``mse`` (`pca_reconstruction`).
    roles : ColumnRoles, optional
        Default `column_roles(labels)`.

    Returns
    -------
    dict
        {"model": {...}, "pca": {...}, "pca_gmm": {...}, "roles": {...}, "n_objects", "latent_dim",
        "pca_components" (L, or fewer when N or P is smaller), "n_clusters", "gmm_covariance"}:
        ``probe_r2``/``knn`` (model, pca), ``nmi``/``ari``/``eta2`` (model, pca_gmm);
        JSON-ready (NaN where a score is undefined).

    Raises
    ------
    ValueError
        If the arrays do not have N rows each, or K is unknown (no components, no n_clusters).
    """
    latents = np.asarray(latents, np.float64)
    pixels = np.asarray(pixels, np.float64).reshape(len(pixels), -1)
    n, dim = latents.shape
    lengths = {"pixels": len(pixels), **{f"labels/{k}": len(v) for k, v in labels.items()}}
    if components is not None:
        lengths["components"] = len(components)
    if bad := {k: v for k, v in lengths.items() if v != n}:
        raise ValueError(f"truth recovery: latents have {n} rows but {bad}")
    roles = roles or column_roles(labels)
    if n_clusters is None:
        if components is None:
            raise ValueError("truth recovery: give the model's components or n_clusters (the K of PCA+GMM)")
        n_clusters = int(len(np.unique(np.asarray(components)[np.asarray(components) >= 0])))
    n_pca = min(dim, *pixels.shape)  # L, unless the latent is wider than the pixels or the sample
    scores = pca_scores(pixels, n_pca, seed)
    model = feature_scores(latents, labels, roles, seed)
    if components is not None:
        model |= cluster_scores(components, labels, roles)
    pca = feature_scores(scores, labels, roles, seed)
    if recons is not None:
        recons = np.asarray(recons, np.float64).reshape(n, -1)
        model["mse"] = float(((pixels - recons) ** 2).mean())
        pca["mse"] = float(((pixels - pca_reconstruction(pixels, n_pca, seed)) ** 2).mean())
    pca_gmm = cluster_scores(pca_gmm_clusters(scores, n_clusters, seed), labels, roles)
    return {"n_objects": n, "latent_dim": dim, "pca_components": n_pca, "n_clusters": int(n_clusters), "seed": seed,
            "gmm_covariance": gmm_covariance(n_pca),
            "roles": {"classes": list(roles.classes), "truths": list(roles.truths),
                      "nuisances": list(roles.nuisances)},
            "model": model, "pca": pca, "pca_gmm": pca_gmm}


def table_rows(result: Mapping[str, Any]) -> list[tuple[str, str, float, float, float | None]]:
    """Rows of a `truth_recovery` result, model beside its baseline.

    Probe R² and kNN accuracy against PCA, NMI/ARI and η² against PCA+GMM, MSE against PCA.

    Parameters
    ----------
    result : mapping
        `truth_recovery`'s result.

    Returns
    -------
    list of tuple
        (metric, column, model, baseline, chance or None) per row.
    """
    m, p, g = result["model"], result["pca"], result["pca_gmm"]
    rows: list[tuple[str, str, float, float, float | None]] = []
    rows += [("probe R²", c, m["probe_r2"][c], p["probe_r2"][c], None) for c in m["probe_r2"]]
    rows += [("kNN accuracy", c, m["knn"][c]["accuracy"], p["knn"][c]["accuracy"], m["knn"][c]["chance"])
             for c in m["knn"]]
    for key, name in (("nmi", "cluster NMI"), ("ari", "cluster ARI"), ("eta2", "nuisance η²")):
        rows += [(name, c, m[key][c], g[key][c], None) for c in m.get(key, {})]
    if "mse" in m:
        rows.append(("held-out MSE", "pixels", m["mse"], p["mse"], None))
    return rows


def format_table(result: Mapping[str, Any]) -> str:
    """Plain-text table of `table_rows`: model against PCA (probes, kNN, MSE) or PCA+GMM (clusters).

    Parameters
    ----------
    result : mapping
        What `truth_recovery` returned (its sizes head the table).

    Returns
    -------
    str
        Lines joined by newlines, a header first.
    """
    lines = [f"{result['n_objects']} held-out objects, L = {result['latent_dim']}, K = {result['n_clusters']}, "
             f"PCA-{result['pca_components']}, GMM covariance {result['gmm_covariance']}",
             f"{'metric':<14}{'column':<16}{'model':>9}{'baseline':>10}{'chance':>8}  baseline"]
    for metric, column, model, base, chance in table_rows(result):
        which = "PCA+GMM" if metric.startswith(("cluster", "nuisance")) else f"PCA-{result['pca_components']}"
        chance_text = f"{chance:8.3f}" if chance is not None else " " * 8
        flag = "  (> 0.10: clusters follow a nuisance)" if metric == "nuisance η²" and model > ETA2_FLAG else ""
        lines.append(f"{metric:<14}{column:<16}{model:9.3f}{base:10.3f}{chance_text}  {which}{flag}")
    return "\n".join(lines)
