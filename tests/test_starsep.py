"""Star/galaxy evaluation helpers: ROC/AUC, manifold baselines, thresholds, segmentation scores,
the in-memory training loop, and (slow) unsupervised separation by the hierarchical model."""

import numpy as np
import pytest
import torch

from galhpc.inference import starsep
from galhpc.models.hvae import HierarchicalAEVAE, PeakedVAE
from galhpc.train.arrays import fit_arrays

torch.set_num_threads(1)


def pairwise_auc(labels: np.ndarray, score: np.ndarray) -> float:
    """AUC as the Mann-Whitney probability P(score_pos > score_neg) + ½P(tie), by brute force."""
    pos, neg = score[labels == 1], score[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


def test_roc_auc_matches_pair_counting():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    score = labels + rng.normal(0, 1.2, 300)
    score[:20] = np.round(score[:20])  # some ties
    curve = starsep.roc("m", labels, score)
    assert curve.auc == pytest.approx(pairwise_auc(labels, score), abs=1e-12)
    assert curve.fpr[0] == 0 and curve.tpr[-1] == 1


@pytest.mark.filterwarnings("ignore:The number of connected components:UserWarning")  # two clean clusters
@pytest.mark.filterwarnings("ignore::scipy.sparse.SparseEfficiencyWarning")
def test_threshold_orientation_and_embedding_separate_two_clusters():
    rng = np.random.default_rng(1)
    is_galaxy = np.repeat([0, 1], 150)
    latents = rng.normal(0, 0.3, (300, 4)) + 3.0 * is_galaxy[:, None] * np.array([1, -1, 0.5, 0])
    conc = 0.6 - 0.3 * is_galaxy + rng.normal(0, 0.02, 300)  # stars more concentrated
    for method in starsep.MANIFOLDS:
        score = starsep.orient_by_concentration(starsep.embed_1d(latents, method), conc)
        assert starsep.roc(method, is_galaxy, score).auc > 0.99
        assert np.mean(starsep.threshold_by_fraction(score, 0.5) == is_galaxy) > 0.97
    with pytest.raises(ValueError, match="unknown manifold method"):
        starsep.embed_1d(latents, "umap")
    with pytest.raises(ValueError, match="star_fraction"):
        starsep.threshold_by_fraction(np.zeros(3), 1.0)


def test_segmentation_scores_by_hand():
    truth = np.array([[[0, 0, 1, 2]]])
    predicted = np.array([[[0, 1, 1, 2]]])
    scores = starsep.segmentation_scores(predicted, truth)
    assert scores["pixel_accuracy"] == 0.75
    assert scores["iou_background"] == 0.5 and scores["iou_star"] == 0.5 and scores["iou_galaxy"] == 1.0
    assert scores["mean_iou"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="differ in shape"):
        starsep.segmentation_scores(predicted[:, :, :3], truth)


def test_plots_are_written(tmp_path):
    curve = starsep.roc("m", np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.3, 0.6]))
    assert starsep.plot_rocs([curve], tmp_path / "roc.png").stat().st_size > 1000
    images = np.random.default_rng(0).random((2, 5, 8, 8)).astype(np.float32)
    masks = np.zeros((2, 8, 8), dtype=np.uint8)
    assert starsep.plot_segmentation(images, masks, masks, tmp_path / "seg.png").stat().st_size > 1000


def test_fit_lowers_the_loss_and_encode_arrays_gives_columns():
    x = np.random.default_rng(0).random((64, 5, 16, 16)).astype(np.float32) * 10
    model = PeakedVAE(image_size=16, latent_dim=2, widths=[8, 8], peaked_dims=1)
    history = fit_arrays(model, x, epochs=4, batch_size=16, lr=3e-3)
    assert history[-1]["total"] < history[0]["total"]
    mu, extra = starsep.encode_arrays(model, x, batch_size=20)
    assert mu.shape == (64, 2) and extra["p_galaxy"].shape == (64,)


@pytest.mark.slow
def test_hierarchical_model_separates_stars_from_galaxies_without_labels():
    from starsim_fit import fit_on_simulated

    from galhpc.data.starsim import StarSimOptions

    opts = StarSimOptions(mag_min=17.5, mag_max=20.5)
    model, test = fit_on_simulated(lambda: HierarchicalAEVAE(image_size=24, widths=[16, 32, 32], prior_term="pw"),
                                   opts, 24, seeds=(11, 12), n=(1200, 300), epochs=4, lr=1e-3)
    _, extra = starsep.encode_arrays(model, test.images)
    auc = starsep.roc("hvae", 1 - test.labels["is_star"], extra["p_galaxy"]).auc
    assert auc > 0.97
