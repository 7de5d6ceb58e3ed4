"""Reading a many-shard catalogue: galhpc.open_catalog against the VDS master and raw shards.

    python benchmarks/catalog_reader.py                      # 1,526 shards of 32 objects, 32x32 float16
    python benchmarks/catalog_reader.py --shards 5000 --nofile 1024

Builds a catalogue with galhpc's own writer (ShardWriter + write_master: the layout of
galhpc-generate) and prints, each measured in a fresh process under a soft open-file limit
of --nofile (the usual 1,024; the hard limit is left as it is):
- a whole `object_id` column: rows wrong (fill values) and seconds, peak RSS;
- --random image rows (one request of random rows, any order): seconds, peak RSS;
for the master read with plain h5py, open_catalog, and the shard files read directly
(the reference: one file open at a time), and the ratio open_catalog / shard files.
open_catalog's time includes opening the master and checking each shard it reads (not
importing galhpc, as the others' does not include importing h5py).
With --repeat R the three readers run in turn R times (a shared machine's load changes
between runs: interleaving keeps each ratio's two timings close in time) and the median
ratio is printed with the range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from galhpc.formats.catalog import shard_dir_for, shard_path
from galhpc.io.catalog_writer import ShardWriter, write_master
from galhpc.io.shards import plan_shards

REPO = Path(__file__).resolve().parents[1]

MEASURE = r"""
import json, resource, sys, time
import h5py, numpy as np
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min({nofile}, hard), hard))
how, what, out, n, shard_size, n_random = sys.argv[1:7]
n, shard_size, n_random = int(n), int(shard_size), int(n_random)
rows = np.random.default_rng(0).choice(n, n_random, replace=False)
if how == "reader":
    from galhpc.io.catalog import open_catalog  # imported untimed, as h5py is for the others
begin = time.perf_counter()
if how == "master":
    with h5py.File(out, "r") as f:
        values = f["object_id"][()] if what == "column" else f["images"][np.sort(rows)]
elif how == "reader":
    with open_catalog(out) as cat:
        values = cat.read("object_id") if what == "column" else cat.read("images", rows)
else:  # the shard files one at a time
    parts = []
    if what == "column":
        for k in range(-(-n // shard_size)):
            with h5py.File(f"{{out}}.shards/{{k:06d}}.h5", "r") as f:
                parts.append(f["object_id"][()])
    else:
        for r in np.sort(rows):
            with h5py.File(f"{{out}}.shards/{{r // shard_size:06d}}.h5", "r") as f:
                parts.append(f["images"][r % shard_size][None])
    values = np.concatenate(parts)
seconds = time.perf_counter() - begin
wrong = (int((values != np.arange(n)).sum()) if what == "column"
         else int(np.isnan(values.astype(np.float32)).any(axis=(1, 2)).sum()))
print(json.dumps({{"seconds": seconds, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "wrong": wrong, "rows": len(values)}}))
"""


def build(root: Path, n_shards: int, shard_size: int, size: int) -> Path:
    out = root / "synth.h5"
    shards = plan_shards(n_shards * shard_size, shard_size)
    shard_dir = shard_dir_for(out)
    shard_dir.mkdir()
    rng = np.random.default_rng(1)
    fingerprint = json.dumps({"kind": "generate", "n": n_shards * shard_size, "seed": 1}, sort_keys=True)
    (shard_dir / "manifest.json").write_text(fingerprint)  # as a real run's: every check the reader makes
    for shard in shards:
        writer = ShardWriter(shard_path(shard_dir, shard.index), shard, table=False,
                             attrs={"fingerprint": fingerprint})
        writer.write(0, {"images": rng.random((shard.size, size, size)).astype(np.float16),
                         "object_id": np.arange(shard.start, shard.stop, dtype=np.int64),
                         "component": np.zeros(shard.size, np.int16)})
        writer.close()
    write_master(out, shard_dir, shards, {"kind": "generate", "n_objects": shards[-1].stop,
                                          "fingerprint": fingerprint})
    return out


def measure(how: str, what: str, out: Path, n: int, shard_size: int, n_random: int, nofile: int) -> dict:
    run = subprocess.run([sys.executable, "-c", MEASURE.format(nofile=nofile), how, what, str(out), str(n),
                          str(shard_size), str(n_random)], capture_output=True, text=True, timeout=1800,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    if run.returncode != 0:
        return {"error": run.stderr.strip().splitlines()[-1]}
    return json.loads(run.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=int, default=1526)
    p.add_argument("--shard-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--random", type=int, default=1000, help="random image rows to read")
    p.add_argument("--nofile", type=int, default=1024, help="soft open-file limit of the reading processes")
    p.add_argument("--repeat", type=int, default=3, help="times each reader runs (the median ratio is printed)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="galhpc-reader-") as tmp:
        began = time.perf_counter()
        out = build(Path(tmp), args.shards, args.shard_size, args.image_size)
        n = args.shards * args.shard_size
        print(f"{n} objects in {args.shards} shards of {args.shard_size} ({args.image_size}x{args.image_size} "
              f"float16 images), written in {time.perf_counter() - began:.1f} s; readers at ulimit -n {args.nofile}")
        labels = {"master": "VDS master (h5py)", "reader": "galhpc.open_catalog", "shards": "shard files"}
        for what in ("column", "random"):
            ratios = []
            for run in range(args.repeat):
                seconds = {}
                for how in ("master", "reader", "shards"):
                    r = measure(how, what, out, n, args.shard_size, args.random, args.nofile)
                    if "error" in r:
                        print(f"  {what:6s} {labels[how]:20s} error: {r['error']}")
                        continue
                    seconds[how] = r["seconds"]
                    print(f"  {what:6s} {labels[how]:20s} {r['seconds']:7.2f} s  peak RSS {r['rss_mib']:7.0f} MiB  "
                          f"rows wrong {r['wrong']} of {r['rows']}")
                if "reader" in seconds and "shards" in seconds:
                    ratios.append(seconds["reader"] / seconds["shards"])
                    print(f"  {what:6s} run {run + 1}: open_catalog / shard files = {ratios[-1]:.2f}")
            if ratios:
                goal = {"column": 1.3, "random": 1.5}[what]
                print(f"  {what:6s} open_catalog / shard files = {statistics.median(ratios):.2f} median of "
                      f"{len(ratios)} (range {min(ratios):.2f}-{max(ratios):.2f}; goal <= {goal})")

if __name__ == "__main__":
    main()
