"""The fidelity section: galhpc-fidelity's test (galhpc.fidelity.score) inside the report.

On the report's held-out stamps and the model's samples (or the --synth catalogue's), without the
memorisation check (the report does not know the training rows: run galhpc-fidelity).
Its metrics go to metrics.json only (no heading in index.html).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from galhpc.fidelity import figures as fidelity_figures
from galhpc.fidelity.score import score
from galhpc.fidelity.sources import sample_model
from galhpc.report import model_calls
from galhpc.report.inputs import ReportInputs
from galhpc.report.options import ReportOptions
from galhpc.report.sections.base import GENERATOR, HELDOUT, Figures, Requirement, Section, register

FOLDS = 5

ENOUGH_STAMPS = Requirement(
    "stamps for the classifier test", lambda inp, opt: opt.n_morph >= 2 * FOLDS,
    lambda inp, opt: f"--n-morph {opt.n_morph}: the real-halves floor of the {FOLDS}-fold classifier "
                     f"test needs at least {2 * FOLDS} stamps")


def _condition_column(inputs: ReportInputs) -> str | None:
    """The label column the model's prior is conditioned on, or None for an unconditioned one."""
    cond = inputs.model.sample_condition
    return None if cond is None else str(cond.column)


def _conditioned_prior_problem(inputs: ReportInputs) -> str | None:
    """Why a conditioned prior cannot be drawn at the held-out stamps' own condition values, or None.

    Decided on every held-out stamp, before any is chosen, so that a skip draws no random
    numbers: all of them need a finite value (any n_morph of them may be chosen).
    """
    if inputs.synth is not None:
        return None
    column, h = _condition_column(inputs), inputs.holdout
    if column is not None and h.group_name == column:
        if not np.isfinite(np.asarray(h.groups, np.float64)).all():
            return f"held-out stamps without a finite {column!r} to sample at"
        return None
    if model_calls.float_condition(inputs.model) is not None:
        return f"float-conditioned model: the held-out stamps carry no {column!r} to sample at"
    return None


CONDITION_VALUES = Requirement(
    "condition values of the held-out stamps",
    lambda inp, opt: _conditioned_prior_problem(inp) is None,
    lambda inp, opt: str(_conditioned_prior_problem(inp)))


def run(inputs: ReportInputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """KS and Wasserstein distances per statistic beside the real-halves floor, and the classifier AUC.

    The classifier two-sample AUC and the distances on `opt.n_morph` held-out and generated stamps.

    Parameters
    ----------
    inputs : ReportInputs
        Held-out stamps; synth.h5's sample, else the model to draw from.
    opt : ReportOptions
        ``n_morph`` stamps per side, ``seed``, ``batch_size``.
    figs : Figures
        Receives fidelity_histograms.png.
    rng : numpy.random.Generator
        Chooses which real (and synth) stamps are measured.

    Returns
    -------
    dict
        ``generated_source`` and `galhpc.fidelity.score.FidelityResult.summary`.
    """
    h = inputs.holdout
    real_rows = np.sort(rng.choice(len(h.images), min(opt.n_morph, len(h.images)), replace=False))
    real = h.images[real_rows]
    if inputs.synth is not None:
        chosen = np.sort(rng.choice(len(inputs.synth.images), min(opt.n_morph, len(inputs.synth.images)),
                                    replace=False))
        generated, source = inputs.synth.images[chosen], "synth.h5"
    else:
        # a conditioned prior is drawn at the held-out stamps' own condition values (float, or
        # class: the real mix of classes, not equal shares), when the report reads that column
        # (CONDITION_VALUES has checked that they are finite)
        column = _condition_column(inputs)
        values = None
        if column is not None and h.group_name == column:
            values = np.asarray(h.groups[real_rows], np.float64)
        n = opt.n_morph if values is None else len(real)
        generated = sample_model(inputs.model, n, opt.seed, opt.batch_size, condition_values=values).images
        source = "model.sample" if values is None else f"model.sample at the real stamps' {column}"
    result = score(generated, real, None, n_boot=50, processes=1, seed=opt.seed, folds=FOLDS)
    fidelity_figures.histograms(result, figs.path("fidelity", "fidelity_histograms.png",
                                                  "Per-statistic histograms, generated against held-out real, "
                                                  "KS beside the real-halves floor"))
    return {"generated_source": source, **result.summary()}


SECTION = register(Section(
    name="fidelity", title=None,
    requires=(HELDOUT.because("no --store: no real images"), GENERATOR, ENOUGH_STAMPS, CONDITION_VALUES),
    run=run))
