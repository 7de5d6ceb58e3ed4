"""Section 2, clusters: occupancy, silhouette, Calinski–Harabasz, overlap, labels, members."""

from __future__ import annotations

from typing import Any

import numpy as np

from galhpc.mixture.metrics import label_agreement, permutation_baseline
from galhpc.report import figures, metrics, model_calls, truth
from galhpc.report.inputs import ReportInputs
from galhpc.report.options import ReportOptions
from galhpc.report.sections.base import STORE, Figures, Section, register

VOTE_CUTS = (0.5, 0.8)  # Galaxy Zoo vote-fraction cuts: majority, and clean sample


def run(inputs: ReportInputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Occupancy, simplified silhouette, Calinski–Harabasz, overlap matrix, labels, member stamps.

    The label agreement and the member stamps need a store (`STORE`); without one they are
    left out, their reasons recorded as ``labels_skipped`` and ``members_skipped``.

    Parameters
    ----------
    inputs : ReportInputs
        The catalogue sample (μ, component, γ) and, when given, the store's labels and stamps.
    opt : ReportOptions
        ``n_show`` members per component, ``batch_size`` of their reconstructions.
    figs : Figures
        Receives occupancy, silhouette, overlap matrix, label histograms and member figures.
    rng : numpy.random.Generator
        Picks the random members of each component.

    Returns
    -------
    dict
        ``occupancy`` (whole catalogue), ``silhouette_*``, ``calinski_harabasz``,
        ``overlap_matrix`` (with γ), ``labels`` (per label column, `label_agreement_table`;
        empty, with ``labels_skipped``, without a store or a sampled object in it),
        ``nuisance_eta2`` and ``nuisance_flagged``.
    """
    cs = inputs.clusters
    k = cs.n_components
    out: dict[str, Any] = {
        "n_objects": cs.n_total,
        "n_sampled": len(cs.rows),
        "n_components": k,
        "occupancy": cs.occupancy.tolist(),
        "occupancy_fraction": (cs.occupancy / max(cs.occupancy.sum(), 1)).tolist(),
    }
    names = [str(i) for i in range(k)]
    figures.bar(cs.occupancy, names, figs.path("clusters", "occupancy.png", "Objects per component (whole catalogue)"),
                ylabel="objects", title="Cluster occupancy", xlabel="component")
    labelled = cs.component >= 0
    mu, comp = cs.mu[labelled], cs.component[labelled]
    if 2 <= len(np.unique(comp)) < len(comp):
        _, per_cluster, overall = metrics.simplified_silhouette(mu, comp)
        out["silhouette_per_cluster"] = {str(c): v for c, v in per_cluster.items()}
        out["silhouette_overall"] = overall
        out["calinski_harabasz"] = metrics.calinski_harabasz(mu, comp)
        used = sorted(per_cluster)
        figures.bar([per_cluster[c] for c in used], [str(c) for c in used],
                    figs.path("clusters", "silhouette.png", "Mean simplified silhouette per cluster (sample)"),
                    ylabel="simplified silhouette", hline=overall, hline_label=f"overall {overall:.3f}",
                    title="Simplified silhouette per cluster", xlabel="cluster")
    else:
        out["silhouette_skipped"] = "fewer than two occupied clusters in the sample"
    if cs.gamma is not None:
        overlap = metrics.overlap_matrix(cs.gamma[labelled], comp, k)
        out["overlap_matrix"] = [[None if not np.isfinite(v) else float(v) for v in row] for row in overlap]
        figures.matrix(overlap, figs.path("clusters", "overlap_matrix.png", "Mean γ_j of objects labelled i"),
                       xlabel="component j (mean γ_j)", ylabel="label i", title="Cluster overlap matrix")
    reason = STORE.missing(inputs, opt)
    if reason is None and not (inputs.store.present & labelled).any():
        reason = "no sampled object with a cluster label is in the store"
    out["labels"] = label_agreement_table(inputs, figs) if reason is None else {}
    if reason is not None:
        out["labels_skipped"] = reason
    nuisance = {name: v["eta2"] for name, v in out["labels"].items() if v.get("role") == "nuisance"}
    out["nuisance_eta2"] = nuisance
    out["nuisance_flagged"] = [name for name, v in nuisance.items() if np.isfinite(v) and v > truth.ETA2_FLAG]
    if inputs.store is not None:
        members(inputs, opt, figs, rng)
    else:
        out["members_skipped"] = reason
    return out


def label_agreement_table(inputs: ReportInputs, figs: Figures) -> dict[str, Any]:
    """Per store label: histogram per cluster, per-cluster summary, NMI/ARI with a permutation baseline.

    Nuisance columns (`truth.NUISANCE`: S/N, flux, noise, PSF) are what the clusters should
    not follow: they get the η² the clusters explain (of log10 for positive columns,
    `flagged` above `truth.ETA2_FLAG`) and `role` "nuisance" instead of an NMI/ARI.
    Only sampled objects found in the store (and with a cluster label) take part.

    Parameters
    ----------
    inputs : ReportInputs
        Needs a store holding sampled objects with a cluster label (the caller checks).
    figs : Figures
        Receives labels_<name>.png per label column.

    Returns
    -------
    dict
        Label name -> {"per_cluster", and "nmi", "ari", "nmi_mean", "nmi_p99", "ari_mean",
        "ari_p99", "n_classes" (classes), or "role", "eta2", "eta2_scale", "flagged" (nuisances)}.
    """
    result: dict[str, Any] = {}
    present = inputs.store.present & (inputs.clusters.component >= 0)
    comp = inputs.clusters.component[present]
    for name, all_values in inputs.labels.items():
        values = all_values[present]
        if values.dtype.kind == "f" and not np.isfinite(values).any():
            continue
        figures.histograms_per_cluster(values.astype(np.float64), comp,
                                       figs.path("clusters", f"labels_{name}.png",
                                                 f"Histogram of label {name!r} per cluster"),
                                       label=name)
        cuts = VOTE_CUTS if metrics.is_vote_fraction(values) else ()
        result[name] = {"per_cluster": metrics.per_cluster_summary(values, comp, cuts)}
        if name in truth.NUISANCE:
            scaled, scale = truth.nuisance_scale(values)
            eta2 = truth.eta_squared(scaled, comp)
            result[name] |= {"role": "nuisance", "eta2": eta2, "eta2_scale": scale,
                             "flagged": bool(np.isfinite(eta2) and eta2 > truth.ETA2_FLAG)}
            continue
        classes = metrics.discretise_label(values)
        if classes is None or len(np.unique(classes[classes >= 0])) < 2:
            continue
        agreement = label_agreement(classes, comp)
        keep = classes >= 0
        agreement |= permutation_baseline(classes[keep], comp[keep], n_permutations=20, seed=0)
        agreement["n_classes"] = int(len(np.unique(classes[keep])))
        result[name] |= agreement
    return result


def members(inputs: ReportInputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> None:
    """Figures of random and top-γ members of each component: store input and reconstruction.

    Parameters
    ----------
    inputs : ReportInputs
        Needs a store (the caller checks).
    opt : ReportOptions
        ``n_show`` members per component, ``batch_size`` of the reconstructions.
    figs : Figures
        Receives members_random.png and members_top_gamma.png.
    rng : numpy.random.Generator
        Picks the random members.
    """
    cs, store = inputs.clusters, inputs.store
    for kind in ("random", "top_gamma"):
        rows, labels, ids = [], [], []
        for c in range(cs.n_components):
            idx = np.flatnonzero((cs.component == c) & store.present)
            if len(idx) == 0:
                continue
            if kind == "random":
                idx = rng.choice(idx, size=min(opt.n_show, len(idx)), replace=False)
            elif cs.gamma is not None:
                idx = idx[np.argsort(-cs.gamma[idx, c])[: opt.n_show]]
            else:
                return
            images = store.images(store.member_rows[idx])
            columns = store.columns(store.member_rows[idx])
            rows += [images, model_calls.reconstruct(inputs.model, images, opt.batch_size, columns)]
            labels += [f"{c}: input", f"{c}: recon"]
            ids += [cs.object_id[idx], None]
        if rows:
            title = "Random members" if kind == "random" else "Members with the highest γ"
            figures.image_grid(rows, labels, figs.path("clusters", f"members_{kind}.png", f"{title} per component"),
                               title=title, ids=ids)


SECTION = register(Section(name="clusters", title="2. Clusters", requires=(), run=run))
