"""Section 5, Regier's test: held-out reconstructions against a best-fit Gaussian and PCA."""

from __future__ import annotations

from typing import Any

import numpy as np

from galhpc.report import figures, regier, truth
from galhpc.report.heldout import noise_sigma
from galhpc.report.inputs import ReportInputs
from galhpc.report.options import ReportOptions
from galhpc.report.sections.base import HELDOUT, Figures, Section, register

REGIER_PCA = 3  # the lenient baseline: a 3-component PCA already beats the blob on most stamps


def run(inputs: ReportInputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Fraction of held-out images whose reconstruction beats the best-fit bivariate Gaussian.

    Next to out-of-fold PCA-3 and PCA-L reconstructions of the same stamps; log-likelihoods
    with the stamps' noise σ (Regier et al. 2015, `galhpc.report.regier.regier_test`).

    Parameters
    ----------
    inputs : ReportInputs
        The held-out stamps, their reconstructions and the store their noise σ is read from.
    opt : ReportOptions
        ``seed`` of the PCA folds.
    figs : Figures
        Receives regier.png.
    rng : numpy.random.Generator
        Not drawn from (the folds are seeded with ``opt.seed``).

    Returns
    -------
    dict
        `galhpc.report.regier.regier_test`'s result without per-stamp lists, plus how the
        baselines were fitted and where σ came from.
    """
    h = inputs.holdout
    images, recons = h.images, h.recons
    n = len(images)
    dim = h.objects.mu.shape[1]
    baselines, sigma, note = {}, None, {}
    if n >= truth.N_FOLDS:
        pixels = images.reshape(n, -1)
        for k in dict.fromkeys((REGIER_PCA, min(dim, pixels.shape[1], n - -(-n // truth.N_FOLDS)))):
            baselines[f"pca{k}"] = truth.pca_reconstruction(pixels, k, opt.seed).reshape(images.shape)
        note["baseline_fit"] = (f"PCA reconstructions out of fold: each stamp by a PCA fitted on the other "
                                f"{truth.N_FOLDS - 1} of {truth.N_FOLDS} folds of the held-out stamps")
    else:
        note["baselines_skipped"] = f"fewer than {truth.N_FOLDS} held-out stamps"
    # the likelihood's own σ and pixels where the store has them (per-pixel `sigma`, `mask` left
    # out), so χ² here is the χ² the survey presets train on and docs/models.md quotes
    sigma, valid = h.pixel_noise
    if sigma is not None:
        note["noise_sigma_source"] = "the store's per-pixel sigma, its mask left out"
        ok = np.isfinite(sigma[valid]).all() and (sigma[valid] > 0).all()
    else:
        sigma, note["noise_sigma_source"] = noise_sigma(h.objects.store, h.objects.rows, images)
        ok = np.isfinite(sigma).all() and (sigma > 0).all()
    if not ok:
        sigma, note["known_sigma_skipped"] = None, "noise σ not positive and finite for every stamp"
    result = regier.regier_test(images, recons, baselines, sigma, valid) | note
    sse_base = np.array(result.pop(f"sse_pca{REGIER_PCA}")) if baselines else None
    for k in baselines:
        result.pop(f"sse_{k}", None)
    pca_text = (f", PCA-{REGIER_PCA} wins {result['baselines'][f'pca{REGIER_PCA}']['wins_squared_error']}/{n}"
                if baselines else "")
    figures.regier_scatter(np.array(result.pop("sse_model")), np.array(result.pop("sse_gaussian")),
                           figs.path("regier", "regier.png",
                                     "Squared error: reconstructions against best-fit Gaussian"),
                           title=f"model wins {result['wins_squared_error']}/{n}{pca_text} (anchor 971/1000)",
                           baseline=sse_base, baseline_label=f"PCA-{REGIER_PCA} (out of fold)")
    return result


SECTION = register(Section(
    name="regier", title="5. Regier's test",
    requires=(HELDOUT.because("no --store or --holdout-store: no held-out images"),), run=run))
