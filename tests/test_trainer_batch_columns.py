"""The trainer hands a model exactly the store columns its loss declares (`batch_columns`)."""

import csv
from pathlib import Path

import h5py
import numpy as np
import yaml

from galhpc.config import load_config
from galhpc.data.prep import run_prep
from galhpc.models.segment import SegmentationAE
from galhpc.train.trainer import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _flips(a):
    """The four flips of the last two axes (the loader's augmentation)."""
    return [a, a[..., ::-1, :], a[..., :, ::-1], a[..., ::-1, ::-1]]


def test_segmentation_head_trains_on_the_store_masks(tmp_path, monkeypatch):
    store = tmp_path / "stars.h5"
    prep_cfg = yaml.safe_load((CONFIGS / "prep_stars_segment.yaml").read_text())
    prep_cfg["prep"]["sources"][0]["n"] = 64
    prep_cfg["prep"]["workers"] = 1
    prep_cfg["prep"]["output"] = str(store)
    (tmp_path / "prep.yaml").write_text(yaml.safe_dump(prep_cfg))
    run_prep(load_config(tmp_path / "prep.yaml").prep)

    run_cfg = yaml.safe_load((CONFIGS / "segae_stars.yaml").read_text())
    run_cfg["model"]["params"]["widths"] = [4, 8, 8]
    run_cfg["model"]["params"]["head_width"] = 4
    run_cfg["train"].update(store=str(store), out_dir=str(tmp_path / "run"), epochs=1, batch_size=16,
                            threads=1, holdout_fraction=0.25)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run_cfg))
    seen = []
    real_loss = SegmentationAE.loss

    def recording(self, batch, state):
        seen.append((batch["image"].detach().numpy().copy(), batch["masks"].detach().numpy().copy()))
        return real_loss(self, batch, state)

    monkeypatch.setattr(SegmentationAE, "loss", recording)
    train(load_config(tmp_path / "run.yaml"))

    with open(tmp_path / "run" / "losses.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and "mask_ce" in rows[0] and np.isfinite(float(rows[-1]["mask_ce"]))
    # every training batch carried, for each stamp, that stamp's own store mask (flipped with it)
    with h5py.File(store) as f:
        images, masks = f["images"][()], f["masks"][()]
    assert len(np.unique(masks)) >= 2
    checked = 0
    for batch_images, batch_masks in seen:
        for image, mask in zip(batch_images, batch_masks, strict=True):
            matches = [(row, k) for row in range(len(images)) for k, flipped in enumerate(_flips(images[row]))
                       if np.array_equal(flipped, image)]
            assert len(matches) >= 1
            row, k = matches[0]
            assert np.array_equal(mask, _flips(masks[row])[k])
            checked += 1
    assert checked >= len(images) // 2  # the training rows (holdout 0.25), every step
