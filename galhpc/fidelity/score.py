"""The fidelity test of a generator: generated against held-out real stamps, beside the real floor.

Both sets are measured the same way, beside the real-vs-real floor; the result is written as
one table (FITS and CSV) and figures.

Targets (docs/models.md, "Fidelity"): per statistic KS <= 0.15, or within 1.5x the
floor where the floor itself is higher; classifier AUC <= 0.70; memorisation (the copying
test, `compare.memorisation`) p > 0.01.
A statistic the real stamps have and the generated ones never do is a missed target;
`passes` is every target met.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from galhpc.fidelity import compare, morphology
from galhpc.runtime.files import atomic_path, write_text_atomic

log = logging.getLogger("galhpc.fidelity")

KS_TARGET = 0.15
FLOOR_FACTOR = 1.5
AUC_TARGET = 0.70
MEMORISATION_P = 0.01
TABLE_COLUMNS = ("statistic", "ks", "ks_err", "ks_p", "wasserstein", "wasserstein_err", "floor_ks", "floor_ks_err",
                 "floor_wasserstein", "floor_wasserstein_err", "n_generated", "n_real", "ks_target_met")


@dataclass
class FidelityResult:
    """Everything one fidelity test measured."""

    rows: list[dict[str, Any]]  # one per statistic, keys TABLE_COLUMNS
    classifier: dict[str, float]  # generated against real
    classifier_floor: dict[str, float]  # real half against real half
    memorisation: dict[str, float] | None  # None without training stamps
    sky: dict[str, float]  # real sky σ, generated σ before, σ added
    generated_table: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    real_table: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    generated_images: np.ndarray | None = field(repr=False, default=None)  # noise-matched, (N, H, W)
    real_images: np.ndarray | None = field(repr=False, default=None)

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers: the table rows, the tests and whether each target is met.

        Returns
        -------
        dict
            "statistics" (the rows), "classifier", "classifier_floor", "memorisation"
            (None without training stamps), "sky", and "targets": ks_all_met, ks_met,
            ks_scored, auc_met, memorisation_met (None when not run) and passes (every
            target that was run met).
        """
        # every statistic the real stamps have counts: one the generated stamps never reach
        # (statmorph cannot measure them) is a missed target, not a skipped one
        met = [r["ks_target_met"] for r in self.rows if r["n_real"] > 0]
        auc_met = self.classifier["auc"] <= AUC_TARGET
        memorisation_met = None if self.memorisation is None else self.memorisation["p_value"] > MEMORISATION_P
        ks_all_met = bool(met) and all(met)
        return {
            "statistics": self.rows,
            "classifier": self.classifier,
            "classifier_floor": self.classifier_floor,
            "memorisation": self.memorisation,
            "sky": self.sky,
            "targets": {
                "ks_all_met": ks_all_met,
                "ks_met": int(sum(met)), "ks_scored": len(met),
                "auc_met": auc_met,
                "memorisation_met": memorisation_met,
                # the verdict: the generated stamps pass for real on every test that was run
                "passes": ks_all_met and auc_met and memorisation_met is not False,
            },
        }


def feature_matrix(table: dict[str, np.ndarray]) -> np.ndarray:
    """(N, F) rows of the per-stamp statistics in `morphology.STATISTICS` order (NaN kept).

    Parameters
    ----------
    table : dict of str to numpy.ndarray
        Statistic name -> (N,) values, with every name of `morphology.STATISTICS`.

    Returns
    -------
    numpy.ndarray
        (N, len(STATISTICS)), the classifier test's features.
    """
    return np.stack([table[name] for name in morphology.STATISTICS], axis=1)


def score(generated: np.ndarray, real: np.ndarray, training: np.ndarray | None = None, *, n_boot: int = 200,
          processes: int = 1, seed: int = 0, folds: int = 5,
          real_table: dict[str, np.ndarray] | None = None) -> FidelityResult:
    """Score generated stamps against held-out real ones.

    Parameters
    ----------
    generated : numpy.ndarray
        (N, H, W) or (N, C, H, W) generated stamps in the real stamps' units, noise-free or
        not: white noise is added up to the real stamps' median border σ.
    real : numpy.ndarray
        (M, ...) held-out real stamps of the same size and PSF (never trained on); M >= 2·folds.
    training : numpy.ndarray, optional
        (T, ...) training stamps, for the memorisation check (skipped without).
    n_boot : int
        Bootstrap resamples of each distance's error.
    processes : int
        statmorph worker processes.
    seed : int
        Noise, halves, bootstrap and folds.
    folds : int
        Cross-validation folds of the classifier test.
    real_table : dict, optional
        `morphology.morphology_table(real)` when already measured (scoring several
        generators against one real set measures it once).

    Returns
    -------
    FidelityResult
        Per statistic: KS and Wasserstein distances with bootstrap σ, generated against
        real and real half against real half (the floor); classifier AUCs (generated vs
        real, and the floor); the memorisation test.

    Raises
    ------
    ValueError
        For stamps of different shapes or too few stamps for the classifier folds.
    """
    rng = np.random.default_rng(seed)
    real2d = morphology.as_2d_stack(real)
    gen2d = morphology.as_2d_stack(generated)
    if gen2d.shape[1:] != real2d.shape[1:]:
        raise ValueError(f"generated stamps {gen2d.shape[1:]} and real stamps {real2d.shape[1:]} differ in size")
    real_sigma = morphology.median_sky_sigma(real2d)
    gen2d, own_sigma, added = morphology.match_noise(gen2d, real_sigma, rng)
    log.info("fidelity: %d generated against %d real stamps; real sky σ %.4g, %.4g added to the generated",
             len(gen2d), len(real2d), real_sigma, added)
    gen_table = morphology.morphology_table(gen2d, "statmorph generated", processes)
    if real_table is None:
        real_table = morphology.morphology_table(real2d, "statmorph real", processes)
    half_a, half_b = compare.split_halves(len(real2d), rng)
    rows = []
    for name in morphology.STATISTICS:
        d = compare.distance(gen_table[name], real_table[name], n_boot, rng)
        f = compare.distance(real_table[name][half_a], real_table[name][half_b], n_boot, rng)
        rows.append({
            "statistic": name, "ks": d.ks, "ks_err": d.ks_err, "ks_p": d.ks_p,
            "wasserstein": d.wasserstein, "wasserstein_err": d.wasserstein_err,
            "floor_ks": f.ks, "floor_ks_err": f.ks_err, "floor_wasserstein": f.wasserstein,
            "floor_wasserstein_err": f.wasserstein_err, "n_generated": d.n_a, "n_real": d.n_b,
            "ks_target_met": bool(np.isfinite(d.ks) and d.ks <= max(KS_TARGET, FLOOR_FACTOR * f.ks)),
        })
    gen_x, real_x = feature_matrix(gen_table), feature_matrix(real_table)
    classifier = compare.classifier_auc(gen_x, real_x, folds, seed)
    classifier_floor = compare.classifier_auc(real_x[half_a], real_x[half_b], folds, seed)
    memo = None
    if training is not None:
        memo = compare.memorisation(gen2d, real2d, morphology.as_2d_stack(training))
    return FidelityResult(rows, classifier, classifier_floor, memo,
                          {"real": real_sigma, "generated": own_sigma, "added": added},
                          gen_table, real_table, gen2d, real2d)


def result_table(result: FidelityResult, meta: dict[str, Any] | None = None):
    """The per-statistic table as an astropy Table, the test-wide numbers in its meta.

    The classifier, sky and memorisation numbers become FITS header keywords (AUC, AUCERR,
    AUCFLOOR, SKYSIG, SKYADDED, MEM*), with PASSES the verdict.

    Parameters
    ----------
    result : FidelityResult
        The scored test.
    meta : dict, optional
        Extra header entries; keys are cut to 8 upper-case characters, values to 60 characters
        of their str.

    Returns
    -------
    astropy.table.Table
        One row per statistic, columns `TABLE_COLUMNS`.
    """
    from astropy.table import Table

    table = Table(rows=[[r[c] for c in TABLE_COLUMNS] for r in result.rows], names=TABLE_COLUMNS)
    header = {"AUC": result.classifier["auc"], "AUCERR": result.classifier["auc_err"],
              "AUCFLOOR": result.classifier_floor["auc"], "SKYSIG": result.sky["real"],
              "SKYADDED": result.sky["added"]}
    if result.memorisation is not None:
        header.update(MEMKS=result.memorisation["ks"], MEMKSP=result.memorisation["ks_p"],
                      MEMP=result.memorisation["p_value"], MEMCOPY=result.memorisation["copy_fraction"],
                      MEMRATIO=result.memorisation["median_ratio"])
    table.meta.update({k: float(v) for k, v in header.items()})
    table.meta["PASSES"] = bool(result.summary()["targets"]["passes"])
    for key, value in (meta or {}).items():
        table.meta[key[:8].upper()] = str(value)[:60]
    return table


def stamp_table(result: FidelityResult):
    """Per-stamp statistics of both sets: one row per stamp, column `set` = generated | real.

    Parameters
    ----------
    result : FidelityResult
        The scored test (its generated and real tables).

    Returns
    -------
    astropy.table.Table
        The generated rows, then the real rows; a `set` column first, then `morphology.STATISTICS`.
    """
    from astropy.table import Table, vstack

    parts = []
    for name, values in (("generated", result.generated_table), ("real", result.real_table)):
        t = Table({k: values[k] for k in morphology.STATISTICS})
        t.add_column(np.full(len(t), name), name="set", index=0)
        parts.append(t)
    return vstack(parts)


def write_outputs(result: FidelityResult, out: str | Path, meta: dict[str, Any] | None = None,
                  figures: bool = True, n_show: int = 8, training: np.ndarray | None = None) -> dict[str, Path]:
    """Write the fidelity test's tables, JSON summary and figures under `out`.

    `out/fidelity.fits`, `out/fidelity.csv` (the per-statistic table), `out/stamps.fits`
    (per-stamp statistics), `out/fidelity.json` (every number) and, with `figures`,
    `out/histograms.png` and (with `training`) `out/nearest.png`; each written atomically.

    Parameters
    ----------
    result : FidelityResult
        The scored test.
    out : str or pathlib.Path
        Output folder, created if missing.
    meta : dict, optional
        Provenance for the FITS header and the JSON "meta" entry.
    figures : bool, optional
        Draw the figures (needs matplotlib).
    n_show : int, optional
        Generated stamps in the nearest-neighbour grid.
    training : numpy.ndarray, optional
        Training stamps, for the nearest-neighbour grid (skipped without).

    Returns
    -------
    dict
        name -> path of each file written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = result_table(result, meta)
    paths = {"fits": out / "fidelity.fits", "csv": out / "fidelity.csv", "stamps": out / "stamps.fits",
             "json": out / "fidelity.json"}
    for key, fmt in (("fits", "fits"), ("csv", "ascii.csv")):
        with atomic_path(paths[key]) as tmp:
            table.write(tmp, format=fmt)
    with atomic_path(paths["stamps"]) as tmp:
        stamp_table(result).write(tmp, format="fits")
    write_text_atomic(paths["json"], json.dumps({**result.summary(), "meta": meta or {}}, indent=2,
                                                default=_json_default) + "\n")
    if figures:
        from galhpc.fidelity import figures as fig

        paths["histograms"] = fig.histograms(result, out / "histograms.png")
        if training is not None:
            paths["nearest"] = fig.nearest_grid(result.generated_images, result.real_images, training,
                                                out / "nearest.png", n_show)
    return paths


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
