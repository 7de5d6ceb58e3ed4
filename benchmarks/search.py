"""Similarity-search benchmark: galhpc's exact blocked top-k against peers in the same run.

  nice python benchmarks/search.py                 # 10^7 latents of dimension 20, 100 queries, k = 10
  nice python benchmarks/search.py --n 1000000     # 10x smaller

The latents (a 64-component Gaussian mixture, float32) are generated in blocks into a raw
file under --tmp (N x D x 4 bytes) so no full copy need exist in memory; galhpc and the
blocked torch brute force stream it block by block with ordinary reads (as from shards).
faiss.IndexFlatL2 holds the whole array (its own copy).  The approximate faiss IndexIVFFlat
is built on the same array and its recall@k measured against the exact answer.  Each
method's time and peak RSS growth (/proc/self/clear_refs, Linux) are printed, and how
often its neighbours equal galhpc's (exact) ones.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from measure import timed  # benchmarks/measure.py
from options import option_parser  # benchmarks/options.py


def write_latents(path: Path, n: int, d: int, seed: int, block: int = 1 << 20) -> np.ndarray:
    """A 64-component Gaussian mixture in d dimensions, float32, written block by block; returns
    the component centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, d)).astype(np.float32) * 3
    with open(path, "wb") as fh:
        for lo in range(0, n, block):
            m = min(block, n - lo)
            comp = rng.integers(0, 64, m)
            (centres[comp] + rng.standard_normal((m, d), dtype=np.float32)).tofile(fh)
    return centres


def read_blocks(path: Path, n: int, d: int, block: int) -> Iterator[tuple[int, np.ndarray]]:
    with open(path, "rb") as fh:
        for lo in range(0, n, block):
            m = min(block, n - lo)
            yield lo, np.fromfile(fh, dtype=np.float32, count=m * d).reshape(m, d)


def torch_brute_force(queries: np.ndarray, blocks: Iterator[tuple[int, np.ndarray]], k: int) -> np.ndarray:
    """Blocked torch.cdist + topk in float32, merged block by block (rows only)."""
    q = torch.from_numpy(queries)
    best_d = torch.full((len(q), k), float("inf"))
    best_i = torch.full((len(q), k), -1, dtype=torch.int64)
    for lo, block in blocks:
        d = torch.cdist(q, torch.from_numpy(block)).pow_(2)
        vals, idx = d.topk(min(k, d.shape[1]), dim=1, largest=False)
        cat_d, cat_i = torch.cat([best_d, vals], 1), torch.cat([best_i, idx + lo], 1)
        best_d, order = cat_d.topk(k, dim=1, largest=False)
        best_i = cat_i.gather(1, order)
    return best_i.numpy()


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact k neighbours found, per query."""
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=False)]))


def faiss_flat(faiss, data: np.ndarray, queries: np.ndarray, k: int) -> tuple[float, float, float, np.ndarray]:
    """Time faiss's exact IndexFlatL2 on `data`, its index freed on return.

    Parameters
    ----------
    faiss : module
        The imported faiss package.
    data : numpy.ndarray
        (N, D) float32 latents; the index holds its own copy.
    queries : numpy.ndarray
        (Q, D) float32 query vectors.
    k : int
        Neighbours per query.

    Returns
    -------
    add_seconds : float
        Time to add `data` to the index.
    search_seconds : float
        Time of the search.
    peak_mb : float
        Peak RSS growth of the add plus that of the search, in MB.
    rows : numpy.ndarray
        (Q, k) int64 rows of the neighbours.
    """
    index = faiss.IndexFlatL2(data.shape[1])
    sec_add, mem_add, _ = timed(lambda: index.add(data))
    sec, mem, (_, rows) = timed(lambda: index.search(queries, k))
    return sec_add, sec, mem + mem_add, rows


def main() -> None:
    args = option_parser(__doc__, n=10_000_000, dim=20, queries=100, k=10, block_rows=65536, threads=2,
                         nlist=(4096, "IVF lists (approximate index)"), nprobe=[8, 32, 128],
                         tmp=Path(tempfile.gettempdir())).parse_args()

    import faiss

    from galhpc.search.topk import search_blocks

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    n, d, k = args.n, args.dim, args.k
    path = args.tmp / f"galhpc-search-bench-{os.getpid()}.f32"
    try:
        t0 = time.perf_counter()
        centres = write_latents(path, n, d, seed=0)
        print(f"N = {n:,} latents of dimension {d} (float32, {n * d * 4 / 1e6:.0f} MB) written in "
              f"{time.perf_counter() - t0:.1f} s; {args.queries} queries, k = {k}, {args.threads} threads")
        rng = np.random.default_rng(1)
        queries = (centres[rng.integers(0, 64, args.queries)]
                   + rng.standard_normal((args.queries, d), dtype=np.float32))

        results = {}
        sec, mem, ours = timed(lambda: search_blocks(queries, read_blocks(path, n, d, args.block_rows), k))
        results["galhpc search_blocks (exact, float64 re-scored)"] = (sec, mem, ours.rows)
        sec, mem, rows = timed(lambda: torch_brute_force(queries, read_blocks(path, n, d, 1 << 20), k))
        results["torch cdist+topk, blocked (float32)"] = (sec, mem, rows)

        data = np.fromfile(path, dtype=np.float32).reshape(n, d)
        sec_add, sec, mem, rows = faiss_flat(faiss, data, queries, k)
        results["faiss IndexFlatL2 (float32)"] = (sec, mem, rows)
        print(f"  faiss IndexFlatL2 add: {sec_add:.1f} s")

        quantizer = faiss.IndexFlatL2(d)
        ivf = faiss.IndexIVFFlat(quantizer, d, args.nlist)
        train = data[np.random.default_rng(2).choice(n, min(n, 40 * args.nlist), replace=False)]
        sec_build, mem_build, _ = timed(lambda: (ivf.train(train), ivf.add(data)))
        print(f"  faiss IndexIVFFlat nlist={args.nlist}: train + add {sec_build:.1f} s, +{mem_build:.0f} MB")
        for nprobe in args.nprobe:
            ivf.nprobe = nprobe
            sec, mem, (_, rows) = timed(lambda: ivf.search(queries, k))
            results[f"faiss IndexIVFFlat nprobe={nprobe} (approximate)"] = (sec, mem, rows)

        exact = ours.rows
        base = results["galhpc search_blocks (exact, float64 re-scored)"][0]
        print(f"{'method':52s} {'time s':>8s} {'x galhpc':>9s} {'peak MB':>8s} {'recall@k':>9s}")
        for name, (sec, mem, rows) in results.items():
            print(f"{name:52s} {sec:8.2f} {sec / base:9.2f} {mem:8.0f} {recall(rows, exact):9.4f}")
    finally:
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
