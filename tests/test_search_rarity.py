"""Rarity scores: the prior NLL against sklearn, the k-th neighbour distance against sklearn,
and on a catalogue with a planted outlier population the scores rank the outliers first."""

import h5py
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from test_catalog_encode import encode
from test_catalog_generate import make_checkpoint

from galhpc.cli.rarity import main as rarity_main
from galhpc.io.table import read_table
from galhpc.search.rarity import LatentPrior, knn_distance, prior_nll, reference_rows

torch.set_num_threads(1)


def test_prior_nll_equals_sklearn_gaussian_mixture():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (300, 4)), rng.normal(4, 0.5, (200, 4))])
    gmm = GaussianMixture(2, covariance_type="diag", random_state=0).fit(x)
    prior = LatentPrior(np.log(gmm.weights_), gmm.means_, gmm.covariances_, "test")
    np.testing.assert_allclose(prior_nll(x, prior, chunk=77), -gmm.score_samples(x), rtol=1e-10)


@pytest.mark.parametrize("reference", [1000, 250])
def test_knn_distance_equals_sklearn_with_self_left_out(reference):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1000, 6))
    ref_rows = reference_rows(len(x), reference)
    ref = x[ref_rows]
    got = knn_distance(x, np.arange(len(x)), ref, ref_rows, 5)
    dist, idx = NearestNeighbors(n_neighbors=6).fit(ref).kneighbors(x)
    is_self = ref_rows[idx] == np.arange(len(x))[:, None]
    expected = np.where(is_self.any(axis=1), dist[:, 5], dist[:, 4])  # own row among them: one further
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def planted_store(path, n=600, n_rare=12, size=16):
    """Round Gaussian blobs of three sizes (the population) and n_rare bright two-point
    'doubles' (the planted rare class) at random rows; returns the rare rows."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    widths = 1.2 + 2.0 * (np.arange(n) % 3)
    images = np.exp(-(xx**2 + yy**2)[None] / (2 * widths[:, None, None] ** 2))
    rare = np.sort(rng.choice(n, n_rare, replace=False))
    for r in rare:
        images[r] = (np.exp(-((xx - 4) ** 2 + yy**2) / 2) + np.exp(-((xx + 4) ** 2 + (yy - 3) ** 2) / 2))
    images += 0.02 * rng.standard_normal(images.shape)
    with h5py.File(path, "w") as f:
        f["images"] = images.astype(np.float32)
        f["object_id"] = np.arange(n, dtype=np.int64) + 1000
        f.attrs["noise_sigma"] = 0.02
    return rare


@pytest.mark.parametrize("model", ["astrovader", "vae"])
def test_planted_outliers_rank_above_the_population(tmp_path, model):
    rare = planted_store(tmp_path / "store.h5")
    ckpt = make_checkpoint(tmp_path / "m.pt", model)
    encode(ckpt, tmp_path / "store.h5", tmp_path / "clusters.h5", shard_size=128)
    assert rarity_main(["--catalog", str(tmp_path / "clusters.h5"), "--out", str(tmp_path / "rarity.csv"),
                        "--k", "5", "--threads", "1"]) == 0
    table = read_table(tmp_path / "rarity.csv")
    assert table["row"].tolist() == list(range(600))
    assert table["object_id"].tolist() == list(range(1000, 1600))
    truth = np.isin(np.arange(600), rare)
    with h5py.File(tmp_path / "clusters.h5") as f:
        np.testing.assert_allclose(table["recon_chi2"], f["recon_mse"][()] / 0.02**2, rtol=1e-5)
    aucs = {name: roc_auc_score(truth, table[name]) for name in ("nll_prior", "knn_distance", "recon_chi2")}
    assert aucs["knn_distance"] > 0.9, aucs  # far better than chance (0.5)
    assert max(aucs.values()) > 0.9, aucs


def test_report_rarity_section_shows_the_planted_outliers(tmp_path):
    from galhpc.checkpoint import load_model
    from galhpc.report import sampling
    from galhpc.report.inputs import CheckpointInputs, ReportInputs, StoreInputs
    from galhpc.report.options import ReportOptions
    from galhpc.report.sections import SECTIONS, Figures

    store = tmp_path / "store.h5"
    rare = planted_store(store)
    ckpt = make_checkpoint(tmp_path / "m.pt", "astrovader")
    encode(ckpt, store, tmp_path / "clusters.h5", shard_size=256)
    rng = np.random.default_rng(0)
    cs = sampling.read_clusters(tmp_path / "clusters.h5", 10_000, rng)
    model = load_model(ckpt)
    inp = ReportInputs(checkpoint=CheckpointInputs(model=model), clusters=cs,
                       store=StoreInputs.load(store, cs, model))
    figs = Figures(tmp_path)
    out = SECTIONS["rarity"].run(inp, ReportOptions(n_show=12), figs, rng)
    assert (tmp_path / "rarity_top.png").stat().st_size > 1000
    assert figs.items["rarity"][0][1] == "rarity_top.png"
    assert out["prior"] == "model mixture prior" and out["noise_sigma_source"] == "store attribute noise_sigma"
    top_rows = set(np.asarray(out["knn_distance"]["top_object_id"]) - 1000)
    assert len(top_rows & set(rare.tolist())) >= 8  # of 12 planted among 600: chance would give ~0.24


def test_another_models_checkpoint_is_refused_not_scored(tmp_path, capsys):
    """nll_prior under a checkpoint the catalogue was not encoded with would be silent wrong
    data: galhpc-rarity refuses it, as galhpc-search's image queries do."""
    planted_store(tmp_path / "store.h5", n=200)
    ckpt = make_checkpoint(tmp_path / "m.pt", "vae")
    encode(ckpt, tmp_path / "store.h5", tmp_path / "clusters.h5", shard_size=128)
    other = make_checkpoint(tmp_path / "other.pt", "astrovader")
    assert rarity_main(["--catalog", str(tmp_path / "clusters.h5"), "--out", str(tmp_path / "rarity.csv"),
                        "--checkpoint", str(other), "--threads", "1"]) == 1
    assert "is not the checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "rarity.csv").exists()
