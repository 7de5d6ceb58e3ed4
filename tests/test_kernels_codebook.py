"""nearest_code against brute force and faiss; ties; memory stays O(block x K)."""

import json
import os
import subprocess
import sys
import textwrap

import faiss
import numpy as np
import pytest
import torch

from galhpc.kernels import backend as kernel_backend
from galhpc.kernels import codebook as codebook_module
from galhpc.kernels import nearest_code
from galhpc.kernels.codebook import torch_search

torch.set_num_threads(1)
faiss.omp_set_num_threads(1)
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

needs_extension = pytest.mark.skipif(
    not kernel_backend.extension_available(), reason="galhpc._ext not built (pip install --no-build-isolation -e .)"
)
CPU_BACKENDS = ["torch", pytest.param("cpp", marks=needs_extension), "numba"]


def brute_force(x: torch.Tensor, codebook: torch.Tensor):
    """Full N x K matrix of exact squared differences (float64), argmin like torch."""
    d = (x.double()[:, None, :] - codebook.double()[None, :, :]).pow(2).sum(-1)
    return d.argmin(dim=1), d


def assert_nearest(index, distance, x, codebook, rtol=1e-5):
    """Chosen codes are nearest up to float rounding, and equal brute force where the gap is clear."""
    expected, d = brute_force(x, codebook)
    best = d.min(dim=1).values
    chosen = d.gather(1, index[:, None])[:, 0]
    scale = x.double().pow(2).sum(1) + codebook.double().pow(2).sum(1).max()
    assert torch.all(chosen - best <= rtol * scale)
    gap = d.sort(dim=1).values[:, 1] - best if codebook.shape[0] > 1 else torch.full_like(best, np.inf)
    clear = gap > 10 * rtol * scale
    assert clear.float().mean() > 0.9
    assert torch.equal(index[clear], expected[clear])
    torch.testing.assert_close(distance.double(), chosen, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("n,k,d,block", [(1000, 37, 8, 100), (999, 512, 64, 128), (50, 16, 3, 1), (7, 5, 2, 1000),
                                         (300, 1, 4, None)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_matches_brute_force(n, k, d, block, dtype, backend):
    gen = torch.Generator().manual_seed(n + k)
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    codebook = torch.randn(k, d, generator=gen, dtype=dtype)
    index, distance = nearest_code(x, codebook, block_size=block, backend=backend)
    assert index.dtype == torch.int64 and index.shape == (n,)
    assert distance.dtype == dtype and distance.shape == (n,)
    assert_nearest(index, distance, x, codebook, rtol=1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_agrees_with_faiss_index_flat_l2(backend):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5000, 64)).astype(np.float32)
    codebook = rng.normal(size=(512, 64)).astype(np.float32)
    flat = faiss.IndexFlatL2(64)
    flat.add(codebook)
    faiss_distance, faiss_index = flat.search(x, 1)
    index, distance = nearest_code(torch.from_numpy(x), torch.from_numpy(codebook), block_size=700, backend=backend)
    agree = index.numpy() == faiss_index[:, 0]
    assert agree.mean() > 0.999  # the rest are float-rounding near-ties: check those by distance
    np.testing.assert_allclose(distance.numpy(), faiss_distance[:, 0], rtol=1e-4, atol=1e-3)


TIE_CODEBOOK = [[2.0, 0.0], [1.0, 1.0], [-2.0, 0.0], [5.0, 5.0], [1.0, 1.0], [0.0, 3.0]]
TIE_X = [[0.0, -1.0], [1.0, 1.0], [3.0, 3.0], [1.0, 2.0], [0.0, 2.0], [7.0, 7.0]]
TIE_INDEX = [0, 1, 1, 1, 5, 3]


@pytest.mark.parametrize("block", [1, 2, 3, 1000])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_go_to_the_lowest_index_like_argmin(block, backend, dtype):
    # Small integers: every distance is exact in float32 whatever the summation order,
    # so ties are true ties.  Codes 1 and 4 are duplicates; (0, -1) is equidistant from 0, 1, 2, 4
    # and (3, 3) from 1, 3, 4.
    codebook, x = torch.tensor(TIE_CODEBOOK, dtype=dtype), torch.tensor(TIE_X, dtype=dtype)
    expected = (x[:, None] - codebook[None]).pow(2).sum(-1).argmin(dim=1)
    index, distance = nearest_code(x, codebook, block_size=block, backend=backend)
    assert torch.equal(index, expected)
    assert index.tolist() == TIE_INDEX
    assert distance.tolist() == [5.0, 0.0, 8.0, 1.0, 1.0, 8.0]


def test_distance_is_differentiable():
    x = torch.randn(20, 4, dtype=torch.float64, requires_grad=True)
    codebook = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    index, distance = nearest_code(x, codebook)
    distance.sum().backward()
    torch.testing.assert_close(x.grad, 2 * (x - codebook[index]).detach())


def _largest_cpu_allocation(fn) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(event.cpu_memory_usage for event in prof.events())


def test_torch_search_memory_is_one_block_not_n_by_k():
    n, k, d, block = 40_000, 64, 8, 256
    x, codebook = torch.randn(n, d), torch.randn(k, d)
    largest = _largest_cpu_allocation(lambda: torch_search(x, codebook, block))
    assert largest <= max(block * k * 4, n * 8)  # one score block, or the index / distance output
    full = _largest_cpu_allocation(lambda: torch.cdist(x, codebook).argmin(dim=1))
    assert full >= n * k * 4  # the profiler does see an N x K matrix when there is one


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="x has 3 features but the codebook has 4"):
        nearest_code(torch.zeros(5, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="codebook is empty"):
        nearest_code(torch.zeros(5, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="x must be 2-D"):
        nearest_code(torch.zeros(5), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        nearest_code(torch.zeros(5, 3), torch.zeros(2, 3), block_size=0)
    with pytest.raises(TypeError, match="floating point"):
        nearest_code(torch.zeros(5, 3, dtype=torch.int64), torch.zeros(2, 3))


CUDASIM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from numba import config
    assert config.ENABLE_CUDASIM, "the CUDA simulator is not on"
    from galhpc.kernels import numba_codebook
    rng = np.random.default_rng(0)
    out = {}
    for dtype in (np.float32, np.float64):
        x = rng.normal(size=(200, 5)).astype(dtype)
        codebook = rng.normal(size=(19, 5)).astype(dtype)
        found, distance = numba_codebook.nearest_code_numpy_on_cuda(x, codebook)
        d = ((x.astype(np.float64)[:, None] - codebook.astype(np.float64)[None]) ** 2).sum(-1)
        out[np.dtype(dtype).name] = {
            "found": found.tolist(), "expected": d.argmin(1).tolist(), "dtype": str(found.dtype),
            "distance_error": float(np.abs(distance - d.min(1)).max()), "distance_dtype": str(distance.dtype),
        }
    ties, _ = numba_codebook.nearest_code_numpy_on_cuda(np.array(json.loads(sys.argv[1]), np.float32),
                                                     np.array(json.loads(sys.argv[2]), np.float32))
    out["ties"] = ties.tolist()
    print(json.dumps(out))
    """
)


def test_numba_cuda_kernel_under_the_cuda_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run(
        [sys.executable, "-c", CUDASIM_SCRIPT, json.dumps(TIE_X), json.dumps(TIE_CODEBOOK)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for dtype in ("float32", "float64"):
        assert result[dtype]["dtype"] == "int64"
        assert result[dtype]["found"] == result[dtype]["expected"]
        assert result[dtype]["distance_dtype"] == dtype
        assert result[dtype]["distance_error"] < (1e-5 if dtype == "float32" else 1e-12)
    assert result["ties"] == TIE_INDEX


def test_backend_choice_env_var_and_explicit_override(monkeypatch):
    called = []
    for name in ("torch", "numba"):
        real = codebook_module._SEARCH[name]
        monkeypatch.setitem(
            codebook_module._SEARCH, name, lambda *args, _n=name, _f=real: called.append(_n) or _f(*args)
        )
    x, codebook = torch.randn(10, 3), torch.randn(4, 3)
    monkeypatch.setenv(kernel_backend.ENV_VAR, "numba")
    nearest_code(x, codebook)
    nearest_code(x, codebook, backend="torch")  # an explicit backend wins over the env var
    assert called == ["numba", "torch"]
    monkeypatch.delenv(kernel_backend.ENV_VAR)
    expected_auto = "cpp" if kernel_backend.extension_available() else "numba"
    assert codebook_module._choose_backend("auto", torch.device("cpu"), 64 * 4) == expected_auto
    monkeypatch.setattr(kernel_backend, "extension_has_cuda", lambda: True)
    assert codebook_module._choose_backend("auto", torch.device("cuda"), 64 * 4) == "cuda"
    assert codebook_module._choose_backend("auto", torch.device("cuda"), 1000 * 4) == "torch"  # too wide for it
    with pytest.raises(ValueError, match="backend 'cpp' runs on CPU tensors only"):
        kernel_backend.check_backend_fits("cpp", torch.device("meta"), codebook_module.CODEBOOK_BACKENDS, "x")
    with pytest.raises(ValueError, match="backend 'cuda' needs cuda tensors"):
        nearest_code(x, codebook, backend="cuda")


RSS_SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    from galhpc.kernels import nearest_code
    torch.set_num_threads(1)
    backend = sys.argv[1]
    gen = torch.Generator().manual_seed(0)
    x, codebook = torch.randn(200_000, 8, generator=gen), torch.randn(512, 8, generator=gen)
    nearest_code(x[:100], codebook, backend=backend)  # compile / warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    index, distance = nearest_code(x, codebook, block_size=1024, backend=backend)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_peak_memory_is_far_below_the_n_by_k_matrix(backend):
    """Peak RSS growth of one search of 200,000 x 8 against 512 codes: an N x K float32 matrix
    (torch.cdist) adds 440 MB; the blocked search adds a block, the outputs (2.4 MB) and the
    N x D temporaries of the exact distance (2 x 6.4 MB)."""
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, backend], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    growth = int(done.stdout.split()[-1])
    assert growth < 40e6, f"{backend}: peak RSS grew by {growth / 1e6:.0f} MB"
