"""galhpc.formats: the names and paths writers and readers share, and the one any-order row read."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from galhpc.formats.catalog import SHARD_GLOB, Shard, manifest_path, shard_dir_for, shard_path
from galhpc.formats.hdf5 import open_h5_readonly, read_rows, read_rows_any_order
from galhpc.formats.store import label_path


def test_any_order_rows_are_read_once_in_increasing_order():
    data = np.arange(50) * 10
    asked: list[np.ndarray] = []

    def read_sorted(unique):
        asked.append(unique)
        return data[unique]

    rows = np.array([7, 3, 7, 49, 0, 3])
    assert np.array_equal(read_rows_any_order(read_sorted, rows), data[rows])  # oracle: numpy fancy indexing
    assert np.array_equal(asked[0], [0, 3, 7, 49])  # one read, sorted, each row once
    assert read_rows_any_order(read_sorted, np.array([], np.int64)).shape == (0,)


def test_read_rows_of_a_dataset_matches_numpy(tmp_path):
    values = np.random.default_rng(0).normal(size=(9000, 3)).astype(np.float32)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("x", data=values, chunks=(512, 3))
    rows = np.random.default_rng(1).integers(0, len(values), 5000)  # repeats, over two read blocks
    with open_h5_readonly(tmp_path / "a.h5") as f:
        assert np.array_equal(read_rows(f["x"], rows), values[rows])
        assert np.array_equal(read_rows(f["x"], np.arange(len(values))), values)


def test_a_file_open_with_locks_is_opened_again_read_only(tmp_path):
    path = tmp_path / "b.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with h5py.File(path, "r") as held, open_h5_readonly(path) as again:  # HDF5 refuses mixed locking flags
        assert list(again["x"][()]) == list(held["x"][()])


def test_catalogue_paths_go_both_ways():
    master = Path("/data/run1/synth.h5")
    shard_dir = shard_dir_for(master)
    assert shard_dir == Path("/data/run1/synth.h5.shards")
    assert shard_path(shard_dir, 17) == shard_dir / "000017.h5" and shard_path(shard_dir, 17).match(SHARD_GLOB)
    assert manifest_path(shard_dir) == shard_dir / "manifest.json"
    assert Shard(2, 10, 25).size == 15 and Shard(2, 10, 25) == Shard(2, 10, 25, None, 0)
    assert label_path("ra") == "labels/ra"
