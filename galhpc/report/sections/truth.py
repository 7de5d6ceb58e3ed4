"""Section 7, truth recovery: what the model's latents and clusters know about held-out truth.

Next to PCA and PCA+GMM on the same pixels (`galhpc.report.truth`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from galhpc.report import figures, heldout, truth
from galhpc.report.inputs import HeldOutInputs, ReportInputs
from galhpc.report.options import ReportOptions
from galhpc.report.sections.base import HELDOUT, Figures, Requirement, Section, register


def truth_roles(h: HeldOutInputs) -> tuple[truth.ColumnRoles, str | None]:
    """The roles of the held-out objects' label columns, and why none is truth when none is.

    On observed stamps only class labels (e.g. Galaxy Zoo votes) are something to recover,
    not a catalogue's integer columns (a held-out flag, a detection flag).

    Parameters
    ----------
    h : HeldOutInputs

    Returns
    -------
    roles : truth.ColumnRoles
    reason : str or None
        Why the store has no truth columns, None when it has some.
    """
    observed, kinds = heldout.observed_sources(h.objects.store)
    roles = truth.column_roles(h.objects.labels)
    if observed:
        catalogue = heldout.catalogue_columns(h.objects.store)
        classes = tuple(c for c in roles.classes if c not in catalogue)
        roles = truth.ColumnRoles(classes, (), roles.nuisances if classes else ())
        if not roles.classes:
            return roles, (f"no truth columns: the store's stamps are observed (sources: {kinds}) and its "
                           "label columns are catalogue measurements, not truth")
    if not (roles.classes or roles.truths or roles.nuisances):
        return roles, "the store has no truth label columns (class, numeric truth or nuisance)"
    return roles, None


TRUTH_COLUMNS = Requirement("truth columns", lambda inp, opt: truth_roles(inp.holdout)[1] is None,
                            lambda inp, opt: truth_roles(inp.holdout)[1])
ENOUGH_HELDOUT = Requirement(
    "held-out objects for cross-validation", lambda inp, opt: len(inp.holdout.objects.rows) >= 2 * truth.N_FOLDS,
    lambda inp, opt: f"{len(inp.holdout.objects.rows)} held-out objects; cross-validation needs {2 * truth.N_FOLDS}")


def run(inputs: ReportInputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Probe R², kNN accuracy, cluster NMI/ARI and nuisance η² of the held-out objects.

    For the model and for PCA / PCA+GMM on the same pixels (`galhpc.report.truth.truth_recovery`).

    Parameters
    ----------
    inputs : ReportInputs
        Held-out objects with truth columns, at least 2 × `truth.N_FOLDS` of them.
    opt : ReportOptions
        ``seed`` of the folds, PCA and GaussianMixture.
    figs : Figures
        Receives truth_recovery.png.
    rng : numpy.random.Generator
        Not drawn from (scikit-learn is seeded with ``opt.seed``).

    Returns
    -------
    dict
        ``store``, ``cluster_source`` and `galhpc.report.truth.truth_recovery`'s result.
    """
    h = inputs.holdout.objects
    roles, _ = truth_roles(inputs.holdout)
    n = len(h.rows)
    result = truth.truth_recovery(h.mu, h.components, h.images.reshape(n, -1), h.labels, n_clusters=h.n_clusters,
                                  seed=opt.seed, recons=h.recons.reshape(n, -1), roles=roles)
    figures.truth_bars(result, figs.path("truth", "truth_recovery.png",
                                         "Truth recovery: model against PCA (same latent size) and PCA+GMM (same K)"))
    return {"store": h.store, "cluster_source": h.cluster_source} | result


SECTION = register(Section(
    name="truth", title="7. Truth recovery against PCA and PCA+GMM",
    requires=(HELDOUT.because("no --store or --holdout-store: no held-out objects"), TRUTH_COLUMNS, ENOUGH_HELDOUT),
    run=run))
