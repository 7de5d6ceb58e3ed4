"""GalSim source and the prep pipeline on it: labels, truth/PSF, determinism, CLI."""

import h5py
import numpy as np
import pytest

from galhpc.cli.prep import main as prep_main
from galhpc.config import ConfigError, PrepConfig, SourceConfig
from galhpc.data.prep import run_prep
from galhpc.data.synth import SimOptions, draw_parameters, simulate_block, simulate_stamp


def _prep(tmp_path, n=24, workers=1, **options) -> PrepConfig:
    src = SourceConfig(kind="galsim", n=n, seed=7, options=options)
    return PrepConfig(sources=[src], output=str(tmp_path / "g.h5"), image_size=32, recipe=["minmax"],
                      workers=workers, chunk_rows=8)


def test_parameters_are_pure_functions_of_seed_and_index():
    opts = SimOptions()
    assert draw_parameters(opts, 1, 5) == draw_parameters(opts, 1, 5)
    assert draw_parameters(opts, 1, 5) != draw_parameters(opts, 1, 6)
    params = [draw_parameters(opts, 0, i) for i in range(600)]
    bf = np.array([p["bulge_fraction"] for p in params])
    cls = np.array([p["morph_class"] for p in params])
    np.testing.assert_array_equal(cls, (bf >= 1 / 3).astype(int) + (bf >= 2 / 3))
    assert 0.12 < np.mean([p["has_companion"] for p in params]) < 0.28
    assert all(p["companion_flux"] == 0 for p in params if not p["has_companion"])


def test_stamp_flux_noise_and_truth_psf_consistency():
    from scipy.signal import fftconvolve

    opts = SimOptions(store_truth=True, store_psf=True, noise_sigma=5.0, companion_probability=0.0, disk_hlr_median=0.5)
    out = simulate_stamp(opts, 64, seed=3, index=0)
    p, image, truth, psf = out["params"], out["image"], out["truth"], out["psf"]
    assert abs(psf.sum() - 1) < 1e-5 and psf.shape == (25, 25)
    # the image holds the galaxy flux (within noise and stamp edges)
    assert abs(image.sum() - p["flux"]) < 0.03 * p["flux"] + 5 * 5.0 * 64
    # noise: the border has the configured σ
    border = np.concatenate([image[:6].ravel(), image[-6:].ravel()])
    assert 4.0 < border.std() < 6.0
    # truth convolved with the PSF is the noise-free image
    model = fftconvolve(truth, psf, mode="same")
    residual = image - model
    assert residual.std() < 1.3 * 5.0
    assert np.abs(model).max() > 20 * 5.0


def test_block_labels_and_reproducibility():
    a = simulate_block(SimOptions(), 32, 9, 4, 10)
    b = simulate_block(SimOptions(), 32, 9, 4, 10)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.object_id, np.arange(4, 10))
    assert a.labels["morph_class"].dtype == np.int64 and len(a.labels["flux"]) == 6


def test_unknown_option_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"source galsim .*unknown option"):
        run_prep(_prep(tmp_path, flux_maxx=3))


def test_prep_writes_store_with_truth_psf_and_labels(tmp_path):
    path = run_prep(_prep(tmp_path, store_truth=True, store_psf=True, psf_fwhm=[0.6, 0.9]))
    with h5py.File(path) as f:
        assert f["images"].shape == (24, 32, 32) and f["images"].chunks == (8, 32, 32)
        assert f["truth"].shape == (24, 32, 32) and f["psf"].shape == (24, 25, 25)
        img = f["images"][:]
        assert img.min() == 0.0 and np.allclose(img.max(axis=(1, 2)), 1.0)
        fwhm = f["labels/psf_fwhm"][:]
        assert ((fwhm >= 0.6) & (fwhm <= 0.9)).all() and len(set(fwhm)) == 24
        for name in ("morph_class", "has_companion", "bulge_fraction", "snr", "width"):
            assert f[f"labels/{name}"].shape == (24,)
        assert "galsim" in f.attrs["config"] and f.attrs["n_objects"] == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.h5"]


@pytest.mark.slow
def test_two_workers_give_the_same_store_as_one(tmp_path):
    import subprocess
    import sys

    one = run_prep(_prep(tmp_path, n=40, workers=1), output=tmp_path / "one.h5")
    two = run_prep(_prep(tmp_path, n=40, workers=2), output=tmp_path / "two.h5")  # spawned workers
    cfg = tmp_path / "c.yaml"
    cfg.write_text("prep:\n  image_size: 32\n  chunk_rows: 8\n  recipe: [minmax]\n"
                   "  sources:\n    - {kind: galsim, n: 40, seed: 7}\n")
    forked = tmp_path / "forked.h5"  # a fresh CLI process has no GalSim loaded: forked workers
    run = subprocess.run([sys.executable, "-m", "galhpc.cli.prep", "--config", str(cfg), "--out", str(forked),
                          "--workers", "2"], check=True, timeout=300, capture_output=True, text=True)
    assert "2 worker(s) (fork)" in run.stderr
    with h5py.File(one) as f, h5py.File(two) as g, h5py.File(forked) as h:
        for other in (g, h):
            np.testing.assert_array_equal(f["images"][:], other["images"][:])
            np.testing.assert_array_equal(f["labels/flux"][:], other["labels/flux"][:])


def test_cli_runs_and_reports_errors(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("prep:\n  image_size: 32\n  workers: 1\n  recipe: [minmax]\n"
                   "  sources:\n    - {kind: galsim, n: 6}\n")
    assert prep_main(["--config", str(cfg), "--out", str(tmp_path / "o.h5")]) == 0
    assert (tmp_path / "o.h5").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("prep:\n  recipe: [minmax, resize]\n")
    assert prep_main(["--config", str(bad)]) == 1
    with pytest.raises(SystemExit) as exc:
        prep_main(["--help"])
    assert exc.value.code == 0


def test_cosmos_noise_matches_galsim_correlation():
    import galsim

    from galhpc.data.synth import cosmos_noise

    rng = np.random.default_rng(0)
    fields = np.stack([cosmos_noise(rng, 32, 0.03) for _ in range(300)])
    corr = galsim.getCOSMOSNoise().drawImage(galsim.ImageD(65, 65, scale=0.03)).array
    expect_lag1 = corr[32, 33] / corr[32, 32]
    assert fields.std() == pytest.approx(1.0, abs=0.02)
    lag1 = (fields[:, :, 1:] * fields[:, :, :-1]).mean() / fields.var()
    assert expect_lag1 > 0.3 and lag1 == pytest.approx(expect_lag1, abs=0.03)


def test_kolmogorov_psf_and_cosmos_noise_stamps():
    opts = SimOptions(psf="kolmogorov", noise="cosmos", noise_sigma=3.0, store_psf=True)
    block = simulate_block(opts, 48, 2, 0, 8)
    border = np.concatenate([block.images[:, :4].ravel(), block.images[:, -4:].ravel()])
    assert border.std() == pytest.approx(3.0, rel=0.15)
    assert block.psf.shape == (25, 25) and abs(block.psf.sum() - 1) < 1e-5
