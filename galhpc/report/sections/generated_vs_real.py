"""Section 6, generated against real: statmorph statistics of held-out and generated stamps."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from galhpc.fidelity import morphology
from galhpc.models.base import GalaxyModel
from galhpc.report import figures, metrics, model_calls
from galhpc.report.inputs import ReportInputs
from galhpc.report.options import ReportOptions
from galhpc.report.sections.base import GENERATOR, HELDOUT, Figures, Requirement, Section, pick, register

log = logging.getLogger("galhpc.report")

MIN_GROUP = 5  # stamps on each side for a per-condition comparison (class, component or condition bin)


def _condition_problem(inputs: ReportInputs, opt: ReportOptions) -> str | None:
    """Why a float-conditioned model without synth.h5 has no condition values to sample at, or None.

    The real stamps are `opt.n_morph` of the held-out ones chosen at random; the values are
    binned on them.  Decided before the choice, so that a skip draws no random numbers: the
    section runs when every such choice holds a finite value (fewer non-finite values than
    stamps chosen).
    """
    column, h = model_calls.float_condition(inputs.model), inputs.holdout
    if inputs.synth is not None or column is None:
        return None
    n_chosen = min(opt.n_morph, len(h.images))
    n_finite = int(np.isfinite(np.asarray(h.groups, np.float64)).sum()) if h.group_name == column else 0
    if n_finite == 0:
        why = f"the store has no finite labels/{column} for the held-out stamps to bin"
    elif len(h.images) - n_finite >= n_chosen:
        why = (f"only {n_finite} of the {len(h.images)} held-out stamps have a finite labels/{column}, "
               f"so the {n_chosen} chosen may have none to bin")
    else:
        return None
    return f"float-conditioned model without --synth: {why}, so no condition to sample at"


CONDITION_VALUES = Requirement(
    "condition values to sample a float-conditioned model at",
    lambda inp, opt: _condition_problem(inp, opt) is None,
    lambda inp, opt: str(_condition_problem(inp, opt)))


def run(inputs: ReportInputs, opt: ReportOptions, figs: Figures, rng: np.random.Generator) -> dict[str, Any]:
    """Statmorph statistics of held-out and generated stamps, KS distances overall and per condition.

    Per class / component, or per quantile bin of a float condition.

    Parameters
    ----------
    inputs : ReportInputs
        Held-out stamps and their groups; synth.h5's sample, else the model to draw from.
    opt : ReportOptions
        ``n_morph`` stamps per side, ``n_condition_bins``, ``match_noise``, ``seed``.
    figs : Figures
        Receives morphology.png (and morphology_per_<column>.png for a float condition).
    rng : numpy.random.Generator
        Picks the synth stamps first, then the real ones.

    Returns
    -------
    dict
        ``ks`` per statistic, sky σ of both sides, failures, and ``per_<group>`` or
        ``per_<column>_bin`` (``{"skipped": reason}`` when synth.h5 gives the stamps but the
        chosen real ones have no finite condition value to bin).
    """
    h, model = inputs.holdout, inputs.model
    float_column = model_calls.float_condition(model)
    if inputs.synth is not None:
        chosen = pick(len(inputs.synth.images), opt.n_morph, rng)
        synth_images, synth_comp = inputs.synth.images[chosen], inputs.synth.component[chosen]
    chosen = pick(len(h.images), opt.n_morph, rng)
    real = h.images[chosen]
    bins, bins_skipped = None, None
    if float_column is not None:
        values = h.groups[chosen] if h.group_name == float_column else None
        if values is None or not np.isfinite(values).any():
            bins_skipped = f"the store has no finite labels/{float_column} for the held-out stamps to bin"
        else:
            bins = metrics.quantile_bins(values, opt.n_condition_bins, MIN_GROUP)
    if inputs.synth is not None:
        generated, gen_comp, source = synth_images, synth_comp, "synth.h5"
    elif float_column is not None:  # drawn at each bin's median condition (CONDITION_VALUES: there are bins)
        generated, gen_comp = sample_groups(model, opt.n_morph, [{float_column: float(v)} for v in bins.values],
                                            opt.seed)
        source = f"model.sample(n, {float_column}=<bin median>) per bin"
    elif (condition := model_calls.class_condition(model)) is not None:  # it needs a class to sample
        generated, gen_comp = sample_groups(model, opt.n_morph, [{"component": c} for c in range(condition[1])],
                                            opt.seed)
        source = "model.sample(n, component=c) per class"
    else:
        generated, gen_comp = model_calls.sample(model, opt.n_morph, seed=opt.seed)
        source = "model.sample"
    real_sigma = morphology.median_sky_sigma(real)
    generated, gen_sigma, added = noise_matched(generated, real_sigma, opt)
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
        if inputs.synth is not None:  # synth.h5 records no condition value: draw per bin from the model
            bin_images, bin_groups = sample_groups(model, opt.n_morph,
                                                   [{float_column: float(v)} for v in bins.values], opt.seed)
            bin_images, _, extra["noise_added_to_generated"] = noise_matched(bin_images, real_sigma, opt)
            log.info("statmorph on %d stamps generated per %s bin", len(bin_images), float_column)
            bin_table = morphology.morphology_table(bin_images, f"statmorph, stamps per {float_column} bin")
        else:
            bin_table, bin_groups = gen_table, gen_comp
        out[key] = per_bin(float_column, bins, real_table, bin_table, bin_groups, figs) | extra
    elif (gen_comp >= 0).any():
        per = compare_groups(real_table, h.groups[chosen], gen_table, gen_comp)
        out[f"per_{h.group_name}"] = {str(c): v for c, v in per.items()}
    return out


def noise_matched(images: np.ndarray, real_sigma: float, opt: ReportOptions) -> tuple[np.ndarray, float, float]:
    """Generated stamps with white noise added up to the real stamps' median sky σ.

    Parameters
    ----------
    images : (N, C, H, W) float
        Generated stamps.
    real_sigma : float
        Median sky σ of the real stamps.
    opt : ReportOptions
        Noise is added only with ``match_noise``; ``seed`` seeds it.

    Returns
    -------
    images : numpy.ndarray
        The stamps, noise added.
    own_sigma : float
        Their median sky σ before.
    added : float
        σ of the noise added (0 when none).
    """
    gen_sigma = morphology.median_sky_sigma(images)
    added = float(np.sqrt(max(real_sigma**2 - gen_sigma**2, 0.0))) if opt.match_noise else 0.0
    if added > 0:
        images = morphology.add_noise(images, added, np.random.default_rng(opt.seed))
    return images, gen_sigma, added


def sample_groups(model: GalaxyModel, n_total: int, conditions: list[dict[str, Any]], seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """`n_total` stamps split evenly over the groups, group i drawn by `model.sample(**conditions[i])`.

    Parameters
    ----------
    model : GalaxyModel
        A generative model.
    n_total : int
    conditions : list of dict
        Keyword arguments of `model.sample` per group (``[{"component": c}, ...]`` for classes).
    seed : int
        Group i is drawn with seed + i.

    Returns
    -------
    images : numpy.ndarray
        (n_total, C, H, W) stamps.
    groups : numpy.ndarray
        (n_total,) int64 group index of each.
    """
    sizes = np.full(len(conditions), n_total // len(conditions))
    sizes[: n_total % len(conditions)] += 1
    images, groups = [], []
    for i, (kwargs, n) in enumerate(zip(conditions, sizes, strict=False)):
        if n:
            images.append(model_calls.sample(model, int(n), seed=seed + i, **kwargs)[0])
            groups.append(np.full(int(n), i, np.int64))
    return np.concatenate(images), np.concatenate(groups)


def _subset(table: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in table.items()}


def compare_groups(real_table: dict[str, np.ndarray], real_groups: np.ndarray, gen_table: dict[str, np.ndarray],
                   gen_groups: np.ndarray) -> dict[int, dict[str, dict[str, float]]]:
    """KS distances per group (class, component or condition bin) of the generated stamps.

    Only the groups with at least `MIN_GROUP` stamps on both sides.

    Parameters
    ----------
    real_table, gen_table : dict of str to numpy.ndarray
        Statmorph statistics (name -> (N,)) of the real and generated stamps.
    real_groups, gen_groups : numpy.ndarray
        (N,) int group of each real / generated stamp (negative: none).

    Returns
    -------
    dict
        Group -> `galhpc.fidelity.morphology.compare_tables` of its stamps.
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


def per_bin(column: str, bins: metrics.ConditionBins, real_table: dict[str, np.ndarray],
            gen_table: dict[str, np.ndarray], gen_bins: np.ndarray, figs: Figures) -> dict[str, Any]:
    """Per quantile bin of a float condition: edges, condition value, KS distances and quartiles.

    Draws one figure of the medians against the condition.

    Parameters
    ----------
    column : str
        The condition column.
    bins : metrics.ConditionBins
        Bins of the real stamps' condition values.
    real_table, gen_table : dict of str to numpy.ndarray
        Statmorph statistics of the real and generated stamps.
    gen_bins : numpy.ndarray
        (N,) int bin each generated stamp was drawn for.
    figs : Figures

    Returns
    -------
    dict
        ``column``, ``binning``, ``edges``, ``bins`` (one entry per bin) and counts.
    """
    per = compare_groups(real_table, bins.index, gen_table, gen_bins)
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


SECTION = register(Section(
    name="generated_vs_real", title="6. Generated against real",
    requires=(HELDOUT.because("no --store: no real images"), GENERATOR, CONDITION_VALUES), run=run))
