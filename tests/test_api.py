"""The public API: lazy `import galhpc`, load_model, open_store (against h5py), the kernels re-exported."""

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import galhpc
from galhpc.data.sources import DataError

REPO = Path(__file__).resolve().parents[1]


def test_import_is_light_and_all_names_resolve():
    code = ("import sys, galhpc\n"
            "heavy = [m for m in ('torch', 'h5py', 'mpi4py', 'horovod', 'galhpc._ext') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "for name in galhpc.__all__:\n    getattr(galhpc, name)\n"
            "print(sorted(galhpc.__all__))")
    run = subprocess.run([sys.executable, "-c", code], cwd="/", env={"PYTHONPATH": str(REPO)}, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "open_catalog" in run.stdout and "nearest_code" in run.stdout
    with pytest.raises(AttributeError):
        _ = galhpc.no_such_name


def test_load_model_gives_the_checkpoint_model_in_eval_mode(tiny_checkpoint):
    model = galhpc.load_model(tiny_checkpoint)
    assert not model.training and model.name == "vae"
    from galhpc import api, checkpoint

    assert galhpc.load_model is api.load_model is checkpoint.load_model  # one load_model
    reference = checkpoint.read_checkpoint(tiny_checkpoint)  # the same weights, read independently
    state = model.state_dict()
    assert set(state) == set(reference["model_state"])
    assert all(torch.equal(state[k], reference["model_state"][k]) for k in state)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert model.encode(x).mu.shape[0] == 2
        assert model.sample(3, torch.Generator().manual_seed(0)).images.shape == (3, 1, 32, 32)


def test_open_store_reads_rows_in_the_order_asked(tiny_store, tmp_path):
    path = shutil.copy(tiny_store, tmp_path / "store.h5")  # a copy, given a string column
    with h5py.File(path, "a") as f:
        n, ids = len(f["images"]), f["object_id"][()]
        f["labels/name"] = np.array([f"g{i}".encode() for i in range(n)], dtype="S64")
    rows = [n - 1, 3, 3, 17]
    with h5py.File(path) as f, galhpc.open_store(path) as store:  # already open with locks: still opens
        assert len(store) == n and {"images", "object_id", "snr", "name"} <= set(store.columns)
        assert np.array_equal(store.read("images", rows), f["images"][()][rows])
        assert np.array_equal(store.read("snr", rows), f["labels/snr"][()][rows])
        table = store.table(rows=[1, 0])
        assert list(table["object_id"]) == [ids[1], ids[0]] and list(table["name"]) == ["g1", "g0"]
        with pytest.raises(KeyError, match="no per-object column"):
            store.read("nope")
        with pytest.raises(IndexError):
            store.read("images", [n])
    with pytest.raises(DataError, match="not found"):
        galhpc.open_store(tmp_path / "missing.h5")


def test_kernels_are_the_kernels():
    from galhpc import kernels

    assert galhpc.convolve_psf is kernels.convolve_psf and galhpc.nearest_code is kernels.nearest_code
