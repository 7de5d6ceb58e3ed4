"""galhpc-search on a real encoded catalogue: by id and by image, equal to brute force, tables
read back in every format, mosaic written, the same answer under a real `mpirun -n 2`."""

import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from test_search_topk import brute_force

from galhpc.cli.search import main as search_main
from galhpc.io.table import read_table
from galhpc.search.run import search_catalog
from galhpc.search.source import CatalogColumns, SearchInputError

torch.set_num_threads(1)
ENV = {**os.environ, "GALHPC_PROGRESS": "0", "OMP_NUM_THREADS": "1", "OMPI_MCA_mpi_yield_when_idle": "1"}


@pytest.fixture(scope="module")
def catalog(tiny_store, tiny_checkpoint, tiny_catalog):
    """The shared tiny catalogue: 120 objects in 4 shards."""
    with h5py.File(tiny_catalog) as f:
        mu, ids = f["mu"][()], f["object_id"][()]
    return {"store": tiny_store, "ckpt": tiny_checkpoint, "out": tiny_catalog, "mu": mu, "ids": ids,
            "absent": int(ids.max()) + 1}


def test_shards_are_read_directly_and_match_the_master(catalog):
    with CatalogColumns(catalog["out"]) as cols:  # closed: the tests below open the file with h5py
        assert len(cols.catalog.shards) == 4
        blocks = list(cols.rank_blocks("mu", 0, 1, 50))
        np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), catalog["mu"])
        rows = np.array([119, 3, 3, 50])
        np.testing.assert_array_equal(cols.read("object_id", rows), catalog["ids"][rows])
        np.testing.assert_array_equal(cols.rows_of_ids(catalog["ids"][rows]), rows)
        with pytest.raises(SearchInputError, match="not in the catalogue"):
            cols.rows_of_ids([catalog["absent"]])


def test_query_by_id_equals_brute_force_without_the_query_itself(catalog):
    own = np.array([0, 61, 119])
    ids = catalog["ids"][own]
    result = search_catalog(catalog["out"], k=8, ids=list(ids), block_rows=37)
    rows, sq = brute_force(catalog["mu"][own], catalog["mu"], 8, exclude=own)
    np.testing.assert_array_equal(result.topk.rows, rows)
    np.testing.assert_allclose(result.topk.distance, np.sqrt(sq), rtol=1e-12)
    table = result.table
    assert table["id"].tolist() == catalog["ids"][rows].reshape(-1).tolist()
    with h5py.File(catalog["out"]) as f:
        assert table["component"].tolist() == f["component"][()][rows].reshape(-1).tolist()
    assert table["rank"].tolist() == list(range(1, 9)) * 3


@pytest.mark.parametrize("suffix", [".h5", ".fits", ".csv"])
def test_cli_writes_a_table_that_reads_back_and_a_mosaic(catalog, tmp_path, suffix):
    out, png = tmp_path / f"similar{suffix}", tmp_path / "similar.png"
    ids = [int(catalog["ids"][5]), int(catalog["ids"][100])]
    threads = ["--threads", "1"] if suffix != ".csv" else []  # .csv: the default thread rule
    argv = ["--catalog", catalog["out"], "--k", "4", "--out", out, "--mosaic", png, *threads]
    assert search_main([str(a) for a in argv] + [x for i in ids for x in ("--id", str(i))]) == 0
    table = read_table(out)
    expected = search_catalog(catalog["out"], k=4, ids=ids).table
    for name in ("query", "query_id", "rank", "id", "row", "component"):
        assert np.asarray(table[name]).tolist() == expected[name].tolist(), name
    np.testing.assert_allclose(np.asarray(table["distance"], np.float64), expected["distance"], rtol=1e-12)
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_query_by_image_finds_the_object_it_was_cut_from(catalog, tmp_path):
    with h5py.File(catalog["store"]) as f:
        images = f["images"][[10, 111]]
    query = tmp_path / "query.h5"
    with h5py.File(query, "w") as f:
        f["images"] = images
    result = search_catalog(catalog["out"], k=3, images=[query])
    assert result.topk.rows[:, 0].tolist() == [10, 111]
    np.testing.assert_allclose(result.topk.distance[:, 0], 0.0, atol=1e-5)
    rows, _ = brute_force(catalog["mu"][[10, 111]], catalog["mu"], 3)
    assert (result.topk.rows[:, 1:] == rows[:, 1:]).mean() >= 0.5  # encoded anew: the same up to float noise


def test_errors_name_the_problem(catalog, tmp_path, capsys):
    absent = str(catalog["absent"])
    assert search_main(["--catalog", str(catalog["out"]), "--id", absent, "--out", str(tmp_path / "x.csv")]) == 1
    assert "not in the catalogue" in capsys.readouterr().err
    assert search_main(["--catalog", str(catalog["out"]), "--id", "3", "--out", str(tmp_path / "x.txt")]) == 1
    assert "unknown suffix '.txt'" in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun")
def test_two_mpi_ranks_give_the_one_rank_answer(catalog, tmp_path):
    own = np.array([7, 60, 118])
    ids = [str(i) for i in catalog["ids"][own]]
    args = ["--catalog", str(catalog["out"]), "--k", "6", "--block-rows", "50", "--threads", "1"]
    for i in ids:
        args += ["--id", i]
    cmd = ["mpirun", "-n", "2", "--oversubscribe", sys.executable, "-m", "galhpc.cli.search",
           *args, "--out", str(tmp_path / "two.h5")]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0/2" in done.stderr  # two ranks, each searching its own shards
    assert search_main([*args, "--out", str(tmp_path / "one.h5")]) == 0
    one, two = read_table(tmp_path / "one.h5"), read_table(tmp_path / "two.h5")
    for name in one:
        assert np.array_equal(one[name], two[name]), name
    rows, _ = brute_force(catalog["mu"][own], catalog["mu"], 6, exclude=own)
    assert one["row"].tolist() == rows.reshape(-1).tolist()
