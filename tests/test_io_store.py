"""galhpc.io.store.Store: the one reader of a training store outside training (oracle: h5py reads)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from galhpc.formats.kinds import KIND_ATTR, STORE
from galhpc.io.store import open_store


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(3)
    n = 300
    path = tmp_path / "store.h5"
    with h5py.File(path, "w") as f:
        f.attrs[KIND_ATTR] = STORE
        f.attrs["noise_sigma"] = 0.5
        f.create_dataset("images", data=rng.normal(size=(n, 6, 6)).astype(np.float32), chunks=(64, 6, 6))
        f.create_dataset("object_id", data=np.arange(n, dtype=np.int64) * 7 + 1, chunks=(64,))
        f.create_dataset("labels/ra", data=rng.uniform(0, 360, n), chunks=(64,))
        f.create_dataset("labels/kind", data=np.array([b"gal", b"star"] * (n // 2), "S8"), chunks=(64,))
        f.create_dataset("truth", data=rng.normal(size=(n, 2)).astype(np.float32), chunks=(64, 2))
        f.create_dataset("psf", data=np.ones((3, 3), np.float32))  # shared by every image
    return path


def test_read_columns_are_row_aligned_in_any_order(store):
    rows = np.array([250, 3, 3, 0, 199])
    with h5py.File(store, "r") as f, open_store(store) as reader:
        got = reader.read_columns(["images", "object_id", "ra", "truth", "psf"], rows)
        assert np.array_equal(got["images"], f["images"][()][rows])
        assert np.array_equal(got["object_id"], f["object_id"][()][rows])
        assert np.array_equal(got["ra"], f["labels/ra"][()][rows])
        assert np.array_equal(got["truth"], f["truth"][()][rows])
        assert got["psf"].shape == (5, 3, 3) and np.array_equal(got["psf"][4], f["psf"][()])
        assert np.array_equal(reader.read_columns(["ra"])["ra"], f["labels/ra"][()])
        assert reader.locate("ra") == ("labels/ra", True) and reader.locate("psf") == ("psf", False)
        assert "psf" in reader and "nope" not in reader and reader.attrs["noise_sigma"] == 0.5
        with pytest.raises(KeyError, match="no column 'nope'"):
            reader.read_columns(["nope"], rows)
        with pytest.raises(IndexError):
            reader.read_columns(["ra"], [300])


def test_iter_column_streams_every_row_once(store):
    with h5py.File(store, "r") as f, open_store(store) as reader:
        blocks = list(reader.iter_column("object_id", 128))
        assert [start for start, _ in blocks] == [0, 128, 256]
        assert np.array_equal(np.concatenate([b for _, b in blocks]), f["object_id"][()])
