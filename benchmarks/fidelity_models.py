"""Score several checkpoints of one training store with galhpc-fidelity's test, measuring the
real stamps once; prints the docs/models.md "Fidelity" table (markdown) and writes JSON.

    python benchmarks/fidelity_models.py --store data/galsim32_train.h5 --out fidelity.json \
        astrovader@4=runs/a_e4.pt astrovader@10=runs/a_e10.pt gaussian_vae@8=runs/g.pt \
        "astrovader ex post=runs/a_e10.pt,expost,t=0.8" "prior t=0.8=runs/prior.pt,t=0.8"

A run is label=checkpoint[:component][,expost][,t=TEMPERATURE]: drawn as galhpc-fidelity
draws it (`galhpc.fidelity.run.sample_generated`: conditioned priors at the real stamps'
labels; `expost` from the mixture fitted to the training latents; t the temperature).
Each checkpoint must share the store's stamp size; the real set is the trainer's held-out
rows (the first checkpoint's seed and fraction) unless --real-store is given.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from galhpc.checkpoint import checkpoint_config, load_model, read_checkpoint
from galhpc.fidelity import morphology, sources
from galhpc.fidelity.run import FidelityOptions, sample_generated
from galhpc.fidelity.sampling import SamplingOptions
from galhpc.fidelity.score import score

SHOW = ("concentration", "asymmetry", "smoothness", "gini", "m20", "ellipticity", "half_light_radius", "sersic_n",
        "flux", "log_sb_rhalf", "log_power_k2", "log_power_k4", "measured")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="label=checkpoint[:component]")
    p.add_argument("--store", required=True)
    p.add_argument("--real-store")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--n-training", type=int, default=2000)
    p.add_argument("--bootstrap", type=int, default=100)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    first = checkpoint_config(read_checkpoint(_parse(args.runs[0])[1]))
    train_rows, held_rows = sources.split_store(args.store, first.train.holdout_fraction, first.train.seed)
    real = (sources.read_store_stamps(args.real_store, np.arange(_len(args.real_store)), args.n, rng, "all")
            if args.real_store else sources.read_store_stamps(args.store, held_rows, args.n, rng, "held-out"))
    training = sources.read_store_stamps(args.store, train_rows, args.n_training, rng, "training")
    t0 = time.time()
    real_table = morphology.morphology_table(morphology.as_2d_stack(real.images), "statmorph real", args.processes)
    print(f"# real set: {real.source}, {len(real.images)} stamps, statmorph {time.time() - t0:.0f} s", flush=True)
    results = {}
    for spec in args.runs:
        label, path, comp, sampling = _parse(spec)
        model = load_model(path).eval()
        t0 = time.time()
        options = FidelityOptions(n_generated=args.n, seed=1, component=comp, sampling=sampling)
        gen = sample_generated(model, options, real, args.real_store or args.store, training,
                               np.random.default_rng(1))
        res = score(gen.images, real.images, training.images, n_boot=args.bootstrap, processes=args.processes,
                    seed=0, real_table=real_table)
        results[label] = {**res.summary(), "seconds": time.time() - t0}
        print(f"# {label}: {time.time() - t0:.0f} s", flush=True)
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1, default=float)
    floor = next(iter(results.values()))
    print("| model | " + " | ".join(SHOW) + " | KS met | AUC | memorisation p |")
    print("|---|" + "---|" * (len(SHOW) + 3))
    rows = {r["statistic"]: r for r in floor["statistics"]}
    print("| real vs real (floor) | " + " | ".join(f"{rows[s]['floor_ks']:.2f}" for s in SHOW)
          + f" | — | {floor['classifier_floor']['auc']:.2f} | — |")
    for label, summary in results.items():
        rows = {r["statistic"]: r for r in summary["statistics"]}
        cells = [f"{rows[s]['ks']:.2f}" + ("" if rows[s]["ks_target_met"] else "✗") for s in SHOW]
        t = summary["targets"]
        print(f"| {label} | " + " | ".join(cells) + f" | {t['ks_met']}/{t['ks_scored']} | "
              f"{summary['classifier']['auc']:.2f} | {summary['memorisation']['p_value']:.2g} |")


def _parse(spec: str) -> tuple[str, str, int | None, SamplingOptions]:
    """label=checkpoint[:component][,expost][,t=T] -> (label, checkpoint, component, sampling)."""
    label, rest = spec.split("=", 1)
    parts = rest.split(",")
    path, _, comp = parts[0].partition(":")
    mode, temperature = "prior", 1.0
    for part in parts[1:]:
        if part == "expost":
            mode = "expost"
        elif part.startswith("t="):
            temperature = float(part[2:])
        else:
            raise SystemExit(f"{spec!r}: unknown option {part!r}")
    return label, path, int(comp) if comp else None, SamplingOptions(mode, temperature)


def _len(store: str) -> int:
    with sources.open_store(store) as s:
        return len(s)


if __name__ == "__main__":
    main()
