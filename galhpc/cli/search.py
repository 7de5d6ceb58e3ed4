"""galhpc-search: the k most similar catalogue objects to each query (run under mpirun for many ranks).

galhpc-search --catalog clusters.h5 --id 1042 --id 77 --k 10 --out similar.csv --mosaic similar.png
galhpc-search --catalog clusters.h5 --ra 189.2284 --dec 62.2162 --tolerance 2 --out similar.fits
mpirun -n 64 galhpc-search --catalog clusters.h5 --image lens.fits --out similar.h5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from galhpc.cli.common import Command, add_catalog_input, add_table_output
from galhpc.inference.options import add_threads_option

DESCRIPTION = (
    "Exact top-k similarity search in an encoded catalogue (Euclidean distance between encoder means mu). Queries "
    "are catalogue object ids, sky positions (the nearest catalogue object) or images (FITS cutouts or HDF5 stores) "
    "encoded with the catalogue's checkpoint. Each rank searches its shards block by block; the ranks merge a global "
    "top-k (ties by lower row), so the answer is the same on any number of ranks."
)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_catalog_input(p)
    p.add_argument("--id", dest="ids", type=int, action="append", default=[], help="query object id (repeatable)")
    p.add_argument("--ra", type=float, action="append", default=[],
                   help="query sky position: right ascension in degrees (repeatable, paired with --dec); the "
                   "catalogue object nearest to it is the query")
    p.add_argument("--dec", type=float, action="append", default=[],
                   help="query sky position: declination in degrees (repeatable, paired with --ra)")
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="largest distance in arcsec between a --ra/--dec position and its object (default 1)")
    p.add_argument("--image", dest="images", type=Path, action="append", default=[],
                   help="query images: HDF5 store or FITS file/directory/glob (repeatable)")
    p.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    add_table_output(p, "result table")
    p.add_argument("--mosaic", type=Path,
                   help="PNG of each query and its neighbours (stamps from the store, or the FITS cutouts it was "
                   "encoded from)")
    p.add_argument("--store", type=Path, help="store of the catalogue's stamps (default: the one in its /meta)")
    p.add_argument("--checkpoint", type=Path, help="checkpoint for image queries (default: the one in its /meta)")
    p.add_argument("--block-rows", type=int, default=65536, help="catalogue rows searched at a time (default 65536)")
    add_threads_option(p)


def _body(args: argparse.Namespace) -> None:
    from galhpc.formats.table import TABLE_SUFFIXES
    from galhpc.runtime import start_mpi_rank
    from galhpc.runtime.outputs import check_output
    from galhpc.search.run import search_catalog, write_outputs

    check_output(args.out, "galhpc-search --out", suffixes=TABLE_SUFFIXES)
    if args.mosaic is not None:
        check_output(args.mosaic, "galhpc-search --mosaic", suffixes=(".png",))

    world = start_mpi_rank(args.threads)
    result = search_catalog(args.catalog, k=args.k, ids=args.ids, images=args.images, ra=args.ra,
                            dec=args.dec, tolerance=args.tolerance, checkpoint=args.checkpoint,
                            block_rows=args.block_rows, world=world, work=args.out)
    if world.is_root:
        write_outputs(result, args.catalog, args.out, args.mosaic, args.store, checkpoint=args.checkpoint)


COMMAND = Command("galhpc-search", DESCRIPTION, _add_arguments, _body)
build_parser, main = COMMAND.build_parser, COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
