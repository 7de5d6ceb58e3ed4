"""Clusters follow shape, not signal-to-noise, on galaxies the model never saw (issue "Science
first"; issue 26).

A store of GalSim galaxies of two shapes (elongated disks, round bulges) at two noise levels
(S/N ~ 10 and ~ 150), made by the real `galhpc-prep` and trained on with the real trainer:
AstroVaDEr with the settings of its science preset (flux normalisation, Gaussian
likelihood, orient, input stretch).  Everything is scored on a HELD-OUT store drawn from
other seeds and other distributions (flatter and larger disks, smaller bulges, wider flux
ranges, per-object PSFs of 0.6-0.8"), so neither the model nor a baseline is scored on
the images it was fitted to.  Against:

- PCA + GaussianMixture fitted on the same training pixels;
- the ABLATION: the same model, same data and schedule, with its mixture frozen at its
  s3VDC initialisation (unit-Gaussian KL throughout, the GMM fitted once after α-training
  and never updated: a plain VAE + a GMM).  The VaDE objective must earn its keep.

The floors are the measured values less a stated margin; the comparison the model loses
today (against PCA+GMM) is a strict xfail that carries the measured numbers (below).
"""

import h5py
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import normalized_mutual_info_score as nmi
from sklearn.mixture import GaussianMixture

from galhpc.checkpoint import load_model
from galhpc.config import config_from_dict
from galhpc.data.prep import run_prep
from galhpc.train.schedule import Schedule
from galhpc.train.trainer import train

pytestmark = pytest.mark.slow

SHAPES = {  # elongated exponential disks | round de Vaucouleurs bulges
    "disk": {"bulge_fraction_min": 0.0, "bulge_fraction_max": 0.05, "q_min": 0.25, "disk_hlr_median": 1.1},
    "bulge": {"bulge_fraction_min": 0.95, "bulge_fraction_max": 1.0, "q_min": 0.85, "disk_hlr_median": 0.9},
}
NOISE = {"bright": {"flux_min": 3e4, "flux_max": 4e4}, "faint": {"flux_min": 2e3, "flux_max": 2.6e3}}
# held out: other seeds, and other distributions of every knob the classes share
HELD_SHAPES = {
    "disk": {"bulge_fraction_min": 0.0, "bulge_fraction_max": 0.1, "q_min": 0.2, "disk_hlr_median": 1.25},
    "bulge": {"bulge_fraction_min": 0.9, "bulge_fraction_max": 1.0, "q_min": 0.8, "disk_hlr_median": 0.8},
}
HELD_NOISE = {"bright": {"flux_min": 2e4, "flux_max": 5e4}, "faint": {"flux_min": 1.8e3, "flux_max": 3e3}}
HELD_PSF = {"psf_fwhm": [0.6, 0.8]}
# two more held-out sets with the held-out distributions, other seeds and PSFs broader and
# sharper than any above, so the comparison with PCA+GMM is not judged on one draw
OTHER_HELD = {"broad_psf": (3100, {"psf_fwhm": [0.85, 1.05]}), "sharp_psf": (5300, {"psf_fwhm": [0.5, 0.65]})}

# held-out NMI (shape / noise level), measured on the shared 2-core machine (issue 26), with
# the prep of today's main (flux step subtracting a sigma-clipped border sky): model 0.847 /
# 0.000, the ablation with its mixture frozen at init 0.822 / 0.000, PCA+GMM 0.960 / 0.000.
# Before that prep change: model 0.903 / 0.000, frozen 0.875 / 0.000, PCA+GMM 0.381 / 0.211.
# With the orient disc and the zero-initialised chi2 layer (idle 2-core machine): model 0.921 /
# 0.000, frozen 0.833 / 0.001.
# On the other held-out sets (OTHER_HELD, shape NMI, loaded machine): model 0.599 (broad PSF)
# and 0.919 (sharp PSF), PCA+GMM 0.845 and 0.915.  Tried for issue 26 (with threads 1, which
# gives the model 0.921 / 0.580 / 0.903), none wins on all three sets (model shape NMI held /
# broad / sharp; PCA+GMM 0.960 / 0.845 / 0.915): stretch off
# 0.944 / 0.657 / 0.960; a VaDE phase 2.5x longer 0.729 / 0.486 / 0.747 (its mixture, moved
# by gradients only, stays at its init while the encoder drifts; refitted by EM on the
# training μ 0.955 / 0.691 / 0.937, by a stochastic-EM step per batch 0.878 / 0.551 / 0.833);
# latent 6 with wider filters 0.786 / 0.678 / 0.800; recon chi2 0.031; sigma 0.2 0.906 /
# 0.603 / 0.889; no flips 0.664; latent 2 collapses; the exact γ in the training KL instead of
# the min-max scaled one (with K = 2 always one-hot) or gamma_lambda 5: unchanged.  And train.seed 1 instead of 0 puts
# every stamp in one cluster (0.000; with stretch off its clusters follow the noise level,
# NMI 0.977 on the broad-PSF set): the 0.921 above is one seed's.


def _sources(n, shapes, noise, seed0, extra=None):
    out = []
    for i, shape in enumerate(shapes.values()):
        for j, level in enumerate(noise.values()):
            options = {**shape, **level, "companion_probability": 0.0, "disk_hlr_sigma": 0.1, **(extra or {})}
            out.append({"kind": "galsim", "n": n, "seed": seed0 + 10 * i + j, "options": options})
    return out


def _prep(path, sources):
    run_prep(config_from_dict({"prep": {"output": str(path), "image_size": 32, "recipe": ["flux"], "workers": 1,
                                        "sources": sources}}).prep)
    with h5py.File(path, "r") as f:
        pixels = f["images"][:]
        group = f["labels/source_index"][:]
    return pixels.reshape(len(pixels), -1), group // 2, group % 2  # pixels, shape, noise level


def _config(store, out_dir):
    return config_from_dict({
        "model": {"name": "astrovader", "image_size": 32, "latent_dim": 4, "params": {
            "n_clusters": 2, "filters": [8, 16, 16], "kernels": [3, 3, 3], "l2": 1e-4, "recon": "gaussian",
            "sigma": 0.1, "orient": True, "stretch": 0.2}},
        "schedule": {"enabled": True, "t_alpha": 6, "gmm_init_batches": 10, "t_beta": 2, "t_static": 2,
                     "periods": 1, "dp_max_components": 4, "dp_batches": 2},
        "train": {"store": str(store), "out_dir": str(out_dir), "epochs": 10, "batch_size": 64,
                  "lr": 2e-3, "lr_final": 2e-4, "holdout_fraction": 0.0, "threads": 2, "seed": 0},
    })


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    train_px, train_shape, train_noise = _prep(root / "train.h5", _sources(200, SHAPES, NOISE, 100))
    held = _prep(root / "held.h5", _sources(100, HELD_SHAPES, HELD_NOISE, 700, HELD_PSF))
    others = {name: _prep(root / f"{name}.h5", _sources(100, HELD_SHAPES, HELD_NOISE, seed, psf))
              for name, (seed, psf) in OTHER_HELD.items()}
    for _pixels, shape, noise in (held, *others.values()):
        assert len(set(shape)) == len(set(noise)) == 2
    assert len(set(train_shape)) == len(set(train_noise)) == 2
    return {"root": root, "train_px": train_px, "held": held, "others": others}


def _held_out_scores(checkpoint, held):
    pixels, shape, noise = held
    model = load_model(checkpoint)
    with torch.no_grad():
        component = model.cluster_probs(model.encode(torch.tensor(pixels.reshape(-1, 1, 32, 32))).mu).argmax(1)
    return nmi(shape, component.numpy()), nmi(noise, component.numpy())


@pytest.fixture(scope="module")
def model_checkpoint(data):
    torch.manual_seed(0)
    train(_config(data["root"] / "train.h5", data["root"] / "model"))
    return data["root"] / "model" / "ckpt.pt"


@pytest.fixture(scope="module")
def model_scores(data, model_checkpoint):
    return _held_out_scores(model_checkpoint, data["held"])


@pytest.fixture(scope="module")
def frozen_scores(data):
    """The ablation: the schedule never turns the mixture prior on (gmm weight 0), so the KL is
    against N(0, I) throughout while the GMM is still fitted once after α-training."""
    real = Schedule.weights
    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Schedule, "weights", lambda self, *a, **k: {**real(self, *a, **k), "gmm": 0.0})
        train(_config(data["root"] / "train.h5", data["root"] / "frozen"))
    return _held_out_scores(data["root"] / "frozen" / "ckpt.pt", data["held"])


def _pca_gmm_scores(train_px, held):
    pca = PCA(4, random_state=0).fit(train_px)
    gmm = GaussianMixture(2, random_state=0, n_init=3).fit(pca.transform(train_px))
    pixels, shape, noise = held
    labels = gmm.predict(pca.transform(pixels))
    return nmi(shape, labels), nmi(noise, labels)


@pytest.fixture(scope="module")
def pca_scores(data):
    return _pca_gmm_scores(data["train_px"], data["held"])


def test_held_out_clusters_follow_shape_not_noise(model_scores):
    shape, noise = model_scores
    print(f"held-out NMI shape / noise: model {shape:.3f} / {noise:.3f}")
    # measured 0.921 / 0.000 (0.847 before the orient disc; 0.903 before the sky-subtracting flux
    # step): floors 0.70 and 0.05
    assert shape > 0.70 and noise < 0.05


@pytest.mark.xfail(strict=True, reason=(
    "measured: on held-out stamps PCA+GMM (fitted on the training pixels) splits by shape better "
    "than the model, NMI 0.960 vs 0.921 (0.847 before the orient disc), since the flux step subtracts the "
    "border sky (before: 0.381 vs 0.903), and on the broad-PSF held-out set 0.845 vs 0.599 (the model leads on "
    "the sharp-PSF set by 0.004, 0.919 vs 0.915, within noise); strict, so a model that beats it on all three "
    "makes this fail until it is promoted"))
def test_model_beats_pca_gmm_on_held_out_clusters(data, model_checkpoint, model_scores, pca_scores):
    sets = {"held": (model_scores, pca_scores)}
    for name, held in data["others"].items():
        sets[name] = (_held_out_scores(model_checkpoint, held), _pca_gmm_scores(data["train_px"], held))
    for name, ((shape, noise), (pca_shape, pca_noise)) in sets.items():
        print(f"{name}: held-out NMI shape / noise: model {shape:.3f} / {noise:.3f}, "
              f"PCA+GMM {pca_shape:.3f} / {pca_noise:.3f}")
    for name, ((shape, noise), (pca_shape, pca_noise)) in sets.items():
        assert shape > pca_shape and noise <= pca_noise + 0.01, name


def test_mixture_training_beats_the_mixture_frozen_at_init(model_scores, frozen_scores):
    # measured: held-out NMI 0.921 vs 0.833 frozen (the orient models' inscribed disc and the
    # zero-initialised chi2 output layer; 0.847 vs 0.822 before them): the VaDE phase must add 0.05
    (shape, noise), (frozen_shape, frozen_noise) = model_scores, frozen_scores
    print(f"held-out NMI shape / noise: model {shape:.3f} / {noise:.3f}, "
          f"frozen mixture {frozen_shape:.3f} / {frozen_noise:.3f}")
    assert shape > frozen_shape + 0.05 and noise <= frozen_noise + 0.01
