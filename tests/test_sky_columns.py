"""Sky coordinates and catalogue columns travel from the store into every catalogue output:
encode catalogues (h5py, open_catalog().table() units), FITS/Parquet exports, search and
rarity tables; galhpc-search --ra/--dec finds the nearest object (oracle: astropy SkyCoord)."""

import json

import astropy.units as u
import h5py
import numpy as np
import pyarrow.dataset as pads
import pytest
import torch
from astropy.coordinates import SkyCoord
from astropy.table import Table
from test_catalog_encode import encode, write_store
from test_catalog_generate import make_checkpoint

from galhpc.cli.encode import main as encode_main
from galhpc.cli.export import main as export_main
from galhpc.cli.rarity import main as rarity_main
from galhpc.cli.search import main as search_main
from galhpc.config import PrepConfig, SourceConfig
from galhpc.data.prep import prep_config_yaml
from galhpc.io.catalog import open_catalog
from galhpc.io.table import read_table
from galhpc.search.run import search_catalog
from galhpc.search.source import SearchInputError

torch.set_num_threads(1)
N = 300


def sky_store(path, declared=None):
    """A store with labels ra, dec (float64 deg, a 0.2 deg field across RA 0/360), mag_r
    (float32, unit mag), z_phot and a text label; `declared`: the passthrough list of its
    prep config's catalogue source, as galhpc-prep records it."""
    write_store(path, n=N)
    rng = np.random.default_rng(7)
    with h5py.File(path, "a") as f:
        f["labels/ra"] = np.mod(359.9 + rng.uniform(0, 0.2, N), 360.0)
        f["labels/dec"] = -30.0 + rng.uniform(-0.1, 0.1, N)
        f["labels/mag_r"] = rng.uniform(18, 24, N).astype(np.float32)
        f["labels/mag_r"].attrs["unit"] = "mag"
        f["labels/z_phot"] = rng.uniform(0, 1, N).astype(np.float32)
        f["labels/name"] = np.array([f"g{i}".encode() for i in range(N)], dtype="S64")
        if declared is not None:
            sources = [SourceConfig(kind="galsim"), SourceConfig(kind="fits", path="x/", passthrough=declared)]
            f.attrs["config"] = prep_config_yaml(PrepConfig(sources=sources))
    return path


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    root = tmp_path_factory.mktemp("sky")
    store = sky_store(root / "store.h5", declared=["MAG_R"])  # catalogue column names: any case
    ckpt = make_checkpoint(root / "av.pt", "astrovader")
    out = root / "clusters.h5"
    encode(ckpt, store, out, shard_size=64)  # 5 shards
    with h5py.File(store) as f:
        labels = {name: f[f"labels/{name}"][()] for name in f["labels"]}
    with h5py.File(out, locking=False) as f:
        ids = f["object_id"][()]
    return {"root": root, "store": store, "ckpt": ckpt, "out": out, "labels": labels, "ids": ids}


def test_encode_catalogue_carries_ra_dec_and_the_declared_columns(sky):
    labels = sky["labels"]
    with h5py.File(sky["out"], locking=False) as f:
        assert f["ra"].dtype == np.float64 and f["dec"].dtype == np.float64
        assert np.array_equal(f["ra"][()], labels["ra"]) and np.array_equal(f["dec"][()], labels["dec"])
        assert np.array_equal(f["mag_r"][()], labels["mag_r"])
        assert "z_phot" not in f and "name" not in f  # not declared
        assert np.array_equal(f["catalog"]["ra"], labels["ra"])  # the compound table too
        assert json.loads(f["meta"].attrs["fingerprint"])["passthrough"] == ["ra", "dec", "mag_r"]
    with open_catalog(sky["out"]) as cat:
        table = cat.table(["object_id", "ra", "dec", "mag_r"])
    assert table["ra"].unit == u.deg and table["dec"].unit == u.deg and table["mag_r"].unit == u.mag
    assert np.array_equal(np.asarray(table["dec"]), labels["dec"])


def test_default_is_ra_dec_and_the_option_chooses(sky, tmp_path, capsys):
    store = sky_store(tmp_path / "plain.h5")
    encode(sky["ckpt"], store, tmp_path / "default.h5", shard_size=128)
    with h5py.File(tmp_path / "default.h5") as f:
        assert {"ra", "dec"} <= set(f) and "mag_r" not in f
    argv = ["--checkpoint", str(sky["ckpt"]), "--store", str(store), "--batch-size", "64", "--threads", "1",
            "--device", "cpu", "--gmm-fit-objects", "100", "--gmm-components", "4"]
    assert encode_main([*argv, "--out", str(tmp_path / "chosen.h5"), "--passthrough", "z_phot,name"]) == 0
    with h5py.File(tmp_path / "chosen.h5") as f:
        assert "ra" not in f and np.array_equal(f["z_phot"][()], sky["labels"]["z_phot"])
        assert f["name"][5] == b"g5"
    assert export_main([str(tmp_path / "chosen.h5"), "--fits", str(tmp_path / "chosen.fits"), "--parquet",
                        str(tmp_path / "chosen.parquet"), "--columns", "object_id,name"]) == 0
    assert Table.read(tmp_path / "chosen.fits", hdu="CATALOG")["name"][5] == "g5"
    assert pads.dataset(tmp_path / "chosen.parquet").to_table()["name"][5].as_py() == "g5"
    assert encode_main([*argv, "--out", str(tmp_path / "bad.h5"), "--passthrough", "ra,mag_i"]) == 1
    err = capsys.readouterr().err
    assert "no per-object label column 'mag_i'" in err and str(store) in err
    assert not (tmp_path / "bad.h5").exists()


def test_a_different_choice_of_columns_is_another_run(sky, tmp_path, capsys):
    """The columns carried are part of the fingerprint: shards are never resumed across choices."""
    out = tmp_path / "c.h5"
    encode(sky["ckpt"], sky["store"], out, shard_size=128)
    with pytest.raises(Exception, match="another|different|overwrite"):
        encode(sky["ckpt"], sky["store"], out, shard_size=128, passthrough=["ra", "dec"])


def test_export_fits_and_parquet_carry_them_with_units(sky, tmp_path):
    fits_out, parquet_out = tmp_path / "c.fits", tmp_path / "c.parquet"
    assert export_main([str(sky["out"]), "--fits", str(fits_out), "--parquet", str(parquet_out),
                        "--columns", "object_id,component,ra,dec,mag_r"]) == 0
    table = Table.read(fits_out, hdu="CATALOG")
    assert table["ra"].unit == u.deg and table["dec"].unit == u.deg and table["mag_r"].unit == u.mag
    assert np.array_equal(np.asarray(table["ra"]), sky["labels"]["ra"])
    parquet = pads.dataset(parquet_out).to_table()
    assert np.array_equal(parquet["dec"].to_numpy(), sky["labels"]["dec"])
    assert parquet.schema.field("ra").metadata[b"unit"] == b"deg"


def brute_force_nearest(ra, dec, cat_ra, cat_dec):
    """Oracle: astropy's angular separation to every object."""
    sep = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(cat_ra * u.deg, cat_dec * u.deg))
    return int(np.argmin(sep.arcsec)), float(np.min(sep.arcsec))


def test_search_by_position_finds_the_nearest_object(sky, tmp_path):
    labels = sky["labels"]
    rng = np.random.default_rng(3)
    targets = [4, 150, 299]
    ra = [float(labels["ra"][t] + rng.uniform(-1, 1) * 1e-4) for t in targets]  # within ~0.4 arcsec
    dec = [float(labels["dec"][t] + rng.uniform(-1, 1) * 1e-4) for t in targets]
    out = tmp_path / "near.fits"
    argv = ["--catalog", str(sky["out"]), "--k", "3", "--out", str(out), "--threads", "1"]
    for r, d in zip(ra, dec, strict=False):
        argv += ["--ra", repr(r), "--dec", repr(d)]
    assert search_main(argv) == 0
    table = Table.read(out)
    ids = sky["ids"]
    for q, (r, d) in enumerate(zip(ra, dec, strict=False)):
        row, sep = brute_force_nearest(r, d, labels["ra"], labels["dec"])
        assert sep < 1.0
        assert int(table["query_id"][table["query"] == q][0]) == ids[row]
    assert table["ra"].unit == u.deg
    np.testing.assert_array_equal(np.asarray(table["ra"]), labels["ra"][np.asarray(table["row"])])
    # the same query by id gives the same neighbours
    by_id = search_catalog(sky["out"], k=3, ids=[int(ids[targets[0]])]).table
    assert by_id["row"].tolist() == np.asarray(table["row"][table["query"] == 0]).tolist()


def test_position_with_no_object_within_the_tolerance_is_refused(sky, tmp_path, capsys):
    labels = sky["labels"]
    ra, dec = float(labels["ra"][10]), float(labels["dec"][10]) + 0.5  # 30 arcmin north of the field
    row, sep = brute_force_nearest(ra, dec, labels["ra"], labels["dec"])
    assert search_main(["--catalog", str(sky["out"]), "--ra", repr(ra), "--dec", repr(dec),
                        "--out", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no object within 1 arcsec" in err and f"{sep:.3g} arcsec" in err
    assert f"object {sky['ids'][row]}" in err
    assert not (tmp_path / "x.csv").exists()
    found = search_catalog(sky["out"], k=2, ra=[ra], dec=[dec], tolerance=sep * 1.001)
    assert found.queries.row.tolist() == [row]
    with pytest.raises(SearchInputError, match="2 --ra but 1 --dec"):
        search_catalog(sky["out"], ra=[ra, ra], dec=[dec])


def test_position_search_needs_coordinates(tmp_path):
    store = write_store(tmp_path / "store.h5", n=200)
    ckpt = make_checkpoint(tmp_path / "av.pt", "astrovader")
    encode(ckpt, store, tmp_path / "c.h5", shard_size=128)
    with pytest.raises(SearchInputError, match="no ra/dec column"):
        search_catalog(tmp_path / "c.h5", ra=[10.0], dec=[0.0])


def test_rarity_table_carries_them(sky, tmp_path):
    out = tmp_path / "rarity.h5"
    assert rarity_main(["--catalog", str(sky["out"]), "--out", str(out), "--threads", "1"]) == 0
    table = read_table(out)
    np.testing.assert_array_equal(table["ra"], sky["labels"]["ra"][table["row"]])
    np.testing.assert_array_equal(table["mag_r"], sky["labels"]["mag_r"][table["row"]])
    with h5py.File(out) as f:
        assert f["dec"].attrs["unit"] == "deg"


@pytest.mark.parametrize("n_queries", [5, 300])  # a direct scan per block; a KD-tree per block
def test_nearest_rows_equal_astropy_over_many_blocks(tmp_path, n_queries):
    from astropy.coordinates import match_coordinates_sky

    from galhpc.search.query import nearest_rows
    from galhpc.search.source import CatalogColumns

    rng = np.random.default_rng(n_queries)
    n = 5000
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    ra[17], dec[17] = np.nan, np.nan  # no coordinates: skipped
    with h5py.File(tmp_path / "plain.h5", "w") as f:  # a plain file of per-object columns: one shard
        f["ra"], f["dec"], f["mu"] = ra, dec, rng.standard_normal((n, 2)).astype(np.float32)
    q_ra, q_dec = rng.uniform(0, 360, n_queries), rng.uniform(-89, 89, n_queries)
    rows, sep = nearest_rows(CatalogColumns(tmp_path / "plain.h5"), q_ra, q_dec, block_rows=700)
    known = np.flatnonzero(np.isfinite(ra))
    index, oracle_sep, _ = match_coordinates_sky(SkyCoord(q_ra * u.deg, q_dec * u.deg),
                                                 SkyCoord(ra[known] * u.deg, dec[known] * u.deg))
    assert rows.tolist() == known[index].tolist()
    np.testing.assert_allclose(sep, oracle_sep.arcsec, rtol=1e-9)
