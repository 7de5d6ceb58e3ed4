"""`galhpc-export`: a catalogue as a FITS or VOParquet table, a HATS catalogue, or FITS images.

galhpc-export clusters.h5 --fits clusters.fits
galhpc-export synth.h5 --parquet synth.parquet --columns object_id,component,z --split-vectors
galhpc-export synth.h5 --fits-cutouts cutouts/ --fits-cube synth_cube.fits
galhpc-export clusters.h5 --hats clusters_hats/ --rarity rarity.h5
"""

from __future__ import annotations

import argparse
import logging
import sys

from galhpc.cli.common import Command

log = logging.getLogger("galhpc.cli.export")


DESCRIPTION = (
    "Write the scalar and vector columns of a galhpc catalogue (galhpc-encode/galhpc-generate "
    "output) to a FITS binary table (TOPCAT, astropy) and/or to one VOParquet file with units (TOPCAT, "
    "astropy, pyarrow, pandas), streaming one shard at a time. Every shard is verified first."
)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("catalog", help="the catalogue's master file, e.g. clusters.h5")
    p.add_argument("--fits", metavar="FILE", help="FITS file to write (one BINTABLE extension, CATALOG)")
    p.add_argument("--parquet", metavar="FILE", help="Parquet file to write (one row group per shard, VOParquet "
                   "units and descriptions)")
    p.add_argument("--split-vectors", action="store_true",
                   help="Parquet: vector columns as scalar columns mu_0 ... mu_{L-1} (TOPCAT shows no array columns)")
    p.add_argument("--hats", metavar="DIR", help="HATS catalogue to write (HEALPix-partitioned Parquet that LSDB "
                   "reads; needs ra/dec; hats-import on a local Dask cluster; pip install 'galhpc[hats]')")
    p.add_argument("--dask-workers", type=int, default=1, help="--hats: workers of the local Dask cluster")
    p.add_argument("--pixel-threshold", type=int, default=None,
                   help="--hats: most rows of one HEALPix partition (bounds the export's memory; default: "
                   "partitions of about 64 MiB of the exported columns, 1000 to 1000000 rows)")
    p.add_argument("--vector-lists", action="store_true",
                   help="--hats: vector columns as fixed-size lists (pyarrow, pandas) instead of mu_0 ... mu_{L-1}")
    p.add_argument("--sky-region", type=float, nargs=4, metavar=("RA_MIN", "RA_MAX", "DEC_MIN", "DEC_MAX"),
                   help="--hats, for a catalogue without ra/dec (galhpc-generate's): positions drawn uniformly on "
                   "the sphere in this box (degrees), seeded by --sky-seed and each shard's index")
    p.add_argument("--sky-seed", type=int, default=0, help="--sky-region: seed of the draw (default 0)")
    p.add_argument("--rarity", metavar="TABLE", help="--hats: a galhpc-rarity table of this catalogue (.h5, .fits, "
                   ".csv); its scores are joined by row")
    p.add_argument("--fits-cutouts", metavar="DIR", help="directory of one FITS image per object (survey units; "
                   "BUNIT, PIXSCALE, CDELT1/2, MAGZP, MAG, FLUX, OBJ_ID in its header)")
    p.add_argument("--fits-cube", metavar="FILE", help="one FITS cube of every image (NAXIS3 = objects) and a "
                   "table OBJECTS of their ids, fluxes and magnitudes")
    p.add_argument("--columns", help="comma-separated columns (default: every scalar and vector column)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not (args.fits or args.parquet or args.hats or args.fits_cutouts or args.fits_cube):
        parser.error("give --fits FILE, --parquet FILE, --hats DIR, --fits-cutouts DIR and/or --fits-cube FILE")


def _body(args: argparse.Namespace) -> int:
    from galhpc.io.catalog import CatalogError, open_catalog  # after parsing: --help needs neither h5py nor astropy
    from galhpc.io.export import (
        FITS_SUFFIXES,
        export_fits,
        export_fits_cube,
        export_fits_cutouts,
        export_hats,
        export_parquet,
    )
    from galhpc.runtime.cli import describe_error
    from galhpc.runtime.outputs import check_output

    errors = (CatalogError, FileExistsError, KeyError, ValueError, ImportError, OSError)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    columns = [c for c in args.columns.split(",") if c] if args.columns else None
    failed = False
    try:
        if args.fits:
            check_output(args.fits, "galhpc-export --fits", suffixes=FITS_SUFFIXES, lock=False)
        if args.parquet:
            check_output(args.parquet, "galhpc-export --parquet", suffixes=(".parquet", ".parq", ".pq"), create=True,
                         lock=False)
        if args.hats:
            check_output(args.hats, "galhpc-export --hats", folder=True, create=True, lock=False)
        if args.fits_cube:
            check_output(args.fits_cube, "galhpc-export --fits-cube", suffixes=FITS_SUFFIXES, lock=False)
        formats = ((args.fits, lambda cat, out: export_fits(cat, out, columns, overwrite=args.overwrite)),
                   (args.parquet, lambda cat, out: export_parquet(cat, out, columns, overwrite=args.overwrite,
                                                                  split_vectors=args.split_vectors)),
                   (args.hats, lambda cat, out: export_hats(
                       cat, out, columns, overwrite=args.overwrite, n_workers=args.dask_workers,
                       pixel_threshold=args.pixel_threshold, split_vectors=not args.vector_lists,
                       extra=rarity_scores(args.rarity, cat) if args.rarity else None,
                       extra_source=str(args.rarity), sky_region=args.sky_region, sky_seed=args.sky_seed)),
                   (args.fits_cutouts, lambda cat, out: export_fits_cutouts(cat, out, overwrite=args.overwrite)),
                   (args.fits_cube, lambda cat, out: export_fits_cube(cat, out, overwrite=args.overwrite)))
        with open_catalog(args.catalog, role="galhpc-export") as cat:
            # each format on its own: one that fails (a bad header value, a missing pyarrow) never costs the other
            for out, export in formats:
                if out:
                    try:
                        export(cat, out)
                    except errors as err:
                        print(f"galhpc-export: error: {out}: {describe_error(err)}", file=sys.stderr)
                        failed = True
    except errors as err:
        print(f"galhpc-export: error: {describe_error(err)}", file=sys.stderr)
        return 1
    return 1 if failed else 0



COMMAND = Command("galhpc-export", DESCRIPTION, _add_arguments, _body, _check)
build_parser, main = COMMAND.build_parser, COMMAND.main


def rarity_scores(path: str, cat) -> dict:
    """The score columns of `galhpc-rarity` table `path`, checked to be `cat`'s rows in order.

    Parameters
    ----------
    path : str
        A galhpc-rarity table (.h5, .fits, .csv).
    cat : Catalog
        The catalogue being exported.

    Returns
    -------
    dict of str to numpy.ndarray
        Score name -> (N,) column.

    Raises
    ------
    ValueError
        If the table's ``object_id`` column is not the catalogue's, row for row, or it has no score.
    """
    import numpy as np

    from galhpc.formats.table import RARITY_SCORES
    from galhpc.io.table import read_table

    table = read_table(path)
    ids = table.get("object_id")
    if ids is None or len(ids) != len(cat) or not np.array_equal(ids, cat.read("object_id")) or (
            "row" in table and not np.array_equal(table["row"], np.arange(len(cat)))):
        raise ValueError(f"{path} is not a rarity table of {cat.path}: its object_id column is not the "
                         "catalogue's, row for row (run galhpc-rarity --catalog on this catalogue)")
    scores = {name: table[name] for name in RARITY_SCORES if name in table}
    if not scores:
        raise ValueError(f"{path} has none of the rarity scores {', '.join(RARITY_SCORES)}")
    return scores


if __name__ == "__main__":
    sys.exit(main())
