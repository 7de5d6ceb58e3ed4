"""galhpc-train: train the model a run config names on its HDF5 training store.

    galhpc-train --config configs/astrovader_cpu.yaml --out-dir runs/av
    mpirun -n 4 galhpc-train --config cfg.yaml --backend horovod

Exit status: 0 done; 75 stopped by SIGTERM/SIGUSR1 after saving a checkpoint (run the
same command again to resume); 1 bad config, checkpoint or data, or a non-finite loss.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from galhpc.checkpoint import CheckpointError
from galhpc.config import ConfigError, RunConfig, load_config
from galhpc.runtime import setup_logging

log = logging.getLogger("galhpc.cli.train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="galhpc-train",
        description="Train a galhpc model (ConvVAE, AstroVaDEr, ...) from a YAML run config. Writes "
        "OUT_DIR/ckpt.pt, OUT_DIR/losses.csv and OUT_DIR/losses.png; resumes from OUT_DIR/ckpt.pt "
        "if it exists. SIGTERM or SIGUSR1 saves a checkpoint and exits with status 75.",
    )
    p.add_argument("--config", required=True, help="YAML run config (sections model, schedule, train)")
    p.add_argument("--out-dir", help="output directory (overrides train.out_dir)")
    p.add_argument("--store", help="HDF5 training store (overrides train.store)")
    p.add_argument("--epochs", type=int, help="number of epochs (overrides train.epochs)")
    p.add_argument("--backend", choices=["auto", "single", "torch", "horovod"],
                   help="data-parallel backend (overrides train.backend)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (overrides train.device)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if OUT_DIR/ckpt.pt exists")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def apply_overrides(cfg: RunConfig, args: argparse.Namespace) -> RunConfig:
    """The config with the command-line overrides applied."""
    overrides = {
        "out_dir": args.out_dir, "store": args.store, "epochs": args.epochs,
        "backend": args.backend, "device": args.device,
    }
    train = dataclasses.replace(cfg.train, **{k: v for k, v in overrides.items() if v is not None})
    return dataclasses.replace(cfg, train=train)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from galhpc.train.distributed import detect_world, make_backend
    from galhpc.train.trainer import NonFiniteLossError, train

    setup_logging(detect_world().rank, args.log_level)  # before the backend, so its set-up is logged
    try:
        cfg = apply_overrides(load_config(args.config), args)
        backend = make_backend(cfg.train.backend, cfg.train.device)
    except (ConfigError, ValueError, RuntimeError) as err:
        log.error("%s", err)
        return 1
    try:
        result = train(cfg, backend=backend, resume=not args.no_resume)
    except (ConfigError, CheckpointError, NonFiniteLossError, FileNotFoundError, ValueError, KeyError) as err:
        log.error("training failed: %s", err)
        return 1
    finally:
        backend.shutdown()
    log.info("done: %d epochs, %d steps; checkpoint %s", result.epochs, result.steps, result.checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
