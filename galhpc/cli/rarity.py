"""galhpc-rarity: per-object rarity scores of an encoded catalogue (run under mpirun for many ranks).

galhpc-rarity --catalog clusters.h5 --out rarity.h5 --k 10
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from galhpc.cli.common import Command, add_catalog_input, add_table_output
from galhpc.inference.options import add_threads_option

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("galhpc.cli.rarity")


DESCRIPTION = (
    "Rank the unusual objects of an encoded catalogue: nll_prior (-log p(mu) under the model's mixture prior, the "
    "catalogue's post-hoc GMM, or N(0, I)), knn_distance (to the k-th nearest neighbour in mu among a reference "
    "sample) and recon_chi2 (recon_mse / noise sigma^2 per pixel). Higher is rarer. Writes a table (.h5/.hdf5, "
    ".fits or .csv)."
)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_catalog_input(p)
    add_table_output(p, "score table")
    p.add_argument("--k", type=int, default=10, help="neighbour whose distance is knn_distance (default 10)")
    p.add_argument("--reference", type=int, default=200_000,
                   help="reference rows for knn_distance: all up to this many, else an evenly strided sample")
    p.add_argument("--checkpoint", type=Path, help="the catalogue's checkpoint (default: the one in its /meta)")
    p.add_argument("--store", type=Path, help="the catalogue's store, for the noise sigma (default: from /meta)")
    add_threads_option(p)


def _body(args: argparse.Namespace) -> None:
    from galhpc.checkpoint import load_model
    from galhpc.formats.table import TABLE_SUFFIXES
    from galhpc.report.heldout import noise_sigma
    from galhpc.runtime import start_mpi_rank
    from galhpc.runtime.outputs import check_output
    from galhpc.search.rarity import rarity_scores
    from galhpc.search.run import store_stamps
    from galhpc.search.source import CatalogColumns

    check_output(args.out, "galhpc-rarity --out", suffixes=TABLE_SUFFIXES)
    world = start_mpi_rank(args.threads)
    catalog = CatalogColumns(args.catalog)
    ckpt = catalog.checkpoint_path(args.checkpoint)  # refuses another model's checkpoint
    model = load_model(ckpt) if ckpt is not None else None
    if model is None:
        log.warning("no checkpoint found (%s): nll_prior uses the catalogue's GMM or N(0, I)",
                    args.checkpoint or catalog.meta.get("checkpoint"))
    store = catalog.input_path("input", args.store)
    noise = None
    if store is not None:
        def noise(rows: np.ndarray) -> np.ndarray:
            return noise_sigma(store, rows, store_stamps(store, rows))[0]
    else:
        log.warning("no store found (%s): recon_chi2 is NaN", args.store or catalog.meta.get("input"))
    catalog.close()  # rarity_scores reads it again, on every rank
    rarity_scores(args.catalog, args.out, k=args.k, reference=args.reference, model=model, noise=noise,
                  world=world)


COMMAND = Command("galhpc-rarity", DESCRIPTION, _add_arguments, _body)
build_parser, main = COMMAND.build_parser, COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
