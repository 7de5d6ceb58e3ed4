"""galhpc-report on the real pipeline's files: galhpc-prep -> galhpc-train -> galhpc-encode ->
galhpc-generate -> galhpc-report, all tiny, one CPU thread."""

import json

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_N, tiny_run_config
from sklearn.metrics import calinski_harabasz_score

from galhpc.data.loader import holdout_mask

# the shared tiny store; an AstroVaDEr (its own mixture prior and s3VDC schedule) trained on it here
MODEL = {"name": "astrovader", "image_size": 32, "latent_dim": 4,
         "params": {"n_clusters": 3, "filters": [8, 8, 4], "kernels": [3, 3, 3]}}
SCHEDULE = {"enabled": True, "t_alpha": 1, "gmm_init_batches": 3, "t_beta": 1, "t_static": 1, "periods": 1}
TRAIN = {"epochs": 3, "batch_size": 32, "lr": 1e-3, "augment": True}


@pytest.mark.slow
def test_report_on_pipeline_outputs(tiny_store, tmp_path):
    from galhpc.cli.encode import main as encode_main
    from galhpc.cli.generate import main as generate_main
    from galhpc.cli.report import main as report_main
    from galhpc.cli.train import main as train_main

    torch.set_num_threads(1)
    cfg = tiny_run_config(tiny_store, tmp_path / "run", model=MODEL, schedule=SCHEDULE, train=TRAIN)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert train_main(["--config", str(tmp_path / "cfg.yaml")]) == 0
    ckpt = str(tmp_path / "run" / "ckpt.pt")
    assert encode_main(["--checkpoint", ckpt, "--store", str(tiny_store),
                        "--out", str(tmp_path / "clusters.h5"), "--threads", "1"]) == 0
    assert generate_main(["--checkpoint", ckpt, "--n", "40", "--out", str(tmp_path / "synth.h5")]) == 0

    out = tmp_path / "report"
    assert report_main(["--checkpoint", ckpt, "--clusters", str(tmp_path / "clusters.h5"),
                        "--store", str(tiny_store), "--synth", str(tmp_path / "synth.h5"),
                        "--out", str(out), "--n-morph", "5", "--n-tsne", "60", "--threads", "1"]) == 0
    m = json.loads((out / "metrics.json").read_text())

    with h5py.File(tmp_path / "clusters.h5") as f:
        mu = f["mu"][:]
        label = f["component"][:]
    assert m["clusters"]["n_objects"] == TINY_N
    assert m["clusters"]["occupancy"] == np.bincount(label, minlength=m["clusters"]["n_components"]).tolist()
    # a 3-epoch model may use one component only: then the report leaves the index out, never a wrong value
    if len(np.unique(label)) > 1:
        assert m["clusters"]["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(mu, label), rel=1e-5)
    else:
        assert "calinski_harabasz" not in m["clusters"] and "silhouette_overall" not in m["clusters"]
    n_held = int(holdout_mask(TINY_N, 0.25, 0).sum())
    assert m["regier"]["n_images"] == n_held == m["reconstruction"]["n_images"]
    assert m["reconstruction"]["loss_terms"] and m["generation"]["samples_source"] == "synth.h5"
    assert {"morph_class", "has_companion"} <= set(m["clusters"]["labels"])
    assert (out / "index.html").is_file() and len(list(out.glob("*.png"))) >= 15
