"""Two-sample statistics of galhpc.fidelity against independent oracles: analytic shifts,
scikit-learn's brute-force neighbours, Parseval's theorem, a copying generator."""

import numpy as np
import pytest
from scipy import stats
from sklearn.neighbors import NearestNeighbors

from galhpc.fidelity import compare, morphology


def test_ks_distance_matches_scipy():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=100), rng.normal(0.5, size=80)
    got = morphology.ks_distance(np.append(a, np.nan), b)
    ref = stats.ks_2samp(a, b)
    assert got["ks"] == pytest.approx(ref.statistic) and got["p_value"] == pytest.approx(ref.pvalue)
    assert got["n_a"] == 100


def test_same_distribution_is_close_and_a_shift_is_far():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=1500), rng.normal(size=1500)
    same = compare.distance(a, b, n_boot=100, rng=rng)
    assert same.ks < 0.06 and same.wasserstein < 0.1 and same.ks_p > 0.01
    # bootstrap σ of the KS statistic: of the order of its sampling scatter sqrt(2/n)
    assert 0.2 * np.sqrt(2 / 1500) < same.ks_err < 3 * np.sqrt(2 / 1500)
    shifted = compare.distance(a, b + 1.0, n_boot=100, rng=rng)
    # W1 of N(0,1) and N(1,1) is the shift; the KS distance is 2Φ(1/2) − 1
    assert shifted.wasserstein == pytest.approx(1.0, abs=0.08)
    assert shifted.ks == pytest.approx(2 * stats.norm.cdf(0.5) - 1, abs=0.05)
    assert shifted.wasserstein_err < 0.1
    nan = compare.distance(np.array([np.nan]), b)
    assert np.isnan(nan.ks) and nan.n_a == 0


def test_split_halves_are_disjoint_and_cover():
    a, b = compare.split_halves(11, np.random.default_rng(1))
    assert len(a) == 5 and len(b) == 6 and not set(a) & set(b) and set(a) | set(b) == set(range(11))


def test_classifier_auc_half_for_one_population_and_high_for_two():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 5))
    y = rng.normal(size=(300, 5))
    same = compare.classifier_auc(x, y)
    assert 0.4 < same["auc"] < 0.6
    y[:, 2] += 2.0
    y[:10, 0] = np.nan  # unmeasured statistics are taken
    far = compare.classifier_auc(x, y)
    best = stats.norm.cdf(2.0 / np.sqrt(2))  # the AUC of the optimal (likelihood-ratio) classifier
    assert best - 0.08 < far["auc"] < best + 0.03 and far["folds"] == 5
    with pytest.raises(ValueError, match="at least 5 rows"):
        compare.classifier_auc(x[:3], y)


def test_nearest_distances_match_sklearn():
    rng = np.random.default_rng(3)
    q, r = rng.normal(size=(37, 6, 6)), rng.normal(size=(101, 6, 6))
    dist, index = compare.nearest_distances(q, r, block=8)
    ref_d, ref_i = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(r.reshape(101, -1)).kneighbors(
        q.reshape(37, -1))
    np.testing.assert_allclose(dist, ref_d[:, 0], rtol=1e-9)
    np.testing.assert_array_equal(index, ref_i[:, 0])


def _blobs(n, rng, size=16, noise=0.05):
    """Elliptical Gaussian galaxies of random size, axis ratio and angle, plus white noise."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, size, size))
    for i in range(n):
        s, q, t = rng.uniform(1.5, 3.5), rng.uniform(0.4, 1), rng.uniform(0, np.pi)
        u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
        out[i] = np.exp(-0.5 * (u**2 + (v / q) ** 2) / s**2) + rng.normal(0, noise, (size, size))
    return out


def test_memorisation_flags_a_copying_generator_and_passes_an_honest_one():
    rng = np.random.default_rng(5)
    training, real = _blobs(400, rng), _blobs(150, rng)
    honest = compare.memorisation(_blobs(150, rng), real, training)
    assert honest["p_value"] > 0.01 and 0.85 < honest["median_ratio"] < 1.15
    copies = training[rng.choice(400, 150)] + rng.normal(0, 1e-3, (150, 16, 16))
    copied = compare.memorisation(copies, real, training)
    assert copied["p_value"] < 0.01 and copied["median_ratio"] < 0.1


def test_power_spectrum_obeys_parseval_and_finds_a_wave():
    rng = np.random.default_rng(6)
    sigma = 2.0
    k, power = morphology.power_spectrum(rng.normal(0, sigma, (64, 64)))
    assert len(k) == 32
    # white noise: E|FFT|² = N σ² at every frequency (Parseval)
    assert np.median(power[1:]) == pytest.approx(64 * 64 * sigma**2, rel=0.15)
    y, x = np.mgrid[:64, :64]
    k, power = morphology.power_spectrum(np.cos(2 * np.pi * 0.25 * x))
    assert k[np.argmax(power)] == pytest.approx(0.25, abs=1 / 64)


def test_classifier_auc_separates_small_sets():
    """30 rows a side: scikit-learn's default leaf size (20) would allow no split and give 0.5."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(10, 4))
    y = rng.normal(size=(20, 4))
    y[:, 1] += 5.0
    assert compare.classifier_auc(x, y)["auc"] > 0.9


def test_memorisation_tells_a_blurry_generator_from_a_copying_one():
    """A low-fidelity generator that copies nothing (blurred blobs, so every nearest distance
    moves) fails the distance KS but passes the copying test; re-noised training copies fail
    it.  The permutation p-value is checked by brute force: relabel the pool
    at random and recount with scikit-learn's nearest neighbours."""
    from scipy import ndimage

    rng = np.random.default_rng(8)
    training, real = _blobs(300, rng), _blobs(150, rng)

    def blur(x):
        return ndimage.gaussian_filter(x, (0, 1.5, 1.5)) + rng.normal(0, 0.05, x.shape)

    blurry = compare.memorisation(blur(_blobs(150, rng)), real, training)
    assert blurry["ks_p"] < 0.01  # the distances differ: not from the population
    assert blurry["p_value"] > 0.01 and blurry["copy_expected"] == pytest.approx(300 / 450)
    copied_stamps = training[rng.choice(300, 150)] + rng.normal(0, 0.05, (150, 16, 16))  # copies, re-noised
    copies = compare.memorisation(copied_stamps, real, training, permutations=500)
    assert copies["p_value"] < 0.01 and copies["copy_fraction"] > blurry["copy_fraction"]
    pool = np.concatenate([training, real]).reshape(450, -1)
    nearest = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(pool).kneighbors(
        copied_stamps.reshape(150, -1))[1][:, 0]
    assert copies["copy_fraction"] == pytest.approx((nearest < 300).mean())
    brute = np.array([np.isin(nearest, rng.permutation(450)[:300]).mean() for _ in range(500)])
    assert copies["p_value"] == pytest.approx((1 + (brute >= copies["copy_fraction"]).sum()) / 501, abs=0.01)
