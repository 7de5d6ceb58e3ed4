"""Exact top-k search: kernel and search core against brute force, ties by row, blocking invariance."""

import numpy as np
import pytest
import torch

from galhpc.kernels import nearest_code
from galhpc.runtime.world import World
from galhpc.search.topk import NO_ROW, TopK, merge, reduce_ranks, search_blocks

torch.set_num_threads(1)


def brute_force(queries, data, k, exclude=None):
    """Full Q x N float64 squared distances (summed over features in order), sorted by (distance, row)."""
    q, x = np.asarray(queries, np.float64), np.asarray(data, np.float64)
    d = np.zeros((len(q), len(x)))
    for j in range(q.shape[1]):
        d += (q[:, j, None] - x[None, :, j]) ** 2
    if exclude is not None:
        d[np.arange(len(q))[exclude >= 0], exclude[exclude >= 0]] = np.inf
    rows = np.broadcast_to(np.arange(len(x)), d.shape)
    order = np.lexsort((rows, d), axis=1)[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


def with_ties(n=900, dim=5, seed=0):
    """Data with exact duplicates and equidistant points (integer grid), so ties decide the order."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, size=(n, dim)).astype(np.float32)  # many exact ties of squared distance
    x[100:110] = x[5]  # duplicates of one row
    q = np.concatenate([x[[5, 17]], rng.integers(-3, 4, size=(6, dim)).astype(np.float32)])
    return q, x


def blocks_of(x, size):
    return ((lo, x[lo:lo + size]) for lo in range(0, len(x), size))


@pytest.mark.parametrize("k", [1, 7, 40])
@pytest.mark.parametrize("block", [1, 64, 1000])
def test_search_equals_brute_force_with_ties_by_row(k, block):
    q, x = with_ties()
    rows, sq = brute_force(q, x, k)
    found = search_blocks(q, blocks_of(x, block), k, block_elements=97)
    np.testing.assert_array_equal(found.rows, rows)
    np.testing.assert_array_equal(found.sq_distance, sq)


def test_random_float_data_and_exclusion_of_own_row():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 20)).astype(np.float32)
    own = np.array([0, 1234, 2999, -1])
    q = np.concatenate([x[own[:3]], rng.standard_normal((1, 20)).astype(np.float32)])
    rows, sq = brute_force(q, x, 10, exclude=own)
    found = search_blocks(q, blocks_of(x, 512), 10, exclude=own)
    np.testing.assert_array_equal(found.rows, rows)
    np.testing.assert_allclose(found.sq_distance, sq, rtol=1e-12)
    assert not (found.rows == own[:, None]).any()


def test_fewer_rows_than_k_leaves_empty_slots():
    x = np.eye(3, dtype=np.float32)
    found = search_blocks(x[:1], blocks_of(x, 2), 5)
    assert found.rows[0].tolist() == [0, 1, 2, NO_ROW, NO_ROW]
    assert np.isinf(found.sq_distance[0, 3:]).all()


def test_shards_split_over_fake_ranks_merge_to_the_same_answer():
    q, x = with_ties(seed=4)
    whole = search_blocks(q, blocks_of(x, 128), 12)
    shards = [(lo, x[lo:lo + 100]) for lo in range(0, len(x), 100)]
    parts = [search_blocks(q, shards[r::3], 12) for r in range(3)]

    class Gathered(World):
        def allgather_object(self, value):
            return [(p.rows, p.sq_distance) for p in parts]

    merged = reduce_ranks(parts[0], Gathered(), 12)
    np.testing.assert_array_equal(merged.rows, whole.rows)
    np.testing.assert_array_equal(merged.sq_distance, whole.sq_distance)


def test_kernel_k_nearest_matches_nearest_code_and_brute_force():
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((200, 8)))
    codes = torch.from_numpy(rng.standard_normal((500, 8)))
    codes[7] = codes[3]
    index, sq = nearest_code(x, codes, k=4, block_size=33)
    rows, d = brute_force(x.numpy(), codes.numpy(), 4)
    np.testing.assert_array_equal(index.numpy(), rows)
    np.testing.assert_allclose(sq.numpy(), d, rtol=1e-12)
    one, _ = nearest_code(x, codes)
    np.testing.assert_array_equal(one.numpy(), index[:, 0].numpy())


def test_kernel_float32_candidates_survive_rounding():
    """Near-ties closer than float32 rounding of the expansion still come out in exact order."""
    rng = np.random.default_rng(6)
    base = rng.standard_normal(16).astype(np.float32) * 100
    codes = base + rng.standard_normal((400, 16)).astype(np.float32) * 1e-2
    x = torch.from_numpy(base[None])
    index, sq = nearest_code(x, torch.from_numpy(codes), k=5)
    exact = ((codes.astype(np.float64) - base.astype(np.float64)) ** 2).sum(1)
    assert index[0].tolist() == np.argsort(exact, kind="stable")[:5].tolist()


def test_bad_arguments_are_refused():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        nearest_code(x, x, k=0)
    with pytest.raises(ValueError, match="torch backend only"):
        nearest_code(x, x, k=2, backend="numba")
    with pytest.raises(ValueError, match="features"):
        search_blocks(np.zeros((1, 3)), [(0, np.zeros((4, 2)))], 2)


def test_merge_orders_by_distance_then_row():
    a = TopK(np.array([[5, 2]]), np.array([[1.0, 2.0]]))
    b = TopK(np.array([[1, 9]]), np.array([[1.0, 0.5]]))
    m = merge(a, b, 3)
    assert m.rows.tolist() == [[9, 1, 5]]
