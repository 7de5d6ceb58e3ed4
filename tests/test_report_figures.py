"""Figures: every drawing function writes a PNG that shows its data, for grey, 2- and 3-channel
stamps: the file is not one flat colour, and the figure has the expected number of panels
whose plotting area is not blank (a figure saved before drawing, or with its data left out,
fails)."""

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from galhpc.report import figures


@pytest.fixture
def saved(monkeypatch):
    """Every Figure that is saved, in order (the drawing functions close theirs)."""
    figs = []
    real = Figure.savefig

    def spy(self, *args, **kwargs):
        figs.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return figs


def _panels_with_data(fig):
    """Visible axes whose plotting area, inset 3 pixels from its frame, holds more than one colour
    once legends and text labels are hidden (a legend alone is not data)."""
    for ax in fig.axes:
        if ax.get_legend() is not None:
            ax.get_legend().set_visible(False)
        for text in ax.texts:
            text.set_visible(False)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    height = pixels.shape[0]
    shown = 0
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        box = ax.get_window_extent()
        x0, x1 = int(box.x0) + 3, int(box.x1) - 3
        y0, y1 = height - int(box.y1) + 3, height - int(box.y0) - 3  # display y points up, rows down
        area = pixels[max(y0, 0):y1, max(x0, 0):x1].reshape(-1, 3)
        shown += len(area) > 0 and len(np.unique(area, axis=0)) > 1
    return shown


def _readable(path, fig=None, panels=None):
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    rgb = img[..., :3].reshape(-1, 3)
    values, counts = np.unique(rgb, axis=0, return_counts=True)
    assert len(values) > 2 and counts.max() < 0.99 * len(rgb), f"{path.name} is (almost) one flat colour"
    if fig is not None:
        assert _panels_with_data(fig) == panels, f"{path.name}: {_panels_with_data(fig)} panels show data, not {panels}"
    return img


def test_image_grid_channels_and_residual_scale(tmp_path, saved):
    rng = np.random.default_rng(0)
    rows = [rng.random((4, 1, 16, 16)), rng.random((3, 3, 16, 16)), rng.random((2, 2, 16, 16)),
            rng.normal(size=(4, 3, 16, 16))]
    path = figures.image_grid(rows, ["grey", "rgb", "two bands", "residual"], tmp_path / "grid.png",
                              title="t", symmetric=[False, False, False, True])
    _readable(path, saved[-1], 4 + 3 + 2 + 4)  # the grid's 16 cells less its 3 empty ones


def test_display_keeps_grey_and_scales_colour():
    grey = figures._display(np.ones((1, 4, 4)))
    assert grey.shape == (4, 4)
    rgb = figures._display(np.stack([np.arange(16.0).reshape(4, 4)] * 2))
    assert rgb.shape == (4, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1


def test_a_blank_figure_is_caught(tmp_path, saved):
    fig = Figure()
    fig.add_subplot(1, 2, 1).plot([0, 1], [0, 1])
    fig.add_subplot(1, 2, 2)
    fig.savefig(tmp_path / "half.png")
    assert _panels_with_data(fig) == 1
    blank = Figure()
    blank.savefig(tmp_path / "blank.png")
    with pytest.raises(AssertionError, match="flat colour"):
        _readable(tmp_path / "blank.png")


# panels that show data: loss and kl; one bar chart; the matrix and its colour bar; three
# clusters; the discrete and the continuous colouring and its colour bar; one scatter; the
# "gini" histogram (the all-NaN "m20" panel stays blank)
PANELS = {"loss": 2, "bar": 1, "m": 2, "h": 3, "s": 3, "r": 1, "d": 1}


def test_other_figures_write_pngs(tmp_path, saved):
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
    assert len(saved) == len(PANELS)
    for (name, panels), fig in zip(PANELS.items(), saved, strict=True):
        _readable(tmp_path / f"{name}.png", fig, panels)
