"""Truth recovery (galhpc.report.truth), Regier's test with baselines, and the report's truth
section on a separate held-out store; oracles: scikit-learn and scipy computed here."""

import json

import h5py
import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.metrics import normalized_mutual_info_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from galhpc.report import regier, truth
from galhpc.report.regier import gaussian_image

SIZE = 32


def _blob_pixels(classes: np.ndarray, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """Round (0), elongated (1) or double (2) Gaussian stamps with noise, flattened (N, size²)."""
    out = []
    for c in classes:
        x0, y0 = size / 2 + rng.normal(0, 0.5, 2)
        if c == 0:
            img = gaussian_image(np.array([1, x0, y0, np.log(2.5), np.log(2.5), 0.0]), (size, size))
        elif c == 1:
            img = gaussian_image(np.array([1, x0, y0, np.log(4), np.log(1.3), 0.3]), (size, size))
        else:
            img = gaussian_image(np.array([1, x0 - 3, y0, np.log(1.5), np.log(1.5), 0.0]), (size, size))
            img += gaussian_image(np.array([0.8, x0 + 3, y0 + 2, np.log(1.5), np.log(1.5), 0.0]), (size, size))
        out.append(img + rng.normal(0, 0.05, img.shape))
    return np.array(out).reshape(len(classes), -1)


@pytest.fixture(scope="module")
def labelled():
    rng = np.random.default_rng(3)
    n = 240
    classes = np.arange(n) % 3
    pixels = _blob_pixels(classes, rng)
    latents = rng.normal(size=(n, 4)) + classes[:, None] * np.array([1.0, 0.0, 0.5, 0.0])
    labels = {"morph_class": classes.astype(np.int64), "bulge_fraction": classes / 2 + rng.normal(0, 0.2, n),
              "q": rng.uniform(0.2, 1, n), "snr": 10 ** rng.uniform(0.5, 2, n), "angle": rng.uniform(0, np.pi, n)}
    components = rng.integers(0, 3, n)
    return latents, components, pixels, labels


def test_baselines_equal_sklearn_computed_independently(labelled):
    latents, components, pixels, labels = labelled
    seed = 7
    r = truth.truth_recovery(latents, components, pixels, labels, seed=seed)
    assert r["roles"] == {"classes": ["morph_class"], "truths": ["bulge_fraction", "q"], "nuisances": ["snr"]}
    scores = PCA(n_components=4, svd_solver="full").fit_transform(pixels)
    gmm = GaussianMixture(n_components=3, random_state=seed).fit_predict(scores)
    assert r["pca_gmm"]["nmi"]["morph_class"] == pytest.approx(normalized_mutual_info_score(labels["morph_class"], gmm))
    assert r["pca_gmm"]["nmi"]["morph_class"] > 0.5  # the blobs' shapes are what PCA sees
    assert r["model"]["nmi"]["morph_class"] == pytest.approx(
        normalized_mutual_info_score(labels["morph_class"], components))
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    cv = KFold(5, shuffle=True, random_state=seed)
    for name, x in (("model", latents), ("pca", scores)):
        for column in ("bulge_fraction", "q"):
            expected = cross_val_score(probe, x, labels[column], cv=cv, scoring="r2").mean()
            assert r[name]["probe_r2"][column] == pytest.approx(expected, abs=1e-9)
        knn = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=10))
        expected = cross_val_score(knn, x, labels["morph_class"], scoring="accuracy",
                                   cv=StratifiedKFold(5, shuffle=True, random_state=seed)).mean()
        assert r[name]["knn"]["morph_class"]["accuracy"] == pytest.approx(expected)
        assert r[name]["knn"]["morph_class"]["chance"] == pytest.approx(1 / 3)
    # η² against one-way ANOVA: η² = F (k - 1) / (F (k - 1) + n - k), of log10 S/N
    log_snr = np.log10(labels["snr"])
    f = stats.f_oneway(*[log_snr[gmm == c] for c in range(3)]).statistic
    n = len(gmm)
    assert r["pca_gmm"]["eta2"]["snr"] == pytest.approx(2 * f / (2 * f + n - 3))
    assert r["pca_gmm"]["eta2_scale"]["snr"] == "log10"
    json.dumps(r)  # plain JSON-ready dict


def test_latents_that_encode_the_class_score_one_and_ignore_a_random_nuisance():
    rng = np.random.default_rng(0)
    n = 600
    classes = rng.integers(0, 3, n)
    latents = np.eye(3)[classes] * 5 + rng.normal(0, 0.1, (n, 3))
    labels = {"morph_class": classes, "snr": 10 ** rng.uniform(0, 2, n)}
    r = truth.truth_recovery(latents, classes.copy(), rng.normal(size=(n, 64)), labels, seed=0)
    assert r["model"]["nmi"]["morph_class"] == pytest.approx(1.0)
    assert r["model"]["ari"]["morph_class"] == pytest.approx(1.0)
    assert r["model"]["knn"]["morph_class"]["accuracy"] == pytest.approx(1.0)
    assert r["model"]["eta2"]["snr"] < 0.02 and r["model"]["nuisance_flagged"] == []
    # pixels of pure noise: the PCA baselines know nothing
    assert r["pca_gmm"]["nmi"]["morph_class"] < 0.05


def test_clusters_that_follow_the_nuisance_have_eta2_near_one_and_are_flagged():
    rng = np.random.default_rng(1)
    n = 400
    clusters = rng.integers(0, 2, n)
    snr = 10 ** (1 + clusters + rng.normal(0, 0.05, n))  # two S/N levels, one per cluster
    labels = {"morph_class": rng.integers(0, 2, n), "snr": snr, "psf_fwhm": np.full(n, 0.7)}
    r = truth.truth_recovery(rng.normal(size=(n, 2)), clusters, rng.normal(size=(n, 16)), labels, seed=0)
    assert r["model"]["eta2"]["snr"] > 0.98 and r["model"]["nuisance_flagged"] == ["snr"]
    assert np.isnan(r["model"]["eta2"]["psf_fwhm"])  # one PSF for all: nothing to explain
    assert "(> 0.10: clusters follow a nuisance)" in truth.format_table(r)


def test_column_roles_follow_types_and_lists():
    n = 30
    labels = {"morph_class": np.arange(n) % 3, "edge_on": (np.arange(n) % 2).astype(np.int8),
              "source_index": np.zeros(n, np.int16), "object_ids": np.arange(n), "ellipticity": np.linspace(0, 1, n),
              "log_hlr": np.linspace(-1, 1, n), "angle": np.linspace(0, 3, n), "flux": np.linspace(1, 9, n),
              "snr": np.linspace(1, 9, n)}
    roles = truth.column_roles(labels)
    assert roles.classes == ("morph_class", "edge_on")  # 2..20 values; not one, not N
    assert roles.truths == ("ellipticity", "log_hlr")
    assert roles.nuisances == ("snr", "flux")
    custom = truth.column_roles(labels, nuisance=("flux",), class_columns=["edge_on"], truth_columns=["angle"])
    assert (custom.classes, custom.truths, custom.nuisances) == (("edge_on",), ("angle",), ("flux",))


def test_pca_reconstruction_is_out_of_fold():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 30))
    rec = truth.pca_reconstruction(x, 3, seed=0)
    for fit, held in KFold(5, shuffle=True, random_state=0).split(x):
        pca = PCA(n_components=3, svd_solver="full").fit(x[fit])
        assert np.allclose(rec[held], pca.inverse_transform(pca.transform(x[held])))
    # in-sample PCA would reconstruct better than out of fold
    full = PCA(n_components=3).fit(x)
    assert ((x - rec) ** 2).mean() > ((x - full.inverse_transform(full.transform(x))) ** 2).mean()


def test_regier_scores_baselines_and_known_sigma_loglik():
    rng = np.random.default_rng(0)
    pair = (gaussian_image(np.array([1, 5, 8, np.log(1.5), np.log(1.5), 0]), (16, 16))
            + gaussian_image(np.array([1, 11, 8, np.log(1.5), np.log(1.5), 0]), (16, 16)))  # no single blob fits
    truth_images = np.stack([pair] * 6)
    sigma = np.full(6, 0.05)
    images = truth_images + rng.normal(0, 0.05, truth_images.shape)
    perfect, blank = truth_images, np.zeros_like(images)
    r = regier.regier_test(images, blank, {"pca3": perfect}, sigma)
    assert r["wins_squared_error"] == 0 and r["baselines"]["pca3"]["wins_squared_error"] == 6
    assert len(r["sse_pca3"]) == 6
    ll = stats.norm.logpdf(images, perfect, 0.05).reshape(6, -1).sum(1)
    known = r["known_sigma"]
    assert known["pca3"]["mean_loglik_per_pixel"] == pytest.approx(ll.mean() / 256)
    assert known["pca3"]["mean_chi2_per_pixel"] == pytest.approx(1.0, abs=0.1)  # noise-limited
    assert known["model_wins_over_pca3"] == 0
    with pytest.raises(ValueError, match="σ"):
        regier.regier_test(images, blank, None, np.zeros(6))


# -- the section inside galhpc-report, on a separate held-out store ---------------------------------
def _store(path, n, seed, id_offset):
    """Round (class 0) or elongated (class 1) blobs at two noise levels, with truth labels."""
    rng = np.random.default_rng(seed)
    classes = np.arange(n) % 2
    noisy = (np.arange(n) // 2) % 2
    images = []
    for c, loud in zip(classes, noisy, strict=False):
        sx, sy = (3.0, 3.0) if c == 0 else (5.0, 1.6)
        img = gaussian_image(np.array([1, 16 + rng.normal(0, .5), 16 + rng.normal(0, .5), np.log(sx), np.log(sy), 0]),
                             (SIZE, SIZE))
        images.append(img + rng.normal(0, 0.15 if loud else 0.02, img.shape))
    images = np.array(images, np.float32)
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["object_id"] = np.arange(n, dtype=np.int64) + id_offset
        f["labels/morph_class"] = classes.astype(np.int64)
        f["labels/q"] = np.where(classes == 1, 0.32, 1.0) + rng.normal(0, 0.02, n)
        f["labels/snr"] = np.where(noisy == 1, 6.0, 50.0) * rng.uniform(0.9, 1.1, n)
        f["labels/noise_sigma"] = np.where(noisy == 1, 0.15, 0.02)
    return images


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny AstroVaDEr trained for a few steps on one store; a second store held out."""
    from galhpc.checkpoint import save_checkpoint
    from galhpc.config import config_from_dict
    from galhpc.models import build_model
    from galhpc.models.base import StepState

    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("truth_run")
    train_images = _store(root / "store.h5", 60, 0, 0)
    _store(root / "held.h5", 40, 1, 10_000)
    cfg = config_from_dict({"model": {"name": "astrovader", "image_size": SIZE, "latent_dim": 4,
                                      "params": {"n_clusters": 2, "filters": [8, 8, 4]}},
                            "train": {"store": str(root / "store.h5"), "holdout_fraction": 0.5}})
    model = build_model(cfg.model)
    x = torch.from_numpy(train_images[:, None])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(15):  # trained, briefly: the report measures, it need not look good
        opt.zero_grad()
        model.loss({"image": x}, StepState(step=step, epoch=0, weights={"kl": 0.0, "gmm": 0.0})).total.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        enc = model.encode(x)
        model.init_mixture(enc.mu.numpy(), seed=0)
        gamma = model.cluster_probs(enc.mu)
    ckpt = save_checkpoint(root / "run" / "ckpt.pt", {"model_name": "astrovader", "model_state": model.state_dict(),
                                                      "config": cfg.to_yaml()})
    with h5py.File(root / "clusters.h5", "w") as f:
        f["object_id"] = np.arange(60, dtype=np.int64)
        f["mu"] = enc.mu.numpy()
        f["component"] = gamma.argmax(1).numpy().astype(np.int16)
        f["gamma"] = gamma.numpy()
    return root, ckpt


def _report(root, ckpt, out, *extra):
    from galhpc.cli.report import main

    return main(["--checkpoint", str(ckpt), "--clusters", str(root / "clusters.h5"), "--store", str(root / "store.h5"),
                 "--out", str(out), "--n-holdout", "100", "--n-morph", "4", "--n-tsne", "20", "--threads", "1", *extra])


def test_report_truth_section_on_a_separate_held_out_store(tiny_run, tmp_path, monkeypatch):
    from galhpc.checkpoint import load_model
    from galhpc.report import sections
    from galhpc.report.model_calls import encode

    # the sections this test reads (statmorph, t-SNE and samples are tested elsewhere)
    monkeypatch.setattr(sections, "SECTIONS", {k: sections.SECTIONS[k] for k in ("reconstruction", "clusters",
                                                                              "regier", "truth")})
    root, ckpt = tiny_run
    out = tmp_path / "report"
    assert _report(root, ckpt, out, "--holdout-store", str(root / "held.h5")) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["inputs"]["held_out_source"].startswith("separate held-out store")
    assert m["inputs"]["held_out_images"] == 40 == m["reconstruction"]["n_images"]  # every object of it
    assert min(m["reconstruction"]["best_object_ids"]) >= 10_000  # from the held-out store, not the catalogue

    t = m["truth"]
    assert t["n_objects"] == 40 and t["n_clusters"] == 2 and t["latent_dim"] == 4
    assert t["roles"] == {"classes": ["morph_class"], "truths": ["q"], "nuisances": ["snr", "noise_sigma"]}
    # recompute the model's and the baseline's NMI from the held-out store here
    with h5py.File(root / "held.h5") as f:
        images, classes = f["images"][:][:, None], f["labels/morph_class"][:]
    model = load_model(ckpt)
    mu, _ = encode(model, images)
    with torch.no_grad():
        comp = model.cluster_probs(torch.from_numpy(mu)).argmax(1).numpy()
    assert t["model"]["nmi"]["morph_class"] == pytest.approx(normalized_mutual_info_score(classes, comp), abs=1e-9)
    scores = PCA(n_components=4, svd_solver="full").fit_transform(images.reshape(40, -1).astype(np.float64))
    gmm = GaussianMixture(n_components=2, random_state=0).fit_predict(scores)
    assert t["pca_gmm"]["nmi"]["morph_class"] == pytest.approx(normalized_mutual_info_score(classes, gmm), abs=1e-9)
    assert {"probe_r2", "knn", "mse"} <= set(t["pca"]) and {"eta2", "nuisance_flagged"} <= set(t["model"])

    rg = m["regier"]
    assert rg["n_images"] == 40 and set(rg["baselines"]) == {"pca3", "pca4"}
    assert 0 <= rg["baselines"]["pca3"]["fraction_squared_error"] <= 1
    assert rg["noise_sigma_source"] == "store column labels/noise_sigma" and "model" in rg["known_sigma"]

    c = m["clusters"]  # the training store's S/N is a nuisance: η², not an NMI success
    assert c["labels"]["snr"]["role"] == "nuisance" and "nmi" not in c["labels"]["snr"]
    assert set(c["nuisance_eta2"]) == {"snr", "noise_sigma"}

    assert (out / "truth_recovery.png").is_file()
    html = (out / "index.html").read_text()
    assert "7. Truth recovery" in html and "<td>cluster NMI</td><td>morph_class</td>" in html


def test_holdout_store_that_is_the_training_store_is_refused(tiny_run, tmp_path):
    root, ckpt = tiny_run
    assert _report(root, ckpt, tmp_path / "r", "--holdout-store", str(root / "store.h5")) == 1


def test_holdout_store_repeating_training_stamps_is_refused_but_reused_ids_are_not(tiny_run, tmp_path, capsys):
    """A copy of the training store (or a store prepped from the same catalogue) is not held out:
    same object ids with identical pixels are one DataError line.  A separate simulation that
    reuses the ids with other pixels (held.h5) is held out."""
    import shutil

    from galhpc.report.inputs import check_separate
    from galhpc.runtime.errors import DataError

    root, ckpt = tiny_run
    shutil.copy(root / "store.h5", tmp_path / "copy.h5")
    with pytest.raises(DataError, match=r"copy\.h5: --holdout-store repeats stamps of the checkpoint's training "
                                        r"store .*identical pixels"):
        check_separate(tmp_path / "copy.h5", str(root / "store.h5"))
    shutil.copy(root / "store.h5", tmp_path / "other.h5")
    with h5py.File(tmp_path / "other.h5", "r+") as other:  # another simulation numbered the same way
        other["images"][...] = other["images"][...] + np.float32(0.01)
    check_separate(tmp_path / "other.h5", str(root / "store.h5"))
    check_separate(root / "held.h5", str(root / "store.h5"))
    assert _report(root, ckpt, tmp_path / "r", "--holdout-store", str(tmp_path / "copy.h5")) == 1
    assert "repeats stamps" in capsys.readouterr().err


def test_evaluate_checkpoint_and_benchmark_script(tiny_run, capsys):
    import runpy
    import sys

    from galhpc.report.heldout import evaluate_checkpoint

    root, ckpt = tiny_run
    r = evaluate_checkpoint(ckpt, root / "held.h5", n=30, seed=1)
    assert r["n_objects"] == 30 and r["model_name"] == "astrovader" and set(r) >= {"model", "pca", "pca_gmm"}
    argv = sys.argv
    try:
        sys.argv = ["science.py", str(ckpt), str(root / "held.h5"), "--n", "30"]
        with pytest.raises(SystemExit) as exc:
            runpy.run_path("benchmarks/science.py", run_name="__main__")
    finally:
        sys.argv = argv
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    assert "cluster NMI" in printed and "PCA+GMM" in printed and "30 held-out objects" in printed


def test_without_holdout_store_the_trainer_split_and_catalogue_clusters_are_used(tiny_run, tmp_path, monkeypatch):
    from galhpc.data.loader import holdout_mask
    from galhpc.report import sections

    monkeypatch.setattr(sections, "SECTIONS", {"truth": sections.SECTIONS["truth"]})
    root, ckpt = tiny_run
    assert _report(root, ckpt, tmp_path / "r") == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    held = holdout_mask(60, 0.5, 0)  # the checkpoint config's split of the 60 training objects
    assert m["inputs"]["held_out_source"].startswith("trainer holdout split")
    t = m["truth"]
    assert t["n_objects"] == held.sum() and t["cluster_source"] == "clusters.h5 component"
    with h5py.File(root / "clusters.h5") as f, h5py.File(root / "store.h5") as s:
        comp, classes = f["component"][:][held], s["labels/morph_class"][:][held]
    assert t["model"]["nmi"]["morph_class"] == pytest.approx(normalized_mutual_info_score(classes, comp), abs=1e-9)


def test_latent_wider_than_the_pixels_caps_pca_and_uses_diagonal_gmms():
    """A VQ-VAE's flattened codes can outnumber the pixels: PCA gets min(L, N, P) components
    and the GaussianMixtures diagonal covariances (full ones are not estimable there)."""
    rng = np.random.default_rng(2)
    n = 80
    classes = np.arange(n) % 2
    r = truth.truth_recovery(rng.normal(size=(n, 100)) + classes[:, None], None, rng.normal(size=(n, 64)),
                             {"morph_class": classes}, n_clusters=2, seed=0)
    assert r["latent_dim"] == 100 and r["pca_components"] == 64 and r["gmm_covariance"] == "diag"
    assert r["model"]["knn"]["morph_class"]["accuracy"] > 0.9 and "nmi" not in r["model"]
    scores = PCA(n_components=64, svd_solver="full").fit_transform(rng.normal(size=(n, 64)))
    assert truth.pca_gmm_clusters(scores, 2, 0).shape == (n,)
