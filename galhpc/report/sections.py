"""The report's sections: each takes the loaded inputs, draws its figures and returns its metrics.

A section that lacks an input (no store, a non-generative model, no labels) returns
{"skipped": reason} instead of drawing, so one command serves every model and catalogue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from galhpc.fidelity import morphology
from galhpc.models.base import GalaxyModel
from galhpc.report import figures, heldout, inference, latents, metrics, regier, truth
from galhpc.report.fidelity import fidelity_section
from galhpc.report.heldout import EncodedObjects, noise_sigma
from galhpc.report.losses import loss_table
from galhpc.report.options import ReportOptions
from galhpc.report.sampling import ClusterSample, SynthSample

log = logging.getLogger("galhpc.report")

VOTE_CUTS = (0.5, 0.8)  # Galaxy Zoo vote-fraction cuts: majority, and clean sample


@dataclass
class Inputs:
    """Everything the sections read, loaded once by `build`."""

    model: GalaxyModel
    clusters: ClusterSample
    holdout: EncodedObjects | None = None  # held-out objects read, encoded and clustered (store or --holdout-store)
    holdout_images: np.ndarray | None = None  # (n, C, H, W) from the store
    holdout_ids: np.ndarray | None = None
    holdout_recons: np.ndarray | None = None  # model.reconstruct of holdout_images (in their space)
    # their condition: class label, float condition value (binned by generated_vs_real) or clusters.h5 component
    holdout_groups: np.ndarray | None = None
    group_name: str = "component"
    member_rows: np.ndarray | None = None  # store row of each cluster-sample row (-1 if absent)
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # per cluster-sample row
    store_images: Callable[[np.ndarray], np.ndarray] | None = None  # store rows -> images (N, C, H, W)
    store_path: str | None = None  # the store the catalogue was encoded from (--store)
    # store rows -> the columns the model's `reconstruct` needs (per-object PSFs), if any
    store_columns: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None
    synth: SynthSample | None = None
    loss_rows: list[dict[str, Any]] | None = None


@dataclass
class Figures:
    """Registry of the figures written so far: section -> [(caption, file name)]."""

    out: Path
    items: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def path(self, section: str, name: str, caption: str) -> Path:
        self.items.setdefault(section, []).append((caption, name))
        return self.out / name


def _pick(n_total: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n_total, size=min(n, n_total), replace=False))


# 1. Reconstructions ---------------------------------------------------------------------------------
def reconstructions(inp: Inputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Loss curves; held-out inputs, reconstructions, residuals; five best and worst by MSE."""
    out: dict[str, Any] = {}
    if inp.loss_rows:
        columns, x_name, phases = loss_table(inp.loss_rows)
        figures.loss_curves(columns, x_name, phases, figs.path("reconstruction", "loss_curves.png",
                                                               "Loss terms over training, phases shaded"))
        out["loss_terms"] = [k for k in columns if k != x_name]
        if phases is not None:
            out["phases"] = list(dict.fromkeys(phases.tolist()))
    else:
        out["loss_curves_skipped"] = "no losses.csv beside the checkpoint and no history in it"
    if inp.holdout_images is None:
        out["skipped"] = "no --store: no input images to reconstruct"
        return out
    images, recons = inp.holdout_images, inp.holdout_recons
    mse = metrics.per_image_mse(images, recons)
    show = _pick(len(images), opt.n_show, rng)
    ids = inp.holdout_ids
    figures.image_grid([images[show], recons[show], images[show] - recons[show]], ["input", "reconstruction", "residual"],
                       figs.path("reconstruction", "reconstructions.png", "Random held-out inputs, reconstructions, residuals"),
                       symmetric=[False, False, True], ids=[ids[show], None, None])
    order = np.argsort(mse)
    best, worst = order[:5], order[::-1][:5]
    figures.image_grid([images[best], recons[best], images[worst], recons[worst]],
                       ["best: input", "reconstruction", "worst: input", "reconstruction"],
                       figs.path("reconstruction", "best_worst.png", "Five best and five worst reconstructions by MSE"),
                       ids=[ids[best], None, ids[worst], None])
    out.update({
        "n_images": len(images),
        "mse_mean": float(mse.mean()),
        "mse_median": float(np.median(mse)),
        "best_object_ids": inp.holdout_ids[best].tolist(),
        "best_mse": mse[best].tolist(),
        "worst_object_ids": inp.holdout_ids[worst].tolist(),
        "worst_mse": mse[worst].tolist(),
    })
    return out


# 2. Clusters -----------------------------------------------------------------------------------------
def clusters(inp: Inputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Occupancy, simplified silhouette, Calinski–Harabasz, overlap matrix, labels, member stamps."""
    cs = inp.clusters
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
    out["labels"] = _label_agreement(inp, figs)
    nuisance = {name: v["eta2"] for name, v in out["labels"].items() if v.get("role") == "nuisance"}
    out["nuisance_eta2"] = nuisance
    out["nuisance_flagged"] = [name for name, v in nuisance.items() if np.isfinite(v) and v > truth.ETA2_FLAG]
    _members(inp, opt, figs, rng)
    return out


def _label_agreement(inp: Inputs, figs: Figures) -> dict[str, Any]:
    """Per label: histogram per cluster, per-cluster summary, NMI/ARI with a permutation baseline.

    Nuisance columns (`truth.NUISANCE`: S/N, flux, noise, PSF) are what the clusters should
    not follow: they get the η² the clusters explain (of log10 for positive columns,
    `flagged` above `truth.ETA2_FLAG`) and `role` "nuisance" instead of an NMI/ARI.
    Only sampled objects found in the store (and with a cluster label) take part.
    """
    from galhpc.mixture.metrics import permutation_baseline

    result: dict[str, Any] = {}
    present = (inp.member_rows >= 0) & (inp.clusters.component >= 0) if inp.member_rows is not None else None
    if present is None or not present.any():
        return result
    comp = inp.clusters.component[present]
    for name, all_values in inp.labels.items():
        values = all_values[present]
        if values.dtype.kind == "f" and not np.isfinite(values).any():
            continue
        figures.histograms_per_cluster(values.astype(np.float64), comp,
                                       figs.path("clusters", f"labels_{name}.png", f"Histogram of label {name!r} per cluster"),
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
        agreement = metrics.label_agreement(classes, comp)
        keep = classes >= 0
        agreement |= permutation_baseline(classes[keep], comp[keep], n_permutations=20, seed=0)
        agreement["n_classes"] = int(len(np.unique(classes[keep])))
        result[name] |= agreement
    return result


def _members(inp: Inputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> None:
    """Random and top-γ members of each component: input (if a store is given) and reconstruction."""
    cs = inp.clusters
    if inp.store_images is None or inp.member_rows is None:
        return
    for kind in ("random", "top_gamma"):
        rows, labels, ids = [], [], []
        for c in range(cs.n_components):
            idx = np.flatnonzero((cs.component == c) & (inp.member_rows >= 0))
            if len(idx) == 0:
                continue
            if kind == "random":
                idx = rng.choice(idx, size=min(opt.n_show, len(idx)), replace=False)
            elif cs.gamma is not None:
                idx = idx[np.argsort(-cs.gamma[idx, c])[: opt.n_show]]
            else:
                return
            images = inp.store_images(inp.member_rows[idx])
            columns = inp.store_columns(inp.member_rows[idx]) if inp.store_columns else None
            rows += [images, inference.reconstruct(inp.model, images, opt.batch_size, columns)]
            labels += [f"{c}: input", f"{c}: recon"]
            ids += [cs.object_id[idx], None]
        if rows:
            title = "Random members" if kind == "random" else "Members with the highest γ"
            figures.image_grid(rows, labels, figs.path("clusters", f"members_{kind}.png", f"{title} per component"),
                               title=title, ids=ids)


# 3. Generation ---------------------------------------------------------------------------------------
def generation(inp: Inputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Samples per component, latent traversals, TSP route through the centres, deblending."""
    out: dict[str, Any] = {}
    model, cs = inp.model, inp.clusters
    _samples_per_component(inp, opt, figs, out)
    snr = metrics.latent_snr(cs.mu, cs.logvar)
    dims = np.argsort(-snr)[: opt.n_traversal_dims].tolist()
    grid = latents.traversal(cs.mu, dims, opt.steps)
    decoded = inference.decode(model, grid.reshape(-1, grid.shape[-1]), opt.batch_size)
    decoded = decoded.reshape(len(dims), opt.steps, *decoded.shape[1:])
    figures.image_grid(list(decoded), [f"z{d} (SNR {snr[d]:.2f})" for d in dims],
                       figs.path("generation", "traversals.png", "Latent traversals: each latent from its min to max, others at the mean"))
    out["traversal_dims"] = dims
    labelled = cs.component >= 0
    uniq, centres = metrics.cluster_centres(cs.mu[labelled], cs.component[labelled])
    if len(uniq) >= 2:
        order = metrics.shortest_path_order(centres)
        legs = latents.route(centres, order, opt.steps)
        decoded = inference.decode(model, legs.reshape(-1, legs.shape[-1]), opt.batch_size)
        decoded = decoded.reshape(len(legs), opt.steps, *decoded.shape[1:])
        figures.image_grid(list(decoded), [f"{uniq[a]} → {uniq[b]}" for a, b in zip(order[:-1], order[1:], strict=False)],
                           figs.path("generation", "tsp_interpolation.png",
                                     "Interpolation along the shortest route through the cluster centres"))
        out["tsp_order"] = [int(uniq[i]) for i in order]
        out["tsp_length"] = metrics.path_length(centres, order)
        out["tsp_length_index_order"] = metrics.path_length(centres, list(range(len(uniq))))
    out["deblending"] = _deblending(inp, opt, figs)
    return out


def _samples_per_component(inp: Inputs, opt: ReportOptions, figs: Figures, out: dict[str, Any]) -> None:
    """Generated stamps grouped by component/class: from synth.h5, else drawn from the model."""
    model = inp.model
    rows, labels = [], []
    if inp.synth is not None:
        source = "synth.h5"
        for c in np.unique(inp.synth.component):
            rows.append(inp.synth.images[inp.synth.component == c][: opt.n_show])
            labels.append(f"component {c}" if c >= 0 else "samples")
    elif model.generative and (model.has_mixture or inference.class_condition(model)):
        condition = inference.class_condition(model)
        name, n_groups = condition if condition else ("component", inp.clusters.n_components)
        source = "model.sample(component=k)"
        for c in range(n_groups):
            rows.append(inference.sample(model, opt.n_show, seed=opt.seed + c, component=c)[0])
            labels.append(f"{name} {c}")
    elif model.generative and (column := inference.float_condition(model)) is not None:
        values = inp.holdout_groups if inp.group_name == column else None
        if values is None or not np.isfinite(values).any():
            out["samples_skipped"] = f"float-conditioned model: no held-out labels/{column} to choose values from"
            return
        bins = metrics.quantile_bins(values, opt.n_condition_bins, 1)
        source = f"model.sample({column}=median of each held-out quantile bin)"
        for i, v in enumerate(bins.values):
            rows.append(inference.sample(model, opt.n_show, seed=opt.seed + i, **{column: float(v)})[0])
            labels.append(f"{column}={v:.3g}")
    elif model.generative:
        source = "model.sample"
        rows.append(inference.sample(model, opt.n_show, seed=opt.seed)[0])
        labels.append("samples")
    else:
        out["samples_skipped"] = f"model {model.name!r} is not generative and no --synth was given"
        return
    out["samples_source"] = source
    figures.image_grid(rows, labels, figs.path("generation", "samples.png", f"Generated samples per component ({source})"))


def _deblending(inp: Inputs, opt: ReportOptions, figs: Figures) -> dict[str, Any]:
    """Interpolate from galaxies with a companion towards their most similar clean galaxy (in μ)."""
    flag = inp.labels.get("has_companion")
    if flag is None or inp.store_images is None:
        return {"skipped": "needs a store with labels/has_companion"}
    present = inp.member_rows >= 0
    dirty = np.flatnonzero((flag == 1) & present)[: max(1, opt.n_show // 2)]
    clean = np.flatnonzero((flag == 0) & present)
    if len(dirty) == 0 or len(clean) == 0:
        return {"skipped": "the sample has no galaxies with (or without) a companion"}
    mu = inp.clusters.mu
    partners = clean[latents.nearest_partners(mu[dirty], mu[clean])]
    rows, labels, ids = [], [], []
    for a, b in zip(dirty, partners, strict=False):
        path = inference.decode(inp.model, latents.interpolate(mu[a], mu[b], opt.steps), opt.batch_size)
        ends = inp.store_images(inp.member_rows[[a, b]])
        rows.append(np.concatenate([ends[:1], path, ends[1:]]))
        labels.append(f"{inp.clusters.object_id[a]} → {inp.clusters.object_id[b]}")
        ids.append([inp.clusters.object_id[a], *[""] * len(path), inp.clusters.object_id[b]])
    figures.image_grid(rows, labels, figs.path("generation", "deblending.png",
                                               "Deblending: input with companion, decoded path, nearest clean input"),
                       ids=ids)
    return {"pairs": [[int(inp.clusters.object_id[a]), int(inp.clusters.object_id[b])] for a, b in zip(dirty, partners, strict=False)]}


# 4. Latent diagnostics -------------------------------------------------------------------------------
def latent_diagnostics(inp: Inputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Per-latent SNR and a t-SNE of μ coloured by component and every label."""
    from sklearn.manifold import TSNE

    cs = inp.clusters
    snr = metrics.latent_snr(cs.mu, cs.logvar)
    order = np.argsort(-snr)
    figures.bar(snr[order], [str(d) for d in order], figs.path("latents", "latent_snr.png",
                                                               "Per-latent SNR = std(μ)/mean(σ), sorted"),
                ylabel="SNR", title="Latent signal-to-noise", xlabel="latent (sorted by SNR)")
    out: dict[str, Any] = {"snr": snr.tolist(), "n_latents_snr_above_1": int((snr > 1).sum())}
    pick = _pick(len(cs.mu), opt.n_tsne, rng)
    if len(pick) < 10:
        out["tsne_skipped"] = "fewer than 10 sampled objects"
        return out
    xy = TSNE(n_components=2, perplexity=min(30.0, (len(pick) - 1) / 3), init="pca",
              random_state=opt.seed).fit_transform(cs.mu[pick].astype(np.float64))
    colourings = {"component": cs.component[pick]}
    for name, values in inp.labels.items():
        classes = metrics.discretise_label(values[pick])
        colourings[name] = values[pick] if values.dtype.kind == "f" or classes is None else classes
    figures.scatter_2d(xy, colourings, figs.path("latents", "tsne.png", "t-SNE of μ coloured by component and labels"),
                       title=f"t-SNE of μ ({len(pick)} objects)")
    out["tsne_points"] = len(pick)
    return out


# 5. Regier's test ------------------------------------------------------------------------------------
REGIER_PCA = 3  # the lenient baseline: a 3-component PCA already beats the blob on most stamps


def regier_test(inp: Inputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Fraction of held-out images whose reconstruction beats the best-fit bivariate Gaussian,
    next to out-of-fold PCA-3 and PCA-L reconstructions of the same stamps; log-likelihoods
    with the stamps' noise σ.
    """
    recons = inp.holdout_recons
    if inp.holdout_images is None or recons is None:
        return {"skipped": "no --store or --holdout-store: no held-out images"}
    images = inp.holdout_images
    n = len(images)
    dim = inp.holdout.mu.shape[1] if inp.holdout is not None else int(inp.clusters.mu.shape[1])
    baselines, sigma, note = {}, None, {}
    if n >= truth.N_FOLDS:
        pixels = images.reshape(n, -1)
        for k in dict.fromkeys((REGIER_PCA, min(dim, pixels.shape[1], n - -(-n // truth.N_FOLDS)))):
            baselines[f"pca{k}"] = truth.pca_reconstruction(pixels, k, opt.seed).reshape(images.shape)
        note["baseline_fit"] = (f"PCA reconstructions out of fold: each stamp by a PCA fitted on the other "
                                f"{truth.N_FOLDS - 1} of {truth.N_FOLDS} folds of the held-out stamps")
    else:
        note["baselines_skipped"] = f"fewer than {truth.N_FOLDS} held-out stamps"
    if inp.holdout is not None:
        sigma, note["noise_sigma_source"] = noise_sigma(inp.holdout.store, inp.holdout.rows, images)
        if not (np.isfinite(sigma).all() and (sigma > 0).all()):
            sigma, note["known_sigma_skipped"] = None, "noise σ not positive and finite for every stamp"
    result = regier.regier_test(images, recons, baselines, sigma) | note
    sse_base = np.array(result.pop(f"sse_pca{REGIER_PCA}")) if baselines else None
    for k in baselines:
        result.pop(f"sse_{k}", None)
    pca_text = (f", PCA-{REGIER_PCA} wins {result['baselines'][f'pca{REGIER_PCA}']['wins_squared_error']}/{n}"
                if baselines else "")
    figures.regier_scatter(np.array(result.pop("sse_model")), np.array(result.pop("sse_gaussian")),
                           figs.path("regier", "regier.png", "Squared error: reconstructions against best-fit Gaussian"),
                           title=f"model wins {result['wins_squared_error']}/{n}{pca_text} (anchor 971/1000)",
                           baseline=sse_base, baseline_label=f"PCA-{REGIER_PCA} (out of fold)")
    return result


# 7. Truth recovery -----------------------------------------------------------------------------------
def truth_recovery(inp: Inputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Probe R², kNN accuracy, cluster NMI/ARI and nuisance η² of the held-out objects, for the
    model and for PCA / PCA+GMM on the same pixels (`galhpc.report.truth`).
    """
    h = inp.holdout
    if h is None:
        return {"skipped": "no --store or --holdout-store: no held-out objects"}
    observed, kinds = heldout.observed_sources(h.store)
    roles = truth.column_roles(h.labels)
    if observed:  # observed stamps: only class labels (e.g. Galaxy Zoo votes) are something to recover,
        # not a catalogue's integer columns (a held-out flag, a detection flag)
        catalogue = heldout.catalogue_columns(h.store)
        classes = tuple(c for c in roles.classes if c not in catalogue)
        roles = truth.ColumnRoles(classes, (), roles.nuisances if classes else ())
        if not roles.classes:
            return {"skipped": f"no truth columns: the store's stamps are observed (sources: {kinds}) and its "
                               "label columns are catalogue measurements, not truth"}
    if not (roles.classes or roles.truths or roles.nuisances):
        return {"skipped": "the store has no truth label columns (class, numeric truth or nuisance)"}
    if len(h.rows) < 2 * truth.N_FOLDS:
        return {"skipped": f"{len(h.rows)} held-out objects; cross-validation needs {2 * truth.N_FOLDS}"}
    n = len(h.rows)
    result = truth.truth_recovery(h.mu, h.components, h.images.reshape(n, -1), h.labels, n_clusters=h.n_clusters,
                                  seed=opt.seed, recons=h.recons.reshape(n, -1), roles=roles)
    figures.truth_bars(result, figs.path("truth", "truth_recovery.png",
                                         "Truth recovery: model against PCA (same latent size) and PCA+GMM (same K)"))
    return {"store": h.store, "cluster_source": h.cluster_source} | result


# 6. Generated against real ---------------------------------------------------------------------------
MIN_GROUP = 5  # stamps on each side for a per-condition comparison (class, component or condition bin)


def generated_vs_real(inp: Inputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Statmorph statistics of held-out and generated stamps, KS distances overall and per condition:
    per class / component, or per quantile bin of a float condition.
    """
    if inp.holdout_images is None:
        return {"skipped": "no --store: no real images"}
    model = inp.model
    if inp.synth is None and not model.generative:
        return {"skipped": f"model {model.name!r} is not generative and no --synth was given"}
    float_column = inference.float_condition(model)
    if inp.synth is not None:
        pick = _pick(len(inp.synth.images), opt.n_morph, rng)
        synth_images, synth_comp = inp.synth.images[pick], inp.synth.component[pick]
    pick = _pick(len(inp.holdout_images), opt.n_morph, rng)
    real = inp.holdout_images[pick]
    bins, bins_skipped = None, None
    if float_column is not None:
        values = inp.holdout_groups[pick] if inp.group_name == float_column else None
        if values is None or not np.isfinite(values).any():
            bins_skipped = f"the store has no finite labels/{float_column} for the held-out stamps to bin"
        else:
            bins = metrics.quantile_bins(values, opt.n_condition_bins, MIN_GROUP)
    if inp.synth is not None:
        generated, gen_comp, source = synth_images, synth_comp, "synth.h5"
    elif bins is not None:  # float-conditioned: drawn at each bin's median condition
        generated, gen_comp = _sample_groups(model, opt.n_morph, [{float_column: float(v)} for v in bins.values],
                                             opt.seed)
        source = f"model.sample(n, {float_column}=<bin median>) per bin"
    elif float_column is not None:
        return {"skipped": f"float-conditioned model without --synth: {bins_skipped}, so no condition to sample at"}
    elif (condition := inference.class_condition(model)) is not None:  # it needs a class to sample
        generated, gen_comp = _sample_groups(model, opt.n_morph, [{"component": c} for c in range(condition[1])],
                                             opt.seed)
        source = "model.sample(n, component=c) per class"
    else:
        generated, gen_comp = inference.sample(model, opt.n_morph, seed=opt.seed)
        source = "model.sample"
    real_sigma = morphology.median_sky_sigma(real)
    generated, gen_sigma, added = _noise_matched(generated, real_sigma, opt)
    log.info("statmorph on %d real and %d generated stamps", len(real), len(generated))
    real_table = morphology.morphology_table(real, "statmorph, real stamps")
    gen_table = morphology.morphology_table(generated, "statmorph, generated stamps")
    ks = morphology.compare_tables(real_table, gen_table)
    figures.distributions(real_table, gen_table, ks, figs.path("generated_vs_real", "morphology.png",
                                                               "statmorph statistics, real against generated"),
                          title="Generated against real (statmorph)")
    out: dict[str, Any] = {
        "n_real": len(real), "n_generated": len(generated), "generated_source": source, "ks": ks,
        "sky_sigma_real": real_sigma, "sky_sigma_generated": gen_sigma, "noise_added_to_generated": added,
        "n_failed_real": int(np.isnan(real_table["gini"]).sum()),
        "n_failed_generated": int(np.isnan(gen_table["gini"]).sum()),
    }
    if float_column is not None:
        key = f"per_{float_column}_bin"
        if bins is None:
            out[key] = {"skipped": bins_skipped}
            return out
        extra: dict[str, Any] = {}
        if inp.synth is not None:  # synth.h5 records no condition value: draw per bin from the model
            bin_images, bin_groups = _sample_groups(model, opt.n_morph,
                                                    [{float_column: float(v)} for v in bins.values], opt.seed)
            bin_images, _, extra["noise_added_to_generated"] = _noise_matched(bin_images, real_sigma, opt)
            log.info("statmorph on %d stamps generated per %s bin", len(bin_images), float_column)
            bin_table = morphology.morphology_table(bin_images, f"statmorph, stamps per {float_column} bin")
        else:
            bin_table, bin_groups = gen_table, gen_comp
        out[key] = _per_bin(float_column, bins, real_table, bin_table, bin_groups, figs) | extra
    elif inp.holdout_groups is not None and (gen_comp >= 0).any():
        per = _compare_groups(real_table, inp.holdout_groups[pick], gen_table, gen_comp)
        out[f"per_{inp.group_name}"] = {str(c): v for c, v in per.items()}
    return out


def _noise_matched(images: np.ndarray, real_sigma: float, opt: ReportOptions) -> tuple[np.ndarray, float, float]:
    """Generated stamps with white noise added up to the real stamps' median sky σ (if
    `match_noise`); returns (stamps, their own sky σ, σ added).
    """
    gen_sigma = morphology.median_sky_sigma(images)
    added = float(np.sqrt(max(real_sigma**2 - gen_sigma**2, 0.0))) if opt.match_noise else 0.0
    if added > 0:
        images = morphology.add_noise(images, added, np.random.default_rng(opt.seed))
    return images, gen_sigma, added


def _sample_groups(model: GalaxyModel, n_total: int, conditions: list[dict[str, Any]], seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """n_total stamps split evenly over the groups, group i drawn by `model.sample(**conditions[i])`;
    returns the stamps and each one's group index (the class for [{"component": c}, ...]).
    """
    sizes = np.full(len(conditions), n_total // len(conditions))
    sizes[: n_total % len(conditions)] += 1
    images, groups = [], []
    for i, (kwargs, n) in enumerate(zip(conditions, sizes, strict=False)):
        if n:
            images.append(inference.sample(model, int(n), seed=seed + i, **kwargs)[0])
            groups.append(np.full(int(n), i, np.int64))
    return np.concatenate(images), np.concatenate(groups)


def _subset(table: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in table.items()}


def _compare_groups(real_table: dict[str, np.ndarray], real_groups: np.ndarray, gen_table: dict[str, np.ndarray],
                    gen_groups: np.ndarray) -> dict[int, dict[str, dict[str, float]]]:
    """KS distances per group (class, component or condition bin) of the generated stamps, for
    the groups with at least MIN_GROUP stamps on both sides.
    """
    per = {}
    for c in np.unique(gen_groups[gen_groups >= 0]):
        r, g = real_groups == c, gen_groups == c
        if r.sum() >= MIN_GROUP and g.sum() >= MIN_GROUP:
            per[int(c)] = morphology.compare_tables(_subset(real_table, r), _subset(gen_table, g))
    return per


def _quartiles(table: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """(25th percentile, median, 75th percentile) of each statistic, NaN-free values only."""
    out = {}
    for name, v in table.items():
        v = v[np.isfinite(v)]
        out[name] = np.percentile(v, [25, 50, 75]).tolist() if len(v) else [float("nan")] * 3
    return out


def _per_bin(column: str, bins: metrics.ConditionBins, real_table: dict[str, np.ndarray],
             gen_table: dict[str, np.ndarray], gen_bins: np.ndarray, figs: Figures) -> dict[str, Any]:
    """Per quantile bin of a float condition: its edges, the condition value generated stamps were
    drawn at, KS distances and quartiles of each statistic; one figure of medians against the condition.
    """
    per = _compare_groups(real_table, bins.index, gen_table, gen_bins)
    entries, real_q, gen_q = [], [], []
    for i in range(bins.n_bins):
        r, g = bins.index == i, gen_bins == i
        real_q.append(_quartiles(_subset(real_table, r)))
        gen_q.append(_quartiles(_subset(gen_table, g)))
        entry: dict[str, Any] = {
            "bin": i, "lower": float(bins.edges[i]), "upper": float(bins.edges[i + 1]),
            "condition_value": float(bins.values[i]), "n_real": int(r.sum()), "n_generated": int(g.sum()),
            "median_real": {k: q[1] for k, q in real_q[-1].items()},
            "median_generated": {k: q[1] for k, q in gen_q[-1].items()},
        }
        if i in per:
            entry["ks"] = per[i]
        else:
            entry["ks_skipped"] = f"fewer than {MIN_GROUP} real or generated stamps in the bin"
        entries.append(entry)
    figures.statistics_vs_condition(
        bins.values, real_q, gen_q, bins.edges,
        figs.path("generated_vs_real", f"morphology_per_{column}.png",
                  f"statmorph medians (bars: 25th-75th percentile) per {column} bin, real against generated"),
        xlabel=column, title=f"Generated against real per {column} bin (statmorph)")
    return {
        "column": column,
        "binning": "quantiles of the condition over the real stamps measured with statmorph",
        "n_bins_requested": bins.n_requested, "n_bins": bins.n_bins, "note": bins.note,
        "edges": bins.edges.tolist(), "min_per_bin": MIN_GROUP,
        "n_real_without_condition": int((bins.index < 0).sum()),
        "bins": entries,
    }


# 8. Rarity -------------------------------------------------------------------------------------------
def rarity(inp: Inputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """The most unusual objects of the catalogue sample by each rarity score (galhpc.search.rarity):
    prior NLL of μ, distance to the 10th neighbour within the sample, reconstruction χ² per pixel.
    """
    from galhpc.mixture.diagonal import fit_diag_gmm
    from galhpc.search.rarity import SCORES, knn_distance, latent_prior, prior_nll

    cs = inp.clusters
    if len(cs.rows) < 12:
        return {"skipped": f"{len(cs.rows)} sampled objects; the neighbour score needs at least 12"}
    mu = cs.mu.astype(np.float64)
    gmm = None
    if not inp.model.has_mixture:
        fitted = fit_diag_gmm(mu, max(1, min(cs.n_components, len(mu) // 10)), seed=opt.seed)
        gmm = {"log_pi": fitted.log_pi.numpy(), "mu": fitted.mu.numpy(), "var": fitted.var.numpy()}
    prior = latent_prior(inp.model, gmm, mu.shape[1])
    order = np.argsort(cs.rows, kind="stable")
    scores = {"nll_prior": prior_nll(mu, prior),
              "knn_distance": np.empty(len(mu)), "recon_chi2": np.full(len(mu), np.nan)}
    scores["knn_distance"][order] = knn_distance(mu[order], cs.rows[order], mu[order], cs.rows[order], 10)
    have = inp.member_rows is not None and (inp.member_rows >= 0).all()
    source = None
    if cs.recon_mse is not None and inp.store_path and have and inp.store_images is not None:
        sigma, source = noise_sigma(inp.store_path, inp.member_rows, inp.store_images(inp.member_rows))
        scores["recon_chi2"] = cs.recon_mse.astype(np.float64) / sigma**2
    out: dict[str, Any] = {"prior": prior.source, "n_sampled": len(mu), "knn_k": 10,
                           "noise_sigma_source": source}
    rows, labels, ids = [], [], []
    for name in SCORES:
        values = scores[name]
        if not np.isfinite(values).any():
            out[name] = {"skipped": "no recon_mse or no store to read the noise σ from"}
            continue
        top = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")[: opt.n_show]
        out[name] = {"top_object_id": cs.object_id[top].tolist(), "top_value": values[top].tolist(),
                     "median": float(np.nanmedian(values))}
        if inp.store_images is not None and inp.member_rows is not None and (inp.member_rows[top] >= 0).all():
            rows.append(inp.store_images(inp.member_rows[top]))
            labels.append(name)
            ids.append(cs.object_id[top])
    if rows:
        figures.image_grid(rows, labels, figs.path("rarity", "rarity_top.png",
                                                   "The most unusual sampled objects by each score (rarest left)"),
                           title="Highest rarity scores", ids=ids)
    return out


# 9. Similarity search ---------------------------------------------------------------------------------
def similarity_search(inp: Inputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """The search mosaic: a few query objects and their k nearest catalogue objects by μ.

    Queries are `opt.search_ids` when given, else one per component: the member nearest to
    the component's mean μ (its most typical object).  Neighbours are searched exactly
    (`galhpc.search.topk.search_blocks`, as galhpc-search does) among the sampled catalogue
    objects found in the store, the query itself excluded; the figure is galhpc-search's
    mosaic (`galhpc.search.output.write_mosaic`: every panel titled with its object id,
    arcsinh stretch).

    Raises
    ------
    DataError
        A requested id that is not among the sampled catalogue objects in the store.
    """
    from galhpc.runtime.errors import DataError
    from galhpc.search.output import write_mosaic
    from galhpc.search.topk import NO_ROW, search_blocks

    cs = inp.clusters
    if inp.store_images is None or inp.member_rows is None:
        return {"skipped": "no --store: no stamps to show the search results with"}
    usable = np.flatnonzero(inp.member_rows >= 0)
    if len(usable) < 2:
        return {"skipped": "fewer than two sampled catalogue objects are in the store"}
    mu, object_id = cs.mu[usable], cs.object_id[usable]
    if opt.search_ids:
        where = {int(oid): i for i, oid in enumerate(object_id)}
        missing = [oid for oid in opt.search_ids if oid not in where]
        if missing:
            raise DataError(f"search ids {missing} are not among the {len(usable)} sampled catalogue objects in "
                            f"the store {inp.store_path} (raise --max-objects, or give ids of the store)")
        queries = np.array([where[oid] for oid in opt.search_ids], np.int64)
        chosen = "ids given"
    else:
        component = cs.component[usable]
        picks = []
        for c in np.unique(component[component >= 0]):
            members = np.flatnonzero(component == c)
            centre = mu[members].mean(axis=0)
            picks.append(members[np.argmin(((mu[members] - centre) ** 2).sum(axis=1))])
        queries = np.array(picks[: opt.n_search_queries], np.int64)
        chosen = "per component, the member nearest to its mean μ"
    k = min(opt.search_k, len(usable) - 1)
    top = search_blocks(mu[queries], [(0, mu)], k, exclude=queries)
    found = top.rows != NO_ROW
    safe = np.where(found, top.rows, 0)
    unique, inverse = np.unique(inp.member_rows[usable[np.concatenate([queries, safe.ravel()])]], return_inverse=True)
    stamps = inp.store_images(unique)[inverse]  # a neighbour of several queries is read once
    neighbours = stamps[len(queries):].reshape(*safe.shape, *stamps.shape[1:])
    neighbours = np.where(found.reshape(*found.shape, *[1] * (neighbours.ndim - 2)), neighbours, np.nan)
    captions = np.array([[f"{object_id[r]} d={d:.3g}" if ok else "" for r, d, ok in zip(rows, dist, oks, strict=False)]
                         for rows, dist, oks in zip(safe, top.distance, found, strict=False)], dtype=object)
    write_mosaic(figs.path("search", "search_mosaic.png",
                           f"Similarity search by μ: each query (red) and its {k} nearest catalogue objects "
                           "(object id, distance in μ)"),
                 stamps[: len(queries)], neighbours, [f"query {oid}" for oid in object_id[queries]], captions)
    return {"queries": chosen, "k": int(k), "n_searched": len(usable),
            "query_object_ids": object_id[queries].tolist(),
            "neighbour_object_ids": np.where(found, object_id[safe], -1).tolist()}


SECTIONS = {
    "reconstruction": reconstructions,
    "clusters": clusters,
    "generation": generation,
    "latents": latent_diagnostics,
    "regier": regier_test,
    "fidelity": fidelity_section,
    "generated_vs_real": generated_vs_real,
    "truth": truth_recovery,
    "rarity": rarity,
    "search": similarity_search,
}
