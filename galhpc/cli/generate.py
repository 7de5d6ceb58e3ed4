"""galhpc-generate: synthetic galaxy catalogue from a checkpoint (run under mpirun for many ranks).

mpirun -n 64 galhpc-generate --checkpoint run/ckpt.pt --n 100000000 --out synth.h5
galhpc-generate --rerun synth.h5
"""

from __future__ import annotations

import argparse
import sys

from galhpc.cli.common import Command, add_stage_arguments, check_stage

DESCRIPTION = (
    "Generate N synthetic galaxy images from a checkpoint into a sharded, resumable HDF5 catalogue (master file of "
    "virtual datasets + OUT.shards/). Run under mpirun for many ranks; the catalogue is identical on any rank count."
)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    from galhpc.inference.options import GenerateOptions, OutputOptions

    add_stage_arguments(p, lambda p: p.add_argument("--n", type=int, help="number of objects to generate"))
    GenerateOptions.add_arguments(p)
    OutputOptions.add_arguments(p)


def _body(args: argparse.Namespace) -> None:
    from galhpc.inference import generate
    from galhpc.inference.options import GenerateOptions, OutputOptions, recorded_run
    from galhpc.runtime.outputs import HDF5_SUFFIXES, check_output
    from galhpc.runtime.world import detect_world

    if args.rerun is not None:
        meta, options, output = recorded_run(args.rerun, "generate", GenerateOptions, "generate_options")
        checkpoint, out = meta["checkpoint"], args.rerun
    else:
        options, output = GenerateOptions.from_args(args), OutputOptions.from_args(args)
        checkpoint, out = args.checkpoint, args.out
    # the lock only on rank 0: a late rank would find rank 0's own lock of this run
    check_output(out, "galhpc-generate --out", suffixes=HDF5_SUFFIXES, create=True, lock=detect_world().rank == 0)
    generate.generate_from_checkpoint(checkpoint=checkpoint, out=out, generate=options, output=output)


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    check_stage(parser, args, "--checkpoint", "--n", "--out")


COMMAND = Command("galhpc-generate", DESCRIPTION, _add_arguments, _body, _check)
build_parser, main = COMMAND.build_parser, COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
