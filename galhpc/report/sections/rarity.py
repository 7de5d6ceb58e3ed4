"""Section 8, rarity: the most unusual objects of the catalogue sample by each rarity score."""

from __future__ import annotations

from typing import Any

import numpy as np

from galhpc.report import figures
from galhpc.report.heldout import noise_sigma
from galhpc.report.inputs import ReportInputs
from galhpc.report.options import ReportOptions
from galhpc.report.sections.base import Figures, Requirement, Section, register

KNN_K = 10

ENOUGH_OBJECTS = Requirement(
    "sampled objects for the neighbour score", lambda inp, opt: len(inp.clusters.rows) >= KNN_K + 2,
    lambda inp, opt: f"{len(inp.clusters.rows)} sampled objects; the neighbour score needs at least {KNN_K + 2}")


def run(inputs: ReportInputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """The most unusual objects of the catalogue sample by each rarity score (galhpc.search.rarity).

    Prior NLL of μ, distance to the 10th neighbour within the sample, reconstruction χ²
    per pixel (with a store to read the noise σ from).

    Parameters
    ----------
    inputs : ReportInputs
        At least 12 sampled catalogue objects; a store for the χ² and the stamps.
    opt : ReportOptions
        ``n_show`` objects per score, ``seed`` of the post-hoc GMM of a model without a mixture.
    figs : Figures
        Receives rarity_top.png.
    rng : numpy.random.Generator
        Not drawn from: the scores are deterministic.

    Returns
    -------
    dict
        ``prior``, ``n_sampled``, ``knn_k``, ``noise_sigma_source`` and per score its top
        object ids and values and median (or ``skipped``).
    """
    from galhpc.formats.table import KNN_DISTANCE, NLL_PRIOR, RARITY_SCORES, RECON_CHI2
    from galhpc.mixture.diagonal import fit_diag_gmm
    from galhpc.search.rarity import knn_distance, latent_prior, prior_nll

    cs, store = inputs.clusters, inputs.store
    mu = cs.mu.astype(np.float64)
    gmm = None
    if not inputs.model.has_mixture:
        fitted = fit_diag_gmm(mu, max(1, min(cs.n_components, len(mu) // 10)), seed=opt.seed)
        gmm = {"log_pi": fitted.log_pi.numpy(), "mu": fitted.mu.numpy(), "var": fitted.var.numpy()}
    prior = latent_prior(inputs.model, gmm, mu.shape[1])
    order = np.argsort(cs.rows, kind="stable")
    scores = {NLL_PRIOR: prior_nll(mu, prior), KNN_DISTANCE: np.empty(len(mu)), RECON_CHI2: np.full(len(mu), np.nan)}
    scores[KNN_DISTANCE][order] = knn_distance(mu[order], cs.rows[order], mu[order], cs.rows[order], KNN_K)
    source = None
    if cs.recon_mse is not None and store is not None and store.present.all():
        sigma, source = noise_sigma(store.path, store.member_rows, store.images(store.member_rows))
        scores[RECON_CHI2] = cs.recon_mse.astype(np.float64) / sigma**2
    out: dict[str, Any] = {"prior": prior.source, "n_sampled": len(mu), "knn_k": KNN_K,
                           "noise_sigma_source": source}
    rows, labels, ids = [], [], []
    for name in RARITY_SCORES:
        values = scores[name]
        if not np.isfinite(values).any():
            out[name] = {"skipped": "no recon_mse or no store to read the noise σ from"}
            continue
        top = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")[: opt.n_show]
        out[name] = {"top_object_id": cs.object_id[top].tolist(), "top_value": values[top].tolist(),
                     "median": float(np.nanmedian(values))}
        if store is not None and store.present[top].all():
            rows.append(store.images(store.member_rows[top]))
            labels.append(name)
            ids.append(cs.object_id[top])
    if rows:
        figures.image_grid(rows, labels, figs.path("rarity", "rarity_top.png",
                                                   "The most unusual sampled objects by each score (rarest left)"),
                           title="Highest rarity scores", ids=ids)
    return out


SECTION = register(Section(name="rarity", title="8. Rarity: the most unusual objects", requires=(ENOUGH_OBJECTS,),
                           run=run))
