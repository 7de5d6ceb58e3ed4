"""Assemble a report folder: load the inputs once, run every section, write metrics.json and index.html."""

from __future__ import annotations

import html
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galhpc.report import sections, truth
from galhpc.report.inputs import ReportInputs
from galhpc.report.options import ReportOptions
from galhpc.report.sections import Figures, Section

log = logging.getLogger("galhpc.report")


def build_report(checkpoint: str | Path, clusters: str | Path, out: str | Path, store: str | Path | None = None,
                 synth: str | Path | None = None, options: ReportOptions | None = None,
                 holdout_store: str | Path | None = None) -> dict[str, Any]:
    """Write figures, metrics.json and index.html into `out`.

    A section that raises is logged and recorded as {"error": ...}; the others still run
    (`failed_sections` lists the failures).  `store` and `holdout_store` may be FITS cutouts:
    they are prepared with the prep recipe of the checkpoint's training store into
    temporary stores (`galhpc.inference.encode.as_store`), removed when the report is written.

    Parameters
    ----------
    checkpoint : str or Path
        Checkpoint written by galhpc-train (losses.csv beside it).
    clusters : str or Path
        Encode catalogue of that checkpoint (galhpc-encode).
    out : str or Path
        Report folder, created if absent.
    store : str or Path, optional
        The store the catalogue was encoded from (HDF5, or FITS cutouts).
    synth : str or Path, optional
        Generate catalogue of the checkpoint (galhpc-generate); else the model samples.
    options : ReportOptions, optional
        Sample and figure sizes and the seed; default `ReportOptions()`.
    holdout_store : str or Path, optional
        A separate held-out store: every object counts as held out.

    Returns
    -------
    dict
        The metrics as written to metrics.json: ``inputs``, one entry per section (its
        metrics, ``skipped`` or ``error``, and ``seconds``) and ``failed_sections``.
    """
    from galhpc.inference.encode import as_store

    opt = options or ReportOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(opt.seed)
    torch.manual_seed(opt.seed)
    with as_store(store, checkpoint, out / "store") as prepared, \
            as_store(holdout_store, checkpoint, out / "holdout") as prepared_holdout:
        return _build_report(checkpoint, clusters, out, prepared, synth, opt, prepared_holdout, rng,
                             {"store": store, "holdout_store": holdout_store})


def _build_report(checkpoint: str | Path, clusters: str | Path, out: Path, store: Path | None,
                  synth: str | Path | None, opt: ReportOptions, holdout_store: Path | None,
                  rng: np.random.Generator, named: dict[str, Any]) -> dict[str, Any]:
    inputs = ReportInputs.load(checkpoint, clusters, store, synth, opt, rng, holdout_store)
    info = inputs.describe(opt)
    info.update({key: str(value) for key, value in named.items() if value is not None})  # FITS: not the temp store
    figs = Figures(out)
    report: dict[str, Any] = {"inputs": info}
    for name, section in sections.SECTIONS.items():
        start = time.perf_counter()
        log.info("report section %s", name)
        try:
            report[name] = run_section(section, inputs, opt, figs, rng)
        except Exception as err:  # one broken section must not cost the others' figures
            log.exception("report section %s failed", name)
            report[name] = {"error": f"{type(err).__name__}: {err}"}
        report[name]["seconds"] = round(time.perf_counter() - start, 2)
    report["failed_sections"] = [name for name in sections.SECTIONS if "error" in report[name]]
    (out / "metrics.json").write_text(json.dumps(_finite(report), indent=2))
    (out / "index.html").write_text(render_index(report, figs.items))
    log.info("report written to %s (%d figures)", out, sum(len(v) for v in figs.items.values()))
    return report


def run_section(section: Section, inputs: ReportInputs, opt: ReportOptions, figs: Figures,
                rng: np.random.Generator) -> dict[str, Any]:
    """Run one section, or skip it: the one place a section's missing input is decided.

    The section's `always` part runs first; then its first missing requirement, if any, is
    logged and recorded as ``{"skipped": reason}`` instead of its `run`.

    Parameters
    ----------
    section : Section
    inputs : ReportInputs
    opt : ReportOptions
    figs : Figures
    rng : numpy.random.Generator
        The report's one generator, shared by the sections in order.

    Returns
    -------
    dict
        The section's metrics (JSON-ready).
    """
    result = dict(section.always(inputs, opt, figs, rng)) if section.always is not None else {}
    reason = section.missing(inputs, opt)
    if reason is not None:
        log.info("%s: skipped — %s", section.name, reason)
        result["skipped"] = reason
        return result
    return result | section.run(inputs, opt, figs, rng)


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def render_index(report: dict[str, Any], figure_items: dict[str, list[tuple[str, str]]]) -> str:
    """A self-contained HTML page of a report.

    A one-screen summary table (`summary_rows`: the headline numbers, model beside
    baseline, pass/flag), then each titled section's figures and its scalar metrics
    (3 significant digits; lists and per-object values stay in metrics.json).

    Parameters
    ----------
    report : dict
        The metrics `build_report` returns.
    figure_items : dict of str to list of (str, str)
        Section name -> [(caption, file name)] (`Figures.items`).

    Returns
    -------
    str
        The HTML text of index.html.
    """
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>galhpc report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #bbb;padding:2px 6px}"
             ".flag{background:#fdd}.pass{background:#dfd}</style></head><body>",
             "<h1>galhpc report</h1>", _summary_table(summary_rows(report)), _scalars_table(report["inputs"]),
             "<p>Every number, per-object lists included: <a href='metrics.json'>metrics.json</a>.</p>"]
    for name, title in ((n, sec.title) for n, sec in sections.SECTIONS.items() if sec.title is not None):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        section = report.get(name, {})
        if "skipped" in section:
            parts.append(f"<p>Skipped: {html.escape(str(section['skipped']))}</p>")
        for caption, file_name in figure_items.get(name, []):
            parts.append(f"<figure><img src='{html.escape(file_name)}' alt='{html.escape(caption)}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        if name == "truth" and "model" in section:
            parts.append(_truth_table(section))
        parts.append(_scalars_table(section))
    parts.append("</body></html>")
    return "\n".join(parts)


def sig3(value: Any) -> str:
    """A number with 3 significant digits (integers as they are); other values as text.

    Parameters
    ----------
    value : object
        A number, bool, None or anything with a `str`.

    Returns
    -------
    str
        "" for None, "n/a" for a non-finite float.
    """
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.3g}" if math.isfinite(value) else "n/a"
    return str(value)


def summary_rows(report: dict[str, Any]) -> list[tuple[str, Any, Any, str, str]]:
    """The headline numbers of a report, from the sections that ran.

    Parameters
    ----------
    report : dict
        The metrics `build_report` returns.

    Returns
    -------
    list of tuple
        (quantity, model, baseline, which baseline, "pass" / "flag" / "") per row.
    """
    rows: list[tuple[str, Any, Any, str, str]] = []
    regier = report.get("regier", {})
    known = regier.get("known_sigma") or {}
    base = next((k for k in known if k.startswith("pca") and isinstance(known[k], dict)), None)
    if "model" in known and base:
        model_chi2, base_chi2 = known["model"]["mean_chi2_per_pixel"], known[base]["mean_chi2_per_pixel"]
        rows.append(("held-out χ²/pixel (known σ)", model_chi2, base_chi2, f"{base.upper()} out of fold",
                     "pass" if model_chi2 < base_chi2 else "flag"))
        gauss = known.get("gaussian", {}).get("mean_chi2_per_pixel")
        rows.append(("held-out χ²/pixel against a best-fit Gaussian", model_chi2, gauss, "6-parameter Gaussian",
                     "pass" if gauss is not None and model_chi2 < gauss else "flag"))
    if "fraction_squared_error" in regier:
        frac = regier["fraction_squared_error"]
        pca = (regier.get("baselines") or {}).get(base or "", {}).get("fraction_squared_error")
        rows.append(("Regier: stamps won against the Gaussian", frac, pca, f"{(base or 'PCA').upper()} wins",
                     "pass" if pca is None or frac >= pca else "flag"))
    recon = report.get("reconstruction", {})
    if "mse_mean" in recon:
        rows.append(("held-out reconstruction MSE", recon["mse_mean"], None, "", ""))
    clusters = report.get("clusters", {})
    for name, value in (clusters.get("nuisance_eta2") or {}).items():
        rows.append((f"cluster η² of {name}", value, None, "", "flag" if value is not None and value > truth.ETA2_FLAG
                     else "pass"))
    truth_section = report.get("truth", {})
    for metric, column, model, baseline, _ in (truth.table_rows(truth_section) if "model" in truth_section else []):
        if metric.startswith(("cluster NMI", "kNN")):
            rows.append((f"{metric} {column}", model, baseline, "PCA+GMM" if metric.startswith("cluster") else "PCA",
                         "pass" if math.isfinite(model) and math.isfinite(baseline) and model >= baseline else "flag"))
    fidelity = report.get("fidelity", {})
    if isinstance(fidelity.get("classifier"), dict) and "auc" in fidelity["classifier"]:
        floor = (fidelity.get("classifier_floor") or {}).get("auc")
        targets = fidelity.get("targets") or {}
        rows.append(("generated vs real: classifier AUC (0.5 = indistinguishable)", fidelity["classifier"]["auc"],
                     floor, "two halves of the real set", "pass" if targets.get("auc_met") else "flag"))
        if "ks_scored" in targets:
            rows.append(("generated vs real: statistics within the KS target", targets.get("ks_met"),
                         targets["ks_scored"], "statistics scored", "pass" if targets.get("ks_all_met") else "flag"))
    for name in report.get("failed_sections", []):
        rows.append((f"section {name}", "failed", None, "", "flag"))
    return rows


def _summary_table(rows: list[tuple[str, Any, Any, str, str]]) -> str:
    """HTML of `summary_rows`."""
    out = ["<h2>Summary</h2><table><tr><th>quantity</th><th>model</th><th>baseline</th><th>which baseline</th>"
           "<th>pass / flag</th></tr>"]
    for quantity, model, baseline, which, verdict in rows:
        cls = f" class='{verdict}'" if verdict else ""
        out.append(f"<tr{cls}><td>{html.escape(quantity)}</td><td>{sig3(model)}</td><td>{sig3(baseline)}</td>"
                   f"<td>{html.escape(which)}</td><td>{verdict}</td></tr>")
    if not rows:
        out.append("<tr><td colspan='5'>no section produced a headline number</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _truth_table(result: dict[str, Any]) -> str:
    """HTML table of `truth.table_rows`: model against its baseline, chance for kNN."""
    rows = ["<table><tr><th>metric</th><th>column</th><th>model</th>"
            "<th>baseline</th><th>which baseline</th><th>chance</th></tr>"]
    for metric, column, model, base, chance in truth.table_rows(result):
        which = "PCA+GMM" if metric.startswith(("cluster", "nuisance")) else f"PCA-{result['pca_components']}"
        flagged = metric == "nuisance η²" and math.isfinite(model) and model > truth.ETA2_FLAG
        style = " class='flag'" if flagged else ""
        rows.append(f"<tr{style}><td>{html.escape(metric)}</td><td>{html.escape(column)}</td><td>{sig3(model)}</td>"
                    f"<td>{sig3(base)}</td><td>{which}</td><td>{sig3(chance)}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _flatten(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted name, value) of the scalar entries of nested metrics.

    Lists are left out (they stay in metrics.json), short lists of scalars kept as text.
    """
    out: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _flatten(value, f"{name}.")
        elif isinstance(value, (list, tuple)):
            if 0 < len(value) <= 6 and all(isinstance(v, (int, float, str)) for v in value):
                out.append((name, ", ".join(sig3(v) for v in value)))
        else:
            out.append((name, value))
    return out


def _scalars_table(metrics: dict[str, Any]) -> str:
    """A two-column HTML table of a section's scalar metrics, numbers to 3 significant digits."""
    items = [(k, v) for k, v in _flatten(metrics) if k != "skipped"]
    if not items:
        return ""
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(sig3(v))}</td></tr>" for k, v in items)
    return f"<table>{cells}</table>"
