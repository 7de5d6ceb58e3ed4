"""galhpc-generate in one process: content against model.sample, layout, resume, bad input, emulation."""

import errno
import os
import subprocess
import time

import h5py
import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve

from galhpc.checkpoint import CheckpointError, load_model, save_checkpoint
from galhpc.cli.generate import main as generate_main
from galhpc.config import config_from_dict
from galhpc.inference.emulate import EmulationError, load_psf
from galhpc.inference.generate import generate_catalog, generate_from_checkpoint
from galhpc.inference.options import GenerateOptions, OutputOptions, split_keywords
from galhpc.inference.seeds import NOISE_STREAM, derived_seed
from galhpc.io import catalog_writer
from galhpc.models import build_model
from galhpc.models.base import SampleCondition
from galhpc.models.vae import ConvVAE
from galhpc.runtime.errors import CatalogError
from galhpc.runtime.world import World

torch.set_num_threads(1)

SMALL = {
    "astrovader": {"n_clusters": 4, "filters": [8, 8, 4], "kernels": [3, 3, 3]},
    "vae": {"filters": [8, 8, 8, 8]},
}


def make_checkpoint(path, name="astrovader", image_size=16, latent_dim=6, seed=0):
    """A small registered model with random weights, saved as a real checkpoint."""
    torch.manual_seed(seed)
    cfg = config_from_dict(
        {"model": {"name": name, "image_size": image_size, "latent_dim": latent_dim, "params": SMALL[name]}}
    )
    model = build_model(cfg.model)
    save_checkpoint(path, {"model_name": name, "model_state": model.state_dict(), "config": cfg.to_yaml()})
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "av.pt")


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "vae.pt", "vae")


def generate(ckpt, out, **kw):
    kw = {"n": 150, "batch_size": 32, "shard_size": 64, "seed": 5, "threads": 1, "device": "cpu", **kw}
    return generate_from_checkpoint(ckpt, out, *split_keywords(kw, GenerateOptions, OutputOptions))


def read_all(path):
    with h5py.File(path) as f:
        return {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}


def test_objects_are_model_samples_keyed_by_block_seed(ckpt, tmp_path):
    result = generate(ckpt, tmp_path / "s.h5")
    assert result.n_shards == 3 and result.objects_written == 150
    cat = read_all(tmp_path / "s.h5")
    assert cat["images"].shape == (150, 16, 16) and cat["images"].dtype == np.float32
    assert np.array_equal(cat["object_id"], np.arange(150))
    model = load_model(ckpt)
    with torch.inference_mode():
        for start in range(0, 150, 32):  # blocks of the batch grid
            stop = min(start + 32, 150)
            seed = derived_seed(5, start)
            assert (cat["seed"][start:stop] == seed).all()
            oracle = model.sample(stop - start, torch.Generator().manual_seed(seed))
            assert np.array_equal(cat["images"][start:stop], oracle.images[:, 0].numpy())
            assert np.array_equal(cat["z"][start:stop], oracle.z.numpy())
            assert np.array_equal(cat["component"][start:stop], oracle.component.numpy())
    assert len(set(cat["component"])) > 1


def test_counts_component_float16_compression(ckpt, tmp_path):
    generate(ckpt, tmp_path / "c.h5", n=100, counts=(30, 0, 70, 0), dtype="float16", compression="gzip:1")
    cat = read_all(tmp_path / "c.h5")
    assert np.array_equal(cat["component"], np.r_[np.zeros(30), np.full(70, 2)])
    assert cat["images"].dtype == np.float16
    with h5py.File(tmp_path / "c.h5.shards/000000.h5") as f:
        assert f["images"].compression == "gzip" and f["images"].chunks[1:] == (16, 16)
    generate(ckpt, tmp_path / "k.h5", n=40, component=3)
    assert (read_all(tmp_path / "k.h5")["component"] == 3).all()


def test_master_reads_in_h5ls_h5dump_and_astropy(ckpt, tmp_path):
    from astropy.table import Table

    out = tmp_path / "s.h5"
    generate(ckpt, out, n=70)
    elsewhere = {"cwd": "/", "capture_output": True, "text": True, "timeout": 60}
    listing = subprocess.run(["h5ls", "-r", str(out)], **elsewhere)
    assert listing.returncode == 0, listing.stderr
    assert "/images                  Dataset {70, 16, 16}" in listing.stdout
    header = subprocess.run(["h5dump", "-H", str(out)], **elsewhere)
    assert header.returncode == 0 and 'ATTRIBUTE "checkpoint_sha256"' in header.stdout
    data = subprocess.run(["h5dump", "-d", "/object_id", str(out)], **elsewhere)
    assert data.returncode == 0 and "66, 67, 68, 69\n" in data.stdout  # reads through the shards
    table = Table.read(out, path="catalog")
    cat = read_all(out)
    assert len(table) == 70 and set(table.colnames) == {"z", "component", "seed", "object_id", "flux_norm", "flux",
                                                        "mag_ab"}
    assert np.array_equal(table["z"], cat["z"]) and np.array_equal(table["seed"], cat["seed"])
    with h5py.File(out) as f:
        meta = f["meta"].attrs
        assert meta["n_shards"] == 2 and meta["ranks"] == 1 and meta["kind"] == "generate"
        assert "astrovader" in meta["config"] and len(meta["checkpoint_sha256"]) == 64


def test_rerun_skips_complete_shards_and_restores_a_lost_one(ckpt, tmp_path):
    out = tmp_path / "s.h5"
    generate(ckpt, out)
    reference = read_all(out)
    shard_dir = tmp_path / "s.h5.shards"
    kept = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.h5")}
    (shard_dir / "000001.h5").unlink()
    stale = shard_dir / ".000002.h5.tmp.node-99.99"  # a killed writer on another node, a week ago
    stale.write_bytes(b"half a shard")
    os.utime(stale, (time.time() - 7 * 86400,) * 2)
    result = generate(ckpt, out)
    assert result.shards_written == 1
    assert sorted(p.name for p in shard_dir.iterdir()) == ["000000.h5", "000001.h5", "000002.h5", "manifest.json"]
    assert {n: shard_dir.joinpath(n).stat().st_mtime_ns for n in ("000000.h5", "000002.h5")} == {
        n: kept[n] for n in ("000000.h5", "000002.h5")}
    again = read_all(out)
    # bitwise: mag_ab is NaN without a zero point
    assert all(reference[k].tobytes() == again[k].tobytes() for k in reference)


def test_cli_refuses_other_settings_unless_overwrite(ckpt, tmp_path, capsys):
    out = tmp_path / "s.h5"
    args = ["--checkpoint", str(ckpt), "--out", str(out), "--batch-size", "32", "--threads", "1", "--device", "cpu"]
    assert generate_main([*args, "--n", "40"]) == 0
    before = read_all(out)
    assert generate_main([*args, "--n", "41"]) == 1
    err = capsys.readouterr().err
    assert "n: 40 -> 41" in err and "--overwrite" in err
    assert np.array_equal(read_all(out)["images"], before["images"])
    assert generate_main([*args, "--n", "41", "--overwrite"]) == 0
    assert read_all(out)["images"].shape[0] == 41


def test_bad_checkpoints_and_options_give_clear_errors(ckpt, vae_ckpt, tmp_path, capsys):
    out = str(tmp_path / "s.h5")
    base = ["--out", out, "--n", "10", "--device", "cpu"]
    assert generate_main(["--checkpoint", str(vae_ckpt), *base, "--component", "1"]) == 1
    assert "'vae' ignored component=1" in capsys.readouterr().err
    assert generate_main(["--checkpoint", str(ckpt), *base, "--component", "9"]) == 1
    assert "component 9 outside 0..3" in capsys.readouterr().err
    assert generate_main(["--checkpoint", str(ckpt), *base, "--keep-clean"]) == 1
    assert "needs survey emulation" in capsys.readouterr().err
    broken = tmp_path / "broken.pt"
    broken.write_bytes(ckpt.read_bytes()[:1000])
    assert generate_main(["--checkpoint", str(broken), *base]) == 1
    assert f"checkpoint {broken} is unreadable" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="weights do not fit"):
        payload = torch.load(ckpt, weights_only=False)
        payload["config"] = payload["config"].replace("latent_dim: 6", "latent_dim: 7")
        save_checkpoint(tmp_path / "other.pt", payload)
        generate(tmp_path / "other.pt", tmp_path / "o.h5")
    assert not (tmp_path / "s.h5").exists()


def test_injected_full_disk_keeps_complete_shards(ckpt, tmp_path, monkeypatch):
    out = tmp_path / "s.h5"
    generate(ckpt, tmp_path / "ref.h5")
    reference = read_all(tmp_path / "ref.h5")
    original = catalog_writer.ShardWriter.write

    def write_until_full(self, offset, columns):
        if self.shard.index == 1 and offset > 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, offset, columns)

    monkeypatch.setattr(catalog_writer.ShardWriter, "write", write_until_full)
    with pytest.raises(CatalogError, match=r"(?s)shard 1 \(objects 64..127\).*disk is full.*stay valid"):
        generate(ckpt, out)
    shard_dir = tmp_path / "s.h5.shards"
    assert not out.exists()
    assert sorted(p.name for p in shard_dir.iterdir()) == ["000000.h5", "manifest.json"]
    with h5py.File(shard_dir / "000000.h5") as f:
        assert np.array_equal(f["images"][()], reference["images"][:64])
    monkeypatch.setattr(catalog_writer.ShardWriter, "write", original)
    generate(ckpt, out)  # space freed: resume
    assert all(reference[k].tobytes() == v.tobytes() for k, v in read_all(out).items())  # bitwise (NaN mag_ab)


def test_real_full_disk_on_a_tiny_tmpfs(ckpt, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr!r}")
    try:
        with pytest.raises(CatalogError, match="disk is full"):
            generate(ckpt, disk / "s.h5", n=400)  # ~100 KiB per 64-object shard
        shard_dir = disk / "s.h5.shards"
        complete = sorted(shard_dir.glob("0*.h5"))
        assert complete and not list(shard_dir.glob(".*tmp*"))
        for path in complete:
            with h5py.File(path) as f:
                assert f["images"].shape[0] == f.attrs["stop"] - f.attrs["start"]
                assert np.isfinite(f["images"][()]).all()
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_survey_emulation_psf_and_white_noise(ckpt, tmp_path):
    sigma = 0.05
    generate(ckpt, tmp_path / "e.h5", n=70, psf="gaussian:fwhm=0.15", noise_sigma=sigma, keep_clean=True,
             pixel_scale=0.03)
    cat = read_all(tmp_path / "e.h5")
    psf = load_psf("gaussian:fwhm=0.15", 0.03)
    assert psf.shape[0] % 2 == 1 and abs(psf.sum() - 1) < 1e-6
    convolved = np.stack([fftconvolve(im, psf, mode="same") for im in cat["images_clean"].astype(np.float64)])
    noise = cat["images"] - convolved
    assert abs(noise.std() - sigma) < 0.005 and abs(noise.mean()) < 0.005
    expected = np.random.default_rng(derived_seed(5, 42, NOISE_STREAM)).standard_normal((1, 16, 16))[0] * sigma
    np.testing.assert_allclose(noise[42], expected, atol=1e-4)
    # the noise of an object does not depend on the batch it was made in
    generate(ckpt, tmp_path / "b.h5", n=70, batch_size=16, noise_sigma=sigma, keep_clean=True)
    other = read_all(tmp_path / "b.h5")
    np.testing.assert_allclose(other["images"] - other["images_clean"], noise, atol=1e-4)


def test_cosmos_noise_is_correlated_with_the_requested_variance(ckpt, tmp_path):
    generate(ckpt, tmp_path / "c.h5", n=32, cosmos_noise=True, noise_sigma=0.1, keep_clean=True, pixel_scale=0.03)
    cat = read_all(tmp_path / "c.h5")
    noise = (cat["images"] - cat["images_clean"]).astype(np.float64)
    assert abs(noise.std() - 0.1) < 0.02
    neighbour = np.corrcoef(noise[:, :, :-1].ravel(), noise[:, :, 1:].ravel())[0, 1]
    assert neighbour > 0.1  # COSMOS noise is correlated between pixels; white noise is not


def test_psf_from_fits_and_bad_psfs(tmp_path):
    import fitsio

    image = np.zeros((5, 5))
    image[2, 2], image[2, 3] = 3.0, 1.0
    fitsio.write(str(tmp_path / "psf.fits"), image, clobber=True)
    psf = load_psf(str(tmp_path / "psf.fits"))
    assert psf[2, 2] == pytest.approx(0.75) and psf.dtype == np.float32
    fitsio.write(str(tmp_path / "cube.fits"), np.ones((2, 3, 3)), clobber=True)
    with pytest.raises(EmulationError, match="cube.fits: primary image must be 2-D"):
        load_psf(str(tmp_path / "cube.fits"))
    fitsio.write(str(tmp_path / "zero.fits"), np.zeros((3, 3)), clobber=True)
    with pytest.raises(EmulationError, match="positive sum"):
        load_psf(str(tmp_path / "zero.fits"))
    with pytest.raises(EmulationError, match="neither a FITS file nor a GalSim profile"):
        load_psf(str(tmp_path / "missing.fits"))
    with pytest.raises(EmulationError, match="expected key=number"):
        load_psf("moffat:fwhm")
    assert os.path.exists(tmp_path / "psf.fits")


class EncoderOnly(ConvVAE):
    """A model that encodes but does not generate."""

    generative = False


def test_conditions_for_an_unconditional_model_are_refused_before_any_work(tmp_path):
    """AstroVaDEr's, the VAEs' sample() take **conditions and ignore them: a --condition the
    model does not use is one CatalogError, not a catalogue that silently ignored it."""
    model = ConvVAE(image_size=16, latent_dim=6, filters=[8, 8, 8, 8])
    with pytest.raises(CatalogError, match=r"'vae' is not conditional: --condition log_snr would be ignored"):
        generate_catalog(model, GenerateOptions(n=4, conditions={"log_snr": 2.5}), tmp_path / "x.h5",
                         output=OutputOptions(), world=World(), device=torch.device("cpu"), checkpoint="x.pt",
                         checkpoint_sha256="0", config_yaml="")
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.shards").exists()


def test_a_model_that_cannot_sample_is_refused(tmp_path):
    model = EncoderOnly(image_size=16, latent_dim=6, filters=[8, 8, 8, 8])
    with pytest.raises(CatalogError, match="'vae' is not generative"):
        generate_catalog(model, GenerateOptions(n=4), tmp_path / "x.h5", output=OutputOptions(), world=World(),
                         device=torch.device("cpu"), checkpoint="x.pt", checkpoint_sha256="0", config_yaml="")
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.shards").exists()


class DimmableVAE(ConvVAE):
    """A plain VAE whose sample takes a condition, as conditional priors do."""

    sample_condition = SampleCondition("float", "brightness")

    def sample(self, n, generator=None, brightness=1.0, **conditions):
        if conditions:
            raise ValueError(f"unknown condition(s) {sorted(conditions)}")
        samples = super().sample(n, generator)
        return samples._replace(images=samples.images * brightness)


def test_conditions_reach_model_sample_and_the_unit_prior_has_no_component(tmp_path):
    torch.manual_seed(0)
    model = DimmableVAE(image_size=16, latent_dim=6, filters=[8, 8, 8, 8])
    common = dict(output=OutputOptions(shard_size=32), world=World(), device=torch.device("cpu"),
                  checkpoint="x.pt", checkpoint_sha256="0", config_yaml="")
    generate_catalog(model, GenerateOptions(n=40, batch_size=16), tmp_path / "plain.h5", **common)
    generate_catalog(model, GenerateOptions(n=40, batch_size=16, conditions={"brightness": 0.5}),
                     tmp_path / "dim.h5", **common)
    plain, dim = read_all(tmp_path / "plain.h5"), read_all(tmp_path / "dim.h5")
    assert (plain["component"] == -1).all()
    np.testing.assert_array_equal(dim["images"], plain["images"] * np.float32(0.5))
    with h5py.File(tmp_path / "dim.h5") as f:
        assert '"conditions": {"brightness": 0.5}' in f["meta"].attrs["fingerprint"]
    with pytest.raises(CatalogError, match=r"rejected sample\(\) with conditions \{'colour': 'red'\}"):
        generate_catalog(model, GenerateOptions(n=4, conditions={"colour": "red"}), tmp_path / "bad.h5", **common)


def test_condition_arguments_are_parsed_as_yaml_scalars():
    import argparse

    from galhpc.cli.generate import build_parser
    from galhpc.inference.options import parse_condition, parse_counts

    args = build_parser().parse_args(["--checkpoint", "c.pt", "--n", "1", "--out", "o.h5", "--condition", "label=3",
                                      "--condition", "ratio=0.5", "--condition", "name=spiral", "--condition",
                                      "on=true"])
    assert dict(args.condition) == {"label": 3, "ratio": 0.5, "name": "spiral", "on": True}
    with pytest.raises(argparse.ArgumentTypeError, match="expected key=value"):
        parse_condition("label")
    assert parse_counts("5,0,7") == (5, 0, 7)
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated integers"):
        parse_counts("5,x")
