"""Report metrics against oracles: sklearn, naive loops, brute-force TSP, scipy."""

import itertools

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score, normalized_mutual_info_score, silhouette_score

from galhpc.report import metrics


@pytest.fixture()
def blobs():
    x, y = make_blobs(n_samples=300, centers=4, n_features=5, cluster_std=1.0, random_state=3)
    return x, y


def test_calinski_harabasz_matches_sklearn(blobs):
    x, y = blobs
    assert metrics.calinski_harabasz(x, y) == pytest.approx(calinski_harabasz_score(x, y), rel=1e-10)
    # labels need not be 0..K-1
    assert metrics.calinski_harabasz(x, y * 7 + 2) == pytest.approx(calinski_harabasz_score(x, y), rel=1e-10)


def test_calinski_harabasz_refuses_one_cluster(blobs):
    x, _ = blobs
    with pytest.raises(ValueError, match="1 < K < N"):
        metrics.calinski_harabasz(x, np.zeros(len(x), int))


def test_simplified_silhouette_matches_naive_loop(blobs):
    x, y = blobs
    s, per_cluster, overall = metrics.simplified_silhouette(x, y)
    centres = {k: x[y == k].mean(axis=0) for k in np.unique(y)}
    for i in range(0, len(x), 17):
        a = np.linalg.norm(x[i] - centres[y[i]])
        b = min(np.linalg.norm(x[i] - c) for k, c in centres.items() if k != y[i])
        assert s[i] == pytest.approx((b - a) / max(a, b))
    assert overall == pytest.approx(s.mean())
    assert per_cluster[2] == pytest.approx(s[y == 2].mean())


def test_simplified_silhouette_tracks_full_silhouette(blobs):
    x, y = blobs
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(y)
    good = metrics.simplified_silhouette(x, y)[2]
    bad = metrics.simplified_silhouette(x, shuffled)[2]
    assert good > 0.5 and bad < 0.1
    assert abs(good - silhouette_score(x, y)) < 0.2


def test_overlap_matrix_is_mean_gamma_per_label():
    rng = np.random.default_rng(1)
    gamma = rng.dirichlet(np.ones(3), size=50)
    labels = gamma.argmax(axis=1)
    m = metrics.overlap_matrix(gamma, labels, 4)
    for i in range(3):
        np.testing.assert_allclose(m[i], gamma[labels == i].mean(axis=0))
    assert np.isnan(m[3]).all()
    np.testing.assert_allclose(m[:3].sum(axis=1), 1.0)


def test_occupancy_and_centres():
    labels = np.array([0, 2, 2, 5])
    assert metrics.occupancy(labels, 6).tolist() == [1, 0, 2, 0, 0, 1]
    uniq, centres = metrics.cluster_centres(np.array([[0.0], [1.0], [3.0], [9.0]]), labels)
    assert uniq.tolist() == [0, 2, 5] and centres[:, 0].tolist() == [0.0, 2.0, 9.0]


def test_latent_snr():
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(1000, 3)) * np.array([1.0, 2.0, 0.1])
    logvar = np.log(np.full((1000, 3), 0.25))
    np.testing.assert_allclose(metrics.latent_snr(mu, logvar), mu.std(axis=0) / 0.5)
    np.testing.assert_allclose(metrics.latent_snr(mu, None), mu.std(axis=0))


def test_label_agreement_matches_sklearn():
    """The report scores clusters with galhpc.mixture.metrics, the one NMI/ARI of galhpc."""
    from galhpc.mixture.metrics import label_agreement

    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.7, truth, rng.integers(0, 3, 200))
    got = label_agreement(truth, pred)
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(truth, pred))
    assert got["ari"] == pytest.approx(adjusted_rand_score(truth, pred))
    truth_with_missing = truth.copy()
    truth_with_missing[:10] = -1
    got = label_agreement(truth_with_missing, pred)
    assert got["ari"] == pytest.approx(adjusted_rand_score(truth[10:], pred[10:]))
    pred_with_missing = pred.copy()
    pred_with_missing[-5:] = -1  # an object without a cluster counts for neither
    got = label_agreement(truth_with_missing, pred_with_missing)
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(truth[10:-5], pred[10:-5]))
    with pytest.raises(ValueError, match="differ in length"):
        label_agreement(truth, pred[:-1])


def test_discretise_label_kinds():
    assert metrics.discretise_label(np.array([0, 1, 2, 1])).tolist() == [0, 1, 2, 1]
    assert metrics.discretise_label(np.array([0.1, 0.6, 0.9, np.nan])).tolist() == [0, 1, 1, -1]
    hlr = np.arange(1.0, 9.0) * 3
    assert metrics.discretise_label(hlr).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert metrics.discretise_label(np.arange(100)) is None


def _brute_force_best(points):
    return min(metrics.path_length(points, p) for p in itertools.permutations(range(len(points))))


@pytest.mark.parametrize("k", [3, 5, 7])
def test_held_karp_is_optimal(k):
    points = np.random.default_rng(k).normal(size=(k, 4))
    order = metrics.shortest_path_order(points)
    assert sorted(order) == list(range(k))
    assert metrics.path_length(points, order) == pytest.approx(_brute_force_best(points))


def test_two_opt_heuristic_is_near_optimal():
    points = np.random.default_rng(9).normal(size=(8, 3))
    order = metrics.shortest_path_order(points, exact_up_to=0)
    assert sorted(order) == list(range(8))
    assert metrics.path_length(points, order) <= 1.1 * _brute_force_best(points)


def test_per_image_mse():
    a = np.zeros((2, 1, 2, 2))
    b = np.stack([np.zeros((1, 2, 2)), np.full((1, 2, 2), 2.0)])
    assert metrics.per_image_mse(a, b).tolist() == [0.0, 4.0]


def test_per_cluster_summary_matches_loops():
    rng = np.random.default_rng(6)
    votes = rng.uniform(0, 1, 200)
    votes[::17] = np.nan
    clusters = rng.integers(0, 3, 200)
    assert metrics.is_vote_fraction(votes) and not metrics.is_vote_fraction(votes * 3)
    assert not metrics.is_vote_fraction(np.array([0, 1, 1]))
    got = metrics.per_cluster_summary(votes, clusters, cuts=(0.8,))
    for c in range(3):
        v = votes[(clusters == c) & ~np.isnan(votes)]
        assert got["mean"][str(c)] == pytest.approx(v.mean())
        assert got["fraction_above_0.8"][str(c)] == pytest.approx((v > 0.8).mean())
