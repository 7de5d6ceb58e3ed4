"""bf16 catalogues are identical on 1 and 2 ranks (real mpirun)."""

import shutil

import pytest
import torch
from test_catalog_generate import make_checkpoint
from test_catalog_mpi import assert_same_catalogue, mpirun

from galhpc.inference.encode import encode_from_checkpoint
from galhpc.inference.generate import generate_from_checkpoint
from galhpc.inference.options import EncodeOptions, GenerateOptions, OutputOptions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun"),
]
torch.set_num_threads(1)


def test_bf16_generate_and_encode_are_identical_on_1_and_2_ranks(tiny_store, tiny_checkpoint, tmp_path):
    ckpt = make_checkpoint(tmp_path / "av.pt", "astrovader")
    generate_from_checkpoint(ckpt, tmp_path / "g1.h5",
                             GenerateOptions(n=200, batch_size=32, seed=4, noise_sigma=0.01, dtype="float16"),
                             OutputOptions(shard_size=64, threads=1, device="cpu", precision="bf16"))
    mpirun(2, "galhpc.cli.generate", ["--checkpoint", ckpt, "--out", tmp_path / "g2.h5", "--n", "200",
                                      "--batch-size", "32", "--shard-size", "64", "--seed", "4", "--noise-sigma",
                                      "0.01", "--dtype", "float16", "--threads", "1", "--device", "cpu",
                                      "--precision", "bf16"])
    assert_same_catalogue(tmp_path / "g1.h5", tmp_path / "g2.h5")
    # the shared tiny store (120 objects: shards of 100 and 20) and its trained ConvVAE (post-hoc GMM: 4 at most)
    encode_from_checkpoint(tiny_checkpoint, tiny_store, tmp_path / "e1.h5",
                           EncodeOptions(batch_size=50, gmm_components=4),
                           OutputOptions(shard_size=100, threads=1, device="cpu", precision="bf16"))
    mpirun(2, "galhpc.cli.encode", ["--checkpoint", tiny_checkpoint, "--store", tiny_store, "--out", tmp_path / "e2.h5",
                                    "--batch-size", "50", "--shard-size", "100", "--gmm-components", "4",
                                    "--threads", "1", "--device", "cpu",
                                    "--precision", "bf16"])
    assert_same_catalogue(tmp_path / "e1.h5", tmp_path / "e2.h5")
