"""galhpc-train: train the model a run config names on its HDF5 training store.

    galhpc-train --config configs/astrovader_cpu.yaml --out runs/av
    mpirun -n 4 galhpc-train --config cfg.yaml --backend horovod

Exit status: 0 done; 75 stopped by SIGTERM/SIGUSR1 after saving a checkpoint (run the
same command again to resume); 1 bad config, checkpoint or data, or a non-finite loss.
"""

from __future__ import annotations

import argparse
import sys

from galhpc.cli.common import Command
from galhpc.runtime import setup_logging
from galhpc.runtime.cli import add_deprecated_alias

DESCRIPTION = (
    "Train a galhpc model (ConvVAE, AstroVaDEr, ...) from a YAML run config. Writes "
    "OUT/ckpt.pt and OUT/losses.csv; resumes from OUT/ckpt.pt "
    "if it exists. SIGTERM or SIGUSR1 saves a checkpoint and exits with status 75."
)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML run config (sections model, schedule, train)")
    p.add_argument("--out", dest="out_dir", help="output directory (overrides train.out_dir)")
    add_deprecated_alias(p, "--out-dir", "--out", dest="out_dir")
    p.add_argument("--store", help="HDF5 training store (overrides train.store)")
    p.add_argument("--epochs", type=int, help="number of epochs (overrides train.epochs)")
    p.add_argument("--backend", choices=["auto", "single", "torch", "horovod"],
                   help="data-parallel backend (overrides train.backend)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (overrides train.device)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="override a config value (repeatable), e.g. --set train.steps=20 --set model.latent_dim=8")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/ckpt.pt exists")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def _body(args: argparse.Namespace) -> None:
    from pathlib import Path

    from galhpc.config import load_config
    from galhpc.runtime.outputs import check_output
    from galhpc.runtime.world import detect_world
    from galhpc.train.trainer import train_from_config

    out_dir = Path(args.out_dir or load_config(args.config, args.settings).train.out_dir)
    check_output(out_dir, "galhpc-train --out", folder=True, create=True, lock=False)

    setup_logging(detect_world().rank, args.log_level)  # before the backend, so its set-up is logged
    overrides = {"out_dir": args.out_dir, "store": args.store, "epochs": args.epochs,
                 "backend": args.backend, "device": args.device}
    train_from_config(args.config, overrides, resume=not args.no_resume, settings=args.settings)


COMMAND = Command("galhpc-train", DESCRIPTION, _add_arguments, _body)
build_parser, main = COMMAND.build_parser, COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
