"""galhpc.open_catalog on catalogues written by real galhpc-encode / galhpc-generate runs.

Oracle: the shard files read directly with h5py (row r of shard k = object k*S + r).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from astropy import units as u
from test_catalog_encode import write_store
from test_catalog_generate import make_checkpoint

from galhpc.cli.encode import main as encode_main
from galhpc.cli.generate import main as generate_main
from galhpc.cli.report import main as report_main
from galhpc.io.catalog import CatalogError, open_catalog
from galhpc.report import sampling

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
N_ENC, S_ENC = 600, 128  # encode: 5 shards
N_GEN, S_GEN = 150, 64  # generate: 3 shards


def _same(a, b) -> bool:
    """Equal arrays, NaN equal to NaN (a generate catalogue's mag_ab is NaN without a zero point)."""
    a, b = np.asarray(a), np.asarray(b)
    return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc" and b.dtype.kind in "fc")


def shard_oracle(out: Path, shard_size: int) -> dict[str, np.ndarray]:
    """Every column, concatenated from the shard files read with plain h5py."""
    files = sorted((out.parent / (out.name + ".shards")).glob("[0-9]*.h5"))
    columns: dict[str, list[np.ndarray]] = {}
    for k, path in enumerate(files):
        with h5py.File(path, "r") as f:
            assert (f.attrs["start"], f.attrs["stop"]) == (k * shard_size, k * shard_size + f["object_id"].shape[0])
            for name, ds in f.items():
                if ds.dtype.names is None:
                    columns.setdefault(name, []).append(ds[()])
    return {name: np.concatenate(parts) for name, parts in columns.items()}


@pytest.fixture(scope="module")
def catalogues(tmp_path_factory):
    root = tmp_path_factory.mktemp("iocat")
    store = write_store(root / "store.h5", n=N_ENC)
    vae = make_checkpoint(root / "vae.pt", "vae")
    av = make_checkpoint(root / "av.pt", "astrovader")
    common = ["--threads", "1", "--device", "cpu"]
    assert encode_main(["--checkpoint", str(vae), "--input", str(store), "--out", str(root / "clusters.h5"),
                        "--batch-size", "64", "--shard-size", str(S_ENC), "--gmm-components", "4",
                        "--gmm-fit-objects", "300", *common]) == 0
    assert generate_main(["--checkpoint", str(av), "--n", str(N_GEN), "--out", str(root / "synth.h5"),
                          "--batch-size", "32", "--shard-size", str(S_GEN), "--seed", "3", *common]) == 0
    return {"root": root, "clusters": root / "clusters.h5", "synth": root / "synth.h5", "av": av}


def copy_pair(master: Path, dest: Path) -> Path:
    shutil.copy(master, dest)
    shutil.copytree(master.with_name(master.name + ".shards"), dest.with_name(dest.name + ".shards"))
    return dest


def test_columns_and_random_rows_equal_the_shards(catalogues):
    for key, size in (("clusters", S_ENC), ("synth", S_GEN)):
        oracle = shard_oracle(catalogues[key], size)
        rng = np.random.default_rng(7)
        with open_catalog(catalogues[key]) as cat:
            assert set(cat.columns) == set(oracle) and len(cat) == len(oracle["object_id"])
            assert len(cat.shards) == -(-len(cat) // size)
            for name, expected in oracle.items():
                assert _same(cat.read(name), expected), name
                rows = rng.integers(0, len(cat), 300)  # any order, with repeats
                got = cat.read(name, rows)
                assert got.dtype == expected.dtype and _same(got, expected[rows]), name
                assert _same(cat.read(name, slice(5, 140, 3)), expected[5:140:3])
                blocks = list(cat.iter_blocks(name, 50))
                assert all(b.shape[0] <= 50 for _, b in blocks)
                assert [s for s, _ in blocks] == sorted(s for s, _ in blocks)
                assert _same(np.concatenate([b for _, b in blocks]), expected)
            with pytest.raises(IndexError):
                cat.read("object_id", [len(cat)])
            with pytest.raises(KeyError, match="no column"):
                cat.read("nope")
            assert cat.meta["kind"] == ("encode" if key == "clusters" else "generate")


def test_table_has_the_scalar_columns_with_descriptions(catalogues):
    oracle = shard_oracle(catalogues["clusters"], S_ENC)
    with open_catalog(catalogues["clusters"]) as cat:
        table = cat.table()
        assert set(table.colnames) == {"object_id", "component", "recon_mse"}
        for name in table.colnames:
            assert _same(table[name], oracle[name])
        assert table["component"].description and table["object_id"].unit is None
        assert table.meta["kind"] == "encode"
        sub = cat.table(["mu", "object_id"], rows=[3, 1])
        assert sub["mu"].shape == (2, oracle["mu"].shape[1])
        assert list(sub["object_id"]) == list(oracle["object_id"][[3, 1]])
        assert sub["mu"].unit == u.dimensionless_unscaled


def test_missing_shard_is_named_by_the_reader_and_the_report(catalogues, tmp_path, capsys):
    broken = copy_pair(catalogues["clusters"], tmp_path / "clusters.h5")
    (tmp_path / "clusters.h5.shards" / "000002.h5").unlink()
    with pytest.raises(CatalogError,
                       match=r"1 of 5 shard file\(s\) missing.*clusters\.h5\.shards/000002\.h5 \(missing\)"):
        open_catalog(broken)
    with pytest.raises(CatalogError, match="000002.h5"):  # the report's reader: no silent occupancies
        sampling.read_clusters(broken, 1000, np.random.default_rng(0))
    rc = report_main(["--checkpoint", str(catalogues["av"]), "--clusters", str(broken), "--out",
                      str(tmp_path / "report"), "--threads", "1"])
    assert rc == 1
    assert "000002.h5 (missing)" in capsys.readouterr().err


def test_master_fill_values_cannot_pass_for_data(catalogues, tmp_path):
    """A plain h5py reader of a master whose shard is gone sees -1 / NaN, not zeros."""
    broken = copy_pair(catalogues["clusters"], tmp_path / "clusters.h5")
    (tmp_path / "clusters.h5.shards" / "000001.h5").unlink()
    lost = slice(S_ENC, 2 * S_ENC)
    with h5py.File(broken, "r") as f:
        assert (f["object_id"][lost] == -1).all() and (f["component"][lost] == -1).all()
        assert np.isnan(f["mu"][lost]).all() and np.isnan(f["gamma"][lost]).all()
        table = f["catalog"][lost]
        assert (table["object_id"] == -1).all() and np.isnan(table["recon_mse"]).all()
        assert (f["object_id"][:S_ENC] >= 0).all()
    (tmp_path / "elsewhere").mkdir()
    renamed = copy_pair(catalogues["clusters"], tmp_path / "elsewhere" / "run1.h5")  # HDF5 wants clusters.h5.shards/
    with h5py.File(renamed, "r") as f:
        assert (f["object_id"][()] == -1).all()


def test_renamed_pair_reads_its_own_shards(catalogues, tmp_path):
    oracle = shard_oracle(catalogues["synth"], S_GEN)
    renamed = copy_pair(catalogues["synth"], tmp_path / "run1.h5")
    with open_catalog(renamed) as cat:
        assert all(s.path.parent == tmp_path / "run1.h5.shards" for s in cat.shards)
        for name in ("images", "z", "object_id"):
            assert _same(cat.read(name), oracle[name])
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(catalogues["synth"], other / "lonely.h5")  # a master without its shards
    with pytest.raises(CatalogError, match="3 of 3 shard file"):
        open_catalog(other / "lonely.h5")


def test_shards_of_another_run_or_of_other_rows_are_refused(catalogues, tmp_path):
    mixed = copy_pair(catalogues["synth"], tmp_path / "m.h5")
    manifest = tmp_path / "m.h5.shards" / "manifest.json"
    fingerprint = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**fingerprint, "seed": 99}))
    with pytest.raises(CatalogError, match="belong to another run"):
        open_catalog(mixed)
    manifest.write_text(json.dumps(fingerprint))
    shards = tmp_path / "m.h5.shards"
    shutil.copy(shards / "000000.h5", shards / "000001.h5")  # right size, wrong objects
    with pytest.raises(CatalogError, match=r"000001\.h5 \(holds objects 0\.\.63, the master expects 64\.\.127\)"):
        open_catalog(mixed)
    (shards / "000001.h5").write_bytes(b"not hdf5")
    with pytest.raises(CatalogError, match=r"000001\.h5 \(unreadable"):
        open_catalog(mixed)


def test_plain_file_of_datasets_is_a_catalogue_of_one_shard(tmp_path):
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["object_id"] = np.arange(10, dtype=np.int64)
        f["mu"] = np.arange(30, dtype=np.float32).reshape(10, 3)
    with open_catalog(tmp_path / "plain.h5") as cat:
        assert len(cat) == 10 and cat.columns == ["mu", "object_id"] and len(cat.shards) == 1
        assert _same(cat.read("mu", [9, 0]), [[27, 28, 29], [0, 1, 2]])
    (tmp_path / "x.h5").write_bytes(b"junk")
    with pytest.raises(CatalogError, match="not a readable HDF5 file"):
        open_catalog(tmp_path / "x.h5")


def test_more_shards_than_the_open_file_limit(catalogues, tmp_path):
    """Under `ulimit -n 64` (soft = hard, so it cannot be raised) a catalogue of 100 shards
    reads every row correctly, while the VDS master loses rows (to fill values, not zeros)."""
    out = tmp_path / "many.h5"
    assert generate_main(["--checkpoint", str(catalogues["av"]), "--n", "300", "--out", str(out), "--batch-size", "3",
                          "--shard-size", "3", "--seed", "1", "--threads", "1", "--device", "cpu"]) == 0
    oracle = shard_oracle(out, 3)
    np.savez(tmp_path / "oracle.npz", **oracle)
    script = textwrap.dedent(f"""
        import resource, sys, h5py, numpy as np
        from galhpc.io.catalog import open_catalog
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (64, 64)
        oracle = np.load({str(tmp_path / 'oracle.npz')!r})
        with open_catalog({str(out)!r}) as cat:
            assert len(cat.shards) == 100, len(cat.shards)
            rows = np.random.default_rng(0).permutation(len(cat))
            for name in oracle.files:
                assert np.array_equal(cat.read(name), oracle[name], equal_nan=oracle[name].dtype.kind == "f"), name
                assert np.array_equal(cat.read(name, rows), oracle[name][rows],
                                      equal_nan=oracle[name].dtype.kind == "f"), name
            print("open files at most", cat._pool.size)
        with h5py.File({str(out)!r}, "r") as f:
            ids = f["object_id"][()]
        print("master rows lost", int((ids == -1).sum()), "zeros", int((ids[1:] == 0).sum()))
    """)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = subprocess.run(["prlimit", "--nofile=64:64", sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lost = int(run.stdout.split("master rows lost ")[1].split()[0])
    assert lost > 0 and "zeros 0" in run.stdout, run.stdout


def test_each_shard_file_is_opened_once_and_checked_once(catalogues, tmp_path, monkeypatch):
    """A whole-column read opens each shard once (checks included); a shard beyond the files
    the pool keeps open is checked when first read, and a bad one is still named."""
    import galhpc.io.catalog as catalog_module

    opened = []
    real_open = catalog_module._open_fid
    monkeypatch.setattr(catalog_module, "_open_fid", lambda path: opened.append(Path(path).name) or real_open(path))
    oracle = shard_oracle(catalogues["clusters"], S_ENC)
    with open_catalog(catalogues["clusters"], max_open=2) as cat:
        assert _same(cat.read("object_id"), oracle["object_id"])
    assert sorted(opened) == [f"{k:06d}.h5" for k in range(5)]  # 5 shards, each opened once
    bad = copy_pair(catalogues["clusters"], tmp_path / "b.h5")
    shutil.copy(tmp_path / "b.h5.shards" / "000000.h5", tmp_path / "b.h5.shards" / "000003.h5")
    with open_catalog(bad, max_open=2) as cat:  # shards 0, 1 checked at open
        assert _same(cat.read("mu", [5, 200]), oracle["mu"][[5, 200]])
        with pytest.raises(CatalogError, match=r"000003\.h5 cannot supply its rows \(holds objects 0\.\.127"):
            cat.read("object_id")
    with pytest.raises(CatalogError, match=r"000003\.h5 \(holds objects"):
        open_catalog(bad)  # within the default pool: found at open


def test_to_pandas_splits_vectors_and_matches_the_shards(catalogues):
    oracle = shard_oracle(catalogues["clusters"], S_ENC)
    with open_catalog(catalogues["clusters"]) as cat:
        df = cat.to_pandas(["object_id", "mu"], rows=[7, 3, 500])
    L = oracle["mu"].shape[1]
    assert list(df.columns) == ["object_id", *(f"mu_{k}" for k in range(L))]
    assert _same(df["object_id"].to_numpy(), oracle["object_id"][[7, 3, 500]])
    assert _same(df[[f"mu_{k}" for k in range(L)]].to_numpy(), oracle["mu"][[7, 3, 500]])


def test_iter_blocks_shares_the_shards_between_ranks(catalogues):
    oracle = shard_oracle(catalogues["clusters"], S_ENC)["object_id"]
    with open_catalog(catalogues["clusters"]) as cat:
        shares = [dict(cat.iter_blocks("object_id", 100, rank=r, n_ranks=2)) for r in range(2)]
        with pytest.raises(ValueError, match="rank"):
            next(cat.iter_blocks("object_id", rank=2, n_ranks=2))
    assert not set(shares[0]) & set(shares[1])
    starts = {**shares[0], **shares[1]}
    assert _same(np.concatenate([starts[k] for k in sorted(starts)]), oracle)
    assert {k // S_ENC for k in shares[1]} == {1, 3}  # shards k % 2 == 1


def test_the_masters_small_groups_are_read_through_the_catalog(catalogues):
    """`Catalog.groups` / `read_group` (the post-hoc GMM of galhpc-encode): oracle, the master read with h5py."""
    with h5py.File(catalogues["clusters"], "r") as f:
        expected = {k: v[()] for k, v in f["gmm"].items()}
    with open_catalog(catalogues["clusters"]) as cat:
        assert cat.groups == ["gmm"]
        got = cat.read_group("gmm")
        assert set(got) == set(expected) and all(np.array_equal(got[k], expected[k]) for k in expected)
        with pytest.raises(KeyError, match="no group 'meta'"):
            cat.read_group("meta")
    with open_catalog(catalogues["synth"]) as cat:
        assert cat.groups == []
