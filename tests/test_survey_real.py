"""The survey preset on real pixels: HST cutouts of the Hubble Deep Field (scikit-image's
copy of the WFPC2 image), detected, cut and written as FITS + catalogue by
`galhpc.data.hdf`, prepped by configs/prep_survey.yaml, split into training and held-out
stamps by position on the image (the catalogue's `held_out` strip), trained with
configs/astrovader_survey.yaml and scored on the held-out strip against PCA-10 fitted on
the training stamps (`galhpc.report.survey`).

`LABELLED` (tests/data/hdf_labelled.csv) are objects classified by eye on the stamps (pixel
x, y of the HDF image, class); the stars with diffraction spikes have saturated cores, which
the prep keeps masked (`prep.saturated: mask`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("photutils")
pytest.importorskip("skimage")

ROOT = Path(__file__).resolve().parents[1]

# (x, y) on the HDF image (pixels), class; labelled by looking at the 48x48 stamps (the note
# names the HDF object)
with open(ROOT / "tests" / "data" / "hdf_labelled.csv", newline="") as table:
    LABELLED = [(int(row["x"]), int(row["y"]), row["class"]) for row in csv.DictReader(table)]


def test_the_labelled_table_is_big_enough_and_spread_over_classes():
    classes = [c for _, _, c in LABELLED]
    assert len(LABELLED) >= 40 and len(set(classes)) == 5 and min(classes.count(c) for c in set(classes)) >= 3
    xy = np.array([(x, y) for x, y, _ in LABELLED], float)
    d = np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    assert d.min() > 10  # no galaxy labelled twice (deblended pieces of one system)


@pytest.fixture(scope="module")
def hdf_stores(tmp_path_factory):
    """Training and held-out stores of the HDF cutouts, prepped with configs/prep_survey.yaml."""
    from astropy.table import Table

    from galhpc.config import load_config
    from galhpc.data.hdf import build_hdf_cutouts
    from galhpc.data.prep import run_prep

    folder = tmp_path_factory.mktemp("hdf")
    _, catalog = build_hdf_cutouts(folder)
    table = Table.read(catalog)
    table = table[table["has_stamp"]]
    prep = load_config(ROOT / "configs" / "prep_survey.yaml").prep
    stores = {}
    for name, held in (("train", 0), ("heldout", 1)):
        part = folder / f"{name}.fits"
        table[table["held_out"] == held].write(part)
        source = dataclasses.replace(prep.sources[0], path=str(folder / "stamps"), catalog=str(part))
        stores[name] = run_prep(dataclasses.replace(prep, sources=[source], output=str(folder / f"{name}.h5")))
    return stores


def read_stamps(store):
    from galhpc.formats.hdf5 import open_h5_readonly
    from galhpc.report.survey import SurveyStamps

    with open_h5_readonly(store) as f:
        stamps = SurveyStamps(f["images"][:], f["sigma"][:], f["mask"][:] > 0, f["object_id"][:])
        xy = np.stack([f["labels/x"][:], f["labels/y"][:]], 1)
    return stamps, xy


def train_and_score(config: str, hdf_stores, out: Path):
    """The preset `config` trained on the HDF training strip and scored on the held-out strip
    against PCA-10 fitted on the training stamps (`galhpc.report.survey`), with the labelled
    objects' μ for the similarity search; returns (model, scores, training stamps)."""
    from galhpc.checkpoint import load_model
    from galhpc.config import load_config
    from galhpc.report import model_calls
    from galhpc.report.heldout import model_clusters
    from galhpc.report.survey import fit_pca, gappy_pca_reconstructions, survey_scores
    from galhpc.train.trainer import train

    cfg = load_config(ROOT / "configs" / config)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, store=str(hdf_stores["train"]), out_dir=str(out / "run"), backend="single", device="cpu"))
    train(cfg)
    model = load_model(out / "run" / "ckpt.pt")
    model.eval()
    train_stamps, train_xy = read_stamps(hdf_stores["train"])
    held, held_xy = read_stamps(hdf_stores["heldout"])
    mu, _ = model_calls.encode(model, held.images[:, None], 128)
    recons = model_calls.reconstruct(model, held.images[:, None], 128)[:, 0]
    components, _, _ = model_clusters(model, mu, None, 0)
    images = np.concatenate([train_stamps.images, held.images])
    xy = np.concatenate([train_xy, held_xy])
    rows, classes = [], []
    for x, y, cls in LABELLED:
        d = np.hypot(xy[:, 0] - x, xy[:, 1] - y)
        if d.min() < 3:
            rows.append(int(d.argmin()))
            classes.append(cls)
    assert len(rows) >= 40, f"only {len(rows)} labelled objects survived the prep"
    labelled_mu, _ = model_calls.encode(model, images[rows][:, None], 128)
    scores = survey_scores(recons, mu, components, held, fit_pca(train_stamps.images),
                           (labelled_mu, images[rows], np.array(classes)),
                           gappy=gappy_pca_reconstructions(train_stamps, held))
    return model, scores, train_stamps, held


@pytest.fixture(scope="module")
def survey_run(hdf_stores, tmp_path_factory):
    """configs/astrovader_survey.yaml trained and scored (`train_and_score`), plus the
    clusters of the training strip (the scores are also written to survey_scores.json
    beside the run, for the docs)."""
    from galhpc.report import model_calls
    from galhpc.report.heldout import model_clusters
    from galhpc.report.survey import nuisance_scores, nuisances

    tmp_path = tmp_path_factory.mktemp("survey_run")
    model, scores, train_stamps, _ = train_and_score("astrovader_survey.yaml", hdf_stores, tmp_path)
    train_mu, _ = model_calls.encode(model, train_stamps.images[:, None], 128)
    train_components, _, _ = model_clusters(model, train_mu, None, 0)
    scores["train_clusters"] = nuisance_scores(train_components, nuisances(train_stamps))
    (tmp_path / "survey_scores.json").write_text(json.dumps(scores, indent=1))
    print(json.dumps(scores, indent=1))
    return scores


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~4 min on 2 free cores (HDF build, two preps, 600 steps); 15 min on a loaded machine
def test_survey_preset_on_real_held_out_stamps(survey_run):
    """The survey preset beats PCA-10 on the held-out strip: reconstruction (MSE, χ² with
    the known σ, stamp by stamp), similarity search, no frame, no neighbour clusters."""
    recon, clusters, search = survey_run["reconstruction"], survey_run["clusters"]["model"], survey_run["search"]
    # Thresholds from the measured run (docs/models.md "Real survey cutouts"), with margin.
    # frame artefacts (orient): corners as quiet as the sky annulus just inside the disc
    assert recon["model"]["corner_ratio"] < 1.2
    # reconstruction below PCA-10 fitted on the training strip, and below a best-fit Gaussian
    assert recon["model"]["mse"] < 0.995 * recon["pca10"]["mse"]
    assert recon["model"]["chi2_per_pixel"] < 0.95 * recon["pca10"]["chi2_per_pixel"]
    assert recon["model"]["chi2_per_pixel"] < recon["gaussian"]["chi2_per_pixel"]
    # Regier's test stamp by stamp: the model wins most of them (0.862 measured, seeds 0 and 1;
    # 0.704 before the linear path was a gappy PCA)
    assert recon["wins"]["pca10"] >= 0.8 and recon["wins"]["gaussian"] > 0.8
    # similarity search: same-class neighbours by μ above PCA-10's scores and well above chance
    assert search["model"] > search["pca10"] and search["model"] > search["chance"] + 0.1
    # clusters do not follow where the neighbours' light is
    assert max(clusters["eta2_neighbour_x"], clusters["eta2_neighbour_y"]) <= 0.10
    # χ² also below a PCA-10 that never sees a masked pixel (gappy PCA: 1.29 vs 1.61 measured)
    assert recon["model"]["chi2_per_pixel"] < 0.95 * recon["pca10_gappy"]["chi2_per_pixel"]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="against gappy PCA-10 (fitted and projected on valid pixels only) AstroVaDEr "
                   "wins only 59 % of the stamps by χ² (MSE 0.0653 vs 0.0654: level; issue 25 item 4)")
def test_survey_preset_beats_a_pca_that_leaves_masked_pixels_out(survey_run):
    recon = survey_run["reconstruction"]
    assert recon["model"]["mse"] <= recon["pca10_gappy"]["mse"] and recon["wins"]["pca10_gappy"] >= 0.7


@pytest.mark.slow
def test_survey_preset_clusters_follow_snr_far_less_than_pixels_do(survey_run):
    """The depth-conditioned prior (`depth_prior`) keeps most of the brightness out of the clusters.

    Measured (seed 0, 196 held-out stamps): η² of log S/N 0.088, of log noise σ 0.206, largest
    cluster 40 %; training strip 0.037 / 0.066 / 29 %.  PCA-10 + GMM in the same run: 0.38 /
    0.49.  Without the depth prior: 0.35 / 0.57 / 43 %."""
    clusters, baseline = survey_run["clusters"]["model"], survey_run["clusters"]["pca10_gmm"]
    assert clusters["max_share"] <= 0.40
    assert clusters["eta2_log_snr"] < 0.5 * baseline["eta2_log_snr"]
    assert clusters["eta2_log_noise"] < 0.5 * baseline["eta2_log_noise"]
    train = survey_run["train_clusters"]
    assert train["eta2_log_snr"] <= 0.10 and train["eta2_log_noise"] <= 0.10


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="on the held-out strip AstroVaDEr's clusters still carry some depth: η² of log "
                   "noise σ 0.206 (log S/N 0.088; training strip 0.066 / 0.037; PCA-10+GMM 0.49 / 0.38): the "
                   "held-out latents keep |r| 0.2-0.3 with S/N after the depth standardisation (issue 25 item 4)")
def test_survey_preset_clusters_do_not_follow_snr(survey_run):
    clusters = survey_run["clusters"]["model"]
    assert clusters["eta2_log_snr"] <= 0.10 and clusters["eta2_log_noise"] <= 0.10


@pytest.fixture(scope="module")
def vqvae_scores(hdf_stores, tmp_path_factory):
    """configs/vqvae_survey.yaml trained and scored exactly as the AstroVaDEr preset above
    (`train_and_score`), plus the codebook's use on the held-out stamps."""
    import torch

    out = tmp_path_factory.mktemp("vqvae_survey")
    model, scores, _, held = train_and_score("vqvae_survey.yaml", hdf_stores, out)
    with torch.no_grad():
        codes = model.codes(torch.as_tensor(held.images[:, None], dtype=torch.float32)).flatten().numpy()
    p = np.bincount(codes, minlength=model.num_codes) / codes.size
    scores["codebook"] = {"num_codes": model.num_codes, "used": int((p > 0).sum()),
                          "perplexity": float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))}
    (out / "survey_scores.json").write_text(json.dumps(scores, indent=1))
    print(json.dumps(scores, indent=1))
    return scores


@pytest.mark.slow
# HDF build + two preps (shared) and 1500 steps: 155 s in all on a lightly loaded 2-core machine
@pytest.mark.timeout(1800)
def test_vqvae_survey_preset_beats_pca_on_real_held_out_stamps(vqvae_scores):
    """configs/vqvae_survey.yaml against PCA-10 on the held-out HDF strip (issue #25 item 4).
    Measured (docs/models.md "Real survey cutouts", 196 held-out stamps, seed 0, 1500 steps):
    MSE 0.0617 vs 0.0671, χ²/pixel 1.12 vs 1.91 (Gaussian 429), 91 % of stamps won, largest
    cluster 27 %, precision@5 0.461 vs 0.335, 508 of 512 codes used (perplexity 239).  Seed 1
    loses (MSE 0.100): the optimisation is unstable, see the docs."""
    recon, clusters, search = vqvae_scores["reconstruction"], vqvae_scores["clusters"]["model"], vqvae_scores["search"]
    model, pca, gauss = recon["model"], recon["pca10"], recon["gaussian"]
    # reconstruction: masked MSE and χ² with the per-pixel σ below PCA-10 and a Gaussian blob
    assert model["mse"] < 0.99 * pca["mse"]
    assert model["chi2_per_pixel"] < 0.85 * pca["chi2_per_pixel"]
    assert model["chi2_per_pixel"] < gauss["chi2_per_pixel"]
    assert recon["wins"]["pca10"] >= 0.75
    # and below a PCA-10 that never sees a masked pixel (gappy PCA: MSE 0.0654, χ² 1.61, 87 % won)
    assert model["mse"] < 0.99 * recon["pca10_gappy"]["mse"] and recon["wins"]["pca10_gappy"] >= 0.75
    # clusters of the code map do not follow where the neighbours sit, nor swallow the set
    assert clusters["eta2_neighbour_x"] <= 0.10 and clusters["eta2_neighbour_y"] <= 0.10
    assert clusters["max_share"] <= 0.40
    # similarity search by μ finds same-class galaxies more often than PCA-10's scores do
    assert search["model"] > search["pca10"] + 0.03
    # no codebook collapse
    book = vqvae_scores["codebook"]
    assert book["used"] >= 0.5 * book["num_codes"] and book["perplexity"] > 100


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.xfail(strict=True, reason="the VQ-VAE's code map carries each stamp's depth: held-out η² of log S/N "
                   "0.59 and of log noise σ 0.75 (PCA+GMM 0.41/0.60; target ≤ 0.10), issue #25 item 4")
def test_vqvae_survey_clusters_do_not_follow_signal_to_noise(vqvae_scores):
    clusters = vqvae_scores["clusters"]["model"]
    assert clusters["eta2_log_snr"] <= 0.10 and clusters["eta2_log_noise"] <= 0.10
