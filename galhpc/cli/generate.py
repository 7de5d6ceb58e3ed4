"""galhpc-generate: synthetic galaxy catalogue from a checkpoint (run under mpirun for many ranks).

mpirun -n 64 galhpc-generate --checkpoint run/ckpt.pt --n 100000000 --out synth.h5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from galhpc.cli.catalog_options import add_output_options
from galhpc.runtime.cli import run_cli


def parse_condition(item: str) -> tuple[str, object]:
    """'key=value' -> (key, YAML-parsed value), one keyword of model.sample(**conditions)."""
    key, eq, value = item.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"--condition {item!r}: expected key=value")
    from galhpc.config import load_yaml

    return key, load_yaml(value)


def parse_counts(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--counts {text!r}: expected comma-separated integers") from None


def parse_columns(text: str) -> tuple[str, str]:
    """'MAG,SIZE' -> the target table's two column names."""
    names = tuple(c.strip() for c in text.split(","))
    if len(names) != 2 or not all(names):
        raise argparse.ArgumentTypeError(f"--target-columns {text!r}: expected MAG,SIZE")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="galhpc-generate",
        description="Generate N synthetic galaxy images from a checkpoint into a sharded, resumable HDF5 "
        "catalogue (master file of virtual datasets + OUT.shards/). Run under mpirun for many ranks; "
        "the catalogue is identical on any rank count.",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="model checkpoint (ckpt.pt)")
    p.add_argument("--n", required=True, type=int, help="number of objects to generate")
    p.add_argument("--out", required=True, type=Path, help="master HDF5 file to write (shards go to OUT.shards/)")
    p.add_argument("--seed", type=int, default=0, help="run seed: samples come in blocks on the --batch-size grid seeded by (seed, block start), "
                   "survey noise per object by (seed, i); the same on any rank count")
    p.add_argument("--batch-size", type=int, default=256, help="objects per model.sample call (default 256)")
    p.add_argument("--shard-size", type=int,
                   help="objects per shard file, rounded up to whole batches (default: sized by work, see "
                   "--shard-minutes)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--component", type=int, help="sample only this mixture component")
    which.add_argument("--counts", type=parse_counts, help="objects per mixture component, e.g. 500,0,1500")
    p.add_argument("--condition", action="append", default=[], metavar="KEY=VALUE", type=parse_condition,
                   help="keyword passed to model.sample (repeatable), e.g. --condition label=3")
    p.add_argument("--psf", help="survey PSF: a FITS image, or a GalSim profile like moffat:fwhm=0.7,beta=3.5")
    p.add_argument("--pixel-scale", type=float,
                   help="arcsec per pixel for GalSim PSF profiles and COSMOS noise (default: the pixel scale the "
                   "model was trained at, recorded in the checkpoint (older checkpoints: read from the training store "
                   "they name), else 0.03 = COSMOS; "
                   "the value used and its origin are logged and stored in /meta)")
    p.add_argument("--noise-sigma", type=float, help="add white Gaussian noise of this σ (or scale COSMOS noise)")
    p.add_argument("--cosmos-noise", action="store_true", help="add correlated HST COSMOS noise (GalSim)")
    p.add_argument("--keep-clean", action="store_true", help="also store the clean images (images_clean)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float32", help="image storage type")
    p.add_argument("--zero-point", type=float,
                   help="AB magnitude of one survey flux unit (e.g. 31.4 for nJy); default: the training store's "
                   "zero_point attribute; without one the mag_ab column is NaN")
    p.add_argument("--bunit", help="the survey's pixel unit (FITS BUNIT; default: the training store's bunit attribute)")
    p.add_argument("--target-table", type=Path,
                   help="draw the catalogue to this table's (AB magnitude, half-light radius) distribution by "
                   "rejection sampling (any astropy format: CSV, ECSV, FITS, Parquet; needs a zero point); the "
                   "pilot's acceptance is logged and stored in /meta, each object's candidates in rejection_draws")
    p.add_argument("--target-columns", type=parse_columns, default=("mag_ab", "half_light_radius"), metavar="MAG,SIZE",
                   help="the target table's magnitude and half-light radius (pixels) columns "
                   "(default mag_ab,half_light_radius)")
    p.add_argument("--target-bins", type=int, default=8, help="grid cells per axis of the target (default 8)")
    p.add_argument("--target-pilot", type=int, default=2000,
                   help="pilot draws that measure the generator's own (mag, size) density (default 2000)")
    add_output_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        from galhpc.inference.generate import generate_from_checkpoint
        from galhpc.runtime.outputs import HDF5_SUFFIXES, check_output
        from galhpc.runtime.world import detect_world

        # the lock only on rank 0: a late rank would find rank 0's own lock of this run
        check_output(args.out, "galhpc-generate --out", suffixes=HDF5_SUFFIXES, create=True,
                     lock=detect_world().rank == 0)
        generate_from_checkpoint(
            checkpoint=args.checkpoint, out=args.out, n=args.n, seed=args.seed, batch_size=args.batch_size,
            shard_size=args.shard_size, component=args.component, counts=args.counts,
            conditions=dict(args.condition), psf=args.psf, pixel_scale=args.pixel_scale,
            noise_sigma=args.noise_sigma, cosmos_noise=args.cosmos_noise, keep_clean=args.keep_clean,
            dtype=args.dtype, compression=args.compression, table=not args.no_table, overwrite=args.overwrite,
            device=args.device, threads=args.threads, precision=args.precision,
            shard_minutes=args.shard_minutes, objects_per_second=args.objects_per_second,
            zero_point=args.zero_point, bunit=args.bunit, target_table=args.target_table,
            target_columns=args.target_columns, target_bins=args.target_bins, target_pilot=args.target_pilot,
        )

    return run_cli("galhpc-generate", body)


if __name__ == "__main__":
    sys.exit(main())
