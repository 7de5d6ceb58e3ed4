"""Catalogues of many shards: write throughput and RSS, reader time and memory, open-file limit.

    nice python benchmarks/scale.py                        # 10^6 objects in 256, 1,526 and 5,000 shards
    nice python benchmarks/scale.py --n 1000000 --shards 256 1526 5000 --ranks 2 --root /tmp/scale

Rows are tiny (object_id int64, mu float32[4], an 8x8 float16 image: ~176 bytes with the
table) so that shard-count effects, not bytes, dominate.  Every measurement runs in its
own process (peak RSS from getrusage):
- write: `--ranks` processes write their round-robin share of the shards with galhpc's
  `ShardWriter`, then `write_master` stitches them (objects/s of the slowest rank, RSS per rank);
- read a whole column (`object_id`) through the VDS master with h5py, and from the raw shard
  files, with the soft open-file limit raised to the hard limit and lowered to 1,024
  (`ulimit -n 1024`); rows that come back wrong (zeros) are counted against arange(N);
- the same through `galhpc.open_catalog` (bounded open files, reads shards directly).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from galhpc.formats.catalog import shard_dir_for, shard_path
from galhpc.io.catalog_writer import ShardWriter, write_master
from galhpc.io.shards import assign_shards, plan_shards

BATCH = 4096


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rows(lo: int, hi: int) -> dict[str, np.ndarray]:
    ids = np.arange(lo, hi, dtype=np.int64)
    rng = np.random.default_rng(lo)
    return {"object_id": ids, "mu": rng.standard_normal((hi - lo, 4), dtype=np.float32),
            "images": rng.standard_normal((hi - lo, 8, 8)).astype(np.float16)}


def write_worker(out: Path, n: int, n_shards: int, rank: int, ranks: int) -> dict:
    shards = plan_shards(n, -(-n // n_shards))
    mine = assign_shards(shards, rank, ranks)
    began = time.perf_counter()
    for shard in mine:
        writer = ShardWriter(shard_path(shard_dir_for(out), shard.index), shard)
        for lo in range(shard.start, shard.stop, BATCH):
            hi = min(shard.stop, lo + BATCH)
            writer.write(lo - shard.start, rows(lo, hi))
        writer.close()
    return {"seconds": time.perf_counter() - began, "objects": sum(s.size for s in mine), "rss_mb": peak_rss_mb()}


def read_master(out: Path) -> np.ndarray:
    with h5py.File(out, "r") as f:
        return f["object_id"][()]


def read_shards(out: Path) -> np.ndarray:
    parts = []
    for path in sorted(shard_dir_for(out).glob("0*.h5")):
        with h5py.File(path, "r") as f:
            parts.append(f["object_id"][()])
    return np.concatenate(parts)


def read_open_catalog(out: Path) -> np.ndarray:
    from galhpc.io.catalog import open_catalog

    with open_catalog(out) as cat:
        return cat.read("object_id")


READERS = {"master": read_master, "shards": read_shards, "open_catalog": read_open_catalog}


def read_worker(out: Path, n: int, how: str, nofile: int | None) -> dict:
    if nofile is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    began = time.perf_counter()
    values = READERS[how](out)
    seconds = time.perf_counter() - began
    wrong = int(np.count_nonzero(values != np.arange(n))) if len(values) == n else n
    return {"seconds": seconds, "rss_mb": peak_rss_mb(), "wrong": wrong,
            "zeros": int(np.count_nonzero(values == 0)) - 1}


def sub(args: list[str], timeout: float = 3600) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_config(root: Path, n: int, n_shards: int, ranks: int, readers: list[str]) -> None:
    out = root / f"n{n}_s{n_shards}.h5"
    if out.exists():
        out.unlink()
    shutil.rmtree(shard_dir_for(out), ignore_errors=True)
    shard_dir_for(out).mkdir(parents=True)
    began = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "write", "--out", str(out), "--n", str(n),
                               "--shards", str(n_shards), "--rank", str(r), "--ranks", str(ranks)],
                              stdout=subprocess.PIPE, text=True) for r in range(ranks)]
    results = [json.loads(p.communicate(timeout=3600)[0].strip().splitlines()[-1]) for p in procs]
    shards = plan_shards(n, -(-n // n_shards))
    master_began = time.perf_counter()
    write_master(out, shard_dir_for(out), shards, {"kind": "benchmark"})
    master_s = time.perf_counter() - master_began
    total = time.perf_counter() - began
    slowest = max(r["seconds"] for r in results)
    size = sum(p.stat().st_size for p in shard_dir_for(out).glob("0*.h5"))
    rss = ", ".join(f"{r['rss_mb']:.0f}" for r in results)
    print(f"write  N={n:>9,} shards={len(shards):>5} ranks={ranks}: {n / slowest:>9,.0f} obj/s (slowest rank "
          f"{slowest:.1f} s), RSS/rank {rss} MB, master "
          f"{master_s:.1f} s, {size / n:.0f} bytes/object, {size / 1e6:.0f} MB, wall {total:.1f} s", flush=True)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for how in readers:
        for nofile in (hard, 1024):
            r = sub(["--worker", "read", "--out", str(out), "--n", str(n), "--how", how, "--nofile", str(nofile)])
            if "error" in r:
                print(f"read   shards={len(shards):>5} {how:<12} ulimit -n {nofile:>6}: error: {r['error']}",
                      flush=True)
                continue
            print(f"read   shards={len(shards):>5} {how:<12} ulimit -n {nofile:>6}: {r['seconds']:6.2f} s, "
                  f"peak RSS {r['rss_mb']:6.0f} MB, wrong rows {r['wrong']:>8,} of {n:,} "
                  f"({r['zeros']:,} zeros)", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--shards", type=int, nargs="+", default=[256, 1526, 5000])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--root", type=Path, default=Path("/tmp/galhpc-scale"))
    p.add_argument("--keep", action="store_true", help="keep the catalogues")
    p.add_argument("--worker", choices=("write", "read"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--how", choices=tuple(READERS), help=argparse.SUPPRESS)
    p.add_argument("--nofile", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "write":
        print(json.dumps(write_worker(args.out, args.n[0], args.shards[0], args.rank, args.ranks)))
        return
    if args.worker == "read":
        print(json.dumps(read_worker(args.out, args.n[0], args.how, args.nofile)))
        return
    readers = ["open_catalog", "master", "shards"]
    args.root.mkdir(parents=True, exist_ok=True)
    print(f"scale benchmark in {args.root}: readers {readers}, hard open-file limit "
          f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]}", flush=True)
    try:
        for n in args.n:
            for n_shards in args.shards:
                run_config(args.root, n, n_shards, args.ranks, readers)
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)


if __name__ == "__main__":
    main()
