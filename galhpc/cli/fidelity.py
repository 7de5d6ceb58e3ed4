"""galhpc-fidelity: score whether a generator's galaxies pass for real.

Generated stamps against held-out real ones, beside the real-vs-real floor (docs/models.md, "Fidelity").

    galhpc-fidelity --checkpoint run/ckpt.pt --out fidelity/
    galhpc-fidelity --synth synth.h5 --store data/store.h5 --real-store data/heldout.h5 --out fidelity/
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from galhpc.cli.common import Command

log = logging.getLogger("galhpc.cli.fidelity")


DESCRIPTION = (
    "Score generated galaxy stamps against held-out real ones measured the same way (noise added "
    "up to the real sky sigma): per statistic (statmorph C, A, S, Gini, M20, ellipticity, r_half, Sersic n, "
    "flux, mean surface brightness inside r_half, power-spectrum bands) the KS and Wasserstein distances with "
    "bootstrap errors beside the same numbers for two halves of the real set; a classifier two-sample test "
    "(gradient boosting, 5-fold AUC); a memorisation check (nearest training stamp). Writes fidelity.fits, "
    "fidelity.csv, fidelity.json, stamps.fits, histograms.png and nearest.png."
)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="sample the generated stamps from this model")
    src.add_argument("--synth", type=Path, help="take the generated stamps from this galhpc-generate catalogue")
    p.add_argument("--store", type=Path, help="the training store (default: the checkpoint's); its held-out rows "
                   "are the real set unless --real-store, its training rows are searched for memorisation")
    p.add_argument("--real-store", type=Path, help="take every row of this store as the real set")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--n", type=int, default=500, help="generated stamps (default 500)")
    p.add_argument("--n-real", type=int, default=500, help="real stamps (default 500)")
    p.add_argument("--n-training", type=int, default=2000, help="training stamps for memorisation (default 2000)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples per distance (default 200)")
    p.add_argument("--component", type=int, help="draw only this mixture component / class")
    p.add_argument("--sampling", choices=("prior", "expost"), default="prior",
                   help="prior: the model's own sample() (a conditioned PixelCNN prior at the real stamps' condition "
                   "values); expost: a Gaussian mixture fitted to the training stamps' latent means (AstroVaDEr: its "
                   "own components weighted by their responsibilities gamma) (default prior)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature: a PixelCNN prior's softmax temperature, or the scale of the ex-post "
                   "mixture's sigma (default 1)")
    p.add_argument("--mixture-components", type=int, default=10,
                   help="components of the ex-post mixture of models without their own (default 10)")
    p.add_argument("--processes", type=int, default=None,
                   help="statmorph worker processes (default: the CPUs available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-figures", action="store_true", help="write the tables only")


def _body(args: argparse.Namespace) -> None:
    from galhpc.fidelity.morphology import default_processes
    from galhpc.fidelity.run import FidelityOptions, run_fidelity
    from galhpc.fidelity.sampling import SamplingOptions
    from galhpc.runtime.process import setup_logging

    setup_logging()
    options = FidelityOptions(n_generated=args.n, n_real=args.n_real, n_training=args.n_training,
                              n_boot=args.bootstrap, processes=args.processes or default_processes(),
                              seed=args.seed,
                              component=args.component, figures=not args.no_figures,
                              sampling=SamplingOptions(args.sampling, args.temperature, args.mixture_components))
    result, paths = run_fidelity(args.out, options, checkpoint=args.checkpoint, synth=args.synth,
                                 store=args.store, real_store=args.real_store)
    for row in result.rows:
        log.info("%-18s KS %.3f ± %.3f (floor %.3f)  W %.4g ± %.2g (floor %.4g)", row["statistic"], row["ks"],
                 row["ks_err"], row["floor_ks"], row["wasserstein"], row["wasserstein_err"],
                 row["floor_wasserstein"])
    log.info("classifier AUC %.3f ± %.3f (real halves %.3f)", result.classifier["auc"],
             result.classifier["auc_err"], result.classifier_floor["auc"])
    targets = result.summary()["targets"]
    log.log(logging.INFO if targets["passes"] else logging.WARNING,
            "%s: KS within target on %d of %d statistics, AUC target %s",
            "passes" if targets["passes"] else "does NOT pass for real", targets["ks_met"], targets["ks_scored"],
            "met" if targets["auc_met"] else "missed")
    if result.memorisation is not None:
        log.info("memorisation: %.2f of generated stamps nearer to training than to held-out stamps "
                 "(copying p %.3g); nearest-training distance KS p %.3g, median generated/real %.3f",
                 result.memorisation["copy_fraction"], result.memorisation["p_value"],
                 result.memorisation["ks_p"], result.memorisation["median_ratio"])
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))


COMMAND = Command("galhpc-fidelity", DESCRIPTION, _add_arguments, _body)
build_parser, main = COMMAND.build_parser, COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
