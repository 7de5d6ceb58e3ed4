"""The report's fidelity section: galhpc-fidelity's test (galhpc.fidelity.score) on the
report's held-out stamps and the model's samples (or the --synth catalogue's), without
the memorisation check (the report does not know the training rows: run galhpc-fidelity).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from galhpc.fidelity import figures as fidelity_figures
from galhpc.fidelity.score import score
from galhpc.fidelity.sources import sample_model
from galhpc.report import inference

if TYPE_CHECKING:
    from galhpc.report.sections import Figures, Inputs, ReportOptions

FOLDS = 5


def fidelity_section(inp: Inputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """KS and Wasserstein distances per statistic beside the real-halves floor, and the
    classifier two-sample AUC, on `opt.n_morph` held-out and generated stamps.
    """
    if inp.holdout_images is None:
        return {"skipped": "no --store: no real images"}
    if inp.synth is None and not inp.model.generative:
        return {"skipped": f"model {inp.model.name!r} is not generative and no --synth was given"}
    if opt.n_morph < 2 * FOLDS:
        return {"skipped": f"--n-morph {opt.n_morph}: the real-halves floor of the {FOLDS}-fold classifier "
                           f"test needs at least {2 * FOLDS} stamps"}
    real_rows = np.sort(rng.choice(len(inp.holdout_images), min(opt.n_morph, len(inp.holdout_images)), replace=False))
    real = inp.holdout_images[real_rows]
    if inp.synth is not None:
        pick = np.sort(rng.choice(len(inp.synth.images), min(opt.n_morph, len(inp.synth.images)), replace=False))
        generated, source = inp.synth.images[pick], "synth.h5"
    else:
        # a conditioned prior is drawn at the held-out stamps' own condition values (float, or
        # class: the real mix of classes, not equal shares), when the report reads that column
        cond = inp.model.sample_condition
        column = None if cond is None else str(cond.column)
        values = None
        if column is not None and inp.group_name == column and inp.holdout_groups is not None:
            values = np.asarray(inp.holdout_groups[real_rows], np.float64)
            if not np.isfinite(values).all():
                return {"skipped": f"held-out stamps without a finite {column!r} to sample at"}
        elif inference.float_condition(inp.model) is not None:
            return {"skipped": f"float-conditioned model: the held-out stamps carry no {column!r} to sample at"}
        n = opt.n_morph if values is None else len(real)
        generated = sample_model(inp.model, n, opt.seed, opt.batch_size, condition_values=values).images
        source = "model.sample" if values is None else f"model.sample at the real stamps' {column}"
    result = score(generated, real, None, n_boot=50, processes=1, seed=opt.seed, folds=FOLDS)
    fidelity_figures.histograms(result, figs.path("fidelity", "fidelity_histograms.png",
                                                  "Per-statistic histograms, generated against held-out real, "
                                                  "KS beside the real-halves floor"))
    return {"generated_source": source, **result.summary()}
