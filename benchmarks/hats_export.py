"""Exporting an encode-shaped catalogue as VOParquet and as HATS: rows/s and peak memory at growing N.

    python benchmarks/hats_export.py                       # 1e5 and 1e6 rows, 20 latents
    python benchmarks/hats_export.py --rows 1000000 10000000

Builds, for each N, a catalogue with galhpc's own writer (ShardWriter + write_master, shards
of --shard-size rows: object_id, ra, dec, component, gamma (10 components), mu (--latents))
and measures, each in a fresh process: `export_parquet` (--split-vectors) and `export_hats`
(hats-import on an in-process Dask cluster of one worker, so the peak RSS reported is the
whole export's; at each --pixel-threshold, reading --chunk-rows rows at a time).  Memory flat
in N is the claim under test: the peak RSS should not grow with N.  Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from galhpc.formats.catalog import shard_dir_for, shard_path
from galhpc.io.catalog_writer import ShardWriter, write_master
from galhpc.io.shards import plan_shards

MEASURE = r"""
import json, resource, sys, time
how, src, out, threshold, chunk = sys.argv[1:6]
from galhpc.io.catalog import open_catalog
from galhpc.io.export import export_hats, export_parquet
begin = time.perf_counter()
with open_catalog(src) as cat:
    if how == "parquet":
        export_parquet(cat, out, split_vectors=True)
    else:
        from dask.distributed import Client
        with Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as client:
            export_hats(cat, out, client=client, pixel_threshold=int(threshold) or None, chunk_rows=int(chunk))
    n = len(cat)
seconds = time.perf_counter() - begin
if how == "hats":  # the threshold used (galhpc's default when 0) and the partitions written
    props = dict(line.split("=", 1) for line in open(f"{out}/properties").read().splitlines() if "=" in line)
    threshold = props["hats_max_rows"].strip()
    partitions = sum(1 for _ in open(f"{out}/partition_info.csv")) - 1
print(json.dumps({"how": how, "rows": n, "pixel_threshold": int(threshold), "chunk_rows": int(chunk),
                  **({"partitions": partitions} if how == "hats" else {}),
                  "seconds": round(seconds, 1), "rows_per_s": round(n / seconds),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def build(root: Path, n: int, shard_size: int, latents: int) -> Path:
    out = root / f"clusters_{n}.h5"
    shards = plan_shards(n, shard_size)
    shard_dir = shard_dir_for(out)
    shard_dir.mkdir()
    rng = np.random.default_rng(1)
    for shard in shards:
        m = shard.size
        writer = ShardWriter(shard_path(shard_dir, shard.index), shard, table=False)
        writer.write(0, {"object_id": np.arange(shard.start, shard.stop, dtype=np.int64),
                         "ra": rng.uniform(0, 360, m), "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, m))),
                         "component": rng.integers(0, 10, m).astype(np.int16),
                         "gamma": rng.dirichlet(np.ones(10), m).astype(np.float32),
                         "mu": rng.standard_normal((m, latents)).astype(np.float32)})
        writer.close()
    write_master(out, shard_dir, shards, {"kind": "encode", "n_objects": n})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--shard-size", type=int, default=65_536)
    p.add_argument("--latents", type=int, default=20)
    p.add_argument("--exports", nargs="+", choices=("parquet", "hats"), default=["parquet", "hats"])
    p.add_argument("--pixel-threshold", type=int, nargs="+", default=[0],
                   help="HATS: most rows per HEALPix partition (each value measured; 0: galhpc's default, "
                        "partitions of about 64 MiB)")
    p.add_argument("--chunk-rows", type=int, default=65_536, help="HATS: rows per block read from the shards")
    p.add_argument("--dir", help="work directory (default: a temporary one)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in args.rows:
            src = build(Path(tmp), n, args.shard_size, args.latents)
            runs = [(h, t) for h in args.exports for t in (args.pixel_threshold if h == "hats" else [0])]
            for how, threshold in runs:
                out = Path(tmp) / f"out_{n}_{threshold}.{how}"
                run = subprocess.run([sys.executable, "-c", MEASURE, how, str(src), str(out), str(threshold),
                                      str(args.chunk_rows)], capture_output=True, text=True, check=True)
                print(run.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
