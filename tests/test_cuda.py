"""The CUDA paths (run on a GPU by `pytest -m cuda`, e.g. from benchmarks/gpu_check.py):
every CUDA backend of both kernels against the torch reference, training steps in fp32
and bf16, encode and generate on cuda, and DDP over NCCL on one GPU.  Skipped without CUDA."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from galhpc.kernels import backend as kernel_backend
from galhpc.kernels import convolve_psf, nearest_code
from galhpc.kernels.codebook import torch_search
from galhpc.kernels.psf import direct_convolve

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
HERE = Path(__file__).parent


@pytest.mark.parametrize("backend", ["torch", "cuda", "numba"])
def test_nearest_code_cuda_backends_match_the_torch_reference(backend):
    if backend == "cuda" and not kernel_backend.extension_has_cuda():
        pytest.skip("galhpc._ext was built without CUDA kernels (build it first: benchmarks/gpu_check.py)")
    if backend == "numba" and not kernel_backend.numba_available():
        pytest.skip("numba is not installed")
    g = torch.Generator().manual_seed(0)
    x, codebook = torch.randn(20000, 64, generator=g), torch.randn(512, 64, generator=g)
    ref_index, ref_dist = torch_search(x.double(), codebook.double(), 256)
    index, dist = nearest_code(x.cuda(), codebook.cuda(), backend=backend)
    assert index.device.type == "cuda"
    agree = (index.cpu() == ref_index).float().mean().item()
    assert agree > 0.999  # float32 vs float64 distances: only near-ties may differ
    torch.testing.assert_close(dist.cpu().double(), ref_dist, rtol=1e-4, atol=1e-3)


def test_convolve_psf_on_cuda_matches_the_direct_reference():
    g = torch.Generator().manual_seed(1)
    images, psf = torch.rand(64, 1, 64, 64, generator=g), torch.rand(21, 21, generator=g)
    psf /= psf.sum()
    reference = direct_convolve(images.double(), psf.double())
    out = convolve_psf(images.cuda(), psf.cuda(), backend="torch")
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu().double(), reference, rtol=1e-4, atol=1e-5)


def tiny_store(path, n=256, size=32):
    from galhpc.data.sources import Block
    from galhpc.data.store import StoreWriter

    images = np.random.default_rng(0).random((n, size, size), dtype=np.float32)
    with StoreWriter(path, "prep: {}\n", chunk_rows=64) as writer:
        writer.append(Block(images=images, object_id=np.arange(n, dtype=np.int64), labels={}))
    return path


def tiny_config(store, out_dir, precision, backend="single"):
    from galhpc.config import ModelConfig, RunConfig, TrainConfig

    return RunConfig(
        model=ModelConfig(name="astrovader", image_size=32, latent_dim=8,
                          params={"n_clusters": 4, "filters": [16, 16, 16], "kernels": [3, 3, 3]}),
        train=TrainConfig(store=str(store), out_dir=str(out_dir), epochs=2, batch_size=64, backend=backend,
                          device="cuda", precision=precision, holdout_fraction=0.25, augment=True),
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_steps_on_cuda(tmp_path, precision):
    from galhpc.train.trainer import train

    result = train(tiny_config(tiny_store(tmp_path / "s.h5"), tmp_path / "run", precision))
    history = result.history
    assert result.steps == 2 * (192 // 64)
    assert all(np.isfinite(row["total"]) and np.isfinite(row["holdout_mse"]) for row in history)
    payload = torch.load(result.checkpoint, map_location="cpu", weights_only=False)
    assert payload["layout"]["precision"] == precision


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_generate_and_encode_on_cuda(tmp_path, precision):
    from galhpc.inference.encode import encode_from_checkpoint
    from galhpc.inference.generate import generate_from_checkpoint
    from galhpc.inference.options import EncodeOptions, GenerateOptions, OutputOptions, split_keywords
    from galhpc.train.trainer import train

    store = tiny_store(tmp_path / "s.h5")
    ckpt = train(tiny_config(store, tmp_path / "run", "fp32")).checkpoint
    kw = dict(device="cuda", precision=precision, threads=1)
    generate_from_checkpoint(ckpt, tmp_path / "g.h5",
                             *split_keywords({"n": 300, "batch_size": 128, "dtype": "float16", "noise_sigma": 0.01,
                                              **kw}, GenerateOptions, OutputOptions))
    encode_from_checkpoint(ckpt, store, tmp_path / "e.h5",
                           *split_keywords({"batch_size": 100, **kw}, EncodeOptions, OutputOptions))
    encode_from_checkpoint(ckpt, store, tmp_path / "e_cpu.h5", EncodeOptions(batch_size=100),
                           OutputOptions(device="cpu", threads=1))
    with h5py.File(tmp_path / "g.h5") as f:
        assert f["images"].dtype == np.float16 and f["images"].shape == (300, 32, 32)
        assert np.isfinite(f["images"][()]).all()
    with h5py.File(tmp_path / "e.h5") as f, h5py.File(tmp_path / "e_cpu.h5") as c:
        tol = 1e-3 if precision == "fp32" else 0.05
        np.testing.assert_allclose(f["mu"][()], c["mu"][()], atol=tol * np.abs(c["mu"][()]).max())


def test_ddp_with_nccl_on_one_gpu(tmp_path):
    import yaml

    store = tiny_store(tmp_path / "s.h5")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(store, tmp_path / "run", "bf16", backend="torch").to_dict()))
    env = {**os.environ, "GALHPC_PROGRESS": "0", "PYTHONPATH": os.pathsep.join([str(HERE.parent),
                                                                                 os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                           "-m", "galhpc.cli.train", "--config", str(path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nccl" in (done.stdout + done.stderr).lower()
    assert (tmp_path / "run" / "ckpt.pt").exists()
