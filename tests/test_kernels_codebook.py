"""nearest_code against brute force and faiss; ties; memory stays O(block x K)."""

import faiss
import numpy as np
import pytest
import torch

from galhpc.kernels import nearest_code
from galhpc.kernels.codebook import torch_search

torch.set_num_threads(1)
faiss.omp_set_num_threads(1)


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


@pytest.mark.parametrize("n,k,d,block", [(1000, 37, 8, 100), (999, 512, 64, 128), (50, 16, 3, 1), (7, 5, 2, 1000), (300, 1, 4, None)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_brute_force(n, k, d, block, dtype):
    gen = torch.Generator().manual_seed(n + k)
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    codebook = torch.randn(k, d, generator=gen, dtype=dtype)
    index, distance = nearest_code(x, codebook, block_size=block)
    assert index.dtype == torch.int64 and index.shape == (n,)
    assert distance.dtype == dtype and distance.shape == (n,)
    assert_nearest(index, distance, x, codebook, rtol=1e-5 if dtype == torch.float32 else 1e-12)


def test_agrees_with_faiss_index_flat_l2():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5000, 64)).astype(np.float32)
    codebook = rng.normal(size=(512, 64)).astype(np.float32)
    flat = faiss.IndexFlatL2(64)
    flat.add(codebook)
    faiss_distance, faiss_index = flat.search(x, 1)
    index, distance = nearest_code(torch.from_numpy(x), torch.from_numpy(codebook), block_size=700)
    agree = index.numpy() == faiss_index[:, 0]
    assert agree.mean() > 0.999  # the rest are float-rounding near-ties: check those by distance
    np.testing.assert_allclose(distance.numpy(), faiss_distance[:, 0], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("block", [1, 2, 3, 1000])
def test_ties_go_to_the_lowest_index_like_argmin(block):
    # Small integers: every distance is exact in float32 whatever the summation order,
    # so ties are true ties.  Codes 1 and 4 are duplicates; (0, -1) is equidistant from 0, 1, 2, 4
    # and (3, 3) from 1, 3, 4.
    codebook = torch.tensor([[2.0, 0.0], [1.0, 1.0], [-2.0, 0.0], [5.0, 5.0], [1.0, 1.0], [0.0, 3.0]])
    x = torch.tensor([[0.0, -1.0], [1.0, 1.0], [3.0, 3.0], [1.0, 2.0], [0.0, 2.0], [7.0, 7.0]])
    expected = torch.cdist(x, codebook).pow(2).argmin(dim=1)
    index, distance = nearest_code(x, codebook, block_size=block)
    assert torch.equal(index, expected)
    assert index.tolist() == [0, 1, 1, 1, 5, 3]
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
    assert largest <= max(block * k * 4, n * 8)  # one score block, or the index output itself
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
