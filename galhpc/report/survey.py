"""Scores of a model on real held-out survey stamps, each beside its baseline in the same run.

Real cutouts have no truth columns; what a model must show on them (and a PCA of the same
pixels does not) is measured here, on a held-out set the model never trained on (split by
position on the sky, so no held-out galaxy shares pixels with a training one):

- reconstruction: mean squared error over the valid pixels (the store's `mask` excluded)
  against PCA-10 fitted on the training stamps (out of fold for every held-out stamp);
- Regier's test with the known σ (Regier, McAuliffe & Prabhat 2015; galhpc.report.regier):
  χ²/pixel of the model, PCA-10 and a best-fit six-parameter Gaussian on the valid pixels
  with the store's per-pixel σ, and the fraction of stamps the model wins over PCA-10;
- clusters: η² (galhpc.report.truth.eta_squared) of the nuisances a morphology clustering
  must not follow — log S/N, log sky σ and the position of neighbour light — and the
  largest cluster's share of the objects;
- similarity search: mean precision@5 among hand-labelled objects (same class in the five
  nearest by μ, Euclidean, the labelled objects as the pool), model beside PCA-10 scores;
- frame artefacts: mean |residual| in the stamp corners (outside the inscribed circle)
  over mean |residual| in the annulus just inside it (sky in both): about 1 without
  artefacts, above 1.2 with a rotated-square frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from galhpc.report.regier import fit_gaussian
from galhpc.report.truth import eta_squared, pca_gmm_clusters

PCA_COMPONENTS = 10
SEARCH_K = 5
CORE_RADIUS = 8.0  # pixels: the S/N aperture and the inner edge of the neighbour-light zone


@dataclass
class SurveyStamps:
    """Held-out (or labelled) stamps with their per-pixel σ and mask, row-aligned.

    images, sigma : (N, H, W) float, stored units; mask : (N, H, W) bool, True = bad pixel;
    object_id : (N,) int64.
    """

    images: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    object_id: np.ndarray


def radius_map(size: int) -> np.ndarray:
    """Distance of each pixel from the stamp centre, in pixels.

    Parameters
    ----------
    size : int
        Stamp side.

    Returns
    -------
    numpy.ndarray
        (size, size) float64.
    """
    c = (size - 1) / 2.0
    yy, xx = np.indices((size, size), dtype=np.float64)
    return np.hypot(xx - c, yy - c)


def nuisances(stamps: SurveyStamps) -> dict[str, np.ndarray]:
    """Per-stamp nuisance values.

    `log_snr` (log10 of the S/N in a `CORE_RADIUS` aperture, Σx / √Σσ² over valid pixels),
    `log_noise` (log10 of the median σ), `neighbour_x` / `neighbour_y` (pixels from the
    centre: the centroid of the light and the masked pixels beyond `CORE_RADIUS`, a masked
    pixel weighing 3σ, i.e. a detection).

    Parameters
    ----------
    stamps : SurveyStamps

    Returns
    -------
    dict of str to numpy.ndarray
        Name -> (N,) float64.
    """
    x, s, bad = (np.asarray(a, np.float64) for a in (stamps.images, stamps.sigma, stamps.mask))
    bad = bad > 0
    n, h, w = x.shape
    r = radius_map(h)
    core = (r < CORE_RADIUS)[None] & ~bad
    signal = np.where(core, x, 0.0).sum(axis=(1, 2))
    noise = np.sqrt(np.where(core, s**2, 0.0).sum(axis=(1, 2)))
    outer = (r >= CORE_RADIUS)[None]
    weight = np.where(outer & ~bad, np.clip(x, 0, None), 0.0) + np.where(outer & bad, 3.0 * s, 0.0)
    yy, xx = np.indices((h, w), dtype=np.float64) - (h - 1) / 2.0
    total = np.maximum(weight.sum(axis=(1, 2)), 1e-12)
    return {
        "log_snr": np.log10(np.maximum(signal / np.maximum(noise, 1e-12), 1e-3)),
        "log_noise": np.log10(np.median(s.reshape(n, -1), axis=1)),
        "neighbour_x": (weight * xx).sum(axis=(1, 2)) / total,
        "neighbour_y": (weight * yy).sum(axis=(1, 2)) / total,
    }


def fit_pca(train_images: np.ndarray, n_components: int = PCA_COMPONENTS, seed: int = 0):
    """A scikit-learn PCA with `n_components` fitted on training stamps (full SVD).

    Parameters
    ----------
    train_images : (N, H, W) float
    n_components : int
    seed : int

    Returns
    -------
    sklearn.decomposition.PCA
        Fitted on the flattened stamps.
    """
    from sklearn.decomposition import PCA

    flat = np.asarray(train_images, np.float64).reshape(len(train_images), -1)
    return PCA(n_components=n_components, svd_solver="full", random_state=seed).fit(flat)


def gappy_pca_reconstructions(train: SurveyStamps, held: SurveyStamps, n_components: int = PCA_COMPONENTS,
                              iterations: int = 10) -> np.ndarray:
    """PCA-`n_components` reconstructions of the held-out stamps that never see a masked pixel.

    Gappy PCA (Everson & Sirovich 1995, Connolly & Szalay 1999).

    The basis is fitted to the training stamps by EM: masked pixels start at the pixel's
    mean over the stamps where it is valid, then are replaced by their PCA reconstruction
    `iterations` times; each held-out stamp's coefficients are the least-squares fit to its
    valid pixels only.  This is the baseline of a model whose likelihood leaves masked
    pixels out (a plain PCA spends components on the neighbours' fill and the clipped
    saturated cores, which no score counts).

    Parameters
    ----------
    train, held : SurveyStamps
        Training and held-out stamps (images (N, H, W), mask True = bad pixel).
    n_components : int
        L.
    iterations : int
        EM passes over the training stamps.

    Returns
    -------
    numpy.ndarray
        (N_held, H, W) float64 reconstructions, stored units.
    """
    x = np.asarray(train.images, np.float64).reshape(len(train.images), -1)
    valid = ~np.asarray(train.mask, bool).reshape(x.shape)
    mean = np.where(valid, x, 0.0).sum(0) / np.maximum(valid.sum(0), 1)
    filled = np.where(valid, x, mean)
    for _ in range(iterations):
        centre = filled.mean(0)
        basis = np.linalg.svd(filled - centre, full_matrices=False)[2][:n_components]
        filled = np.where(valid, x, centre + (filled - centre) @ basis.T @ basis)
    centre = filled.mean(0)
    basis = np.linalg.svd(filled - centre, full_matrices=False)[2][:n_components]
    y = np.asarray(held.images, np.float64).reshape(len(held.images), -1)
    good = ~np.asarray(held.mask, bool).reshape(y.shape)
    out = np.empty_like(y)
    for i in range(len(y)):  # one L-parameter least-squares fit per stamp
        coeffs = np.linalg.lstsq(basis[:, good[i]].T, (y[i] - centre)[good[i]], rcond=None)[0]
        out[i] = centre + coeffs @ basis
    return out.reshape(np.shape(held.images))


def reconstruction_scores(stamps: SurveyStamps, recons: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Masked MSE, χ²/pixel and corner/annulus residual ratio of each named reconstruction.

    Plus a best-fit Gaussian per stamp ("gaussian").

    Parameters
    ----------
    stamps : SurveyStamps
        Images, per-pixel σ and mask (True = bad pixel).
    recons : mapping of str to numpy.ndarray
        Name -> (N, H, W) reconstruction, in the stamps' units.

    Returns
    -------
    dict
        name -> {"mse", "chi2_per_pixel", "corner_ratio"}; and "wins" -> {name: fraction of
        stamps where "model" has the lower χ² than `name`} when a "model" entry is given.
    """
    x = np.asarray(stamps.images, np.float64)
    s = np.asarray(stamps.sigma, np.float64)
    valid = ~(np.asarray(stamps.mask) > 0)
    n, h, _ = x.shape
    gauss = np.empty_like(x)
    for i in range(n):
        gauss[i] = fit_gaussian(x[i]).image((h, h))
    r = radius_map(h)
    corners, annulus = (r > h / 2.0)[None] & valid, ((r > 0.7 * h / 2) & (r <= h / 2.0 - 1))[None] & valid
    out: dict[str, dict[str, float]] = {}
    chi2 = {}
    for name, rec in {**recons, "gaussian": gauss}.items():
        res = x - np.asarray(rec, np.float64).reshape(x.shape)
        pixels = valid.reshape(n, -1).sum(axis=1).clip(min=1)
        chi2[name] = np.where(valid, (res / s) ** 2, 0.0).reshape(n, -1).sum(axis=1) / pixels
        out[name] = {
            "mse": float(np.where(valid, res**2, 0.0).sum() / valid.sum()),
            "chi2_per_pixel": float(chi2[name].mean()),
            "corner_ratio": float(np.abs(res[corners]).mean() / np.abs(res[annulus]).mean()),
        }
    if "model" in chi2:
        out["wins"] = {name: float((chi2["model"] < c).mean()) for name, c in chi2.items() if name != "model"}
    return out


def nuisance_scores(components: np.ndarray, values: Mapping[str, np.ndarray]) -> dict[str, float]:
    """η² of each nuisance under the clusters, and the largest cluster's share ("max_share").

    Parameters
    ----------
    components : (N,) int
        Negative where an object has none.
    values : mapping of str to numpy.ndarray
        Nuisance name -> (N,) float.

    Returns
    -------
    dict of str to float
        ``eta2_<name>`` per nuisance and ``max_share``.
    """
    comp = np.asarray(components, np.int64)
    out = {f"eta2_{name}": eta_squared(v, comp) for name, v in values.items()}
    out["max_share"] = float(np.bincount(comp[comp >= 0]).max() / max((comp >= 0).sum(), 1))
    return out


def precision_at_k(features: np.ndarray, classes: np.ndarray, k: int = SEARCH_K) -> float:
    """Mean fraction of same-class objects among each object's k nearest others.

    Euclidean in `features`, standardised per dimension.

    Parameters
    ----------
    features : (N, D) float
    classes : (N,) int
    k : int

    Returns
    -------
    float
        In [0, 1].
    """
    f = np.asarray(features, np.float64)
    f = (f - f.mean(0)) / np.maximum(f.std(0), 1e-12)
    d = ((f[:, None] - f[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :k]
    classes = np.asarray(classes)
    return float((classes[nearest] == classes[:, None]).mean())


def survey_scores(model_recons: np.ndarray, model_mu: np.ndarray, model_components: np.ndarray,
                  stamps: SurveyStamps, pca, labelled: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                  seed: int = 0, gappy: np.ndarray | None = None) -> dict[str, object]:
    """Every score of the module docstring for one model and its PCA-10 baseline.

    Parameters
    ----------
    model_recons : (N, H, W) float
        `model.reconstruct` of the held-out stamps, stored units.
    model_mu : (N, L) float
        Their latent means (for the baseline GMM's K only the components matter).
    model_components : (N,) int
        The model's clusters of the held-out stamps.
    stamps : SurveyStamps
        The held-out stamps.
    pca : fitted sklearn PCA
        `fit_pca` of the training stamps.
    labelled : (model μ (M, L), PCA images (M, H, W), classes (M,)), optional
        Hand-labelled objects for the similarity search.
    seed : int
    gappy : (N, H, W) float, optional
        `gappy_pca_reconstructions` of the held-out stamps, scored as "pca10_gappy".

    Returns
    -------
    dict
        "reconstruction" (`reconstruction_scores` with "model" and "pca10"), "clusters"
        ({"model": ..., "pca10_gmm": ...} of `nuisance_scores`), "search" ({"model", "pca10"}
        precision@5, "n_labelled"), "n_heldout".
    """
    x = np.asarray(stamps.images, np.float64)
    n = len(x)
    flat = x.reshape(n, -1)
    pca_rec = pca.inverse_transform(pca.transform(flat)).reshape(x.shape)
    recons = {"model": model_recons.reshape(x.shape), "pca10": pca_rec}
    if gappy is not None:
        recons["pca10_gappy"] = gappy
    recon = reconstruction_scores(stamps, recons)
    values = nuisances(stamps)
    k = int(np.max(model_components)) + 1
    baseline = pca_gmm_clusters(pca.transform(flat), max(k, 2), seed)
    out: dict[str, object] = {
        "n_heldout": n,
        "reconstruction": recon,
        "clusters": {"model": nuisance_scores(model_components, values),
                     "pca10_gmm": nuisance_scores(baseline, values)},
    }
    if labelled is not None:
        mu, images, classes = labelled
        scores = pca.transform(np.asarray(images, np.float64).reshape(len(images), -1))
        out["search"] = {"model": precision_at_k(mu, classes), "pca10": precision_at_k(scores, classes),
                         "n_labelled": int(len(classes)),
                         "chance": float(np.mean([(np.sum(classes == c) - 1) / (len(classes) - 1) for c in classes]))}
    return out
