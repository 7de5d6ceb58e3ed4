"""Stick-breaking BGM, GMM initialisation and cluster metrics."""

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from galhpc.mixture.bayesian import fit_stick_breaking_bgm
from galhpc.mixture.diagonal import fit_diag_gmm, gmm_responsibilities
from galhpc.mixture.metrics import ari, nmi, permutation_baseline


def _blobs(k, n_per, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = 8.0 * rng.standard_normal((k, dim))
    x = np.concatenate([c + rng.standard_normal((n_per, dim)) for c in centres])
    return x, np.repeat(np.arange(k), n_per)


@pytest.mark.parametrize("k", [2, 4])
def test_stick_breaking_finds_the_number_of_blobs(k):
    x, _ = _blobs(k, 300, seed=k)
    result = fit_stick_breaking_bgm(x, max_components=10, seed=0, n_batches=3)
    assert result.k == k
    assert len(result.models) == 3 and result.counts.count(k) >= 2


def test_stick_breaking_refuses_too_few_points():
    with pytest.raises(ValueError, match="too few"):
        fit_stick_breaking_bgm(np.zeros((30, 2)), max_components=10, n_batches=3)


def test_fit_diag_gmm_recovers_blob_labels():
    x, truth = _blobs(3, 200)
    gmm = fit_diag_gmm(x, 3, seed=0)
    assert gmm.mu.shape == (3, 4) and (gmm.var > 0).all()
    labels = gmm_responsibilities(torch.as_tensor(x, dtype=torch.float32), gmm.log_pi, gmm.mu, gmm.var).argmax(1)
    assert ari(truth, labels.numpy()) > 0.99


def test_metrics_match_sklearn_and_hand_values():
    truth = np.array([0, 0, 1, 1, 2, 2])
    assert nmi(truth, np.array([5, 5, 3, 3, 9, 9])) == pytest.approx(1.0)
    assert ari(truth, np.array([1, 1, 0, 0, 2, 2])) == pytest.approx(1.0)
    clusters = np.array([0, 1, 1, 1, 2, 0])
    assert nmi(truth, clusters) == pytest.approx(normalized_mutual_info_score(truth, clusters))
    assert ari(truth, clusters) == pytest.approx(adjusted_rand_score(truth, clusters))
    with pytest.raises(ValueError, match="differ in length"):
        nmi(truth, clusters[:3])


def test_permutation_baseline_separates_signal_from_chance():
    x, truth = _blobs(3, 100)
    baseline = permutation_baseline(truth, truth, n_permutations=50)
    assert baseline["nmi_p99"] < 0.1 and abs(baseline["ari_mean"]) < 0.02
    assert nmi(truth, truth) > baseline["nmi_p99"]


def test_fit_diag_gmm_returns_variances_and_weights_of_the_blobs():
    """Per-dimension variances σ² (not σ) and weights of well-separated blobs, against their
    sample moments."""
    rng = np.random.default_rng(5)
    scales = np.array([[0.4, 2.0], [1.5, 0.6]])  # σ per component and dimension
    sizes = [300, 600]
    x = np.concatenate([np.array([20.0 * k, 0.0]) + scales[k] * rng.standard_normal((n, 2))
                        for k, n in enumerate(sizes)])
    gmm = fit_diag_gmm(x, 2, seed=0)
    order = np.argsort(gmm.mu[:, 0].numpy())
    parts = np.split(x, np.cumsum(sizes)[:-1])
    np.testing.assert_allclose(gmm.var.numpy()[order], [p.var(axis=0) for p in parts], rtol=1e-3)
    np.testing.assert_allclose(gmm.log_pi.exp().numpy()[order], np.array(sizes) / sum(sizes), atol=1e-6)
