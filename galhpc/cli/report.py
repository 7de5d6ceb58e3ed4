"""`galhpc-report`: a checkpoint plus catalogue outputs -> a folder of PNG figures, metrics.json, index.html."""

from __future__ import annotations

import argparse
import logging
import sys

from galhpc.cli.common import Command
from galhpc.runtime import set_threads, setup_logging

log = logging.getLogger("galhpc.report")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    from galhpc.report.options import ReportOptions

    defaults = ReportOptions()
    p.add_argument("--checkpoint", required=True, help="run/ckpt.pt written by galhpc-train (losses.csv beside it)")
    p.add_argument("--clusters", required=True, help="clusters.h5 written by galhpc-encode")
    p.add_argument("--store", help="training store (HDF5) for input images and labels, or FITS cutouts prepared "
                   "with the prep of the checkpoint's training store")
    p.add_argument("--holdout-store",
                   help="a separate held-out store (HDF5) the model never trained on: every object counts as "
                        "held out (reconstructions, Regier's test, statmorph, truth recovery)")
    p.add_argument("--synth", help="synth.h5 written by galhpc-generate (else the model samples)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-objects", type=int, default=defaults.max_objects,
                   help="catalogue rows sampled for cluster and latent metrics (default %(default)s)")
    p.add_argument("--n-holdout", type=int, default=defaults.n_holdout,
                   help="store images reconstructed for figures and Regier's test (default %(default)s)")
    p.add_argument("--n-morph", type=int, default=defaults.n_morph,
                   help="real and generated images each measured with statmorph (default %(default)s)")
    p.add_argument("--n-tsne", type=int, default=defaults.n_tsne, help="points in the t-SNE (default %(default)s)")
    p.add_argument("--no-match-noise", dest="match_noise", action="store_false",
                   help="measure generated stamps as they are, without adding noise up to the real sky σ")
    p.add_argument("--search-ids", type=int, nargs="+", default=(),
                   help="object ids of the search mosaic's queries (default: one per cluster component)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--threads", type=int, help="CPU threads of torch and of numpy/scikit-learn's BLAS")


def _set_up(_: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    setup_logging()
    set_threads(args.threads)
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)  # BLAS/OpenMP of numpy, scipy and scikit-learn (PCA, GMM, probes) too


def _body(args: argparse.Namespace) -> int:
    from galhpc.report.build import build_report
    from galhpc.report.options import ReportOptions
    from galhpc.runtime.outputs import check_output

    check_output(args.out, "galhpc-report --out", folder=True, create=True, lock=False)

    options = ReportOptions(max_objects=args.max_objects, seed=args.seed, n_holdout=args.n_holdout,
                            n_morph=args.n_morph, n_tsne=args.n_tsne, match_noise=args.match_noise,
                            search_ids=tuple(args.search_ids))
    report = build_report(args.checkpoint, args.clusters, args.out, store=args.store, synth=args.synth,
                          options=options, holdout_store=args.holdout_store)
    if report["failed_sections"]:
        log.error("sections failed: %s (see metrics.json)", ", ".join(report["failed_sections"]))
        return 1
    return 0


COMMAND = Command("galhpc-report", __doc__, _add_arguments, _body, _set_up)
build_parser, main = COMMAND.build_parser, COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
