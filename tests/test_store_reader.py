"""The accessors every catalogue stage reads a store and a catalogue's /meta through (oracle: h5py writes)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from galhpc.data.store import StoreReader, prep_record, read_dataset
from galhpc.formats.catalog import FINGERPRINT_ATTR, META
from galhpc.formats.kinds import KIND_ATTR, STORE
from galhpc.io.catalog import open_catalog, read_meta
from galhpc.io.catalog_writer import read_master_fingerprint
from galhpc.runtime.errors import CatalogError, DataError

PREP = "prep:\n  image_size: 8\n  recipe: [flux]\n  sources:\n    - kind: galsim\n      passthrough: [MAG_R]\n"


def write_store(path, config=PREP):
    n = 5
    with h5py.File(path, "w") as f:
        f.attrs[KIND_ATTR] = STORE
        if config is not None:
            f.attrs["config"] = config
        f.create_dataset("images", data=np.zeros((n, 8, 8), np.float32))
        f.create_dataset("object_id", data=np.arange(n, dtype=np.int64))
        f.create_dataset("labels/ra", data=np.linspace(0, 1, n)).attrs["unit"] = b"deg"
        f.create_dataset("labels/kind", data=np.array([b"g"] * n, "S4"))
        f.create_dataset("sigma", data=np.ones((n, 8, 8), np.float32), chunks=(1, 8, 8))
        f.create_dataset("psf", data=np.ones((3, 3), np.float32))
    return path


def test_store_reader_accessors(tmp_path):
    reader = StoreReader(write_store(tmp_path / "s.h5"))
    try:
        assert reader.has("labels/ra") and reader.has("labels") and not reader.has("labels/dec")
        assert reader.layout("sigma") == ((5, 8, 8), np.dtype(np.float32))
        assert reader.layout("labels") is None and reader.layout("mask") is None  # a group; nothing
        assert reader.label_names == ["kind", "ra"]
        assert reader.label_unit("ra") == "deg" and reader.label_unit("kind") is None
        assert reader.columns == {"images", "object_id", "ra", "kind", "sigma", "psf"}
        prep = reader.prep
        assert prep.recipe == ["flux"] and prep.sources[0].passthrough == ["MAG_R"]
        assert reader.prep is prep  # parsed once
    finally:
        reader.close()
    assert np.array_equal(read_dataset(tmp_path / "s.h5", "psf"), np.ones((3, 3)))
    assert read_dataset(tmp_path / "s.h5", "nothing") is None


def test_recorded_prep_none_unreadable_and_as_written(tmp_path):
    reader = StoreReader(write_store(tmp_path / "none.h5", config=None))
    assert reader.prep is None
    reader.close()
    reader = StoreReader(write_store(tmp_path / "bad.h5", config="prep:\n  no_such_field: 1\n"))
    with pytest.raises(DataError, match="bad.h5: its prep config"):
        _ = reader.prep
    reader.close()
    assert prep_record(PREP) == {"image_size": 8, "recipe": ["flux"],
                                 "sources": [{"kind": "galsim", "passthrough": ["MAG_R"]}]}  # no defaults added
    assert prep_record(None) == {} and prep_record(": [") == {}


def test_read_meta_is_what_the_catalogue_reader_and_resume_see(tiny_catalog, tmp_path):
    meta = read_meta(tiny_catalog)
    with open_catalog(tiny_catalog) as cat:
        assert meta == cat.meta
    assert read_master_fingerprint(tiny_catalog) == json.loads(meta[FINGERPRINT_ATTR])
    with pytest.raises(CatalogError, match="catalogue not found"):
        read_meta(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not HDF5")
    with pytest.raises(CatalogError, match="not a readable HDF5 file"):
        read_meta(tmp_path / "text.h5")
    with h5py.File(tmp_path / "bare.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(CatalogError, match=f"has no /{META}"):
        read_meta(tmp_path / "bare.h5")
    assert read_master_fingerprint(tmp_path / "bare.h5") is None and read_master_fingerprint(tmp_path) is None
