"""galhpc-report's statmorph statistics per condition of a float-conditioned generator: quantile
bins of the held-out stamps' condition, samples drawn at each bin's median, KS per bin.

The generator is a real PixelCNN prior (`vqvae_prior`, condition kind "float" on the store label
`hlr`) over a briefly trained VQ-VAE, as in tests/test_pixelcnn.py; the report must measure it,
not find it good."""

import json

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from galhpc.checkpoint import assemble_model, save_checkpoint
from galhpc.cli.report import main
from galhpc.config import ModelConfig, RunConfig
from galhpc.models import build_model
from galhpc.models.base import StepState
from galhpc.models.pixelcnn import GatedPixelCNN
from galhpc.report import metrics

SIZE, N = 32, 64
OFFSET, SCALE = 2.5, 0.5


def _blobs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Round Gaussian blobs whose width is the label `hlr` (px), plus noise, in [0, 1]."""
    hlr = rng.uniform(1.5, 3.5, N)
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    images = np.exp(-(xx**2 + yy**2)[None] / (2 * hlr[:, None, None] ** 2))
    images = images + rng.normal(0, 0.02, images.shape)
    images = (images - images.min(axis=(1, 2), keepdims=True)) / np.ptp(images, axis=(1, 2), keepdims=True)
    return images.astype(np.float32), hlr.astype(np.float32)


def _fit(model, batches, steps: int) -> None:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    for step in range(steps):
        out = model.loss(batches(step), StepState())
        opt.zero_grad()
        out.total.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def float_prior_run(tmp_path_factory):
    """store.h5 (images, object_id, labels/hlr), a float-conditioned prior checkpoint, clusters.h5."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("float_prior")
    images, hlr = _blobs(np.random.default_rng(0))
    with h5py.File(root / "store.h5", "w") as f:
        f["images"] = images
        f["object_id"] = np.arange(N, dtype=np.int64) + 500
        f["labels/hlr"] = hlr
    x, h = torch.from_numpy(images[:, None]), torch.from_numpy(hlr)
    g = torch.Generator().manual_seed(0)

    def batch(_step):
        idx = torch.randint(0, N, (16,), generator=g)
        return {"image": x[idx], "hlr": h[idx]}

    vq_cfg = RunConfig()
    vq_cfg.model = ModelConfig(name="vqvae", image_size=SIZE, latent_dim=4,
                               params={"num_codes": 8, "hidden": 16, "res_hidden": 4, "restart_every": 10})
    vqvae = build_model(vq_cfg.model)
    _fit(vqvae, batch, steps=100)
    save_checkpoint(root / "vq.pt", {"model_name": "vqvae", "model_state": vqvae.state_dict(),
                                     "config": vq_cfg.to_yaml()})
    cfg = RunConfig()
    cfg.model = ModelConfig(name="vqvae_prior", image_size=SIZE, params={
        "vqvae_checkpoint": str(root / "vq.pt"), "hidden": 8, "layers": 2, "kernel": 3,
        "condition": {"column": "hlr", "kind": "float", "offset": OFFSET, "scale": SCALE}})
    cfg.train.holdout_fraction = 0.5  # about 32 held-out stamps: enough for three bins of five
    prior = assemble_model(cfg.model)
    _fit(prior, batch, steps=60)
    ckpt = save_checkpoint(root / "prior" / "ckpt.pt", {"model_name": "vqvae_prior",
                                                        "model_state": prior.state_dict(), "config": cfg.to_yaml()})
    with torch.no_grad():
        mu = prior.encode(x).mu.flatten(1).numpy()
    with h5py.File(root / "clusters.h5", "w") as f:
        f["object_id"] = np.arange(N, dtype=np.int64) + 500
        f["mu"] = mu
        f["component"] = (hlr > np.median(hlr)).astype(np.int16)
    return {"root": root, "ckpt": ckpt}


def test_float_conditioned_prior_gets_statistics_per_condition_bin(float_prior_run, tmp_path, monkeypatch):
    calls = []  # (number of maps, condition vectors) of every PixelCNN sampling
    original = GatedPixelCNN.sample

    def spy(self, n, shape, cond=None, *args, **kwargs):
        calls.append((n, None if cond is None else cond.detach().clone()))
        return original(self, n, shape, cond, *args, **kwargs)

    monkeypatch.setattr(GatedPixelCNN, "sample", spy)
    root, out = float_prior_run["root"], tmp_path / "report"
    n_morph = 15
    assert main(["--checkpoint", str(float_prior_run["ckpt"]), "--clusters", str(root / "clusters.h5"),
                 "--store", str(root / "store.h5"), "--out", str(out), "--n-morph", str(n_morph),
                 "--n-tsne", "20", "--threads", "1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["failed_sections"] == []
    gv = m["generated_vs_real"]
    assert gv["n_real"] == n_morph and gv["n_generated"] == n_morph
    per = gv["per_hlr_bin"]
    assert per["column"] == "hlr" and per["n_bins_requested"] == 3 and per["n_bins"] == 3 and per["note"] is None
    edges = per["edges"]
    assert len(edges) == 4 and edges == sorted(edges) and len(per["bins"]) == 3
    assert sum(b["n_real"] for b in per["bins"]) == n_morph and sum(b["n_generated"] for b in per["bins"]) == n_morph
    for i, b in enumerate(per["bins"]):
        assert (b["lower"], b["upper"]) == (edges[i], edges[i + 1])
        assert b["lower"] <= b["condition_value"] <= b["upper"]
        assert b["n_real"] == b["n_generated"] == 5
        assert set(b["ks"]) == {"concentration", "asymmetry", "smoothness", "gini", "m20", "ellipticity",
                                "half_light_radius", "sersic_n", "flux", "log_sb_rhalf", "log_power_k1",
                                "log_power_k2", "log_power_k3", "log_power_k4", "measured"}
        assert set(b["median_real"]) == set(b["ks"])
        assert b["ks"]["gini"]["n_a"] <= b["n_real"] and b["ks"]["gini"]["n_b"] <= b["n_generated"]
    assert any(b["ks"]["gini"]["ks"] is not None for b in per["bins"])  # generated stamps statmorph can measure

    # the generated stamps of bin i were drawn at bin i's condition value: the condition vector
    # entering the PixelCNN is (value - offset) / scale, one call of n_generated maps per bin
    per_bin_calls = calls[-3:]  # generated_vs_real is the last section to sample
    for b, (n, cond) in zip(per["bins"], per_bin_calls, strict=True):
        assert n == b["n_generated"] and cond.shape == (n, 1)
        assert torch.allclose(cond, torch.full((n, 1), (b["condition_value"] - OFFSET) / SCALE), atol=1e-5)
    # the generation section's samples are per bin too (a float prior cannot sample without a value)
    assert m["generation"]["samples_source"].startswith("model.sample(hlr=")

    png = out / "morphology_per_hlr.png"
    with Image.open(png) as im:
        im.load()
        assert im.size[0] > 100 and im.size[1] > 100
    assert "morphology_per_hlr.png" in (out / "index.html").read_text()


def test_quantile_bins_match_numpy_quantiles():
    rng = np.random.default_rng(1)
    values = rng.lognormal(size=101)
    values[[3, 50]] = np.nan
    bins = metrics.quantile_bins(values, n_bins=3, min_per_bin=5)
    finite = values[np.isfinite(values)]
    np.testing.assert_allclose(bins.edges, np.quantile(finite, [0, 1 / 3, 2 / 3, 1]))
    assert bins.n_bins == 3 and bins.note is None and bins.index[[3, 50]].tolist() == [-1, -1]
    for i in range(3):
        lower, upper = bins.edges[i], bins.edges[i + 1]
        inside = (values >= lower) & ((values < upper) if i < 2 else (values <= upper))
        assert np.array_equal(bins.index == i, inside)
        assert bins.counts[i] == inside.sum()
        assert bins.values[i] == pytest.approx(np.median(values[inside]))
    assert bins.counts.sum() == 99 and abs(int(bins.counts.max()) - int(bins.counts.min())) <= 1


def test_quantile_bins_fewer_when_few_or_tied_values():
    few = metrics.quantile_bins(np.arange(12.0), n_bins=3, min_per_bin=5)
    assert few.n_bins == 2 and "12 finite values" in few.note
    np.testing.assert_allclose(few.edges, np.quantile(np.arange(12.0), [0, 0.5, 1]))
    one = metrics.quantile_bins([2.0, np.nan, 3.0], n_bins=3, min_per_bin=5)
    assert one.n_bins == 1 and one.index.tolist() == [0, -1, 0] and one.values.tolist() == [2.5]
    tied = metrics.quantile_bins([1.0] * 10 + [2.0] * 5, n_bins=3, min_per_bin=5)
    assert tied.n_bins == 2 and "tied" in tied.note and tied.counts.tolist() == [10, 5]
    assert tied.values.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="no finite"):
        metrics.quantile_bins([np.nan, np.inf])


class _Constant(torch.nn.Module):
    """A conditional generator whose every pixel is its condition value (class or float), so a
    stamp's statistic (patched below to the stamp's mean) tells which condition drew it."""

    generative = True
    name = "constant"

    def __init__(self, kind: str):
        from galhpc.models.base import SampleCondition

        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.condition = SampleCondition(kind, "size", 2)
        self.drawn = []

    @property
    def sample_condition(self):
        return self.condition

    def sample(self, n, generator=None, **conditions):
        from galhpc.models.base import Samples

        key = "component" if self.condition.kind == "class" else "size"
        assert set(conditions) == {key}, conditions  # neither can sample without its condition
        value = float(conditions[key])
        self.drawn.append((n, value))
        component = int(value) if self.condition.kind == "class" else -1
        return Samples(torch.full((n, 1, 8, 8), value), torch.zeros(n, 1), torch.full((n,), component))


@pytest.fixture
def mean_as_statistics(monkeypatch):
    from galhpc.fidelity import morphology

    monkeypatch.setattr(morphology, "morphology_table", lambda images, desc="statmorph", processes=1: {
        name: np.asarray(images, np.float64).mean(axis=(1, 2, 3)) for name in morphology.STATISTICS})
    monkeypatch.setattr(morphology, "median_sky_sigma", lambda images: 0.0)


def _inputs(model, real_values, images):
    from galhpc.report.heldout import EncodedObjects
    from galhpc.report.inputs import CheckpointInputs, HeldOutInputs, ReportInputs

    n = len(images)
    objects = EncodedObjects(rows=np.arange(n), object_id=np.arange(n), images=images, mu=np.zeros((n, 2)),
                             recons=images, labels={"size": real_values}, components=np.zeros(n, np.int64),
                             n_clusters=1, cluster_source="test", store="")
    return ReportInputs(checkpoint=CheckpointInputs(model=model), clusters=None,
                        holdout=HeldOutInputs(objects, real_values, "size"))


def test_float_bins_sample_each_bin_at_its_median(mean_as_statistics, tmp_path):
    from galhpc.report.options import ReportOptions
    from galhpc.report.sections import Figures, generated_vs_real

    rng = np.random.default_rng(0)
    values = rng.uniform(0, 9, 40)
    images = np.broadcast_to(values[:, None, None, None], (40, 1, 8, 8)).copy()  # statistic = value
    model = _Constant("float")
    out = generated_vs_real.run(_inputs(model, values, images), ReportOptions(n_morph=40, match_noise=False),
                            Figures(tmp_path), np.random.default_rng(0))
    per = out["per_size_bin"]
    expected = metrics.quantile_bins(values, 3, 5)
    np.testing.assert_allclose(per["edges"], expected.edges)
    assert [n for n, _ in model.drawn] == [14, 13, 13]
    for b, (n, drawn_at) in zip(per["bins"], model.drawn, strict=True):
        assert drawn_at == b["condition_value"] == pytest.approx(np.median(values[expected.index == b["bin"]]))
        assert b["median_generated"]["gini"] == pytest.approx(b["condition_value"])  # its stamps came from it
        assert b["n_generated"] == n and b["ks"]["gini"]["n_b"] == n
    assert (tmp_path / "morphology_per_size.png").is_file()


def test_class_conditional_without_synth_is_sampled_per_class(mean_as_statistics, tmp_path):
    from galhpc.report.options import ReportOptions
    from galhpc.report.sections import Figures, generated_vs_real

    classes = np.arange(20) % 2
    images = np.broadcast_to(classes[:, None, None, None].astype(np.float64), (20, 1, 8, 8)).copy()
    model = _Constant("class")
    out = generated_vs_real.run(_inputs(model, classes, images), ReportOptions(n_morph=20, match_noise=False),
                            Figures(tmp_path), np.random.default_rng(0))
    assert model.drawn == [(10, 0.0), (10, 1.0)] and out["generated_source"].endswith("per class")
    assert set(out["per_size"]) == {"0", "1"}
    assert all(out["per_size"][c]["gini"]["ks"] == 0.0 for c in "01")  # class c's stamps against class c's
