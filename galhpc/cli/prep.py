"""galhpc-prep: FITS cutouts, GalSim sets or real stamps -> one HDF5 training store.

galhpc-prep --config configs/prep_galsim.yaml --out data/galsim.h5
"""

from __future__ import annotations

import argparse
import sys

from galhpc.cli.common import Command
from galhpc.runtime import setup_logging
from galhpc.runtime.cli import add_deprecated_alias


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config YAML; its `prep` section is used")
    parser.add_argument("--out", help="store path to write (default: prep.output of the config)")
    add_deprecated_alias(parser, "--output", "--out", dest="out")
    parser.add_argument("--on-error", choices=["skip", "raise"],
                        help="bad objects: record as rejects, or stop (default: prep.on_error)")
    parser.add_argument("--workers", type=int, help="processes for simulated sources (default: prep.workers)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                        help="override a config value (repeatable), e.g. --set prep.sources.0.n=300")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def _body(args: argparse.Namespace) -> None:
    from galhpc.config import load_config
    from galhpc.data.prep import run_prep
    from galhpc.runtime.outputs import HDF5_SUFFIXES, check_output

    cfg = load_config(args.config, args.settings)
    check_output(args.out or cfg.prep.output, "galhpc-prep --out", suffixes=HDF5_SUFFIXES, create=True)
    if args.workers is not None:
        cfg.prep.workers = args.workers
    print(run_prep(cfg.prep, output=args.out, on_error=args.on_error))


COMMAND = Command("galhpc-prep", "Prepare a training store (HDF5) from the `prep` section of a run config.",
                  _add_arguments, _body, lambda _, args: setup_logging(level=args.log_level))
build_parser, main = COMMAND.build_parser, COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
