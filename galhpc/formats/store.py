"""The on-disk format of a training store (galhpc-prep output): dataset and attribute names.

Layout (docs/schema.md, "Training store")::

    images            (N, H, W) or (N, C, H, W) float32, chunked in blocks of rows
    object_id         (N,) int64
    labels/<name>     (N,) one dataset per label column (unit in attribute ``unit``)
    truth, psf, ...   optional per-object datasets (or one shared ``psf`` (h, w))
    rejects/{object,file,reason}
    root attributes   galhpc_kind = "store", galhpc_version, config (prep YAML), created, n_objects

The writer (`galhpc.data.store.StoreWriter`), the training loader (`galhpc.data.loader`)
and the readers (`galhpc.data.store`, `galhpc.io.store`) take every name from here.
"""

from __future__ import annotations

IMAGES = "images"
OBJECT_ID = "object_id"
LABELS = "labels"  # group of one dataset per label column
TRUTH = "truth"
PSF = "psf"
REJECTS = "rejects"
REJECT_FIELDS = ("object", "file", "reason")
SOURCE_INDEX = "source_index"  # label: which prep source an object came from
CORE = (IMAGES, OBJECT_ID)  # the datasets every store holds

VERSION_ATTR = "galhpc_version"
CONFIG_ATTR = "config"  # the prep config (YAML text)
CREATED_ATTR = "created"
N_OBJECTS_ATTR = "n_objects"
UNIT_ATTR = "unit"  # on a labels/<name> dataset


def label_path(name: str) -> str:
    """The dataset of label column `name`: ``"ra"`` -> ``"labels/ra"``.

    Parameters
    ----------
    name : str
        A label column.

    Returns
    -------
    str
    """
    return f"{LABELS}/{name}"


def reject_path(field: str) -> str:
    """The dataset of one field of the rejects: ``"reason"`` -> ``"rejects/reason"``.

    Parameters
    ----------
    field : str
        One of `REJECT_FIELDS`.

    Returns
    -------
    str
    """
    return f"{REJECTS}/{field}"
