"""One device check: build the CUDA extension, run `pytest -m cuda`, time the CUDA paths.

  python benchmarks/gpu_check.py                 # on a GPU machine: <= 8 minutes
  python benchmarks/gpu_check.py --dry-run       # CPU, tiny sizes, seconds (what CI runs)

Without a visible CUDA device the script runs its dry-run.  Steps, each with its own
time limit inside the overall budget (a step that fails is recorded, the next one runs):

1. build: `pip install --no-build-isolation --no-deps -e .` with TORCH_CUDA_ARCH_LIST set
   from torch.cuda.get_device_capability() (9.0 = sm_90 on Hopper);
2. tests: `pytest -m cuda` (tests/test_cuda.py: kernels' CUDA backends, training steps,
   encode/generate, DDP over NCCL);
3. timings, AstroVaDEr at 64^2 and 128^2 in fp32 and bf16: training img/s (the second
   epoch of a real `train()` run on an HDF5 store), `galhpc-generate` img/s into HDF5
   float16, `galhpc-encode` obj/s; `nearest_code` (each backend against a brute-force
   torch reference) and `convolve_psf` (FFT against direct conv2d).

Writes OUT/gpu_check.json and OUT/gpu_check.md (one table; the issue's anchors and goals
beside the measured figures) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# the anchors (AstroVaDEr on 3 V100s) and goals (one H100/H200, 128^2, bf16)
ANCHORS = {"generate": 1670.0, "train": 650.0}
GOALS = {"generate": 25000.0, "encode": 20000.0, "train": 6000.0}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], Any], device: torch.device, repeats: int = 3) -> float:
    fn()  # warm-up (kernels compiled, caches filled)
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def run_step(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1), env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "seconds": round(time.perf_counter() - start, 1),
                "why": f"timed out after {timeout:.0f} s"}
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    return {"ok": done.returncode == 0, "seconds": round(time.perf_counter() - start, 1), "returncode": done.returncode,
            "tail": tail}


def build_extension(timeout: float) -> dict[str, Any]:
    major, minor = torch.cuda.get_device_capability(0)
    env = {**os.environ, "TORCH_CUDA_ARCH_LIST": f"{major}.{minor}", "MAX_JOBS": str(os.cpu_count() or 4)}
    result = run_step([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."],
                      timeout, env)
    result["arch"] = f"sm_{major}{minor}"
    probe = run_step([sys.executable, "-c", "from galhpc.kernels import backend as b; print(b.extension_has_cuda())"],
                     60)
    result["with_cuda"] = bool(probe["ok"] and probe["tail"] and probe["tail"][-1] == "True")
    return result


def run_cuda_tests(timeout: float, dry: bool) -> dict[str, Any]:
    target = ["tests/test_cuda.py"] if dry else ["tests"]
    result = run_step([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider", *target],
                      timeout, {**os.environ, "GALHPC_PROGRESS": "0"})
    summary = next((line for line in reversed(result.get("tail", [])) if " in " in line), "")
    result["summary"] = summary.strip("= ")
    return result


def write_store(path: Path, n: int, size: int) -> Path:
    from galhpc.data.sources import Block
    from galhpc.data.store import StoreWriter

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    with StoreWriter(path, "prep: {}\n", chunk_rows=256) as writer:
        for lo in range(0, n, 1024):
            m = min(1024, n - lo)
            scale = rng.uniform(size / 24, size / 8, (m, 1, 1))
            images = np.exp(-np.hypot(xx, yy) / scale) + 0.02 * rng.standard_normal((m, size, size))
            writer.append(Block(images=images.astype(np.float32), object_id=np.arange(lo, lo + m, dtype=np.int64),
                                labels={}))
    return path


def astrovader_config(store: Path, out: Path, size: int, precision: str, device: str, batch: int):
    from galhpc.config import ModelConfig, RunConfig, TrainConfig

    filters = [32, 64, 128] if size >= 64 else [8, 8, 8]
    return RunConfig(
        model=ModelConfig(name="astrovader", image_size=size, latent_dim=20,
                          params={"n_clusters": 12, "filters": filters, "kernels": [3, 3, 3], "recon": "mse"}),
        train=TrainConfig(store=str(store), out_dir=str(out), epochs=2, batch_size=batch, holdout_fraction=0.0,
                          augment=True, backend="single", device=device, precision=precision, checkpoint_every=2,
                          nan_check_every=50),
    )


def time_model(size: int, precision: str, n: int, batch: int, device: torch.device, work: Path) -> dict[str, Any]:
    """Training img/s (second epoch), generate img/s (float16 HDF5) and encode obj/s."""
    from galhpc.inference.encode import encode_from_checkpoint
    from galhpc.inference.generate import generate_from_checkpoint
    from galhpc.inference.options import EncodeOptions, GenerateOptions, OutputOptions, split_keywords
    from galhpc.train.trainer import train

    store = work / f"store{size}.h5"
    if not store.exists():
        write_store(store, n, size)
    cfg = astrovader_config(store, work / f"run{size}{precision}", size, precision, device.type, batch)
    result = train(cfg, resume=False)
    epoch = result.history[-1]
    row: dict[str, Any] = {"size": size, "precision": precision,
                           "train_img_s": result.steps // 2 * batch / epoch["seconds"]}
    kw = dict(device=device.type, precision=precision, threads=None, overwrite=True)
    gen = generate_from_checkpoint(result.checkpoint, work / f"gen{size}{precision}.h5",
                                   *split_keywords({"n": n, "batch_size": 4 * batch, "dtype": "float16", **kw},
                                                   GenerateOptions, OutputOptions))
    row["generate_img_s"] = gen.objects_per_second
    enc = encode_from_checkpoint(result.checkpoint, store, work / f"enc{size}{precision}.h5",
                                 *split_keywords({"batch_size": 4 * batch, **kw}, EncodeOptions, OutputOptions))
    row["encode_obj_s"] = enc.objects_per_second
    return row


def time_kernels(device: torch.device, dry: bool) -> list[dict[str, Any]]:
    from galhpc.kernels import backend as kb
    from galhpc.kernels import convolve_psf, nearest_code
    from galhpc.kernels.psf import direct_convolve

    rows = []
    n = 4096 if dry else 1 << 20
    g = torch.Generator().manual_seed(0)
    x, codebook = torch.randn(n, 64, generator=g).to(device), torch.randn(512, 64, generator=g).to(device)

    def brute() -> torch.Tensor:  # the faiss-free reference: blocked squared distances, argmin
        return torch.cat([torch.cdist(part, codebook).argmin(dim=1) for part in x.split(65536)])

    reference = brute()
    rows.append({"kernel": "nearest_code", "backend": "reference (cdist+argmin)", "n": n,
                 "per_s": n / best_time(brute, device)})
    backends = ["torch"] + (["cuda"] if device.type == "cuda" and kb.extension_has_cuda() else []) \
        + (["cpp"] if device.type == "cpu" and kb.extension_available() else []) \
        + (["numba"] if kb.numba_available() and not dry else [])
    for name in backends:
        try:
            seconds = best_time(lambda name=name: nearest_code(x, codebook, backend=name), device)
            index = nearest_code(x, codebook, backend=name)[0]
            rows.append({"kernel": "nearest_code", "backend": name, "n": n, "per_s": n / seconds,
                         "agree": float((index == reference).float().mean())})
        except Exception as err:  # recorded, the check goes on
            rows.append({"kernel": "nearest_code", "backend": name, "n": n, "error": str(err)[:200]})
    b, size, k = (32, 32, 9) if dry else (4096, 128, 41)
    images = torch.rand(b, 1, size, size, generator=g).to(device)
    psf = torch.rand(k, k, generator=g).to(device)
    psf /= psf.sum()
    direct = direct_convolve(images, psf)
    rows.append({"kernel": "convolve_psf", "backend": f"reference (direct conv2d, {k}x{k})", "n": b,
                 "per_s": b / best_time(lambda: direct_convolve(images, psf), device)})
    fft = convolve_psf(images, psf, backend="torch")
    rows.append({"kernel": "convolve_psf", "backend": "torch FFT", "n": b,
                 "per_s": b / best_time(lambda: convolve_psf(images, psf, backend="torch"), device),
                 "max_abs_error": float((fft - direct).abs().max())})
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# galhpc GPU check ({report['mode']})", "",
             f"device: {report['device']}; torch {report['torch']}; python {report['python']}; "
             f"total {report['seconds']:.0f} s", ""]
    for step in ("build", "tests"):
        info = report.get(step, {})
        lines.append(f"- {step}: {'ok' if info.get('ok') else 'FAILED' if info else 'skipped'} "
                     f"{info.get('why', '')}{info.get('summary', '')} ({info.get('seconds', 0)} s)"
                     + (f", {info.get('arch')}, CUDA kernels built: {info.get('with_cuda')}" if 'arch' in info else ""))
    lines += ["", "| size | precision | train img/s | generate img/s (HDF5 f16) | encode obj/s |",
              "|---|---|---|---|---|"]
    for row in report.get("models", []):
        if "error" in row:
            lines.append(f"| {row['size']} | {row['precision']} | error: {row['error']} | | |")
            continue
        lines.append(f"| {row['size']}² | {row['precision']} | {row['train_img_s']:,.0f} | "
                     f"{row['generate_img_s']:,.0f} | {row['encode_obj_s']:,.0f} |")
    lines += [f"| anchor (3 V100s, per GPU, 128²) | | {ANCHORS['train']:,.0f} | {ANCHORS['generate']:,.0f} | |",
              f"| goal (one H100/H200, 128², bf16) | | {GOALS['train']:,.0f} | {GOALS['generate']:,.0f} | "
              f"{GOALS['encode']:,.0f} |", "",
              "| kernel | backend | n | per second | agreement / error |", "|---|---|---|---|---|"]
    for row in report.get("kernels", []):
        if row["backend"].startswith("reference"):
            quality = "reference"
        else:
            quality = row.get("error") or (f"{row['agree']:.4f} of indices" if "agree" in row
                                           else f"max |err| {row.get('max_abs_error', float('nan')):.2e} vs direct")
        lines.append(f"| {row['kernel']} | {row['backend']} | {row['n']:,} | {row.get('per_s', float('nan')):,.0f} | "
                     f"{quality} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu_check_out", help="where the table goes")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (the default without a CUDA device)")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check (default 480)")
    p.add_argument("--skip-build", action="store_true", help="use the extension as installed")
    args = p.parse_args(argv)
    started = time.perf_counter()
    dry = args.dry_run or not torch.cuda.is_available()
    device = torch.device("cpu" if dry else "cuda")
    left = lambda: args.budget - (time.perf_counter() - started)  # noqa: E731
    report: dict[str, Any] = {"mode": "CPU dry-run" if dry else "GPU", "python": platform.python_version(),
                              "torch": torch.__version__,
                              "device": "cpu" if dry else torch.cuda.get_device_name(0)}
    if not dry and not args.skip_build:
        report["build"] = build_extension(min(240.0, left() * 0.4))
    report["tests"] = run_cuda_tests(min(150.0, left() * 0.4), dry)
    sizes = (16,) if dry else (64, 128)
    n, batch = (128, 32) if dry else (8192, 256)
    report["models"] = []
    with tempfile.TemporaryDirectory(prefix="galhpc-gpu-check-") as tmp:
        for size in sizes:
            for precision in ("fp32", "bf16"):
                if left() < 30:
                    report["models"].append({"size": size, "precision": precision, "error": "skipped: budget spent"})
                    continue
                try:
                    report["models"].append(time_model(size, precision, n, batch, device, Path(tmp)))
                except Exception as err:  # recorded; the rest of the check still runs
                    report["models"].append({"size": size, "precision": precision, "error": str(err)[:300]})
    report["kernels"] = time_kernels(device, dry)
    report["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    table = markdown(report)
    (args.out / "gpu_check.md").write_text(table)
    print(table)
    failed = [row for row in report["models"] if "error" in row] + [r for r in report["kernels"] if "error" in r]
    steps_ok = all(report[s].get("ok") for s in ("build", "tests") if s in report)
    return 0 if steps_ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
