"""Truth recovery of a checkpoint on a held-out store: the model against PCA and PCA+GMM.

    python benchmarks/science.py CHECKPOINT HELDOUT_STORE [--n 1000] [--seed 0] [--k 10] [--json out.json]

Every object of HELDOUT_STORE counts as held out (give a store the model never trained
on).  Prints probe R² and kNN accuracy of μ against PCA with the same number of
components, cluster NMI/ARI and nuisance η² against a GaussianMixture (same K) on those
PCA scores, and held-out MSE against out-of-fold PCA; see galhpc.report.truth and
docs/report.md ("Truth recovery").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from galhpc.report.heldout import evaluate_checkpoint
from galhpc.report.truth import format_table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("store", help="held-out store with labels/<name> truth columns")
    p.add_argument("--n", type=int, default=1000, help="objects drawn from the store (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, help="K for a model without a mixture prior (default 10)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default %(default)s)")
    p.add_argument("--json", type=Path, help="also write the full result here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = evaluate_checkpoint(args.checkpoint, args.store, n=args.n, seed=args.seed, n_clusters=args.k)
    print(f"{result['model_name']}: {result['checkpoint']} on {result['store']} (clusters: {result['cluster_source']})")
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))  # NaN where a score is undefined
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
