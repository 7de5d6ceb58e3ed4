"""A catalogue re-run from its own /meta (galhpc-encode/galhpc-generate --rerun), and the option objects:
flags, records and fingerprints."""

import argparse
import json
import os

import h5py
import numpy as np
import pytest
import torch
from test_catalog_encode import write_store
from test_catalog_generate import make_checkpoint

from galhpc.cli.encode import build_parser as encode_parser
from galhpc.cli.encode import main as encode_main
from galhpc.cli.generate import build_parser as generate_parser
from galhpc.cli.generate import main as generate_main
from galhpc.inference.encode import encode_fingerprint
from galhpc.inference.generate import SurveySetup, generate_fingerprint
from galhpc.inference.options import (
    EncodeOptions,
    GenerateOptions,
    OutputOptions,
    from_record,
    split_keywords,
    to_record,
)

torch.set_num_threads(1)


def columns(path):
    """Every dataset of the master, the compound table split into its fields (NaN compares equal)."""
    out = {}
    with h5py.File(path) as f:
        for k in f:
            if isinstance(f[k], h5py.Dataset):
                data = f[k][()]
                out.update({f"{k}.{n}": data[n] for n in data.dtype.names} if data.dtype.names else {k: data})
    return out


def shard_bytes(out):
    return {p.name: p.read_bytes() for p in sorted((out.parent / (out.name + ".shards")).glob("[0-9]*.h5"))}


def rerun_after_losing_a_shard(main, out, tmp_path):
    """Copy `out`'s arrays, re-run a complete catalogue (nothing changes), delete a shard, re-run from /meta."""
    before, shards = columns(out), shard_bytes(out)
    assert len(shards) >= 3
    assert main(["--rerun", str(out)]) == 0
    assert shard_bytes(out) == shards  # complete: no shard re-made
    lost = sorted(shards)[1]
    (out.parent / (out.name + ".shards") / lost).unlink()
    os.chdir(tmp_path / "elsewhere")  # the recorded paths are absolute: any folder will do
    assert main(["--rerun", str(out)]) == 0
    after = columns(out)
    assert set(after) == set(before)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert set(shard_bytes(out)) == set(shards)


def test_generate_rerun_from_meta_redoes_a_lost_shard_and_nothing_else(tmp_path, monkeypatch):
    ckpt = make_checkpoint(tmp_path / "av.pt", "astrovader")
    out = tmp_path / "synth.h5"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    assert generate_main(["--checkpoint", str(ckpt), "--n", "100", "--out", str(out), "--batch-size", "16",
                          "--shard-size", "32", "--seed", "7", "--noise-sigma", "0.01", "--threads", "1",
                          "--device", "cpu", "--compression", "gzip:1"]) == 0
    with h5py.File(out) as f:
        meta = dict(f["meta"].attrs)
    assert from_record(GenerateOptions, meta["generate_options"]) == GenerateOptions(
        n=100, seed=7, batch_size=16, noise_sigma=0.01)
    assert from_record(OutputOptions, meta["output_options"]) == OutputOptions(
        shard_size=32, threads=1, device="cpu", compression="gzip:1")
    rerun_after_losing_a_shard(generate_main, out, tmp_path)


def test_encode_rerun_from_meta_redoes_a_lost_shard_and_nothing_else(tmp_path, monkeypatch):
    write_store(tmp_path / "store.h5", n=200)  # named relative to the working folder below
    make_checkpoint(tmp_path / "vae.pt", "vae")
    out = tmp_path / "clusters.h5"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    assert encode_main(["--checkpoint", "vae.pt", "--store", "store.h5", "--out", str(out), "--batch-size", "25",
                        "--shard-size", "50", "--gmm-components", "3", "--gmm-fit-objects", "100",
                        "--threads", "1", "--device", "cpu"]) == 0
    rerun_after_losing_a_shard(encode_main, out, tmp_path)


def test_rerun_refuses_other_catalogues_and_other_flags(tmp_path, capsys):
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    assert generate_main(["--rerun", str(plain)]) == 1
    assert "no /meta" in capsys.readouterr().err
    with h5py.File(plain, "a") as f:
        f.create_group("meta").attrs["kind"] = "encode"
    assert generate_main(["--rerun", str(plain)]) == 1
    assert "not a galhpc-generate catalogue" in capsys.readouterr().err
    assert encode_main(["--rerun", str(plain)]) == 1
    assert "records no encode_options" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        encode_main(["--rerun", str(plain), "--checkpoint", "c.pt"])
    assert stop.value.code == 2 and "give no --checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        generate_main(["--out", "x.h5"])
    assert stop.value.code == 2 and "required: --checkpoint, --n" in capsys.readouterr().err


def test_options_from_the_command_line_and_back_through_a_record():
    args = encode_parser().parse_args(["--checkpoint", "c.pt", "--store", "s.h5", "--out", "o.h5", "--passthrough",
                                       "ra,dec", "--no-table", "--precision", "bf16", "--shard-minutes", "2"])
    encode, output = EncodeOptions.from_args(args), OutputOptions.from_args(args)
    assert encode == EncodeOptions(passthrough=("ra", "dec"))
    assert output == OutputOptions(table=False, precision="bf16", shard_minutes=2.0)
    assert output.shard_seconds == 120.0
    assert from_record(EncodeOptions, to_record(encode)) == encode
    assert from_record(OutputOptions, to_record(output), overwrite=True) == OutputOptions(
        table=False, precision="bf16", shard_minutes=2.0, overwrite=True)
    args = generate_parser().parse_args(["--checkpoint", "c.pt", "--n", "9", "--out", "o.h5", "--counts", "4,5",
                                         "--condition", "label=3", "--target-columns", "m,r"])
    generate = GenerateOptions.from_args(args)
    assert generate == GenerateOptions(n=9, counts=(4, 5), conditions={"label": 3}, target_columns=("m", "r"))
    assert from_record(GenerateOptions, to_record(generate)) == generate
    with pytest.raises(TypeError, match="no option colour"):
        split_keywords({"n": 3, "colour": 1}, GenerateOptions, OutputOptions)
    assert isinstance(args, argparse.Namespace)


def test_fingerprints_hold_the_options_that_shape_the_rows_and_nothing_else():
    """The derived fingerprints have the keys and values the hand-built ones had; options that do not
    change a row (threads, overwrite, automatic-size limits, the post-hoc GMM of a mixture model) stay out."""
    cpu = torch.device("cpu")
    store = {"path": "s.h5", "n": 10}
    fp = encode_fingerprint(EncodeOptions(batch_size=8, gmm_components=4, gmm_fit_objects=50, seed=2),
                            OutputOptions(shard_size=16, compression="gzip:1", precision="bf16"), "abc", store, cpu,
                            True, ["ra"])
    assert fp == {"kind": "encode", "cluster_column": "component", "checkpoint_sha256": "abc", "input": store,
                  "passthrough": ["ra"], "batch_size": 8,
                  "post_hoc_gmm": {"max_components": 4, "fit_objects": 50, "seed": 2},
                  "shard_size": 16, "compression": "gzip:1", "table": True, "device_type": "cpu", "precision": "bf16"}
    same = encode_fingerprint(EncodeOptions(batch_size=8, gmm_components=9, passthrough=("x",)),
                              OutputOptions(shard_size=16, compression="gzip:1", precision="bf16", threads=3,
                                            overwrite=True, shard_minutes=1.0, objects_per_second=5.0, device="cpu"),
                              "abc", store, cpu, False, ["ra"])
    assert same == {**fp, "post_hoc_gmm": None}
    gen = generate_fingerprint(GenerateOptions(n=5, counts=(2, 3), conditions={"a": 1}, psf="moffat:fwhm=1",
                                               pixel_scale=0.2, target_bins=3),
                               SurveySetup(), OutputOptions(), "abc", cpu)
    assert gen == {"kind": "generate", "checkpoint_sha256": "abc", "n": 5, "seed": 0, "batch_size": 256,
                   "component": None, "counts": [2, 3], "conditions": {"a": 1},
                   "emulation": SurveySetup().emulation.describe(), "keep_clean": False, "dtype": "float32",
                   "photometry": None, "rejection": None, "shard_size": None, "compression": "none", "table": True,
                   "device_type": "cpu", "precision": "fp32"}
    json.dumps(gen)  # JSON as it is recorded
