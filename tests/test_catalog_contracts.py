"""Every contract a catalogue depends on: a resume with any content-deciding option changed is
refused naming the option, damaged shards are redone, the master is never published over a
missing shard, shards follow the global rank (not the node-local one), and a shard short by
one row is refused by the reader."""


import h5py
import numpy as np
import pytest
import torch
from test_catalog_encode import encode, write_store
from test_catalog_generate import generate, make_checkpoint
from thread_world import on_ranks

from galhpc.checkpoint import load_model
from galhpc.inference import driver
from galhpc.inference.generate import generate_catalog
from galhpc.inference.options import GenerateOptions, OutputOptions
from galhpc.io.catalog import open_catalog
from galhpc.runtime.errors import CatalogError
from galhpc.runtime.world import World

torch.set_num_threads(1)


def _same(a, b) -> bool:
    """Equal arrays, NaN equal to NaN (a generate catalogue's mag_ab is NaN without a zero point)."""
    a, b = np.asarray(a), np.asarray(b)
    return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc" and b.dtype.kind in "fc")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("contracts")
    return {"av": make_checkpoint(root / "av.pt"), "av2": make_checkpoint(root / "av2.pt", seed=1),
            "vae": make_checkpoint(root / "vae.pt", "vae"), "vae2": make_checkpoint(root / "vae2.pt", "vae", seed=1),
            "store": write_store(root / "store.h5", n=200), "store2": write_store(root / "store2.h5", n=201)}


def read_columns(path):
    with open_catalog(path) as cat:
        return {name: cat.read(name) for name in cat.columns}


def partial(out):
    """What a killed run leaves: the shards but one, no master."""
    (out.parent / (out.name + ".shards") / "000001.h5").unlink()
    out.unlink()


GENERATE_CHANGES = [
    ({"seed": 6}, "seed"),
    ({"n": 151}, "n"),
    ({"batch_size": 16}, "batch_size"),
    ({"counts": (50, 50, 50, 0)}, "counts"),
    ({"conditions": {"component": 1}}, "conditions"),
    ({"precision": "bf16"}, "precision"),
    ({"checkpoint": "av2"}, "checkpoint_sha256"),
    ({"noise_sigma": 0.1}, "emulation"),
    ({"dtype": "float16"}, "dtype"),
    ({"compression": "gzip"}, "compression"),
    ({"table": False}, "table"),
]


@pytest.mark.parametrize("change, key", GENERATE_CHANGES, ids=[k for _, k in GENERATE_CHANGES])
def test_generate_resume_with_one_option_changed_is_refused(ckpts, tmp_path, change, key):
    out = tmp_path / "s.h5"
    generate(ckpts["av"], out)
    partial(out)
    change = dict(change)
    ckpt = ckpts[change.pop("checkpoint", "av")]
    with pytest.raises(CatalogError, match=rf"different settings:(.|\n)*\b{key}: "):
        generate(ckpt, out, **change)
    generate(ckpts["av"], out)  # the original settings resume it


ENCODE_CHANGES = [
    ({"checkpoint": "vae2"}, "checkpoint_sha256"),
    ({"store": "store2"}, "input"),
    ({"seed": 3}, "post_hoc_gmm"),
    ({"gmm_components": 5}, "post_hoc_gmm"),
    ({"precision": "bf16"}, "precision"),
    ({"batch_size": 32}, "batch_size"),
]


@pytest.mark.parametrize("change, key", ENCODE_CHANGES, ids=[f"{k}-{list(c)[0]}" for c, k in ENCODE_CHANGES])
def test_encode_resume_with_one_option_changed_is_refused(ckpts, tmp_path, change, key):
    out = tmp_path / "e.h5"
    base = {"gmm_fit_objects": 100, "shard_size": 64}
    encode(ckpts["vae"], ckpts["store"], out, **base)
    partial(out)
    change = dict(change)
    ckpt, store = ckpts[change.pop("checkpoint", "vae")], ckpts[change.pop("store", "store")]
    with pytest.raises(CatalogError, match=rf"different settings:(.|\n)*\b{key}: "):
        encode(ckpt, store, out, **{**base, **change})


def test_a_damaged_shard_is_redone_and_named(ckpts, tmp_path, capfd):
    """A shard truncated to half its bytes, one short of a row, and one of another run are
    redone by the same command, each named in one warning line; the result is the whole catalogue."""
    out = tmp_path / "s.h5"
    generate(ckpts["av"], out)
    want = read_columns(out)
    shard_dir = tmp_path / "s.h5.shards"
    truncated = shard_dir / "000000.h5"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    with h5py.File(shard_dir / "000001.h5", "a") as f:  # one row short in every dataset
        for name in list(f):
            data = f[name][:-1]
            del f[name]
            f[name] = data
    other = tmp_path / "other.h5"
    generate(ckpts["av"], other, seed=99)
    (shard_dir / "000002.h5").write_bytes((tmp_path / "other.h5.shards" / "000002.h5").read_bytes())
    with pytest.raises(CatalogError, match=r"3 of 3 shard file\(s\)(.|\n)*000002\.h5 \(written by another run"):
        open_catalog(out)  # the reader refuses the damaged catalogue, each shard for its own reason
    capfd.readouterr()
    result = generate(ckpts["av"], out)
    assert result.shards_written == 3
    damaged = [line for line in capfd.readouterr().err.splitlines() if "is damaged" in line]
    assert len(damaged) == 3, damaged
    assert "000000.h5" in damaged[0] and "unreadable" in damaged[0]
    assert "000001.h5" in damaged[1] and "holds 63 rows of" in damaged[1] and "expected 64" in damaged[1]
    assert "000002.h5" in damaged[2] and "another run" in damaged[2]
    got = read_columns(out)
    assert got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)


def test_the_master_is_refused_when_a_planned_shard_is_missing(ckpts, tmp_path, monkeypatch):
    """A rank-assignment fault (here: shard 1 given to no rank) must not publish a master
    whose rows of that shard read as fill values."""
    out = tmp_path / "s.h5"
    monkeypatch.setattr(driver, "assign_shards", lambda pending, rank, size: [s for s in pending if s.index != 1])
    with pytest.raises(CatalogError, match=r"1 of 3 planned shard\(s\) are not complete.*000001\.h5 \(missing\)"):
        generate(ckpts["av"], out)
    assert not out.exists()
    monkeypatch.undo()
    assert generate(ckpts["av"], out).shards_written == 1  # the same command redoes the missing one


def test_shards_follow_the_global_rank_on_a_multi_host_world(ckpts, tmp_path):
    """Two hosts with two ranks each (rank 0..3, local_rank 0,1,0,1): every shard is written
    exactly once, and the catalogue is the one-rank catalogue."""
    model = load_model(ckpts["av"])
    options = GenerateOptions(n=300, seed=5, batch_size=32)
    output = OutputOptions(shard_size=32)
    one = tmp_path / "one.h5"
    generate_catalog(model, options, one, output=output, world=World(), device=torch.device("cpu"),
                     checkpoint="x.pt", checkpoint_sha256="0", config_yaml="")

    def rank(world):
        return generate_catalog(model, options, tmp_path / "four.h5", output=output, world=world,
                                device=torch.device("cpu"), checkpoint="x.pt", checkpoint_sha256="0", config_yaml="")

    results = on_ranks(4, rank, ranks_per_node=2)
    errors = [f"rank {r}: {err}" for r, err in enumerate(results) if isinstance(err, BaseException)]
    assert not errors, errors
    assert sorted(r.shards_written for r in results) == [2, 2, 3, 3]  # 10 shards over 4 ranks
    got, want = read_columns(tmp_path / "four.h5"), read_columns(one)
    assert all(_same(got[k], want[k]) for k in want)


def test_a_shard_short_by_one_row_is_a_catalog_error(ckpts, tmp_path):
    out = tmp_path / "s.h5"
    generate(ckpts["av"], out)
    with h5py.File(tmp_path / "s.h5.shards" / "000002.h5", "a") as f:
        data = f["z"][:-1]
        del f["z"]
        f["z"] = data
    with open_catalog(out) as cat, pytest.raises(  # checked when the column is first read
            CatalogError, match=r"000002\.h5 cannot supply its rows \('z' holds 21 rows, the master expects 22\)"):
        cat.read("z")
