"""galhpc-encode: embed and cluster every object of a store (run under mpirun for many ranks).

mpirun -n 64 galhpc-encode --checkpoint run/ckpt.pt --store store.h5 --out clusters.h5
galhpc-encode --rerun clusters.h5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from galhpc.cli.common import (
    Command,
    add_stage_arguments,
    check_stage,
)
from galhpc.runtime.cli import add_deprecated_alias

DESCRIPTION = (
    "Encode every object of a training store with a checkpoint: mu, logvar, gamma over the mixture components, "
    "component = argmax gamma (the most probable component), reconstruction MSE, object_id, into a sharded, "
    "resumable HDF5 catalogue (master file of virtual datasets + OUT.shards/). Models without a mixture prior get "
    "a post-hoc GMM (stick-breaking BGM for K) fitted once on rank 0. Run under mpirun for many ranks."
)


def _add_store(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=Path,
                   help="(required) training store (HDF5 with /images, /object_id), or FITS cutouts (file, directory "
                   "or quoted glob), first prepared into a temporary store with the prep recipe of the checkpoint's "
                   "training store")
    add_deprecated_alias(p, "--input", "--store", dest="store", type=Path)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    from galhpc.inference.options import EncodeOptions, OutputOptions

    add_stage_arguments(p, _add_store)
    EncodeOptions.add_arguments(p)
    OutputOptions.add_arguments(p)


def _body(args: argparse.Namespace) -> None:
    from galhpc.inference.encode import encode_from_checkpoint
    from galhpc.inference.options import EncodeOptions, OutputOptions, recorded_run
    from galhpc.runtime.outputs import HDF5_SUFFIXES, check_output
    from galhpc.runtime.world import detect_world

    if args.rerun is not None:
        meta, encode, output = recorded_run(args.rerun, "encode", EncodeOptions, "encode_options")
        checkpoint, store, out = meta["checkpoint"], meta["input"], args.rerun
    else:
        encode, output = EncodeOptions.from_args(args), OutputOptions.from_args(args)
        checkpoint, store, out = args.checkpoint, args.store, args.out
    # the lock only on rank 0: a late rank would find rank 0's own lock of this run
    check_output(out, "galhpc-encode --out", suffixes=HDF5_SUFFIXES, create=True, lock=detect_world().rank == 0)
    encode_from_checkpoint(checkpoint, store, out, encode, output)


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    check_stage(parser, args, "--checkpoint", "--store", "--out")  # --store: the deprecated --input may give it


COMMAND = Command("galhpc-encode", DESCRIPTION, _add_arguments, _body, _check)
build_parser, main = COMMAND.build_parser, COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
