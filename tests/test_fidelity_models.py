"""Every generative model kind scored by galhpc-fidelity's job on a small trained model
(β-VAE, Flow-VAE, VQ-VAE + PixelCNN prior unconditional, class- and float-conditioned,
AstroVaDEr ex post), and broken generators (blank stamps, shuffled pixels) flagged by the
same scorer while fresh real stamps are not.

statmorph costs about a second a stamp on a loaded core, so the sets are small and the real
set's statistics are measured once (a cache around the real `morphology_table`).
"""

import hashlib

import numpy as np
import pytest
import torch
from scipy import stats
from test_trainer import toy_galaxies

from galhpc.config import ModelConfig, RunConfig, ScheduleConfig, TrainConfig
from galhpc.data.sources import Block
from galhpc.data.store import StoreWriter
from galhpc.fidelity import morphology
from galhpc.fidelity.run import FidelityOptions, run_fidelity
from galhpc.fidelity.sampling import SamplingOptions, gamma_moments
from galhpc.train.distributed import SingleProcess
from galhpc.train.trainer import train

pytestmark = pytest.mark.slow

N_GEN, N_REAL = 6, 12


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A toy store (labels morph_class and the float `scale_px`) and a cached statmorph."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fidelity_models")
    images, cls = toy_galaxies(120, 32)
    scale = np.where(cls == 0, 32 / 8, 32 / 24).astype(np.float32)
    block = Block(images=images, object_id=np.arange(120, dtype=np.int64),
                  labels={"morph_class": cls, "scale_px": scale})
    with StoreWriter(root / "toy.h5", "prep: {}\n", chunk_rows=32) as writer:
        writer.append(block)
    return root


_CACHE: dict = {}


@pytest.fixture
def cached_statmorph(monkeypatch):
    """The real `morphology_table`, measured once per distinct stack in this module (every
    test scores against the same real set)."""
    real_table, cache = morphology.morphology_table, _CACHE

    def table(images, desc="statmorph", processes=1):
        key = hashlib.sha1(np.ascontiguousarray(images, np.float64).tobytes()).hexdigest()
        if key not in cache:
            cache[key] = real_table(images, desc, processes)
        return cache[key]

    monkeypatch.setattr(morphology, "morphology_table", table)
    monkeypatch.setenv("GALHPC_PROGRESS", "0")


def _train(root, name, model: ModelConfig, epochs=2, schedule=None):
    cfg = RunConfig(model=model, schedule=schedule or ScheduleConfig(),
                    train=TrainConfig(store=str(root / "toy.h5"), out_dir=str(root / name), epochs=epochs,
                                      batch_size=32, threads=1, holdout_fraction=0.2, backend="single",
                                      device="cpu", lr=2e-3))
    return train(cfg, backend=SingleProcess("cpu")).checkpoint


@pytest.fixture(scope="module")
def checkpoints(toy):
    vae = {"filters": [8, 8, 8, 8], "recon": "mse"}
    out = {
        "beta_vae": _train(toy, "beta", ModelConfig(name="vae", image_size=32, latent_dim=4,
                                                     params={**vae, "objective": "beta"}), epochs=2),
        "flow_vae": _train(toy, "flow", ModelConfig(name="vae", image_size=32, latent_dim=4,
                                                     params={**vae, "objective": "flow", "flow_lambda": 2.0}),
                           epochs=2),
        "astrovader": _train(toy, "vader", ModelConfig(
            name="astrovader", image_size=32, latent_dim=3,
            params={"n_clusters": 2, "filters": [4, 4, 4], "kernels": [3, 3, 3]}), epochs=3,
            schedule=ScheduleConfig(enabled=True, t_alpha=1, gmm_init_batches=4, t_beta=1, t_static=1, periods=1,
                                    dp_max_components=3, dp_batches=2)),
    }
    vqvae = _train(toy, "vqvae", ModelConfig(name="vqvae", image_size=32, latent_dim=8, params={"num_codes": 16}),
                   epochs=1)
    prior = {"vqvae_checkpoint": str(vqvae), "hidden": 8, "layers": 2, "kernel": 3}
    for name, condition in (("prior", None),
                            ("prior_class", {"column": "morph_class", "kind": "class", "num_classes": 2}),
                            ("prior_float", {"column": "scale_px", "kind": "float", "offset": 2.0, "scale": 1.0})):
        params = prior if condition is None else {**prior, "condition": condition}
        out[name] = _train(toy, name, ModelConfig(name="vqvae_prior", image_size=32, params=params), epochs=1)
    return out


def _check_contract(summary, n_generated=N_GEN):
    rows = {r["statistic"]: r for r in summary["statistics"]}
    assert list(rows) == list(morphology.STATISTICS)
    for r in rows.values():
        assert r["n_real"] > 0 and np.isfinite(r["floor_ks"]) and 0 <= r["floor_ks"] <= 1
        assert r["n_generated"] <= n_generated
        if r["n_generated"]:
            assert 0 <= r["ks"] <= 1 and r["wasserstein"] >= 0 and np.isfinite(r["ks_err"])
            assert r["ks_target_met"] == (r["ks"] <= max(0.15, 1.5 * r["floor_ks"]))
        else:  # never measurable on the generated stamps: a missed target, still counted
            assert not r["ks_target_met"]
    assert rows["measured"]["n_generated"] == n_generated  # every stamp is measured or not
    t = summary["targets"]
    assert t["ks_scored"] == len(morphology.STATISTICS)
    assert t["ks_met"] == sum(r["ks_target_met"] for r in rows.values())
    assert 0 <= summary["classifier"]["auc"] <= 1 and t["auc_met"] == (summary["classifier"]["auc"] <= 0.70)
    assert 0 <= summary["memorisation"]["p_value"] <= 1
    assert t["passes"] == (t["ks_all_met"] and t["auc_met"] and t["memorisation_met"])


@pytest.mark.parametrize("kind,sampling", [
    ("beta_vae", SamplingOptions()), ("flow_vae", SamplingOptions()), ("prior", SamplingOptions(temperature=0.8)),
    ("prior_class", SamplingOptions()), ("prior_float", SamplingOptions()),
    ("beta_vae", SamplingOptions("expost", 1.0, 3)), ("astrovader", SamplingOptions("expost", 0.9)),
])
def test_every_model_kind_is_scored(toy, checkpoints, cached_statmorph, kind, sampling):
    options = FidelityOptions(n_generated=N_GEN, n_real=N_REAL, n_training=60, n_boot=5, seed=0, figures=False,
                              sampling=sampling)
    result, paths = run_fidelity(toy / f"out_{kind}_{sampling.mode}", options, checkpoint=checkpoints[kind])
    summary = result.summary()
    _check_contract(summary)
    assert result.generated_images.shape == (N_GEN, 32, 32) and np.isfinite(result.generated_images).all()
    assert paths["json"].exists()


@pytest.mark.slow
def test_conditioned_prior_draws_at_the_real_stamps_labels(toy, checkpoints, cached_statmorph):
    """The class-conditioned prior's generated set has the real set's classes (drawn from the
    real rows' labels), not equal shares."""
    from galhpc.checkpoint import load_model
    from galhpc.fidelity import sources

    model = load_model(checkpoints["prior_class"]).eval()
    labels = np.array([1, 1, 1, 0, 1, 1])
    got = sources.sample_model(model, 6, seed=3, batch_size=4, condition_values=labels)
    np.testing.assert_array_equal(got.component, labels)
    real = sources.StampSet(np.zeros((4, 1, 32, 32), np.float32), "x", rows=np.array([0, 1, 2, 3]))
    with pytest.raises(Exception, match="no label column 'nope'"):
        sources.read_store_labels(toy / "toy.h5", real.rows, "nope")


def test_gamma_moments_match_weighted_numpy():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(200, 3))
    gamma = rng.dirichlet([1, 1], 200)
    w, m, c = gamma_moments(mu, gamma)
    np.testing.assert_allclose(w, gamma.mean(0))
    for k in range(2):
        np.testing.assert_allclose(m[k], np.average(mu, axis=0, weights=gamma[:, k]))
        np.testing.assert_allclose(c[k], np.cov(mu.T, aweights=gamma[:, k], bias=True) + 1e-6 * np.eye(3),
                                   atol=1e-10)


def test_broken_generators_are_flagged_and_real_stamps_pass(toy, cached_statmorph):
    """Blank stamps and pixel-shuffled galaxies do not pass for real: every statistic counts
    (a blank set has no statmorph statistics: missed targets, not skipped ones), the
    measured-fraction row sees the difference, the classifier separates them; fresh real
    stamps are not flagged so."""
    from galhpc.fidelity.score import score
    from galhpc.io.store import open_store

    with open_store(toy / "toy.h5") as s:
        real = s.read("images", np.arange(N_REAL))
        training = s.read("images", np.arange(60, 120))
    fresh = toy_galaxies(N_REAL, 32, seed=11)[0]  # the same population, never in the store
    rng = np.random.default_rng(5)
    shuffled = np.stack([rng.permutation(x.ravel()).reshape(x.shape) for x in fresh[:N_GEN]])
    results = {name: score(gen, real, training, n_boot=5, seed=0).summary()
               for name, gen in (("blank", np.zeros_like(fresh[:N_GEN])), ("shuffled", shuffled), ("fresh", fresh))}
    for name in ("blank", "shuffled"):
        _check_contract(results[name])
        assert not results[name]["targets"]["passes"], name
        assert results[name]["classifier"]["auc"] > 0.9, name
    blank = {r["statistic"]: r for r in results["blank"]["statistics"]}
    # every statmorph statistic (and the size–flux one) is unmeasurable on blank stamps: missed, counted
    unmeasured = [name for name, r in blank.items() if r["n_generated"] == 0]
    assert unmeasured == [*morphology.STATMORPH, "log_sb_rhalf"]
    assert not any(blank[name]["ks_target_met"] for name in unmeasured)
    # the measured-fraction row is the KS of a 0/1 sample: |fraction measured, real − generated|
    real_measured = morphology.morphology_table(np.asarray(real, np.float64))["measured"]  # cached
    assert blank["measured"]["ks"] == pytest.approx(stats.ks_2samp(np.zeros(N_GEN), real_measured).statistic)
    assert blank["measured"]["ks"] == pytest.approx(real_measured.mean()) and real_measured.mean() > 0.9
    # fresh real stamps: at 12 a side the verdict itself is noisy (all targets met for one seed
    # in three), but they meet the KS targets nearly everywhere and the classifier cannot
    # separate them as it separates the broken sets
    _check_contract(results["fresh"], N_REAL)
    fresh = results["fresh"]["targets"]
    assert fresh["ks_met"] >= fresh["ks_scored"] - 2 and fresh["memorisation_met"], fresh
    assert results["fresh"]["classifier"]["auc"] < 0.9
