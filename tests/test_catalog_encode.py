"""galhpc-encode in one process: columns against direct model calls, post-hoc GMM, bad input."""

import json

import h5py
import numpy as np
import pytest
import torch
from test_catalog_generate import make_checkpoint

from galhpc.checkpoint import load_model
from galhpc.cli.encode import main as encode_main
from galhpc.inference.encode import encode_catalog, encode_from_checkpoint
from galhpc.inference.options import EncodeOptions, OutputOptions, split_keywords
from galhpc.mixture.bayesian import fit_stick_breaking_bgm
from galhpc.mixture.diagonal import fit_diag_gmm, gmm_responsibilities
from galhpc.models.vae import ConvVAE
from galhpc.runtime.errors import CatalogError
from galhpc.runtime.world import World

torch.set_num_threads(1)
N = 600


# not the shared tiny_store: cheap 16x16 stores of any size, with clusters to find, for random-weight checkpoints
def write_store(path, n=N, size=16, with_ids=True):
    """Three families of round blobs (three sizes) plus noise: a store with clusters to find."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    widths = 1.2 + 2.0 * (np.arange(n) % 3)
    images = np.exp(-(xx**2 + yy**2)[None] / (2 * widths[:, None, None] ** 2))
    images += 0.02 * rng.standard_normal(images.shape)
    with h5py.File(path, "w") as f:
        f["images"] = images.astype(np.float32)
        if with_ids:
            f["object_id"] = np.arange(n, dtype=np.int64) * 10 + 3
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    return {
        "store": write_store(root / "store.h5"),
        "vae": make_checkpoint(root / "vae.pt", "vae"),
        "av": make_checkpoint(root / "av.pt", "astrovader"),
    }


def encode(ckpt, store, out, **kw):
    kw = {"batch_size": 64, "shard_size": 128, "gmm_components": 6, "gmm_fit_objects": 300, "threads": 1,
          "device": "cpu", **kw}
    return encode_from_checkpoint(ckpt, store, out, *split_keywords(kw, EncodeOptions, OutputOptions))


def read_all(path):
    with h5py.File(path) as f:
        return {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}


def test_columns_match_the_model_and_the_stored_post_hoc_gmm(files, tmp_path):
    out = tmp_path / "e.h5"
    encode(files["vae"], files["store"], out)
    cat = read_all(out)
    with h5py.File(files["store"]) as f:
        images, ids = f["images"][()], f["object_id"][()]
    with h5py.File(out) as f:
        gmm = {k: torch.from_numpy(f["gmm"][k][()]) for k in ("log_pi", "mu", "var")}
        assert f["meta"].attrs["gmm"] == "post-hoc"
    assert np.array_equal(cat["object_id"], ids)
    model = load_model(files["vae"])
    with torch.inference_mode():
        for lo in range(0, N, 64):  # the batch grid of the run: bit-identical
            x = torch.from_numpy(images[lo:lo + 64, None])
            enc = model.encode(x)
            assert np.array_equal(cat["mu"][lo:lo + 64], enc.mu.numpy())
            assert np.array_equal(cat["logvar"][lo:lo + 64], enc.logvar.numpy())
            gamma = gmm_responsibilities(enc.mu, gmm["log_pi"], gmm["mu"], gmm["var"]).numpy()
            np.testing.assert_allclose(cat["gamma"][lo:lo + 64], gamma, atol=1e-6)
            recon = model.decode(enc.mu).numpy()[:, 0].astype(np.float64)
            mse = ((recon - images[lo:lo + 64]) ** 2).mean(axis=(1, 2))
            np.testing.assert_allclose(cat["recon_mse"][lo:lo + 64], mse, rtol=1e-5)
    assert np.array_equal(cat["component"], cat["gamma"].argmax(axis=1))
    np.testing.assert_allclose(cat["gamma"].sum(axis=1), 1, atol=1e-5)
    # the three blob sizes are three clusters, even for an untrained encoder
    k = cat["gamma"].shape[1]
    assert k == 3
    purity = sum(np.bincount(cat["component"][np.arange(N) % 3 == c], minlength=k).max() for c in range(3)) / N
    assert purity > 0.95


def test_post_hoc_gmm_is_the_documented_fit_and_is_reused_on_resume(files, tmp_path):
    out = tmp_path / "e.h5"
    encode(files["vae"], files["store"], out)
    model = load_model(files["vae"])
    with h5py.File(files["store"]) as f:
        strided = torch.from_numpy(f["images"][::2][:300, None])  # N // fit_objects = 2
    with torch.inference_mode():
        mu = torch.cat([model.encode(part).mu for part in strided.split(64)]).numpy()  # as the fit reads them
    oracle = fit_diag_gmm(mu, fit_stick_breaking_bgm(mu, 6, seed=0).k, seed=0)
    with h5py.File(out) as f:
        np.testing.assert_allclose(f["gmm/mu"][()], oracle.mu.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(f["gmm/log_pi"][()], oracle.log_pi.numpy(), rtol=1e-4, atol=1e-5)
    reference = read_all(out)
    gmm_file = tmp_path / "e.h5.shards" / "gmm.h5"
    stamp = gmm_file.stat().st_mtime_ns
    (tmp_path / "e.h5.shards" / "000002.h5").unlink()
    result = encode(files["vae"], files["store"], out)
    assert result.shards_written == 1 and gmm_file.stat().st_mtime_ns == stamp
    assert all(np.array_equal(reference[k], v) for k, v in read_all(out).items())


def test_mixture_model_uses_its_own_gamma(files, tmp_path):
    out = tmp_path / "a.h5"
    encode(files["av"], files["store"], out)
    cat = read_all(out)
    model = load_model(files["av"])
    with h5py.File(files["store"]) as f:
        x = torch.from_numpy(f["images"][:64])[:, None]
    with torch.inference_mode():
        gamma = model.cluster_probs(model.encode(x).mu).numpy()
    assert np.array_equal(cat["gamma"][:64], gamma) and cat["gamma"].shape == (N, 4)
    with h5py.File(out) as f:
        assert "gmm" not in f and f["meta"].attrs["gmm"] == "model"


class StarGalaxyVAE(ConvVAE):
    """A ConvVAE with a model-specific per-object column."""

    def extra_columns(self, x, encoding):
        return {"bright": x.flatten(1).amax(dim=1) > 0.5, "flux": x.flatten(1).sum(dim=1).double()}


def test_extra_columns_and_store_without_object_id(files, tmp_path):
    from astropy.table import Table

    store = write_store(tmp_path / "noid.h5", n=200, with_ids=False)
    torch.manual_seed(0)
    model = StarGalaxyVAE(image_size=16, latent_dim=6, filters=[8, 8, 8, 8])
    out = tmp_path / "x.h5"
    encode_catalog(model, store, EncodeOptions(batch_size=50, gmm_components=4, gmm_fit_objects=200), out,
                   output=OutputOptions(shard_size=100), world=World(), device=torch.device("cpu"), channels=1,
                   image_size=16, checkpoint="none", checkpoint_sha256="0" * 64, config_yaml="")
    cat = read_all(out)
    with h5py.File(store) as f:
        images = f["images"][()]
    assert np.array_equal(cat["object_id"], np.arange(200))
    assert cat["bright"].dtype == np.int8 and np.array_equal(cat["bright"], images.max(axis=(1, 2)) > 0.5)
    assert cat["flux"].dtype == np.float32
    table = Table.read(out, path="catalog")
    assert {"mu", "logvar", "gamma", "component", "recon_mse", "object_id", "bright", "flux"} <= set(table.colnames)
    assert np.array_equal(table["component"], cat["component"])


def test_bad_inputs_are_refused_with_the_file_named(files, tmp_path, capsys):
    args = ["--checkpoint", str(files["vae"]), "--out", str(tmp_path / "e.h5"), "--device", "cpu"]
    small = write_store(tmp_path / "small.h5", n=20, size=8)
    assert encode_main([*args, "--store", str(small)]) == 1
    assert f"{small}: /images holds 1-channel 8x8 images, but the checkpoint's model 'vae' expects 1-channel 16x16" \
        in capsys.readouterr().err
    with h5py.File(tmp_path / "noimages.h5", "w") as f:
        f["pixels"] = np.zeros((3, 16, 16))
    assert encode_main([*args, "--store", str(tmp_path / "noimages.h5")]) == 1
    assert "noimages.h5 has no dataset /images" in capsys.readouterr().err
    (tmp_path / "text.h5").write_text("hello")
    assert encode_main([*args, "--store", str(tmp_path / "text.h5")]) == 1
    assert "text.h5 cannot be opened as HDF5" in capsys.readouterr().err
    assert not (tmp_path / "e.h5").exists()


def test_existing_output_of_another_input_is_refused(files, tmp_path, capsys):
    out = tmp_path / "e.h5"
    args = ["--checkpoint", str(files["vae"]), "--out", str(out), "--batch-size", "64", "--device", "cpu",
            "--gmm-components", "6", "--gmm-fit-objects", "300", "--threads", "1"]
    assert encode_main([*args, "--store", str(files["store"])]) == 0
    other = write_store(tmp_path / "other.h5", n=N - 3)
    assert encode_main([*args, "--store", str(other)]) == 1
    err = capsys.readouterr().err
    assert "different settings" in err and "--overwrite" in err and "images_shape" in err
    assert encode_main([*args, "--store", str(other), "--overwrite"]) == 0
    assert read_all(out)["mu"].shape == (N - 3, 6)


def test_partial_output_of_an_older_encode_with_label_is_not_resumed(files, tmp_path):
    """Older galhpc-encode wrote the cluster as `label`: its shards must not be stitched with `component` ones."""
    out = tmp_path / "e.h5"
    encode(files["vae"], files["store"], out)
    shard_dir = tmp_path / "e.h5.shards"
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    del manifest["cluster_column"]  # as an older run recorded it
    (shard_dir / "manifest.json").write_text(json.dumps(manifest))
    (shard_dir / "000002.h5").unlink()
    out.unlink()
    with pytest.raises(CatalogError, match="cluster_column: None -> 'component'"):
        encode(files["vae"], files["store"], out)
    encode(files["vae"], files["store"], out, overwrite=True)
    cat = read_all(out)
    assert "label" not in cat and cat["component"].dtype == np.int16


def test_fits_input_is_prepared_with_the_checkpoint_recipe(tmp_path):
    import fitsio

    from galhpc.checkpoint import save_checkpoint
    from galhpc.config import SourceConfig, config_from_dict
    from galhpc.data.prep import run_prep
    from galhpc.models import build_model

    cutouts = tmp_path / "cutouts"
    cutouts.mkdir()
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:24, :24] - 11.5
    for i in range(30):
        blob = 100 * np.exp(-(xx**2 + yy**2) / (2 * (1.5 + i % 3) ** 2)) + rng.normal(0, 1, (24, 24))
        fitsio.write(str(cutouts / f"{1000 + i}.fits"), blob.astype(np.float32), clobber=True)
    cfg = config_from_dict({"prep": {"image_size": 16, "recipe": ["grey", "resize", "minmax"], "border": 4},
                            "model": {"name": "vae", "image_size": 16, "latent_dim": 6,
                                      "params": {"filters": [8, 8, 8, 8]}}})
    torch.manual_seed(0)
    model = build_model(cfg.model)
    ckpt = save_checkpoint(tmp_path / "ckpt.pt", {"model_name": "vae", "model_state": model.state_dict(),
                                                  "config": cfg.to_yaml()})
    out = tmp_path / "fits.h5"
    kw = {"batch_size": 4, "shard_size": 8, "gmm_components": 2, "gmm_fit_objects": 30, "threads": 1,
          "device": "cpu"}
    encode_from_checkpoint(ckpt, cutouts, out, *split_keywords(kw, EncodeOptions, OutputOptions))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "cutouts", "fits.h5", "fits.h5.shards"]
    cfg.prep.sources = [SourceConfig(kind="fits", path=str(cutouts))]
    oracle_store = run_prep(cfg.prep, tmp_path / "oracle.h5")
    encode_from_checkpoint(ckpt, oracle_store, tmp_path / "oracle_cat.h5",
                           *split_keywords(kw, EncodeOptions, OutputOptions))
    cat, oracle = read_all(out), read_all(tmp_path / "oracle_cat.h5")
    assert np.array_equal(cat["object_id"], np.arange(1000, 1030))
    assert np.array_equal(cat["mu"], oracle["mu"]) and np.array_equal(cat["component"], oracle["component"])
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "fits.h5.shards").glob("0*.h5")}
    encode_from_checkpoint(ckpt, cutouts, out,
                           *split_keywords(kw, EncodeOptions, OutputOptions))  # complete: no shard re-made
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps and not list(tmp_path.glob(".*prep*"))
    with pytest.raises(CatalogError, match="input .*nothing-here not found"):
        encode_from_checkpoint(ckpt, tmp_path / "nothing-here", tmp_path / "x.h5",
                               *split_keywords(kw, EncodeOptions, OutputOptions))
