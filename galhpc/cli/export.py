"""`galhpc-export`: a catalogue's scalar and vector columns to a FITS binary table or Parquet.

    galhpc-export clusters.h5 --fits clusters.fits
    galhpc-export synth.h5 --parquet synth.parquet/ --columns object_id,component,z
"""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("galhpc.cli.export")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="galhpc-export",
        description="Write the scalar and vector columns of a galhpc catalogue (galhpc-encode/galhpc-generate "
        "output) to a FITS binary table (TOPCAT, astropy) and/or to Parquet, one file per shard (pyarrow, "
        "pandas, Dask), streaming one shard at a time. Every shard is verified first.",
    )
    p.add_argument("catalog", help="the catalogue's master file, e.g. clusters.h5")
    p.add_argument("--fits", metavar="FILE", help="FITS file to write (one BINTABLE extension, CATALOG)")
    p.add_argument("--parquet", metavar="DIR", help="directory to write, part-NNNNNN.parquet per shard")
    p.add_argument("--columns", help="comma-separated columns (default: every scalar and vector column)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    from galhpc.io.catalog import CatalogError, open_catalog  # after parsing: --help needs neither h5py nor astropy
    from galhpc.io.export import FITS_SUFFIXES, export_fits, export_parquet
    from galhpc.runtime.cli import describe_error
    from galhpc.runtime.outputs import check_output

    errors = (CatalogError, FileExistsError, KeyError, ValueError, ImportError, OSError)

    if not args.fits and not args.parquet:
        p.error("give --fits FILE, --parquet DIR, or both")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    columns = [c for c in args.columns.split(",") if c] if args.columns else None
    failed = False
    try:
        if args.fits:
            check_output(args.fits, "galhpc-export --fits", suffixes=FITS_SUFFIXES, lock=False)
        if args.parquet:
            check_output(args.parquet, "galhpc-export --parquet", folder=True, create=True, lock=False)
        with open_catalog(args.catalog, role="galhpc-export") as cat:
            # each format on its own: one that fails (a bad header value, a missing pyarrow) never costs the other
            for out, export in ((args.fits, export_fits), (args.parquet, export_parquet)):
                if out:
                    try:
                        export(cat, out, columns, overwrite=args.overwrite)
                    except errors as err:
                        print(f"galhpc-export: error: {out}: {describe_error(err)}", file=sys.stderr)
                        failed = True
    except errors as err:
        print(f"galhpc-export: error: {describe_error(err)}", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
