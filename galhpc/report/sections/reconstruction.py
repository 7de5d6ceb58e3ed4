"""Section 1, reconstructions: loss curves; held-out inputs, reconstructions and residuals."""

from __future__ import annotations

from typing import Any

import numpy as np

from galhpc.report import figures, metrics
from galhpc.report.inputs import ReportInputs
from galhpc.report.losses import loss_table
from galhpc.report.options import ReportOptions
from galhpc.report.sections.base import HELDOUT, Figures, Section, pick, register


def loss_curves(inputs: ReportInputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """The loss terms over training (losses.csv beside the checkpoint), phases shaded.

    The report's one loss-curve figure (`galhpc.report.figures.loss_curves`); the trainer
    writes losses.csv and draws nothing.  Runs whatever the other inputs are (`Section.always`).

    Parameters
    ----------
    inputs : ReportInputs
        Its checkpoint's `losses` rows are drawn.
    opt : ReportOptions
        Not read: the figure has no size option.
    figs : Figures
        Receives loss_curves.png.
    rng : numpy.random.Generator
        Not drawn from.

    Returns
    -------
    dict
        ``loss_terms`` and ``phases`` (when losses.csv has a phase column), or
        ``loss_curves_skipped`` without a loss history.
    """
    rows = inputs.checkpoint.losses
    if not rows:
        return {"loss_curves_skipped": "no losses.csv beside the checkpoint and no history in it"}
    columns, x_name, phases = loss_table(list(rows))
    figures.loss_curves(columns, x_name, phases, figs.path("reconstruction", "loss_curves.png",
                                                           "Loss terms over training, phases shaded"))
    out: dict[str, Any] = {"loss_terms": [k for k in columns if k != x_name]}
    if phases is not None:
        out["phases"] = list(dict.fromkeys(phases.tolist()))
    return out


def run(inputs: ReportInputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Held-out inputs, reconstructions, residuals; the five best and worst by MSE.

    Parameters
    ----------
    inputs : ReportInputs
        Its held-out stamps, their ids and `model.reconstruct` of them.
    opt : ReportOptions
        ``n_show``: stamps in the random figure.
    figs : Figures
        Receives reconstructions.png and best_worst.png.
    rng : numpy.random.Generator
        Picks the stamps of the random figure.

    Returns
    -------
    dict
        ``n_images``, ``mse_mean``, ``mse_median`` (over each stamp's valid pixels) and the ids
        and MSE of the best and worst five.
    """
    h = inputs.holdout
    images, recons, ids = h.images, h.recons, h.object_id
    # the store's mask (saturated, bad and masked-neighbour pixels) never counts, as in the loss
    _, valid = h.pixel_noise
    mse = metrics.per_image_mse(images, recons, valid)
    show = pick(len(images), opt.n_show, rng)
    figures.image_grid([images[show], recons[show], images[show] - recons[show]],
                       ["input", "reconstruction", "residual"],
                       figs.path("reconstruction", "reconstructions.png",
                                 "Random held-out inputs, reconstructions, residuals"),
                       symmetric=[False, False, True], ids=[ids[show], None, None])
    order = np.argsort(mse)
    best, worst = order[:5], order[::-1][:5]
    figures.image_grid([images[best], recons[best], images[worst], recons[worst]],
                       ["best: input", "reconstruction", "worst: input", "reconstruction"],
                       figs.path("reconstruction", "best_worst.png", "Five best and five worst reconstructions by MSE"),
                       ids=[ids[best], None, ids[worst], None])
    return {
        "n_images": len(images),
        "mse_mean": float(mse.mean()),
        "mse_median": float(np.median(mse)),
        "best_object_ids": ids[best].tolist(),
        "best_mse": mse[best].tolist(),
        "worst_object_ids": ids[worst].tolist(),
        "worst_mse": mse[worst].tolist(),
    }


SECTION = register(Section(
    name="reconstruction", title="1. Reconstructions",
    requires=(HELDOUT.because("no --store: no input images to reconstruct"),),
    run=run, always=loss_curves))
