"""Pure metric functions of the science report: arrays in, numbers out, no I/O.

Each function works on a sample that fits in memory; `galhpc.report.sampling` decides
which rows of a catalogue form that sample.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


def per_image_mse(images: np.ndarray, recons: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Mean squared error of each image against its reconstruction, over its valid pixels.

    Parameters
    ----------
    images, recons : (N, ...) float
        Images and their reconstructions, in the same units.
    valid : (N, ...) bool, optional
        The pixels that count (a store's `mask` left out); default all.

    Returns
    -------
    numpy.ndarray
        (N,) float64, in squared image units (NaN for an image with no valid pixel).
    """
    diff = np.asarray(images, np.float64) - np.asarray(recons, np.float64)
    n = len(diff)
    if valid is None:
        return (diff.reshape(n, -1) ** 2).mean(axis=1)
    valid = np.asarray(valid, bool).reshape(n, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, diff.reshape(n, -1) ** 2, 0.0).sum(axis=1) / valid.sum(axis=1)


def occupancy(labels: np.ndarray, n_components: int) -> np.ndarray:
    """Number of objects assigned to each of `n_components` components.

    Parameters
    ----------
    labels : (N,) int
        Non-negative component of each object.
    n_components : int

    Returns
    -------
    numpy.ndarray
        (n_components,) int64.
    """
    return np.bincount(np.asarray(labels, np.int64), minlength=n_components)[:n_components]


def cluster_centres(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of `x` per label.

    Parameters
    ----------
    x : (N, D) float
    labels : (N,) int

    Returns
    -------
    labels : numpy.ndarray
        (K,) sorted unique labels.
    centres : numpy.ndarray
        (K, D) float64.
    """
    x = np.asarray(x, np.float64)
    uniq, inverse = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(uniq), x.shape[1]))
    np.add.at(sums, inverse, x)
    return uniq, sums / np.bincount(inverse)[:, None]


def simplified_silhouette(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict[int, float], float]:
    """Simplified silhouette (Hruschka et al. 2004): centroid distances instead of all pairs.

    s_i = (b_i - a_i) / max(a_i, b_i), a_i the distance to the own cluster's centroid and
    b_i to the nearest other centroid.  It is O(N K) rather than O(N^2), so it scales to
    catalogue samples.

    Parameters
    ----------
    x : (N, D) float
        Points (e.g. latent means μ).
    labels : (N,) int
        Cluster of each point.

    Returns
    -------
    s : numpy.ndarray
        (N,) float64 per object, in [-1, 1].
    per_cluster : dict of int to float
        Mean per cluster.
    overall : float
        Mean over the objects.

    Raises
    ------
    ValueError
        With fewer than two clusters.
    """
    x = np.asarray(x, np.float64)
    uniq, centres = cluster_centres(x, labels)
    if len(uniq) < 2:
        raise ValueError("the silhouette needs at least two clusters")
    own = np.searchsorted(uniq, labels)
    dist = np.sqrt(((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2))
    rows = np.arange(len(x))
    a = dist[rows, own]
    dist[rows, own] = np.inf
    b = dist.min(axis=1)
    denom = np.maximum(a, b)
    s = np.where(denom > 0, (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
    per_cluster = {int(k): float(s[own == i].mean()) for i, k in enumerate(uniq)}
    return s, per_cluster, float(s.mean())


def calinski_harabasz(x: np.ndarray, labels: np.ndarray) -> float:
    """Calinski–Harabasz index: between- over within-cluster dispersion, scaled by (N-K)/(K-1).

    Parameters
    ----------
    x : (N, D) float
    labels : (N,) int
        K distinct values, 1 < K < N.

    Returns
    -------
    float
        inf when every object sits on its centre.

    Raises
    ------
    ValueError
        Unless 1 < K < N.
    """
    x = np.asarray(x, np.float64)
    uniq, inverse = np.unique(labels, return_inverse=True)
    n, k = len(x), len(uniq)
    if not 1 < k < n:
        raise ValueError(f"Calinski–Harabasz needs 1 < K < N, got K={k}, N={n}")
    _, centres = cluster_centres(x, labels)
    counts = np.bincount(inverse)
    between = float((counts * ((centres - x.mean(axis=0)) ** 2).sum(axis=1)).sum())
    within = float(((x - centres[inverse]) ** 2).sum())
    return between * (n - k) / (within * (k - 1)) if within > 0 else float("inf")


def overlap_matrix(gamma: np.ndarray, labels: np.ndarray, n_components: int | None = None) -> np.ndarray:
    """Cluster overlap matrix M[i, j] = mean γ_j over objects labelled i (NaN for empty rows).

    A diagonal matrix means confident, separated clusters; off-diagonal mass shows which
    components share objects.

    Parameters
    ----------
    gamma : (N, K) float
        Responsibilities.
    labels : (N,) int
        Hard label of each object.
    n_components : int, optional
        Rows of the matrix; default K.

    Returns
    -------
    numpy.ndarray
        (n_components, K) float64.
    """
    gamma = np.asarray(gamma, np.float64)
    k = gamma.shape[1] if n_components is None else n_components
    sums = np.zeros((k, gamma.shape[1]))
    np.add.at(sums, np.asarray(labels, np.int64), gamma)
    counts = occupancy(labels, k).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def latent_snr(mu: np.ndarray, logvar: np.ndarray | None) -> np.ndarray:
    """Per-latent signal-to-noise std(μ_d) / mean(σ_d) (Danilov); σ = 1 without logvar.

    Parameters
    ----------
    mu : (N, L) float
    logvar : (N, L) float or None

    Returns
    -------
    numpy.ndarray
        (L,) float64.
    """
    mu = np.asarray(mu, np.float64)
    if logvar is None:
        return mu.std(axis=0)
    sigma = np.exp(0.5 * np.asarray(logvar, np.float64))
    return mu.std(axis=0) / sigma.mean(axis=0)


def discretise_label(values: np.ndarray, vote_cut: float = 0.5, max_classes: int = 20) -> np.ndarray | None:
    """Turn a label column into classes for NMI/ARI, or None if it cannot be.

    Integer/bool columns with at most `max_classes` values are classes already; vote
    fractions (floats within [0, 1]) are cut at `vote_cut` (e.g. Galaxy Zoo smooth vs
    featured); other floats are split at their quartiles.

    Parameters
    ----------
    values : (N,) array
    vote_cut : float
    max_classes : int

    Returns
    -------
    numpy.ndarray or None
        (N,) int64 classes, -1 where the value is not finite.
    """
    values = np.asarray(values)
    if values.ndim != 1 or len(values) == 0:
        return None
    if values.dtype.kind in "biu":
        return values.astype(np.int64) if len(np.unique(values)) <= max_classes else None
    if values.dtype.kind != "f":
        return None
    finite = np.isfinite(values)
    if not finite.any():
        return None
    if is_vote_fraction(values):
        classes = (values > vote_cut).astype(np.int64)
    else:
        edges = np.quantile(values[finite], [0.25, 0.5, 0.75])
        classes = np.searchsorted(edges, values).astype(np.int64)
    classes[~finite] = -1
    return classes


def is_vote_fraction(values: np.ndarray) -> bool:
    """Whether a column is a float column whose finite values all lie in [0, 1].

    E.g. a Galaxy Zoo vote fraction.

    Parameters
    ----------
    values : (N,) array

    Returns
    -------
    bool
    """
    values = np.asarray(values)
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values[:0]
    return len(finite) > 0 and finite.min() >= 0 and finite.max() <= 1


def per_cluster_summary(values: np.ndarray, clusters: np.ndarray, cuts: tuple[float, ...] = ()
                        ) -> dict[str, dict[str, float]]:
    """Mean of a label per cluster, and the fraction of each cluster above every cut in `cuts`.

    Galaxy Zoo style: e.g. smooth fraction > 0.8 for a clean smooth sample; NaNs ignored.

    Parameters
    ----------
    values : (N,) float
    clusters : (N,) int
    cuts : tuple of float

    Returns
    -------
    dict
        {"mean": {cluster: mean}, "fraction_above_<cut>": {cluster: fraction}, ...}, clusters as str.
    """
    values = np.asarray(values, np.float64)
    out: dict[str, dict[str, float]] = {"mean": {}}
    out |= {f"fraction_above_{cut:g}": {} for cut in cuts}
    for c in np.unique(clusters):
        v = values[(clusters == c) & np.isfinite(values)]
        if len(v) == 0:
            continue
        out["mean"][str(c)] = float(v.mean())
        for cut in cuts:
            out[f"fraction_above_{cut:g}"][str(c)] = float((v > cut).mean())
    return out


def path_length(points: np.ndarray, order: list[int] | np.ndarray) -> float:
    """Euclidean length of the open path visiting `points` in `order`.

    Parameters
    ----------
    points : (K, D) float
    order : sequence of int

    Returns
    -------
    float
    """
    p = np.asarray(points, np.float64)[list(order)]
    return float(np.sqrt(((p[1:] - p[:-1]) ** 2).sum(axis=1)).sum())


def shortest_path_order(points: np.ndarray, exact_up_to: int = 12) -> list[int]:
    """Order in which to visit every point along the shortest open path (a TSP without return).

    Exact Held–Karp dynamic programming for up to `exact_up_to` points (O(2^K K^2));
    beyond that, nearest-neighbour starts from every point improved by 2-opt.

    Parameters
    ----------
    points : (K, D) float
    exact_up_to : int

    Returns
    -------
    list of int
        A permutation of range(K).
    """
    p = np.asarray(points, np.float64)
    k = len(p)
    if k <= 2:
        return list(range(k))
    dist = np.sqrt(((p[:, None] - p[None]) ** 2).sum(axis=2))
    if k <= exact_up_to:
        return _held_karp_path(dist)
    best = min((_two_opt(_nearest_neighbour(dist, s), dist) for s in range(k)), key=lambda o: _length(o, dist))
    return best


def _length(order: list[int], dist: np.ndarray) -> float:
    return float(sum(dist[a, b] for a, b in itertools.pairwise(order)))


def _held_karp_path(dist: np.ndarray) -> list[int]:
    """Exact shortest Hamiltonian path (free endpoints) by dynamic programming over subsets."""
    k = len(dist)
    full = 1 << k
    cost = np.full((full, k), np.inf)
    parent = np.full((full, k), -1, dtype=np.int64)
    for i in range(k):
        cost[1 << i, i] = 0.0
    for mask in range(full):
        for last in range(k):
            c = cost[mask, last]
            if not np.isfinite(c) or not mask >> last & 1:
                continue
            for nxt in range(k):
                if mask >> nxt & 1:
                    continue
                new_mask = mask | 1 << nxt
                if c + dist[last, nxt] < cost[new_mask, nxt]:
                    cost[new_mask, nxt] = c + dist[last, nxt]
                    parent[new_mask, nxt] = last
    mask, last = full - 1, int(np.argmin(cost[full - 1]))
    order = []
    while last >= 0:
        order.append(last)
        mask, last = mask & ~(1 << last), int(parent[mask, last])
    return order[::-1]


def _nearest_neighbour(dist: np.ndarray, start: int) -> list[int]:
    order, left = [start], set(range(len(dist))) - {start}
    while left:
        nxt = min(left, key=lambda j: dist[order[-1], j])
        order.append(nxt)
        left.remove(nxt)
    return order


def _two_opt(order: list[int], dist: np.ndarray) -> list[int]:
    """Reverse contiguous segments (prefixes and suffixes included) while the open path shortens."""
    best = _length(order, dist)
    improved = True
    while improved:
        improved = False
        for i in range(len(order) - 1):
            for j in range(i + 1, len(order)):
                candidate = order[:i] + order[i : j + 1][::-1] + order[j + 1 :]
                length = _length(candidate, dist)
                if length < best - 1e-12:
                    order, best, improved = candidate, length, True
    return order


@dataclass
class ConditionBins:
    """Quantile bins of a float condition (see `quantile_bins`)."""

    edges: np.ndarray  # (k + 1,) increasing; bin i is [edges[i], edges[i+1]), the last one closed
    index: np.ndarray  # bin of each input value, -1 where it is not finite
    values: np.ndarray  # (k,) median of the values in each bin: the condition generated stamps get
    counts: np.ndarray  # (k,) values in each bin
    n_requested: int
    note: str | None = None  # why there are fewer bins than requested, if there are

    @property
    def n_bins(self) -> int:
        """Number of bins (after merging tied quantiles).

        Returns
        -------
        int
        """
        return len(self.values)


def quantile_bins(values: np.ndarray, n_bins: int = 3, min_per_bin: int = 5) -> ConditionBins:
    """Equal-count bins of the finite `values`, edges at their quantiles (numpy's linear interpolation).

    At most `n_bins` and at most one bin per `min_per_bin` values (at least one); tied
    quantiles (discrete values) are merged.  Bin i holds edges[i] <= v < edges[i+1], the
    last bin also its upper edge.

    Parameters
    ----------
    values : (N,) float
        Condition values; non-finite ones get bin -1.
    n_bins : int
        Bins requested.
    min_per_bin : int

    Returns
    -------
    ConditionBins

    Raises
    ------
    ValueError
        Without finite values.
    """
    v = np.asarray(values, np.float64).reshape(-1)
    finite = np.isfinite(v)
    x = v[finite]
    if len(x) == 0:
        raise ValueError("no finite condition values to bin")
    k = max(1, min(int(n_bins), len(x) // max(int(min_per_bin), 1)))
    notes = []
    if k < n_bins:
        notes.append(f"{len(x)} finite values: {k} bin(s) of at least {min_per_bin} instead of {n_bins}")
    edges = np.quantile(x, np.linspace(0.0, 1.0, k + 1))
    unique = np.unique(edges)
    if len(unique) < len(edges):
        if max(len(unique) - 1, 1) < k:
            notes.append(f"tied quantiles merged: {k} -> {max(len(unique) - 1, 1)} bin(s)")
        edges = unique if len(unique) > 1 else np.array([unique[0], unique[0]])
    n = len(edges) - 1
    index = np.full(len(v), -1, np.int64)
    index[finite] = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, n - 1)
    counts = np.bincount(index[finite], minlength=n)
    medians = np.array([np.median(v[index == i]) if counts[i] else np.nan for i in range(n)])
    return ConditionBins(edges=edges, index=index, values=medians, counts=counts, n_requested=int(n_bins),
                         note="; ".join(notes) or None)
