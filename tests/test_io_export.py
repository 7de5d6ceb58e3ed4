"""galhpc-export: FITS binary table and Parquet of a real galhpc-encode catalogue, read back
with astropy and pyarrow and compared with the shard files."""

import shutil

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from conftest import TINY_N, TINY_SHARD_SIZE

from galhpc.cli.export import main as export_main
from galhpc.io.catalog import Catalog, open_catalog
from galhpc.io.export import export_fits, export_parquet

N, S = TINY_N, TINY_SHARD_SIZE  # the shared tiny catalogue: 4 shards, the last one short
SHARDS = -(-N // S)


@pytest.fixture(scope="module")
def clusters(tiny_catalog):
    out = tiny_catalog
    shards = sorted(out.with_name(out.name + ".shards").glob("[0-9]*.h5"))
    oracle = {}
    for path in shards:
        with h5py.File(path) as f:
            for name, ds in f.items():
                if ds.dtype.names is None:
                    oracle.setdefault(name, []).append(ds[()])
    return out, {k: np.concatenate(v) for k, v in oracle.items()}


def test_fits_table_reads_back_in_astropy_with_ttype_comments(clusters, tmp_path):
    out, oracle = clusters
    assert export_main([str(out), "--fits", str(tmp_path / "c.fits")]) == 0
    table = Table.read(tmp_path / "c.fits", hdu="CATALOG")
    assert set(table.colnames) == {"object_id", "component", "recon_mse", "mu", "logvar", "gamma"}
    assert len(table) == N
    for name in table.colnames:
        assert np.array_equal(np.asarray(table[name]), oracle[name]), name
        assert table[name].shape == oracle[name].shape
    header = fits.getheader(tmp_path / "c.fits", "CATALOG")
    ttypes = {header[f"TTYPE{i}"]: i for i in range(1, header["TFIELDS"] + 1)}
    i = ttypes["gamma"]
    assert header[f"TFORM{i}"] == f"{oracle['gamma'].shape[1]}E"
    assert "responsibilities" in header[f"TCOMM{i}"] and header.comments[f"TTYPE{i}"]
    assert header["KIND"] == "encode" and len(header["CKPTSHA"]) == 64
    assert all(len(card.image) == 80 for card in header.cards)  # no CONTINUE cards
    assert export_main([str(out), "--fits", str(tmp_path / "c.fits")]) == 1  # exists: refused


def test_parquet_is_one_voparquet_file_with_units_that_astropy_and_pyarrow_read(clusters, tmp_path):
    out, oracle = clusters
    assert export_main([str(out), "--parquet", str(tmp_path / "c.parquet"), "--columns", "object_id,mu,component"]) == 0
    meta = pq.ParquetFile(tmp_path / "c.parquet").metadata
    assert meta.num_rows == N and meta.num_row_groups == SHARDS == 4
    assert meta.row_group(SHARDS - 1).num_rows == N - (SHARDS - 1) * S < S
    table = pq.read_table(tmp_path / "c.parquet")
    assert table.column_names == ["object_id", "mu", "component"]
    assert np.array_equal(table["object_id"].to_numpy(), oracle["object_id"])
    mu = np.stack(table["mu"].to_numpy(zero_copy_only=False))
    assert mu.dtype == np.float32 and np.array_equal(mu, oracle["mu"])
    assert np.array_equal(table["component"].to_numpy(), oracle["component"])
    assert b"posterior mean" in table.schema.field("mu").metadata[b"description"]
    assert b'"kind": "encode"' in table.schema.metadata[b"galhpc"]
    assert table.schema.metadata[b"IVOA.VOTable-Parquet.version"] == b"1.0"
    # the VOParquet VOTable, as astropy's own reader takes it: units and descriptions per column
    vo = Table.read(tmp_path / "c.parquet", format="parquet.votable")
    assert "posterior mean" in vo["mu"].description
    assert vo["object_id"].unit is None and "object id" in vo["object_id"].description
    assert np.array_equal(np.asarray(vo["mu"]), oracle["mu"]) and len(vo) == N


def test_parquet_split_vectors_and_sky_units_in_fits_and_voparquet(tmp_path):
    with h5py.File(tmp_path / "sky.h5", "w") as f:
        f["object_id"] = np.arange(5)
        f["ra"] = np.linspace(10, 11, 5)
        f["dec"] = np.linspace(-5, -4, 5)
        f["separation"] = np.ones(5, np.float32)
        f["mu"] = np.arange(15, dtype=np.float32).reshape(5, 3)
    with open_catalog(tmp_path / "sky.h5") as cat:
        export_parquet(cat, tmp_path / "s.parquet", split_vectors=True)
        export_fits(cat, tmp_path / "s.fits")
    vo = Table.read(tmp_path / "s.parquet", format="parquet.votable")
    assert vo.colnames == ["dec", "mu_0", "mu_1", "mu_2", "object_id", "ra", "separation"]  # HDF5 name order
    assert vo["ra"].unit == u.deg and vo["dec"].unit == u.deg and vo["separation"].unit == u.arcsec
    assert np.array_equal(vo["mu_2"], [2, 5, 8, 11, 14]) and "element 2" in vo["mu_2"].description
    assert "right ascension" in vo["ra"].description
    fitstab = Table.read(tmp_path / "s.fits", hdu="CATALOG")
    assert fitstab["ra"].unit == u.deg and fitstab["separation"].unit == u.arcsec
    header = fits.getheader(tmp_path / "s.fits", "CATALOG")
    assert header["TTYPE1"] == "dec" and "declination" in header["TCOMM1"] and header["TUNIT1"] == "deg"


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.uint32, np.float16])
def test_types_votable_and_fits_lack_are_widened_in_both_exports(tmp_path, dtype):
    """A passthrough column of a type VOTable has no datatype for (the HDF catalogue's int8
    `held_out`) is written, not a TypeError half-way through the export; values kept."""
    values = np.array([0, 1, 1, 0, 1], dtype)
    with h5py.File(tmp_path / "cat.h5", "w") as f:
        f["object_id"] = np.arange(5)
        f["held_out"] = values
    with open_catalog(tmp_path / "cat.h5") as cat:
        export_parquet(cat, tmp_path / "c.parquet")
        export_fits(cat, tmp_path / "c.fits")
    for table in (Table.read(tmp_path / "c.parquet", format="parquet.votable"), Table.read(tmp_path / "c.fits")):
        assert np.array_equal(np.asarray(table["held_out"]), values)
        assert np.dtype(table["held_out"].dtype).itemsize >= np.dtype(dtype).itemsize


def test_export_streams_one_shard_at_a_time(clusters, tmp_path, monkeypatch):
    out, _ = clusters
    widest = []
    original = Catalog._read_range
    monkeypatch.setattr(Catalog, "_read_range",
                        lambda self, col, a, b: widest.append(b - a) or original(self, col, a, b))
    assert export_main([str(out), "--fits", str(tmp_path / "s.fits"), "--parquet", str(tmp_path / "s.parquet")]) == 0
    assert widest and max(widest) == S


def test_images_are_refused_and_a_missing_shard_is_named(clusters, tmp_path, capsys):
    out, _ = clusters
    with h5py.File(tmp_path / "plain.h5", "w") as f:  # a synthetic catalogue written by hand
        f.attrs["galhpc_kind"] = "generate_catalogue"  # (its layout alone is a store's)
        f["images"] = np.zeros((4, 8, 8), np.float16)
        f["object_id"] = np.arange(4)
    with open_catalog(tmp_path / "plain.h5") as cat:
        with pytest.raises(ValueError, match="only scalar and vector"):
            export_fits(cat, tmp_path / "i.fits", ["images"])
        export_fits(cat, tmp_path / "i.fits")
    assert Table.read(tmp_path / "i.fits").colnames == ["object_id"]
    assert export_main([str(out), "--fits", str(tmp_path / "x.fits"), "--columns", "nope"]) == 1
    assert "nope" in capsys.readouterr().err
    shutil.copy(out, tmp_path / "clusters.h5")
    shutil.copytree(out.with_name("clusters.h5.shards"), tmp_path / "clusters.h5.shards")
    (tmp_path / "clusters.h5.shards" / "000003.h5").unlink()
    assert export_main([str(tmp_path / "clusters.h5"), "--fits", str(tmp_path / "y.fits")]) == 1
    assert "000003.h5 (missing)" in capsys.readouterr().err and not (tmp_path / "y.fits").exists()


def test_hats_export_without_the_extra_names_the_pip_command(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "hats_import", None)  # as if the [hats] extra were not installed
    with h5py.File(tmp_path / "sky.h5", "w") as f:
        f["object_id"] = np.arange(4)
        f["ra"] = np.zeros(4)
        f["dec"] = np.zeros(4)
    assert export_main([str(tmp_path / "sky.h5"), "--hats", str(tmp_path / "h")]) == 1
    assert "pip install 'galhpc[hats]'" in capsys.readouterr().err and not (tmp_path / "h").exists()
