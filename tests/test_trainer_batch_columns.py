"""The trainer hands a model exactly the store columns its loss declares (`batch_columns`)."""

import csv
from pathlib import Path

import yaml

from galhpc.config import load_config
from galhpc.data.prep import run_prep
from galhpc.train.trainer import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_segmentation_head_trains_on_the_store_masks(tmp_path):
    store = tmp_path / "stars.h5"
    prep_cfg = yaml.safe_load(open(CONFIGS / "prep_stars_segment.yaml"))
    prep_cfg["prep"]["sources"][0]["n"] = 64
    prep_cfg["prep"]["workers"] = 1
    prep_cfg["prep"]["output"] = str(store)
    (tmp_path / "prep.yaml").write_text(yaml.safe_dump(prep_cfg))
    run_prep(load_config(tmp_path / "prep.yaml").prep)

    run_cfg = yaml.safe_load(open(CONFIGS / "segae_stars.yaml"))
    run_cfg["model"]["params"]["widths"] = [4, 8, 8]
    run_cfg["model"]["params"]["head_width"] = 4
    run_cfg["train"].update(store=str(store), out_dir=str(tmp_path / "run"), epochs=1, batch_size=16,
                            threads=1, holdout_fraction=0.25)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run_cfg))
    train(load_config(tmp_path / "run.yaml"))

    with open(tmp_path / "run" / "losses.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and "mask_ce" in rows[0] and float(rows[-1]["mask_ce"]) > 0
