"""galhpc-prep: FITS cutouts, GalSim sets or real stamps -> one HDF5 training store."""

from __future__ import annotations

import argparse
import logging
import sys

from galhpc.config import ConfigError, load_config
from galhpc.data.sources import DataError
from galhpc.runtime import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galhpc-prep",
        description="Prepare a training store (HDF5) from the `prep` section of a run config.",
    )
    parser.add_argument("--config", required=True, help="run config YAML; its `prep` section is used")
    parser.add_argument("--output", help="store path (default: prep.output of the config)")
    parser.add_argument("--on-error", choices=["skip", "raise"], help="bad objects: record as rejects, or stop (default: prep.on_error)")
    parser.add_argument("--workers", type=int, help="processes for simulated sources (default: prep.workers)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(level=args.log_level)
    log = logging.getLogger("galhpc.cli.prep")
    from galhpc.data.prep import run_prep

    try:
        cfg = load_config(args.config)
        if args.workers is not None:
            cfg.prep.workers = args.workers
        path = run_prep(cfg.prep, output=args.output, on_error=args.on_error)
    except (ConfigError, DataError) as err:
        log.error("%s", err)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
