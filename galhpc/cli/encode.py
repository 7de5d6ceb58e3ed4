"""galhpc-encode: embed and cluster every object of a store (run under mpirun for many ranks).

mpirun -n 64 galhpc-encode --checkpoint run/ckpt.pt --store store.h5 --out clusters.h5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from galhpc.cli.catalog_options import add_output_options
from galhpc.runtime.cli import add_deprecated_alias, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="galhpc-encode",
        description="Encode every object of a training store with a checkpoint: mu, logvar, gamma over the "
        "mixture components, component = argmax gamma (the most probable component), reconstruction MSE, "
        "object_id, into a sharded, resumable HDF5 catalogue (master file of virtual datasets + OUT.shards/). "
        "Models without a mixture prior get a post-hoc GMM (stick-breaking BGM for K) fitted once on rank 0. "
        "Run under mpirun for many ranks.",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="model checkpoint (ckpt.pt)")
    p.add_argument("--store", type=Path,
                   help="(required) training store (HDF5 with /images, /object_id), or FITS cutouts (file, directory or "
                   "quoted glob), first prepared into a temporary store with the prep recipe of the checkpoint's "
                   "training store")
    add_deprecated_alias(p, "--input", "--store", dest="store", type=Path)
    p.add_argument("--out", required=True, type=Path, help="master HDF5 file to write (shards go to OUT.shards/)")
    p.add_argument("--passthrough", type=lambda text: [c for c in text.split(",") if c],
                   help="comma-separated store label columns to carry into the catalogue, e.g. ra,dec,mag_r "
                   "(default: ra and dec when the store has them, then the columns its prep declared; '' for none)")
    p.add_argument("--batch-size", type=int, default=512, help="objects per forward pass (default 512)")
    p.add_argument("--shard-size", type=int,
                   help="objects per shard file, rounded up to whole batches (default: sized by work, see "
                   "--shard-minutes)")
    p.add_argument("--gmm-components", type=int, default=20,
                   help="post-hoc GMM: most components the stick-breaking BGM may use (default 20)")
    p.add_argument("--gmm-fit-objects", type=int, default=20000,
                   help="post-hoc GMM: fitted on this many evenly strided objects (default 20000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the post-hoc GMM fit")
    add_output_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.store is None:  # not required=True: the deprecated --input may give it
        parser.error("the following arguments are required: --store")

    def body() -> None:
        from galhpc.inference.encode import encode_from_checkpoint
        from galhpc.runtime.outputs import HDF5_SUFFIXES, check_output
        from galhpc.runtime.world import detect_world

        # the lock only on rank 0: a late rank would find rank 0's own lock of this run
        check_output(args.out, "galhpc-encode --out", suffixes=HDF5_SUFFIXES, create=True,
                     lock=detect_world().rank == 0)
        encode_from_checkpoint(
            args.checkpoint, args.store, args.out, passthrough=args.passthrough, batch_size=args.batch_size,
            shard_size=args.shard_size,
            gmm_components=args.gmm_components, gmm_fit_objects=args.gmm_fit_objects, seed=args.seed,
            compression=args.compression, table=not args.no_table, overwrite=args.overwrite,
            device=args.device, threads=args.threads, precision=args.precision,
            shard_minutes=args.shard_minutes, objects_per_second=args.objects_per_second,
        )

    return run_cli("galhpc-encode", body)


if __name__ == "__main__":
    sys.exit(main())
