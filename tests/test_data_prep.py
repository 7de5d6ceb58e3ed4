"""The prep pipeline itself: recipe order, filters, rejects, interrupted runs, config checks."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from galhpc.config import ConfigError, PrepConfig
from galhpc.data import preprocess as pp
from galhpc.data import sources
from galhpc.data.prep import check_prep_config, process_block
from galhpc.data.sources import Block, DataError
from galhpc.data.store import read_store_info


def _gauss_block(n=6, size=32, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    widths = np.linspace(1.5, 5.0, n)
    imgs = np.stack([np.exp(-((x - 16) ** 2 + (y - 15.5) ** 2) / (2 * w**2)) for w in widths])
    imgs = imgs + rng.normal(0, noise, imgs.shape)
    return Block(imgs.astype(np.float32), np.arange(n, dtype=np.int64), {"w": widths}), widths


def test_metrics_labels_filters_and_minmax_on_truth():
    block, widths = _gauss_block()
    block.truth = block.images * 2.0 + 1.0
    prep = PrepConfig(image_size=32, recipe=["minmax"], filters={"width_min": 2.5, "snr_min": 3})
    out = process_block(block, prep, "test source")
    kept = widths >= 2.5
    np.testing.assert_array_equal(out.object_id, np.flatnonzero(kept))
    np.testing.assert_allclose(out.labels["width"], widths[kept], rtol=0.1)
    assert [r.reason.split(":")[0] for r in out.rejects] == ["filtered"] * int((~kept).sum())
    assert "width" in out.rejects[0].reason and out.rejects[0].object == "object_id 0"
    assert out.images.min() == 0 and np.allclose(out.images.max(axis=(1, 2)), 1)
    # truth gets the image's own affine map: truth' = (2 x + 1 - lo) / (hi - lo)
    raw = block.images[kept][0]
    lo, scale = pp.minmax_coefficients(raw)
    np.testing.assert_allclose(out.truth[0], (2 * raw + 1 - lo) * scale, rtol=1e-5)


def test_geometric_steps_on_multiband_block_and_masks():
    imgs = np.random.default_rng(1).random((3, 3, 40, 40)).astype(np.float32)
    masks = (imgs[:, 0] > 0.5).astype(np.uint8)
    block = Block(imgs, np.arange(3), extras={"masks": masks})
    prep = PrepConfig(image_size=16, crop_size=32, recipe=["grey", "crop", "resize", "arcsinh"], stretch_scale=0.5,
                      metrics=False)
    out = process_block(block, prep, "s")
    expect = pp.arcsinh_stretch(pp.resize_area(pp.centre_crop(pp.to_grey(imgs), 32), 16), 0.5)
    np.testing.assert_allclose(out.images, expect, rtol=1e-5)
    assert out.extras["masks"].shape == (3, 16, 16) and out.extras["masks"].dtype == np.uint8
    assert set(np.unique(out.extras["masks"])) <= {0, 1}


def test_config_checks():
    with pytest.raises(ConfigError, match="unknown step"):
        check_prep_config(PrepConfig(recipe=["blur"]))
    with pytest.raises(ConfigError, match="must come before"):
        check_prep_config(PrepConfig(recipe=["minmax", "resize"]))
    with pytest.raises(ConfigError, match="unknown filter"):
        check_prep_config(PrepConfig(filters={"brightness_min": 1}))
    with pytest.raises(ConfigError, match="on_error"):
        check_prep_config(PrepConfig(on_error="ignore"))
    with pytest.raises(DataError, match="unknown source kind 'hdf'"):
        sources.source_reader("hdf")


def test_store_info_refuses_foreign_and_broken_files(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.ones(3)
    with pytest.raises(DataError, match="not a galhpc store"):
        read_store_info(other)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(DataError, match="broken.h5 is not a readable HDF5 store"):
        read_store_info(broken)


@pytest.mark.slow
def test_killed_prep_leaves_no_store(tmp_path):
    cfg = tmp_path / "big.yaml"
    cfg.write_text("prep:\n  image_size: 32\n  workers: 1\n  chunk_rows: 16\n  recipe: [minmax]\n"
                   "  sources:\n    - {kind: galsim, n: 100000}\n")
    out = tmp_path / "store.h5"
    env = {**os.environ, "GALHPC_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "galhpc.cli.prep", "--config", str(cfg), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(tmp_path.glob(".store.h5.tmp*")) and time.time() < deadline:
            time.sleep(0.2)
        assert list(tmp_path.glob(".store.h5.tmp*")), "prep never started writing"
        while time.time() < deadline and sum(p.stat().st_size for p in tmp_path.glob(".store.h5.tmp*")) < 2**20:
            time.sleep(0.05)  # killed mid-write: once objects are in the file, however slow the machine
        assert proc.poll() is None, "prep ended before it could be killed; make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    with pytest.raises(DataError, match="store not found"):
        read_store_info(out)
    import logging

    from galhpc.data.store import StoreWriter

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("galhpc.data.store").addHandler(handler)
    try:
        with pytest.raises(DataError, match="no objects"), StoreWriter(out, ""):
            pass
    finally:
        logging.getLogger("galhpc.data.store").removeHandler(handler)
    assert any("leftover temporary file" in r.getMessage() for r in records)


@pytest.mark.parametrize("name", ["prep_galsim.yaml", "prep_real.yaml"])
def test_example_configs_are_valid(name):
    from pathlib import Path

    from galhpc.config import load_config
    from galhpc.data.synth import SimOptions

    cfg = load_config(Path(__file__).parents[1] / "configs" / name)
    check_prep_config(cfg.prep)
    for src in cfg.prep.sources:
        sources.source_reader(src.kind)
        if src.kind == "galsim":
            SimOptions.from_options(src.options, name)


def test_quality_metrics_equal_the_recipe_functions():
    from galhpc.data.prep import quality_metrics

    block, _ = _gauss_block(n=3, size=48, seed=5)
    for img in block.images:
        m = quality_metrics(img, 8)
        assert m["snr"] == pp.snr(img, 8) and m["border_noise"] == pp.border_noise(img, 8)
        assert m["width"] == pp.width(img) and m["non_uniformity"] == pp.non_uniformity(img)


@pytest.mark.parametrize("bands", [None, 3])
def test_block_metrics_equal_the_per_image_reference(bands):
    """process_block's batch (numba) metrics are the old per-image numpy quality_metrics."""
    from galhpc.data.prep import METRICS, quality_metrics

    block, _ = _gauss_block(n=8, size=48, seed=3)
    if bands:
        block.images = block.images[:, None] * np.linspace(0.5, 1.5, bands, dtype=np.float32)[:, None, None]
    prep = PrepConfig(image_size=48, recipe=["arcsinh"], filters={"snr_min": 0})
    out = process_block(block, prep, "s")
    assert list(out.labels) == ["w", *METRICS, "noise_sigma"] and len(out) == 8
    expected = [quality_metrics(img, prep.border) for img in block.images]
    for name in METRICS:
        assert out.labels[name].dtype == np.float64
        np.testing.assert_allclose(out.labels[name], [m[name] for m in expected], rtol=1e-9, err_msg=name)
