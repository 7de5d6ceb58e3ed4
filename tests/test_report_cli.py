"""galhpc-report end to end on a tiny store, AstroVaDEr checkpoint, clusters.h5 and synth.h5.

The files follow docs/schema.md (store: images, object_id, labels/<name>;
clusters.h5: object_id, mu, logvar, component, gamma, recon_mse, /meta; synth.h5:
images, z, component, seed) and are made here with h5py from a real (untrained: the report's job is to measure, not to
look good) AstroVaDEr.
"""

import json
import re
import shutil

import h5py
import matplotlib.image as plt_image
import numpy as np
import pytest
import torch
from sklearn.metrics import calinski_harabasz_score

from galhpc.checkpoint import save_checkpoint
from galhpc.cli.report import main
from galhpc.config import config_from_dict
from galhpc.data.loader import holdout_mask
from galhpc.models import build_model
from galhpc.report import metrics, sampling
from galhpc.report.regier import gaussian_image

SIZE, N = 32, 90


def _stamp(kind: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Round (0), elongated (1) or with companion (2) galaxy plus noise, scaled to [0, 1]."""
    c = SIZE / 2 + rng.normal(0, 0.5, 2)
    if kind == 0:
        img = gaussian_image(np.array([1, c[0], c[1], np.log(3), np.log(3), 0.0]), (SIZE, SIZE))
    elif kind == 1:
        img = gaussian_image(np.array([1, c[0], c[1], np.log(5), np.log(1.8), rng.uniform(-1, 1)]), (SIZE, SIZE))
    else:
        img = gaussian_image(np.array([1, c[0], c[1], np.log(2.5), np.log(2.5), 0.0]), (SIZE, SIZE))
        img += gaussian_image(np.array([0.6, c[0] + 9, c[1] - 6, np.log(2), np.log(2), 0.0]), (SIZE, SIZE))
    img = img + rng.normal(0, 0.02, img.shape)
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32), int(kind == 2)


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("report_inputs")
    rng = np.random.default_rng(0)
    kinds = np.arange(N) % 3
    stamps = [_stamp(k, rng) for k in kinds]
    images = np.stack([s[0] for s in stamps])
    with h5py.File(root / "store.h5", "w") as f:
        f["images"] = images
        f["object_id"] = np.arange(N, dtype=np.int64) + 1000
        f["labels/morph_class"] = kinds.astype(np.int16)
        f["labels/has_companion"] = np.array([s[1] for s in stamps], np.int8)
        f["labels/bulge_fraction"] = rng.uniform(0, 1, N).astype(np.float32)
        f["labels/hlr"] = np.where(kinds == 1, 4.0, 3.0).astype(np.float32) + rng.normal(0, 0.1, N)

    cfg = config_from_dict({"model": {"name": "astrovader", "image_size": SIZE, "latent_dim": 6,
                                      "params": {"n_clusters": 3, "filters": [8, 8, 4]}}})
    model = build_model(cfg.model)
    x = torch.from_numpy(images[:, None])
    model.eval()
    with torch.no_grad():
        enc = model.encode(x)
        model.init_mixture(enc.mu.numpy(), seed=0)
        gamma = model.cluster_probs(enc.mu)
        recon_mse = ((model.decode(enc.mu) - x) ** 2).flatten(1).mean(1)
        samples = model.sample(30, torch.Generator().manual_seed(1))
    ckpt = save_checkpoint(root / "run" / "ckpt.pt", {"model_name": "astrovader", "model_state": model.state_dict(),
                                                      "config": cfg.to_yaml()})
    (root / "run" / "losses.csv").write_text(
        "epoch,step,phase,loss,recon,kl\n"
        + "".join(f"{s // 5},{s},{'alpha' if s < 10 else 'beta'},{100 / (s + 1)},{90 / (s + 1)},{s / 10}\n"
                  for s in range(20)))
    with h5py.File(root / "clusters.h5", "w") as f:
        f["object_id"] = np.arange(N, dtype=np.int64) + 1000
        f["mu"] = enc.mu.numpy()
        f["logvar"] = enc.logvar.numpy()
        f["gamma"] = gamma.numpy()
        f["component"] = gamma.argmax(1).numpy().astype(np.int16)
        f["recon_mse"] = recon_mse.numpy()
        f.create_group("meta").attrs["config"] = cfg.to_yaml()
    with h5py.File(root / "synth.h5", "w") as f:
        f["images"] = samples.images[:, 0].numpy()
        f["z"] = samples.z.numpy()
        f["component"] = samples.component.numpy().astype(np.int16)
        f["seed"] = np.arange(30, dtype=np.int64)
    return {"root": root, "ckpt": ckpt, "mu": enc.mu.numpy(), "component": gamma.argmax(1).numpy()}


def _run(run_files, out, *extra):
    root = run_files["root"]
    argv = ["--checkpoint", str(run_files["ckpt"]), "--clusters", str(root / "clusters.h5"),
            "--store", str(root / "store.h5"), "--out", str(out), "--n-holdout", "24", "--n-morph", "6",
            "--n-tsne", "60", "--threads", "1", *extra]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_report_end_to_end(run_files, tmp_path):
    out = tmp_path / "report"
    m = _run(run_files, out, "--synth", str(run_files["root"] / "synth.h5"))
    mu, comp = run_files["mu"], run_files["component"]

    c = m["clusters"]
    assert c["n_objects"] == N and c["n_sampled"] == N
    assert c["occupancy"] == np.bincount(comp, minlength=3).tolist()
    assert len(np.unique(comp)) >= 2  # the mixture is fitted to these embeddings of three kinds of stamp
    assert c["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(mu, comp), rel=1e-5)
    assert c["silhouette_overall"] == pytest.approx(metrics.simplified_silhouette(mu, comp)[2], rel=1e-5)
    for row, n in zip(c["overlap_matrix"], c["occupancy"], strict=False):
        if n:
            assert sum(row) == pytest.approx(1.0, abs=1e-4)
    assert {"morph_class", "has_companion", "bulge_fraction", "hlr"} <= set(c["labels"])
    assert 0 <= c["labels"]["morph_class"]["nmi"] <= 1

    r = m["reconstruction"]
    n_held = int(holdout_mask(N, 0.1, 0).sum())  # the checkpoint config's trainer split
    assert m["inputs"]["held_out_source"].startswith("trainer holdout split")
    assert r["n_images"] == n_held and r["best_mse"][0] <= r["worst_mse"][0]
    assert r["loss_terms"] == ["loss", "recon", "kl"] and r["phases"] == ["alpha", "beta"]
    assert m["regier"]["n_images"] == n_held
    assert 0 <= m["regier"]["fraction_squared_error"] <= 1
    g = m["generation"]
    assert g["samples_source"] == "synth.h5"
    assert sorted(g["tsp_order"]) == sorted(np.unique(comp).tolist())
    assert g["deblending"]["pairs"] and len(g["traversal_dims"]) == 6
    assert len(m["latents"]["snr"]) == 6
    gv = m["generated_vs_real"]
    assert gv["n_real"] == 6 and set(gv["ks"]) >= {"gini", "m20", "concentration", "asymmetry"}
    assert "per_component" in gv  # mixture model: real stamps grouped by their clusters.h5 component

    pngs = sorted(p.name for p in out.glob("*.png"))
    for name in ["reconstructions.png", "best_worst.png", "loss_curves.png", "occupancy.png", "overlap_matrix.png",
                 "members_random.png", "members_top_gamma.png", "labels_morph_class.png", "samples.png",
                 "traversals.png", "deblending.png", "latent_snr.png", "tsne.png", "regier.png", "morphology.png"]:
        assert name in pngs
    for name in pngs:  # every figure shows something: not one flat colour
        rgb = plt_image.imread(out / name)[..., :3].reshape(-1, 3)
        assert np.unique(rgb, axis=0, return_counts=True)[1].max() < 0.99 * len(rgb), name
    html = (out / "index.html").read_text()
    assert sorted(set(re.findall(r"src='([^']+)'", html))) == pngs


def test_report_samples_large_catalogue_and_runs_without_store(run_files, tmp_path):
    """--max-objects below the catalogue size samples rows; occupancy still counts every row.
    Objects without a cluster label (-1) are left out of the cluster metrics."""
    root = run_files["root"]
    clusters = tmp_path / "clusters.h5"
    shutil.copy(root / "clusters.h5", clusters)
    with h5py.File(clusters, "a") as f:
        f["component"][:7] = -1
    out = tmp_path / "report"
    assert main(["--checkpoint", str(run_files["ckpt"]), "--clusters", str(clusters), "--out", str(out),
                 "--max-objects", "40", "--n-tsne", "30", "--n-morph", "4", "--threads", "1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["clusters"]["n_sampled"] == 40 and sum(m["clusters"]["occupancy"]) == N - 7
    assert "skipped" in m["regier"] and "skipped" in m["reconstruction"]
    assert m["generation"]["samples_source"] == "model.sample(component=k)"


def test_store_rows_found_by_id_when_order_differs(tmp_path):
    ids = np.array([5, 3, 9, 1, 7], np.int64)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["object_id"] = ids
        f["images"] = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 2), np.float32)
        f["labels/flag"] = np.array([True, False, True, False, True])
    rows = sampling.store_rows_for_ids(tmp_path / "s.h5", np.array([1, 9, 4]), guess_rows=np.array([0, 1, 2]))
    assert rows.tolist() == [3, 2, -1]
    assert sampling.read_store_images(tmp_path / "s.h5", rows[:2])[:, 0, 0, 0].tolist() == [3.0, 2.0]
    assert sampling.read_store_labels(tmp_path / "s.h5", rows)["flag"].tolist() == [0, 1, -1]


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--max-objects" in capsys.readouterr().out


def test_a_failing_section_is_recorded_and_the_rest_still_run(run_files, tmp_path, monkeypatch):
    import dataclasses

    from galhpc.report import sections

    def broken(*args):
        raise RuntimeError("deliberately broken")

    monkeypatch.setitem(sections.SECTIONS, "latents", dataclasses.replace(sections.SECTIONS["latents"], run=broken))
    root = run_files["root"]
    out = tmp_path / "report"
    assert main(["--checkpoint", str(run_files["ckpt"]), "--clusters", str(root / "clusters.h5"), "--out", str(out),
                 "--max-objects", "30", "--n-morph", "3", "--threads", "1"]) == 1
    m = json.loads((out / "metrics.json").read_text())
    assert m["failed_sections"] == ["latents"] and "deliberately broken" in m["latents"]["error"]
    assert "occupancy" in m["clusters"] and (out / "index.html").is_file()


def test_missing_inputs_give_exit_status_1(run_files, tmp_path):
    assert main(["--checkpoint", str(tmp_path / "none.pt"), "--clusters", str(run_files["root"] / "clusters.h5"),
                 "--out", str(tmp_path / "r")]) == 1
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    assert main(["--checkpoint", str(run_files["ckpt"]), "--clusters", str(tmp_path / "empty.h5"),
                 "--out", str(tmp_path / "r")]) == 1


def test_clusters_of_an_older_encode_with_label_are_read(tmp_path):
    """Older galhpc-encode outputs name the cluster column `label` instead of `component`."""
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f["object_id"] = np.arange(5, dtype=np.int64)
        f["mu"] = np.zeros((5, 2), np.float32)
        f["label"] = np.array([0, 2, 2, 1, 2], np.int16)
    sample = sampling.read_clusters(tmp_path / "old.h5", 10, np.random.default_rng(0))
    assert sample.component.tolist() == [0, 2, 2, 1, 2] and sample.occupancy.tolist() == [1, 1, 3]
