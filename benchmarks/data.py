"""Data-layer throughput, as ratios against peers measured in the same run.

    python benchmarks/data.py                  # defaults: 64x64 stamps, 600 per measurement
    python benchmarks/data.py --n 2000 --size 128

Prints:
- GalSim bulge+disk stamps per CPU-second on one core (process time, so other load on
  the machine does not count), against the simplest GalSim peer: a Gaussian convolved
  with the same Moffat PSF, drawn at the same size;
- the prep pipeline's quality metrics (snr, width, non_uniformity, border_noise) per
  stamp: the per-image numpy functions (galhpc.data.prep.quality_metrics) against
  simulating the stamp, and the numba batch that galhpc-prep runs (one parallel call per
  block, NUMBA_NUM_THREADS threads) against that numpy loop, in CPU and wall time;
- `galhpc-prep` with 2 worker processes against 1 (wall time; needs 2 free cores);
- StoreLoader (block reads) against one HDF5 read per image, for the same batches and
  in a uniformly random order (map-style Dataset), on an lzf-compressed store (a
  per-image read decompresses its whole chunk unless it is in h5py's chunk cache).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import h5py
import numba
import numpy as np
import torch

from galhpc.config import PrepConfig, SourceConfig
from galhpc.data.loader import StoreLoader
from galhpc.data.prep import quality_metrics, run_prep
from galhpc.data.synth import SimOptions, simulate_block
from galhpc.kernels import quality


def galsim_rate(n: int, size: int) -> tuple[float, float]:
    """(bulge+disk stamps, Gaussian peer stamps) per CPU-second on this core."""
    import galsim

    opts = SimOptions()
    simulate_block(opts, size, 0, 0, 10)  # warm GalSim's Sérsic tables
    t = time.process_time()
    simulate_block(opts, size, 0, 10, 10 + n)
    ours = n / (time.process_time() - t)
    psf = galsim.Moffat(beta=opts.moffat_beta, fwhm=opts.psf_fwhm)
    rng = np.random.default_rng(0)
    t = time.process_time()
    for _ in range(n):
        gal = galsim.Gaussian(half_light_radius=rng.uniform(0.5, 1.5), flux=1e4)
        image = galsim.Convolve([gal, psf]).drawImage(nx=size, ny=size, scale=opts.pixel_scale)
        image.array[:] += rng.normal(0, 10.0, image.array.shape)
    peer = n / (time.process_time() - t)
    return ours, peer


def per_stamp(fn, n: int, repeats: int = 3) -> tuple[float, float]:
    """(CPU, wall) seconds per stamp of fn() over n stamps, best of `repeats`; CPU time sums
    every thread of the process."""
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return min(cpu) / n, min(wall) / n


def metrics_cost(n: int, size: int) -> dict[str, float]:
    """Seconds per stamp: simulation (CPU), quality metrics by the per-image numpy loop and
    by the numba batch (CPU and wall each; the batch compiled, or loaded from numba's cache,
    before timing)."""
    block = simulate_block(SimOptions(), size, 1, 0, n)
    sim, _ = per_stamp(lambda: simulate_block(SimOptions(), size, 1, n, 2 * n), n, repeats=1)
    numpy_cpu, numpy_wall = per_stamp(lambda: [quality_metrics(img, 8) for img in block.images], n)
    quality.metrics(block.images[:2], 8)
    numba_cpu, numba_wall = per_stamp(lambda: quality.metrics(block.images, 8), n)
    return {"sim": sim, "numpy_cpu": numpy_cpu, "numpy_wall": numpy_wall, "numba_cpu": numba_cpu,
            "numba_wall": numba_wall}


def prep_speedup(n: int, size: int, tmp: Path) -> tuple[float, float, float]:
    """Wall seconds of galhpc-prep on 1 and 2 workers (lzf-compressed stores), and their ratio.

    Runs first in the process and 2 workers first, so the workers are forked as in the
    CLI (GalSim not yet loaded here)."""
    walls = []
    for workers in (2, 1):
        cfg = PrepConfig(sources=[SourceConfig(kind="galsim", n=n)], image_size=size, recipe=["minmax"],
                         workers=workers, chunk_rows=128, metrics=False, compression="lzf")
        t = time.perf_counter()
        run_prep(cfg, output=tmp / f"w{workers}.h5")
        walls.append(time.perf_counter() - t)
    return walls[1], walls[0], walls[1] / walls[0]


def loader_vs_per_image(store: Path, batch: int) -> tuple[float, float, float]:
    """Seconds for one epoch: StoreLoader; one h5py read per image in the loader's order;
    one read per image in a uniformly random order (a map-style Dataset + RandomSampler)."""
    loader = StoreLoader(store, batch, split="all", shuffle=True, seed=0)
    t = time.perf_counter()
    order = [b["index"].numpy() for b in loader]
    ours = time.perf_counter() - t

    def per_image(batches: list[np.ndarray]) -> float:
        t = time.perf_counter()
        with h5py.File(store) as f:
            images = f["images"]
            for rows in batches:
                torch.from_numpy(np.stack([images[int(r)] for r in rows]))
        return time.perf_counter() - t

    random_rows = np.random.default_rng(0).permutation(np.concatenate(order))
    return ours, per_image(order), per_image(np.array_split(random_rows, len(order)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600, help="stamps per measurement")
    parser.add_argument("--size", type=int, default=64, help="stamp size (pixels)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("GALHPC_PROGRESS", "0")
    with tempfile.TemporaryDirectory() as tmp:
        w1, w2, speedup = prep_speedup(4 * args.n, args.size, Path(tmp))
        print(f"galhpc-prep {4 * args.n} stamps: 1 worker {w1:.1f} s, 2 workers {w2:.1f} s; speed-up {speedup:.2f}x "
              f"({4 * args.n / w2 / 2:.0f} stamps/s per core, wall)")
        ours_s, same_s, random_s = loader_vs_per_image(Path(tmp) / "w2.h5", 64)
        print(f"StoreLoader epoch {ours_s:.2f} s; per-image HDF5 reads in its order {same_s:.2f} s "
              f"({same_s / ours_s:.1f}x), in random order {random_s:.2f} s ({random_s / ours_s:.1f}x)")

    ours, peer = galsim_rate(args.n, args.size)
    print(f"galsim {args.size}x{args.size}: {ours:.0f} bulge+disk stamps per CPU-s; "
          f"Gaussian peer {peer:.0f}/CPU-s; ratio {ours / peer:.2f}")
    m = metrics_cost(min(args.n, 300), args.size)
    print(f"quality metrics: {m['numpy_cpu'] * 1e3:.2f} ms CPU per stamp vs simulation {m['sim'] * 1e3:.2f} ms; "
          f"ratio {m['numpy_cpu'] / m['sim']:.2f}")
    print(f"quality metrics, numba batch on {numba.get_num_threads()} thread(s): {m['numba_cpu'] * 1e3:.3f} ms CPU, "
          f"{m['numba_wall'] * 1e3:.3f} ms wall per stamp; "
          f"numpy loop / numba {m['numpy_cpu'] / m['numba_cpu']:.1f}x CPU, "
          f"{m['numpy_wall'] / m['numba_wall']:.1f}x wall")


if __name__ == "__main__":
    main()
