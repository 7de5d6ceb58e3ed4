"""Every file galhpc writes records its kind and every command refuses the wrong kind; a
filter HDF5 lacks is named with its package; a catalogue is read only with its own
checkpoint; outputs are checked before any input is read."""

import os
import shutil
import socket
import subprocess

import h5py
import numpy as np
import pytest
import torch
from astropy.table import Table
from test_catalog_encode import encode, write_store
from test_catalog_generate import generate, make_checkpoint

from galhpc.cli.encode import main as encode_main
from galhpc.cli.export import main as export_main
from galhpc.cli.generate import main as generate_main
from galhpc.cli.prep import main as prep_main
from galhpc.cli.rarity import main as rarity_main
from galhpc.cli.report import main as report_main
from galhpc.cli.search import main as search_main
from galhpc.cli.train import main as train_main
from galhpc.data.sources import Block
from galhpc.data.store import StoreWriter
from galhpc.formats.kinds import FileKindError, file_kind
from galhpc.io.catalog import open_catalog
from galhpc.io.table import write_table
from galhpc.search.rarity import rarity_scores

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    store = root / "store.h5"
    with StoreWriter(store, "prep: {}\n") as writer:  # galhpc's own store writer
        images = write_store(root / "plain_store.h5", n=120)
        with h5py.File(images) as f:
            writer.append(Block(images=f["images"][()], object_id=f["object_id"][()]))
    vae = make_checkpoint(root / "vae.pt", "vae")
    av = make_checkpoint(root / "av.pt")
    clusters, synth = root / "clusters.h5", root / "synth.h5"
    encode(vae, store, clusters, gmm_fit_objects=100, shard_size=64)
    generate(av, synth, n=80, shard_size=32)
    rarity_scores(clusters, root / "rarity.h5", k=3)
    write_table(root / "search.h5", {"query": np.zeros(2), "distance": np.ones(2)})
    return {"root": root, "store": store, "plain_store": root / "plain_store.h5", "vae": vae, "av": av,
            "vae2": make_checkpoint(root / "vae2.pt", "vae", seed=3), "clusters": clusters, "synth": synth,
            "rarity": root / "rarity.h5", "search": root / "search.h5"}


def kind_of(path):
    with h5py.File(path, "r") as f:
        return f.attrs.get("galhpc_kind")


def test_every_file_galhpc_writes_records_its_kind(files):
    assert kind_of(files["store"]) == "store"
    for name, kind in (("clusters", "encode_catalogue"), ("synth", "generate_catalogue")):
        assert kind_of(files[name]) == kind
        shards = sorted(files[name].with_name(files[name].name + ".shards").glob("0*.h5"))
        assert shards and all(kind_of(s) == kind for s in shards)
    assert kind_of(files["rarity"]) == "rarity_table"
    assert kind_of(files["search"]) == "search_table"


def test_files_without_the_attribute_are_recognised_by_their_layout(files, tmp_path):
    """Files written before galhpc_kind (the test data of the repository among them)."""
    want = {"store": "store", "plain_store": "store", "clusters": "encode_catalogue", "synth": "generate_catalogue",
            "rarity": "rarity_table", "search": "search_table"}
    for name, kind in want.items():
        old = tmp_path / f"{name}.h5"
        shutil.copy(files[name], old)
        with h5py.File(old, "a") as f:
            f.attrs.pop("galhpc_kind", None)
            assert file_kind(f) == kind, name
    shard = next(files["clusters"].with_name("clusters.h5.shards").glob("0*.h5"))
    shutil.copy(shard, tmp_path / "shard.h5")
    with h5py.File(tmp_path / "shard.h5", "a") as f:
        del f.attrs["galhpc_kind"]
        assert file_kind(f) == "encode_catalogue"


def _train_config(tmp_path, store):
    path = tmp_path / "cfg.yaml"
    path.write_text(f"model: {{name: vae, image_size: 16, latent_dim: 6, params: {{filters: [8, 8, 8, 8]}}}}\n"
                    f"train: {{store: {store}, out_dir: {tmp_path / 'run'}, epochs: 1, batch_size: 8, device: cpu}}\n")
    return path


def test_every_command_refuses_the_wrong_kind(files, tmp_path, capsys):
    f = {k: str(v) for k, v in files.items()}
    out = str(tmp_path / "o.h5")
    cases = [
        (train_main, ["--config", str(_train_config(tmp_path, f["synth"]))], "synth.h5 is a synthetic catalogue"),
        (encode_main, ["--checkpoint", f["vae"], "--store", f["synth"], "--out", out, "--device", "cpu"],
         "synth.h5 is a synthetic catalogue"),
        (report_main, ["--checkpoint", f["vae"], "--clusters", f["clusters"], "--store", f["synth"], "--out",
                       str(tmp_path / "rep")], "synth.h5 is a synthetic catalogue"),
        (report_main, ["--checkpoint", f["vae"], "--clusters", f["store"], "--out", str(tmp_path / "rep")],
         "store.h5 is a training store"),
        (report_main, ["--checkpoint", f["vae"], "--clusters", f["synth"], "--out", str(tmp_path / "rep")],
         "synth.h5 is a synthetic catalogue"),
        (report_main, ["--checkpoint", f["vae"], "--clusters", f["clusters"], "--synth", f["clusters"], "--out",
                       str(tmp_path / "rep")], "clusters.h5 is an encoded catalogue"),
        (search_main, ["--catalog", f["store"], "--id", "3", "--out", str(tmp_path / "s.csv")],
         "store.h5 is a training store"),
        (rarity_main, ["--catalog", f["store"], "--out", str(tmp_path / "r.csv")], "store.h5 is a training store"),
        (rarity_main, ["--catalog", f["search"], "--out", str(tmp_path / "r.csv")], "search.h5 is a search result"),
        (rarity_main, ["--catalog", f["clusters"], "--store", f["synth"], "--out", str(tmp_path / "r.csv")],
         "synth.h5 is a synthetic catalogue"),
        (search_main, ["--catalog", f["clusters"], "--id", "3", "--store", f["synth"], "--mosaic",
                       str(tmp_path / "m.png"), "--out", str(tmp_path / "s.csv")], "synth.h5 is a synthetic catalogue"),
        (export_main, [f["plain_store"], "--fits", str(tmp_path / "x.fits")], "plain_store.h5 is a training store"),
    ]
    for main, argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if ": error: " in line]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "rep").exists() or not any((tmp_path / "rep").iterdir())


def _blosc_dataset(f, name, data):
    """A dataset whose pipeline needs blosc (HDF5 filter 32001), which this HDF5 lacks: its
    chunks are stored as they are, as if blosc had written them (HDF5 cannot tell)."""
    assert not h5py.h5z.filter_avail(32001), "blosc is registered here: this test needs it absent"
    ds = f.create_dataset(name, shape=data.shape, dtype=data.dtype, chunks=(1, *data.shape[1:]), compression=32001,
                          allow_unknown_filter=True)
    for i in range(len(data)):
        ds.id.write_direct_chunk((i,) + (0,) * (data.ndim - 1), np.ascontiguousarray(data[i]).tobytes())


def test_an_unavailable_filter_is_named_with_its_package(files, tmp_path, capsys):
    store = tmp_path / "blosc.h5"
    with h5py.File(files["plain_store"]) as src, h5py.File(store, "w") as f:
        _blosc_dataset(f, "images", src["images"][()])
        f["object_id"] = src["object_id"][()]
    args = ["--checkpoint", str(files["vae"]), "--store", str(store), "--out", str(tmp_path / "e.h5"),
            "--device", "cpu"]
    for main, argv in ((encode_main, args), (train_main, ["--config", str(_train_config(tmp_path, store))])):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"{store}: dataset /images is compressed with the HDF5 filter blosc (id 32001)" in err, err
        assert "pip install hdf5plugin" in err and len([x for x in err.splitlines() if ": error: " in x]) == 1
    copy = tmp_path / "clusters.h5"  # a catalogue whose shard needs blosc
    shutil.copy(files["clusters"], copy)
    shutil.copytree(files["clusters"].with_name("clusters.h5.shards"), tmp_path / "clusters.h5.shards")
    shard = tmp_path / "clusters.h5.shards" / "000001.h5"
    with h5py.File(shard, "a") as f:
        mu = f["mu"][()]
        del f["mu"]
        _blosc_dataset(f, "mu", mu)
    with open_catalog(copy) as cat, pytest.raises(  # looked for when a read fails, not on every shard opened
            FileKindError, match=r"000001\.h5: dataset /mu is compressed with the HDF5 filter blosc.*hdf5plugin"):
        cat.read("mu")


def test_report_refuses_another_models_catalogue(files, tmp_path, capsys):
    rep = tmp_path / "rep"
    assert report_main(["--checkpoint", str(files["vae2"]), "--clusters", str(files["clusters"]),
                        "--out", str(rep)]) == 1
    err = capsys.readouterr().err
    assert f"{files['vae2']} is not the checkpoint {files['clusters']} was made with" in err, err
    assert not rep.exists() or not any(rep.iterdir())
    assert rarity_main(["--catalog", str(files["clusters"]), "--checkpoint", str(files["vae2"]),
                        "--out", str(tmp_path / "r.csv")]) == 1
    assert "is not the checkpoint" in capsys.readouterr().err


def test_outputs_are_checked_before_any_input_is_read(files, tmp_path, capsys):
    """Each command given a missing catalogue/checkpoint AND a bad output names the output:
    it looked at the output first, so a run never ends on it after hours of work."""
    missing = str(tmp_path / "missing.h5")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cfg = _train_config(tmp_path, missing)
    prep_cfg = tmp_path / "prep.yaml"
    prep_cfg.write_text("prep: {sources: [{kind: fits, path: nowhere/*.fits}]}\n")
    cases = [
        (rarity_main, ["--catalog", missing, "--out", str(tmp_path / "results" / "r.h5")], "does not exist"),
        (rarity_main, ["--catalog", missing, "--out", str(tmp_path / "r.txt")], "unknown suffix '.txt'"),
        (search_main, ["--catalog", missing, "--id", "1", "--out", str(tmp_path / "results" / "s.csv")],
         "does not exist"),
        (search_main, ["--catalog", missing, "--id", "1", "--out", str(tmp_path / "s.csv"),
                       "--mosaic", str(tmp_path / "m.jpg")], "unknown suffix '.jpg'"),
        (encode_main, ["--checkpoint", missing, "--store", missing, "--out", str(tmp_path / "e.fits")],
         "unknown suffix '.fits'"),
        (encode_main, ["--checkpoint", missing, "--store", missing, "--out", str(tmp_path / "e.h5"),
                       "--compression", "lzf"], "compression 'lzf' is readable only through h5py"),
        (generate_main, ["--checkpoint", missing, "--n", "5", "--out", str(tmp_path / "g.h5"),
                         "--compression", "gzip:12"], "gzip level must be 0..9"),
        (generate_main, ["--checkpoint", missing, "--n", "5", "--out", str(a_file / "g.h5")], "is not a folder"),
        (report_main, ["--checkpoint", missing, "--clusters", missing, "--out", str(a_file)], "is not a folder"),
        (train_main, ["--config", str(cfg), "--out", str(a_file / "run")], "is not a folder"),
        (prep_main, ["--config", str(prep_cfg), "--out", str(tmp_path / "store.fits")], "unknown suffix '.fits'"),
        (export_main, [missing, "--fits", str(tmp_path / "results" / "x.fits")], "does not exist"),
        (export_main, [missing, "--fits", str(tmp_path / "x.csv")], "unknown suffix '.csv'"),
    ]
    for main, argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert message in err and "missing.h5" not in err, (argv, err)  # the input was never looked at
    assert not (tmp_path / "results").exists()


def test_an_output_held_by_a_live_run_is_refused_first(files, tmp_path, capsys):
    out = tmp_path / "r.h5"
    holder = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "r.h5.lock").write_text(f"{socket.gethostname()}:{holder.pid}\n")
        assert rarity_main(["--catalog", str(tmp_path / "missing.h5"), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"in use by {socket.gethostname()}:{holder.pid}" in err and "missing.h5" not in err
    finally:
        holder.kill()
        holder.wait()
    assert rarity_main(["--catalog", str(files["clusters"]), "--out", str(out), "--k", "3"]) == 0  # holder gone


def test_fits_export_of_a_non_ascii_name_and_one_failed_format_keeps_the_other(files, tmp_path, capsys):
    name = tmp_path / "clustérs_ß.h5"
    shutil.copy(files["clusters"], name)
    shutil.copytree(files["clusters"].with_name("clusters.h5.shards"), tmp_path / "clustérs_ß.h5.shards")
    fits_out, parquet_out = tmp_path / "c.fits", tmp_path / "c.parquet"
    assert export_main([str(name), "--fits", str(fits_out), "--parquet", str(parquet_out)]) == 0
    from astropy.io import fits

    with fits.open(fits_out) as hdul:
        assert hdul[0].header["CATALOG"] == "clust\\xe9rs_\\xdf.h5"
    assert len(Table.read(fits_out)) == 120
    # FITS refused (the file exists, no --overwrite): the Parquet export still happens
    parquet_out.unlink()
    assert export_main([str(name), "--fits", str(fits_out), "--parquet", str(parquet_out)]) == 1
    err = capsys.readouterr().err
    assert "c.fits exists" in err and parquet_out.is_file()


def test_default_catalogues_and_stores_open_in_h5dump(files):
    """h5dump (the HDF5 C tools, 1.10 on Debian) reads every dataset galhpc writes by default."""
    h5dump = shutil.which("h5dump")
    assert h5dump, "h5dump (hdf5-tools) is installed by the setup"
    shard = next(files["synth"].with_name("synth.h5.shards").glob("0*.h5"))
    for path, dataset in ((files["store"], "/images"), (files["clusters"], "/mu"), (files["synth"], "/images"),
                          (shard, "/z"), (files["rarity"], "/nll_prior")):
        run = subprocess.run([h5dump, "-d", dataset, str(path)], capture_output=True, text=True,
                             cwd=path.parent, timeout=60)
        assert run.returncode == 0 and "DATA {" in run.stdout and "error" not in run.stderr.lower(), (path, run.stderr)


def test_only_rank_0_checks_the_lock_of_a_catalogue_job(tmp_path, monkeypatch, capsys):
    """Under mpirun, rank 0 takes <out>.lock for the run; a rank that starts late must not
    take its own run's lock for another run's."""
    import galhpc.inference.generate
    import galhpc.runtime.world
    from galhpc.runtime.world import World

    out = tmp_path / "g.h5"
    (tmp_path / "g.h5.lock").write_text(f"{socket.gethostname()}:{os.getpid()}\n")  # held by a live process
    called = []
    monkeypatch.setattr(galhpc.inference.generate, "generate_from_checkpoint", lambda **kw: called.append(kw))
    argv = ["--checkpoint", "x.pt", "--n", "5", "--out", str(out)]
    monkeypatch.setattr(galhpc.runtime.world, "detect_world", lambda: World(rank=1, size=2))
    assert generate_main(argv) == 0 and len(called) == 1
    monkeypatch.setattr(galhpc.runtime.world, "detect_world", lambda: World(rank=0, size=2))
    assert generate_main(argv) == 1 and len(called) == 1
    assert "in use by" in capsys.readouterr().err
