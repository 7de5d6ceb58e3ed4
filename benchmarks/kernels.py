"""Kernel benchmarks: every figure is a ratio against a peer timed in the same process.

  python benchmarks/kernels.py            # the issue's sizes (N = 10^6 codes lookups, 4,096 images)
  python benchmarks/kernels.py --quick    # 10x-16x smaller, a minute or so

Codebook lookup (D = 64, K = 512 and 16): galhpc backends against faiss.IndexFlatL2,
torch.cdist(...).argmin and sklearn NearestNeighbors, with each method's peak RSS growth
(Linux: /proc/self/clear_refs resets the high-water mark).  PSF convolution (128 x 128
images, 25 x 25 and 128 x 128 PSFs) against a scipy.signal.fftconvolve loop and a plain
batched torch.fft.  Quality metrics (numba, batched) against the numpy per-image loop.
Timings are the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from measure import timed  # benchmarks/measure.py


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def timed_with_memory(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(best time in s, largest peak-RSS growth in MB, last result) over `repeats` runs."""
    best, growth, result = float("inf"), 0.0, None
    for _ in range(repeats):
        result = None  # the last run's result is freed before the next is measured
        seconds, grown, result = timed(fn)
        best, growth = min(best, seconds), max(growth, grown)
    return best, growth, result


def codebook_section(n: int, d: int, k: int, repeats: int, threads: int) -> None:
    import faiss
    from sklearn.neighbors import NearestNeighbors

    from galhpc.kernels import backend, nearest_code
    from galhpc.kernels.codebook import default_block_size

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen)
    codebook = torch.randn(k, d, generator=gen)
    x_np, codebook_np = x.numpy(), codebook.numpy()
    faiss.omp_set_num_threads(threads)
    flat = faiss.IndexFlatL2(d)
    flat.add(codebook_np)
    knn = NearestNeighbors(n_neighbors=1, algorithm="brute", n_jobs=threads).fit(codebook_np)

    ours = {name: (lambda name=name: nearest_code(x, codebook, backend=name)) for name in ("torch", "cpp", "numba")}
    if not backend.extension_available():
        del ours["cpp"]
    peers = {
        "faiss IndexFlatL2": lambda: flat.search(x_np, 1),
        "torch.cdist argmin": lambda: torch.cdist(x, codebook).argmin(dim=1),
        "sklearn NearestNeighbors": lambda: knn.kneighbors(x_np, return_distance=True),
    }
    print(f"\n## codebook lookup: N={n:,} D={d} K={k} ({threads} threads; torch block {default_block_size(k)} rows)")
    times, memory, results = {}, {}, {}
    for name, fn in {**ours, **peers}.items():
        nearest_code(x[:1000], codebook, backend=name) if name in ours else None  # warm up (numba compiles)
        times[name], memory[name], results[name] = timed_with_memory(fn, repeats)
        print(f"  {name:26s} {times[name]:8.3f} s   peak RSS +{memory[name]:7.1f} MB")
    faiss_index = torch.from_numpy(results["faiss IndexFlatL2"][1][:, 0])
    for name in ours:
        agree = (results[name][0] == results["torch"][0]).float().mean().item()
        agree_faiss = (results[name][0] == faiss_index).float().mean().item()
        print(f"  {name:6s} index agrees with the torch reference on {agree:.6f}, "
              f"with faiss on {agree_faiss:.6f} of rows")
    print(f"  N x K float32 matrix would be {n * k * 4 / 2**20:.0f} MB")
    for name in ours:
        ratios = "  ".join(f"{times[peer] / times[name]:5.2f}x vs {peer}" for peer in peers)
        print(f"  speed-up of {name:6s}: {ratios}")
    winner = min(ours, key=times.get)
    print(f"  fastest galhpc backend: {winner}")


def psf_section(b: int, size: int, psf_size: int, repeats: int) -> None:
    import scipy.signal

    from galhpc.kernels import convolve_psf
    from galhpc.kernels.psf import _in_chunks, direct_convolve, fft_convolve

    gen = torch.Generator().manual_seed(1)
    images = torch.randn(b, size, size, generator=gen)
    psf = torch.rand(psf_size, psf_size, generator=gen)
    psf /= psf.sum()
    images_np, psf_np = images.numpy(), psf.numpy()

    def plain_torch_fft():
        shape = (size + psf_size - 1, size + psf_size - 1)
        full = torch.fft.irfft2(torch.fft.rfft2(images, s=shape) * torch.fft.rfft2(psf, s=shape), s=shape)
        s = (psf_size - 1) // 2
        return full[:, s : s + size, s : s + size]

    methods = {
        "convolve_psf (auto)": lambda: convolve_psf(images, psf),
        "  direct (depthwise conv)": lambda: _in_chunks(direct_convolve, images, psf),
        "  fft (same-window length, cached)": lambda: _in_chunks(fft_convolve, images, psf),
        "scipy fftconvolve loop": lambda: [scipy.signal.fftconvolve(im, psf_np, mode="same") for im in images_np],
        "plain batched torch.fft": plain_torch_fft,
    }
    error = (convolve_psf(images[:4], psf) - torch.from_numpy(
        np.stack([scipy.signal.fftconvolve(im, psf_np, mode="same") for im in images_np[:4]]))).abs().max().item()
    print(f"\n## PSF convolution: {b:,} images {size}x{size}, PSF {psf_size}x{psf_size} "
          f"(max |diff| vs scipy {error:.1e})")
    if psf_size > 41:  # direct convolution is several times slower than the FFT there (crossover section)
        del methods["  direct (depthwise conv)"]
    times = {}
    for name, fn in methods.items():
        fn()
        times[name] = best_time(fn, repeats)
        print(f"  {name:34s} {times[name]:8.3f} s")
    auto = times["convolve_psf (auto)"]
    for peer in ("scipy fftconvolve loop", "plain batched torch.fft"):
        print(f"  convolve_psf speed-up vs {peer}: {times[peer] / auto:.2f}x")
    if "  direct (depthwise conv)" in times:
        ratio = times["  direct (depthwise conv)"] / times["  fft (same-window length, cached)"]
        print(f"  direct / fft time ratio: {ratio:.2f}")


def crossover_section(b: int, size: int, repeats: int) -> None:
    from galhpc.kernels.psf import _in_chunks, direct_convolve, fft_convolve

    images = torch.randn(b, size, size)
    print(f"\n## direct vs FFT crossover: {b} images {size}x{size}, chunked as convolve_psf does "
          "(ratio < 1: direct is faster)")
    for h in (5, 9, 13, 15, 17, 21, 25, 31, 41):
        psf = torch.rand(h, h)
        _in_chunks(direct_convolve, images, psf), _in_chunks(fft_convolve, images, psf)
        ratio = best_time(lambda psf=psf: _in_chunks(direct_convolve, images, psf), repeats) / best_time(
            lambda psf=psf: _in_chunks(fft_convolve, images, psf), repeats)
        print(f"  PSF {h:2d}x{h:<2d} direct/fft {ratio:5.2f}")


def quality_section(b: int, size: int, repeats: int) -> None:
    from galhpc.data import preprocess
    from galhpc.kernels import quality

    rng = np.random.default_rng(2)
    images = rng.normal(size=(b, size, size)).astype(np.float32)
    print(f"\n## quality metrics: {b:,} images {size}x{size}, numba batch vs numpy per-image loop")
    for name in ("border_noise", "snr", "non_uniformity", "width"):
        batched, per_image = getattr(quality, name), getattr(preprocess, name)
        batched(images[:2])
        fast = best_time(lambda batched=batched: batched(images), repeats)
        slow = best_time(lambda per_image=per_image: [per_image(im) for im in images], 1)
        print(f"  {name:15s} numba {fast:7.3f} s  numpy loop {slow:7.3f} s  speed-up {slow / fast:6.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every method")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("codebook", "psf", "quality"), help="run one section")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    n, images = (100_000, 256) if args.quick else (1_000_000, 4_096)
    print(f"torch {torch.__version__}, {args.threads} threads, {'quick' if args.quick else 'full'} sizes")
    if args.only in (None, "codebook"):
        for k in (512, 16):
            codebook_section(n, 64, k, args.repeats, args.threads)
    if args.only in (None, "psf"):
        for psf_size in (25, 128):
            psf_section(images, 128, psf_size, args.repeats)
        crossover_section(64 if args.quick else 1024, 128, args.repeats)
    if args.only in (None, "quality"):
        quality_section(images, 64, args.repeats)


if __name__ == "__main__":
    main()
