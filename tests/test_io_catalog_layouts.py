"""open_catalog on random shard layouts, against brute force.

Each layout: a master of HDF5 virtual datasets over 1-9 shard files of random sizes, some
sources mapped from an offset into a longer source dataset, five columns of different
dtypes and row shapes.  Oracles: the arrays the test generated (brute force) and h5py's
own read of the virtual master (every source present).  Every read path is exercised:
whole columns, slices, random rows with repeats, boolean masks, blocks per rank, a file
pool smaller than the shard count (the sweep path) and slabs of a few rows (the
gathering path).
"""

import h5py
import numpy as np
import pytest

import galhpc.io.catalog as catalog_module
from galhpc.io.catalog import CatalogError, open_catalog
from galhpc.io.catalog_writer import catalogue_attrs

COLUMNS = {  # name: (row shape, dtype)
    "object_id": ((), np.int64),
    "mu": ((5,), np.float32),
    "images": ((4, 3), np.float16),
    "name": ((), "S6"),
    "flag": ((), np.uint8),
}


def random_values(rng, n, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "S":
        return np.array([f"g{i:05d}".encode() for i in rng.integers(0, 99999, n)], dtype)
    if dtype.kind in "iu":
        return rng.integers(0, np.iinfo(dtype).max, (n, *shape), endpoint=True).astype(dtype)
    return rng.normal(0, 100, (n, *shape)).astype(dtype)


def write_layout(root, seed):
    """A master + shards of a random layout; returns (master path, {column: all N rows})."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 40, rng.integers(1, 10))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    n = int(starts[-1])
    truth = {name: random_values(rng, n, shape, dtype) for name, (shape, dtype) in COLUMNS.items()}
    master = root / f"cat{seed}.h5"
    shard_dir = root / f"cat{seed}.h5.shards"
    shard_dir.mkdir()
    layouts = {name: h5py.VirtualLayout((n, *shape), dtype) for name, (shape, dtype) in COLUMNS.items()}
    for k, (lo, hi) in enumerate(zip(starts[:-1], starts[1:], strict=False)):
        offset = int(rng.integers(1, 7)) if rng.random() < 0.4 else 0  # rows before ours in the source
        extra = int(rng.integers(0, 5)) if offset else 0  # and after
        name = f"{k:06d}.h5"
        with h5py.File(shard_dir / name, "w") as f:
            if not offset:  # a galhpc shard records its objects
                f.attrs.update({"start": int(lo), "stop": int(hi)})
            for col, (shape, dtype) in COLUMNS.items():
                rows = np.concatenate([random_values(rng, offset, shape, dtype), truth[col][lo:hi],
                                       random_values(rng, extra, shape, dtype)])
                f.create_dataset(col, data=rows, chunks=True if rng.random() < 0.5 else None)
                source = h5py.VirtualSource(f"{shard_dir.name}/{name}", col, shape=rows.shape, dtype=dtype)
                layouts[col][lo:hi] = source[offset:offset + hi - lo] if offset or extra else source
    with h5py.File(master, "w") as f:
        f.attrs.update(catalogue_attrs("generate"))
        f.create_group("meta").attrs["n_objects"] = n
        for col, layout in layouts.items():
            f.create_virtual_dataset(col, layout)
    return master, truth


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@pytest.mark.parametrize("seed", range(8))
def test_every_read_equals_brute_force_on_a_random_layout(tmp_path, monkeypatch, seed):
    master, truth = write_layout(tmp_path, seed)
    n = len(truth["object_id"])
    with h5py.File(master, "r") as f:  # the second oracle: HDF5's own virtual dataset read
        for col, values in truth.items():
            assert same(f[col][()], values), col
    rng = np.random.default_rng(100 + seed)
    if seed % 2:
        monkeypatch.setattr(catalog_module, "SLAB_BYTES", int(rng.integers(1, 200)))  # slabs of a few rows
    max_open = [1, 2, 64][seed % 3]
    with open_catalog(master, max_open=max_open) as cat:
        assert len(cat) == n and cat.columns == sorted(COLUMNS)
        for col, values in truth.items():
            assert cat.shape(col) == values.shape and cat.dtype(col) == values.dtype
            assert same(cat.read(col), values), col
            rows = rng.integers(0, n, int(rng.integers(1, 3 * n)))  # any order, repeats
            assert same(cat.read(col, rows), values[rows]), col
            uniq = np.unique(rows)
            assert same(cat.read(col, uniq), values[uniq]), col
            assert same(cat.read(col, []), values[:0]), col
            mask = rng.random(n) < 0.3
            assert same(cat.read(col, mask), values[mask]), col
            a, b = sorted(rng.integers(0, n + 1, 2))
            step = int(rng.integers(1, 4))
            assert same(cat.read(col, slice(a, b, step)), values[a:b:step]), col
            assert same(cat.read(col, slice(a, b)), values[a:b]), col
            block = int(rng.integers(1, 30))
            parts = {}
            for rank in range(2):
                for start, part in cat.iter_blocks(col, block, rank=rank, n_ranks=2):
                    assert start not in parts and 0 < len(part) <= block
                    parts[start] = part
            assert same(np.concatenate([parts[k] for k in sorted(parts)]), values), col
            assert len(cat._pool) <= cat._pool.size
        shards = {s.path: (s.start, s.stop) for s in cat.shards}
        for shard, got in cat.iter_shards(["mu", "name"]):
            assert shards[shard.path] == (shard.start, shard.stop)
            assert same(got["mu"], truth["mu"][shard.start:shard.stop])
            assert same(got["name"], truth["name"][shard.start:shard.stop])


def test_a_shard_damaged_after_opening_is_named_when_read(tmp_path):
    """Every read path reports a shard that became unreadable, by its file name."""
    master, truth = write_layout(tmp_path, 3)  # shards 0.. of this layout; the last one is damaged
    shard_dir = master.with_name(master.name + ".shards")
    last = sorted(shard_dir.glob("*.h5"))[-1]
    with open_catalog(master, max_open=1) as cat:
        assert same(cat.read("mu", [0]), truth["mu"][[0]])
        last.write_bytes(b"no longer hdf5")
        with pytest.raises(CatalogError, match=last.name):
            cat.read("images")
        with pytest.raises(CatalogError, match=last.name):
            cat.read("mu", [len(cat) - 1])
