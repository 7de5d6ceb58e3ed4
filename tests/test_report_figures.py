"""Figures: every drawing function writes a readable PNG for grey, 2- and 3-channel stamps."""

import matplotlib.image as mpimg
import numpy as np

from galhpc.report import figures


def _readable(path):
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    return img


def test_image_grid_channels_and_residual_scale(tmp_path):
    rng = np.random.default_rng(0)
    rows = [rng.random((4, 1, 16, 16)), rng.random((3, 3, 16, 16)), rng.random((2, 2, 16, 16)),
            rng.normal(size=(4, 3, 16, 16))]
    path = figures.image_grid(rows, ["grey", "rgb", "two bands", "residual"], tmp_path / "grid.png",
                              title="t", symmetric=[False, False, False, True])
    _readable(path)


def test_display_keeps_grey_and_scales_colour():
    grey = figures._display(np.ones((1, 4, 4)))
    assert grey.shape == (4, 4)
    rgb = figures._display(np.stack([np.arange(16.0).reshape(4, 4)] * 2))
    assert rgb.shape == (4, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1


def test_other_figures_write_pngs(tmp_path):
    rng = np.random.default_rng(1)
    figures.loss_curves({"step": np.arange(10.0), "loss": np.linspace(100, 1, 10), "kl": np.zeros(10)}, "step",
                        np.array(["a"] * 4 + ["b"] * 6), tmp_path / "loss.png")
    figures.bar([0.2, 0.5], ["0", "1"], tmp_path / "bar.png", ylabel="s", hline=0.3, hline_label="mean")
    figures.matrix(np.array([[0.9, 0.1], [np.nan, np.nan]]), tmp_path / "m.png", "j", "i", "overlap")
    figures.histograms_per_cluster(rng.random(50), rng.integers(0, 3, 50), tmp_path / "h.png", "votes")
    figures.scatter_2d(rng.normal(size=(30, 2)), {"component": rng.integers(0, 3, 30), "hlr": rng.random(30)},
                       tmp_path / "s.png", "t-SNE")
    figures.regier_scatter(rng.random(20) + 0.1, rng.random(20) + 0.2, tmp_path / "r.png", "wins")
    stats = {"gini": rng.random(10), "m20": np.full(10, np.nan)}
    figures.distributions(stats, stats, {"gini": {"ks": 0.0}, "m20": {"ks": float("nan")}}, tmp_path / "d.png", "x")
    for name in ["loss", "bar", "m", "h", "s", "r", "d"]:
        _readable(tmp_path / f"{name}.png")
