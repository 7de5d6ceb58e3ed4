"""galhpc-export --hats: a HATS catalogue written by hats-import on a local Dask cluster,
opened with LSDB, cross-matched against a second HATS catalogue and read back row for row;
per-cluster counts by HEALPix pixel computed with LSDB (docs/search.md example)."""

import h5py
import numpy as np
import pytest

lsdb = pytest.importorskip("lsdb")
distributed = pytest.importorskip("dask.distributed")

from astropy import units as u  # noqa: E402
from astropy.coordinates import SkyCoord  # noqa: E402

from galhpc.cli.export import main as export_main  # noqa: E402
from galhpc.io.catalog import open_catalog  # noqa: E402
from galhpc.io.export import export_hats  # noqa: E402

pytestmark = pytest.mark.slow
N, L, K = 3000, 4, 3


@pytest.fixture(scope="module")
def client():
    with distributed.Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def exported(tmp_path_factory, client):
    root = tmp_path_factory.mktemp("hats")
    rng = np.random.default_rng(3)
    with h5py.File(root / "clusters.h5", "w") as f:
        f["object_id"] = np.arange(N, dtype=np.int64) * 7 + 1
        f["ra"] = rng.uniform(150.0, 151.0, N)
        f["dec"] = rng.uniform(1.5, 2.5, N)
        f["component"] = rng.integers(0, K, N).astype(np.int16)
        f["gamma"] = rng.dirichlet(np.ones(K), N).astype(np.float32)
        f["mu"] = rng.standard_normal((N, L)).astype(np.float32)
    with open_catalog(root / "clusters.h5") as cat:
        export_hats(cat, root / "clusters_hats", pixel_threshold=800, client=client)
    return root


def test_lsdb_reads_every_row_and_crossmatches(exported, client):
    with h5py.File(exported / "clusters.h5") as f:
        oracle = {k: f[k][()] for k in f}
    cat = lsdb.read_hats(exported / "clusters_hats")
    assert cat.hc_structure.catalog_info.total_rows == N
    assert len(cat.get_healpix_pixels()) > 1  # adaptive split at pixel_threshold 800
    df = cat.compute().sort_values("object_id")
    assert len(df) == N
    assert np.array_equal(df["object_id"].to_numpy(), oracle["object_id"])
    assert np.array_equal(df["ra"].to_numpy(), oracle["ra"]) and np.array_equal(df["dec"].to_numpy(), oracle["dec"])
    for k in range(L):
        assert np.array_equal(df[f"mu_{k}"].to_numpy(), oracle["mu"][:, k])
    assert np.array_equal(df["component"].to_numpy(), oracle["component"])
    # a second catalogue: 50 objects 0.5 arcsec off, as a HATS catalogue made by lsdb
    pick = np.arange(0, N, N // 50)
    import pandas as pd
    moved = SkyCoord(oracle["ra"][pick] * u.deg, oracle["dec"][pick] * u.deg).directional_offset_by(
        45 * u.deg, 0.5 * u.arcsec)
    other = lsdb.from_dataframe(pd.DataFrame({"ext_id": pick, "ra": moved.ra.deg, "dec": moved.dec.deg}),
                                catalog_name="external", margin_threshold=None)  # no margin: 20 s saved
    other.write_catalog(exported / "external_hats")
    matched = cat.crossmatch(lsdb.read_hats(exported / "external_hats"), radius_arcsec=1.0, n_neighbors=1,
                             suffixes=("", "_ext")).compute()
    assert len(matched) == len(pick)
    ids = dict(zip(matched["ext_id_ext"].to_numpy(), matched["object_id"].to_numpy(), strict=False))
    assert all(ids[p] == oracle["object_id"][p] for p in pick)
    assert np.allclose(matched["_dist_arcsec"].to_numpy(), 0.5, atol=1e-3)


def test_per_cluster_counts_by_healpix_pixel(exported, client):
    import hats.pixel_math.healpix_shim as hp  # noqa: F401  (the [hats] extra is installed)
    cat = lsdb.read_hats(exported / "clusters_hats", columns=["component", "_healpix_29"])
    counts = cat.map_partitions(
        lambda df, pixel: df.groupby("component").size().rename("n").reset_index().assign(
            norder=pixel.order, npix=pixel.pixel), include_pixel=True).compute()
    with h5py.File(exported / "clusters.h5") as f:
        comp = f["component"][()]
    assert counts["n"].sum() == N
    total = counts.groupby("component")["n"].sum()
    assert all(total[k] == np.sum(comp == k) for k in range(K))


def test_no_sky_positions_is_one_clear_error(tmp_path, capsys):
    with h5py.File(tmp_path / "nosky.h5", "w") as f:
        f["object_id"] = np.arange(4)
    assert export_main([str(tmp_path / "nosky.h5"), "--hats", str(tmp_path / "h")]) == 1
    assert "no ra/dec column" in capsys.readouterr().err and not (tmp_path / "h").exists()


def sharded_catalogue(out, n, size, seed):
    """A generate-shaped catalogue (images, latents z, sky positions) written by galhpc's own
    shard writer, in shards of `size` rows."""
    from galhpc.formats.catalog import shard_dir_for, shard_path
    from galhpc.io.catalog_writer import ShardWriter, write_master
    from galhpc.io.shards import plan_shards

    shards = plan_shards(n, size)
    shard_dir = shard_dir_for(out)
    shard_dir.mkdir()
    rng = np.random.default_rng(seed)
    for shard in shards:
        m = shard.size
        writer = ShardWriter(shard_path(shard_dir, shard.index), shard, table=False)
        writer.write(0, {"object_id": np.arange(shard.start, shard.stop, dtype=np.int64) * 3,
                         "ra": rng.uniform(10.0, 12.0, m), "dec": rng.uniform(-1.0, 1.0, m),
                         "z": rng.standard_normal((m, 3)).astype(np.float32),
                         "images": rng.random((m, 4, 4)).astype(np.float16)})
        writer.close()
    write_master(out, shard_dir, shards, {"kind": "generate", "n_objects": n})
    return shard_dir


def test_a_sharded_catalogue_streams_from_its_shards_with_pointers_to_the_images(tmp_path, client):
    """A generate-shaped catalogue in 4 shards: hats-import reads the shard files themselves,
    in blocks; every row comes back once, and its ``shard``/``row`` point at the object in
    the HDF5 shard files (checked with h5py, not galhpc)."""
    n = 700
    out = tmp_path / "synth.h5"
    shard_dir = sharded_catalogue(out, n, 200, 5)
    with open_catalog(out) as cat:
        export_hats(cat, tmp_path / "synth_hats", pixel_threshold=300, chunk_rows=64, client=client)
    df = lsdb.read_hats(tmp_path / "synth_hats").compute().sort_values("object_id")
    assert len(df) == n and np.array_equal(df["object_id"].to_numpy(), np.arange(n) * 3)
    assert "images" not in df.columns and {"z_0", "z_1", "z_2", "shard", "row"} <= set(df.columns)
    for shard_index, rows in df.groupby("shard"):
        with h5py.File(shard_dir / f"{shard_index:06d}.h5", "r") as f:
            assert np.array_equal(f["object_id"][()][rows["row"].to_numpy()], rows["object_id"].to_numpy())
            z = f["z"][()][rows["row"].to_numpy()]
            assert all(np.array_equal(rows[f"z_{k}"].to_numpy(), z[:, k]) for k in range(3))
            assert np.array_equal(f["ra"][()][rows["row"].to_numpy()], rows["ra"].to_numpy())
    assert sorted(df["shard"].unique()) == [0, 1, 2, 3]


def test_rarity_scores_joined_and_vectors_as_fixed_size_lists(tmp_path, client, capsys):
    """galhpc-export --hats --rarity --vector-lists: the scores of a rarity table (rows = the
    catalogue's) come back with their objects, and z as fixed-size lists, read with lsdb,
    pyarrow (the partition files) and pandas; a table of another catalogue is refused."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    from galhpc.io.table import write_table

    n = 300
    out = tmp_path / "synth.h5"
    shard_dir = sharded_catalogue(out, n, 128, 9)
    with h5py.File(shard_dir / "000001.h5") as f:
        z1 = f["z"][()]
    rng = np.random.default_rng(1)
    ids = np.arange(n, dtype=np.int64) * 3
    scores = {"nll_prior": rng.normal(size=n), "knn_distance": rng.random(n).astype(np.float32)}
    write_table(tmp_path / "rarity.h5", {"object_id": ids, "row": np.arange(n), "component": np.zeros(n, np.int64),
                                         **scores, "ra": np.zeros(n)})  # galhpc-rarity's columns
    write_table(tmp_path / "other.h5", {"object_id": ids[::-1].copy(), **scores})
    hats_dir = tmp_path / "synth_hats"
    assert export_main([str(out), "--hats", str(hats_dir), "--rarity", str(tmp_path / "other.h5")]) == 1
    assert "is not a rarity table of" in capsys.readouterr().err and not hats_dir.exists()
    with open_catalog(out) as cat:
        from galhpc.cli.export import rarity_scores
        extra = rarity_scores(str(tmp_path / "rarity.h5"), cat)
        assert set(extra) == set(scores)
        export_hats(cat, hats_dir, split_vectors=False, extra=extra, extra_source="rarity.h5", client=client)
    df = lsdb.read_hats(hats_dir).compute().sort_values("object_id")
    assert np.array_equal(df["object_id"].to_numpy(), ids)
    assert np.array_equal(df["nll_prior"].to_numpy(), scores["nll_prior"])
    assert np.array_equal(df["knn_distance"].to_numpy(), scores["knn_distance"])
    got = np.stack(df[df["shard"] == 1].sort_values("row")["z"].to_numpy())  # pandas: one array per row
    assert got.shape == (128, 3) and np.array_equal(got, z1)
    table = pads.dataset(hats_dir / "dataset", format="parquet", partitioning="hive").to_table()
    assert pa.types.is_fixed_size_list(table.schema.field("z").type) and table.schema.field("z").type.list_size == 3
    order = np.argsort(table["object_id"].to_numpy())
    z = np.stack(table["z"].to_numpy(zero_copy_only=False))[order]
    assert table.num_rows == n and np.array_equal(z[128:256], z1)
    assert b"joined by row from rarity.h5" in table.schema.field("nll_prior").metadata[b"description"]


def test_a_catalogue_without_positions_takes_them_drawn_in_a_sky_region(tmp_path, client, capsys):
    """galhpc-export --hats --sky-region on a generate-shaped catalogue without ra/dec: every
    object comes back once, at the position `sky_positions` draws for its shard (inside the
    box, the same for the same seed), with units and a description saying it was drawn; a
    catalogue with its own ra/dec or a box off the sky is refused."""
    from galhpc.formats.catalog import shard_dir_for, shard_path
    from galhpc.io.catalog_writer import ShardWriter, write_master
    from galhpc.io.hats import sky_positions
    from galhpc.io.shards import plan_shards

    n, size, region = 500, 128, (30.0, 40.0, -5.0, 5.0)
    out = tmp_path / "synth.h5"
    shards = plan_shards(n, size)
    shard_dir_for(out).mkdir()
    for shard in shards:
        writer = ShardWriter(shard_path(shard_dir_for(out), shard.index), shard, table=False)
        writer.write(0, {"object_id": np.arange(shard.start, shard.stop, dtype=np.int64),
                         "z": np.full((shard.size, 2), shard.index, np.float32),
                         "images": np.zeros((shard.size, 4, 4), np.float16)})
        writer.close()
    write_master(out, shard_dir_for(out), shards, {"kind": "generate", "n_objects": n})
    hats_dir = tmp_path / "synth_hats"
    assert export_main([str(out), "--hats", str(hats_dir)]) == 1
    assert "--sky-region" in capsys.readouterr().err and not hats_dir.exists()
    assert export_main([str(out), "--hats", str(hats_dir), "--sky-region", "30", "20", "0", "1"]) == 1
    assert "not a box on the sky" in capsys.readouterr().err
    with open_catalog(out) as cat:
        export_hats(cat, hats_dir, sky_region=region, sky_seed=4, pixel_threshold=200, client=client)
    df = lsdb.read_hats(hats_dir).compute().sort_values("object_id")
    assert np.array_equal(df["object_id"].to_numpy(), np.arange(n))
    expected = [sky_positions(region, 4, s.index, s.size) for s in shards]
    assert np.array_equal(df["ra"].to_numpy(), np.concatenate([ra for ra, _ in expected]))
    assert np.array_equal(df["dec"].to_numpy(), np.concatenate([dec for _, dec in expected]))
    assert df["ra"].between(30, 40).all() and df["dec"].between(-5, 5).all()
    assert np.array_equal(df["z_0"].to_numpy(), df["shard"].to_numpy().astype(np.float32))
    import pyarrow.parquet as pq
    schema = pq.read_schema(hats_dir / "dataset" / "_common_metadata")
    assert schema.field("ra").metadata[b"unit"] == b"deg"
    assert b"drawn uniformly" in schema.field("dec").metadata[b"description"]
    with open_catalog(out) as cat:  # the same seed: the same positions
        assert np.array_equal(sky_positions(region, 4, 1, size)[0], expected[1][0])
        with pytest.raises(ValueError, match="has its own ra/dec"):
            with h5py.File(tmp_path / "withsky.h5", "w") as f:
                f["object_id"], f["ra"], f["dec"] = np.arange(3), np.zeros(3), np.zeros(3)
            with open_catalog(tmp_path / "withsky.h5") as sky_cat:
                export_hats(sky_cat, tmp_path / "x_hats", sky_region=region, client=client)
