"""Section 3, generation: samples per component, latent traversals, the route, deblending.

The route is the shortest path through the cluster centres in μ.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from galhpc.report import figures, latents, metrics, model_calls
from galhpc.report.inputs import ReportInputs
from galhpc.report.options import ReportOptions
from galhpc.report.sections.base import Figures, Requirement, Section, register

# deblending, a part of the section: without it the rest still runs and ``deblending`` records why
COMPANIONS = Requirement("labels/has_companion", lambda inp, opt: "has_companion" in inp.labels,
                         "needs a store with labels/has_companion")


def run(inputs: ReportInputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Samples per component, latent traversals, TSP route through the centres, deblending.

    Parameters
    ----------
    inputs : ReportInputs
        The model, the catalogue sample's μ and, for deblending, a store with ``has_companion``.
    opt : ReportOptions
        ``n_show``, ``n_traversal_dims``, ``steps``, ``seed``, ``batch_size``.
    figs : Figures
        Receives samples, traversals, tsp_interpolation and deblending figures.
    rng : numpy.random.Generator
        Not drawn from: samples are seeded with ``opt.seed``.

    Returns
    -------
    dict
        ``samples_source`` (or ``samples_skipped``), ``traversal_dims``, ``tsp_order``,
        ``tsp_length``, ``tsp_length_index_order`` (two or more clusters) and ``deblending``.
    """
    out: dict[str, Any] = {}
    model, cs = inputs.model, inputs.clusters
    samples_per_component(inputs, opt, figs, out)
    snr = metrics.latent_snr(cs.mu, cs.logvar)
    dims = np.argsort(-snr)[: opt.n_traversal_dims].tolist()
    grid = latents.traversal(cs.mu, dims, opt.steps)
    decoded = model_calls.decode(model, grid.reshape(-1, grid.shape[-1]), opt.batch_size)
    decoded = decoded.reshape(len(dims), opt.steps, *decoded.shape[1:])
    figures.image_grid(list(decoded), [f"z{d} (SNR {snr[d]:.2f})" for d in dims],
                       figs.path("generation", "traversals.png",
                                 "Latent traversals: each latent from its min to max, others at the mean"))
    out["traversal_dims"] = dims
    labelled = cs.component >= 0
    uniq, centres = metrics.cluster_centres(cs.mu[labelled], cs.component[labelled])
    if len(uniq) >= 2:
        order = metrics.shortest_path_order(centres)
        legs = latents.route(centres, order, opt.steps)
        decoded = model_calls.decode(model, legs.reshape(-1, legs.shape[-1]), opt.batch_size)
        decoded = decoded.reshape(len(legs), opt.steps, *decoded.shape[1:])
        figures.image_grid(list(decoded), [f"{uniq[a]} → {uniq[b]}" for a, b in zip(order[:-1], order[1:],
                                                                                     strict=False)],
                           figs.path("generation", "tsp_interpolation.png",
                                     "Interpolation along the shortest route through the cluster centres"))
        out["tsp_order"] = [int(uniq[i]) for i in order]
        out["tsp_length"] = metrics.path_length(centres, order)
        out["tsp_length_index_order"] = metrics.path_length(centres, list(range(len(uniq))))
    out["deblending"] = deblending(inputs, opt, figs)
    return out


def samples_per_component(inputs: ReportInputs, opt: ReportOptions, figs: Figures, out: dict[str, Any]) -> None:
    """Figure of generated stamps grouped by component/class: from synth.h5, else drawn from the model.

    Parameters
    ----------
    inputs : ReportInputs
        synth.h5's sample, else the model (and the held-out condition values of a
        float-conditioned one).
    opt : ReportOptions
        ``n_show`` stamps per group, ``seed``, ``n_condition_bins``.
    figs : Figures
        Receives samples.png.
    out : dict
        Receives ``samples_source``, or ``samples_skipped`` when nothing can be drawn.
    """
    model = inputs.model
    rows, labels = [], []
    if inputs.synth is not None:
        source = "synth.h5"
        for c in np.unique(inputs.synth.component):
            rows.append(inputs.synth.images[inputs.synth.component == c][: opt.n_show])
            labels.append(f"component {c}" if c >= 0 else "samples")
    elif model.generative and (model.has_mixture or model_calls.class_condition(model)):
        condition = model_calls.class_condition(model)
        name, n_groups = condition if condition else ("component", inputs.clusters.n_components)
        source = "model.sample(component=k)"
        for c in range(n_groups):
            rows.append(model_calls.sample(model, opt.n_show, seed=opt.seed + c, component=c)[0])
            labels.append(f"{name} {c}")
    elif model.generative and (column := model_calls.float_condition(model)) is not None:
        h = inputs.holdout
        values = h.groups if h is not None and h.group_name == column else None
        if values is None or not np.isfinite(values).any():
            out["samples_skipped"] = f"float-conditioned model: no held-out labels/{column} to choose values from"
            return
        bins = metrics.quantile_bins(values, opt.n_condition_bins, 1)
        source = f"model.sample({column}=median of each held-out quantile bin)"
        for i, v in enumerate(bins.values):
            rows.append(model_calls.sample(model, opt.n_show, seed=opt.seed + i, **{column: float(v)})[0])
            labels.append(f"{column}={v:.3g}")
    elif model.generative:
        source = "model.sample"
        rows.append(model_calls.sample(model, opt.n_show, seed=opt.seed)[0])
        labels.append("samples")
    else:
        out["samples_skipped"] = f"model {model.name!r} is not generative and no --synth was given"
        return
    out["samples_source"] = source
    figures.image_grid(rows, labels, figs.path("generation", "samples.png",
                                               f"Generated samples per component ({source})"))


def deblending(inputs: ReportInputs, opt: ReportOptions, figs: Figures) -> dict[str, Any]:
    """Interpolate from galaxies with a companion towards their most similar clean galaxy (in μ).

    Parameters
    ----------
    inputs : ReportInputs
        Needs a store with ``labels/has_companion`` (`COMPANIONS`).
    opt : ReportOptions
        ``n_show`` // 2 pairs, ``steps`` along each path.
    figs : Figures
        Receives deblending.png.

    Returns
    -------
    dict
        ``pairs``: [object id with companion, object id of its clean partner], or ``skipped``.
    """
    if (reason := COMPANIONS.missing(inputs, opt)) is not None:
        return {"skipped": reason}
    flag, store = inputs.labels["has_companion"], inputs.store
    dirty = np.flatnonzero((flag == 1) & store.present)[: max(1, opt.n_show // 2)]
    clean = np.flatnonzero((flag == 0) & store.present)
    if len(dirty) == 0 or len(clean) == 0:
        return {"skipped": "the sample has no galaxies with (or without) a companion"}
    mu, object_id = inputs.clusters.mu, inputs.clusters.object_id
    partners = clean[latents.nearest_partners(mu[dirty], mu[clean])]
    rows, labels, ids = [], [], []
    for a, b in zip(dirty, partners, strict=False):
        path = model_calls.decode(inputs.model, latents.interpolate(mu[a], mu[b], opt.steps), opt.batch_size)
        ends = store.images(store.member_rows[[a, b]])
        rows.append(np.concatenate([ends[:1], path, ends[1:]]))
        labels.append(f"{object_id[a]} → {object_id[b]}")
        ids.append([object_id[a], *[""] * len(path), object_id[b]])
    figures.image_grid(rows, labels, figs.path("generation", "deblending.png",
                                               "Deblending: input with companion, decoded path, nearest clean input"),
                       ids=ids)
    return {"pairs": [[int(object_id[a]), int(object_id[b])] for a, b in zip(dirty, partners, strict=False)]}


SECTION = register(Section(name="generation", title="3. Generation", requires=(), run=run))
