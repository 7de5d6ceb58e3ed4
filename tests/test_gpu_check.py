"""benchmarks/gpu_check.py's CPU dry-run runs end to end (so the GPU check cannot rot)."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_check  # noqa: E402

torch.set_num_threads(1)


def test_dry_run_writes_the_table(tmp_path):
    status = gpu_check.main(["--dry-run", "--out", str(tmp_path), "--budget", "900"])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "CPU dry-run" and "build" not in report
    assert report["tests"]["ok"], report["tests"]  # tests/test_cuda.py collected; all skipped without CUDA
    assert "skipped" in report["tests"]["summary"]
    rows = {(r["size"], r["precision"]): r for r in report["models"]}
    assert set(rows) == {(16, "fp32"), (16, "bf16")}
    for row in rows.values():
        assert row["train_img_s"] > 0 and row["generate_img_s"] > 0 and row["encode_obj_s"] > 0
    kernels = {(r["kernel"], r["backend"]) for r in report["kernels"]}
    assert ("nearest_code", "torch") in kernels and ("convolve_psf", "torch FFT") in kernels
    assert all(r.get("agree", 1.0) == 1.0 for r in report["kernels"])
    assert "| 16² | bf16 |" in (tmp_path / "gpu_check.md").read_text()
    assert status == 0
