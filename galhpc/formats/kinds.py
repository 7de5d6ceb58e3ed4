"""What kind of galhpc file an HDF5 file is, and whether this HDF5 can decode its datasets.

Every HDF5 file galhpc writes records its kind as the root attribute ``galhpc_kind``:

=====================  ==========================================================
``store``              a training store (galhpc-prep)
``encode_catalogue``   a catalogue of latents and γ (galhpc-encode; master and shards)
``generate_catalogue`` a catalogue of synthetic images (galhpc-generate; master and shards)
``search_table``       a galhpc-search result table (.h5)
``rarity_table``       a galhpc-rarity score table (.h5)
=====================  ==========================================================

Files written before the attribute existed are recognised by their layout (`file_kind`),
so a command given the wrong kind of file (a synthetic catalogue as a training store, a
store as a catalogue) refuses it in one line (`require_kind`) instead of running on it.

`check_filters` names a compression filter this HDF5 cannot decode (blosc, zstd, lz4, ...
registered by the ``hdf5plugin`` package) before HDF5's own message ("can't open
directory (plugin dir)") would.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py

from galhpc.formats import catalog as catalog_format
from galhpc.formats import store as store_format
from galhpc.formats import table as table_format
from galhpc.formats.hdf5 import open_h5_readonly
from galhpc.runtime.errors import DataError

KIND_ATTR = "galhpc_kind"
STORE = "store"
ENCODE_CATALOGUE = "encode_catalogue"
GENERATE_CATALOGUE = "generate_catalogue"
SEARCH_TABLE = "search_table"
RARITY_TABLE = "rarity_table"
KINDS = (STORE, ENCODE_CATALOGUE, GENERATE_CATALOGUE, SEARCH_TABLE, RARITY_TABLE)
CATALOGUES = (ENCODE_CATALOGUE, GENERATE_CATALOGUE)
CATALOGUE_KINDS = {"encode": ENCODE_CATALOGUE, "generate": GENERATE_CATALOGUE}  # a master's /meta kind -> its kind

DESCRIPTIONS = {
    STORE: "a training store (galhpc-prep output)",
    ENCODE_CATALOGUE: "an encoded catalogue (galhpc-encode output)",
    GENERATE_CATALOGUE: "a synthetic catalogue (galhpc-generate output)",
    SEARCH_TABLE: "a search result table (galhpc-search output)",
    RARITY_TABLE: "a rarity score table (galhpc-rarity output)",
}

# HDF5 filter ids registered with The HDF Group, with the package that provides a decoder
FILTERS = {
    307: ("bzip2", "hdf5plugin"), 32000: ("lzf", "h5py"), 32001: ("blosc", "hdf5plugin"),
    32004: ("lz4", "hdf5plugin"), 32008: ("bitshuffle", "hdf5plugin"), 32013: ("zfp", "hdf5plugin"),
    32015: ("zstd", "hdf5plugin"), 32017: ("sz", "hdf5plugin"), 32024: ("sz3", "hdf5plugin"),
    32026: ("blosc2", "hdf5plugin"),
}


class FileKindError(DataError):
    """An HDF5 file of another galhpc kind than the command reads, or needing a filter this HDF5 lacks.

    E.g. a catalogue given as a store; or a file whose datasets are compressed with a
    filter (blosc, zstd, ...) this HDF5 cannot decode.
    """


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def file_kind(f: Any) -> str | None:
    """The kind of the open HDF5 file `f`: its ``galhpc_kind`` attribute, else its layout.

    Files written before the attribute: a ``/meta`` group whose ``kind`` is ``encode`` or
    ``generate`` (a catalogue master); root attributes ``shard``/``start``/``stop`` (a
    catalogue shard: encode when it holds ``mu``, generate when it holds ``images``);
    ``nll_prior`` (a rarity table); ``query`` and ``distance`` (a search table); ``mu``
    (an encoded catalogue written by hand); ``images`` and ``object_id`` (a store).

    Parameters
    ----------
    f : h5py.File or h5py.Group
        The file, open for reading.

    Returns
    -------
    str or None
        One of `KINDS`, or None when neither the attribute nor the layout tells.
    """
    recorded = f.attrs.get(KIND_ATTR)
    if recorded is not None:
        return _text(recorded)
    meta = f.get(catalog_format.META)
    if meta is not None and hasattr(meta, "attrs"):
        kind = _text(meta.attrs.get("kind", ""))
        if kind in CATALOGUE_KINDS:
            return CATALOGUE_KINDS[kind]
    names = set(f.keys())
    if all(a in f.attrs for a in (catalog_format.SHARD_ATTR, catalog_format.START_ATTR, catalog_format.STOP_ATTR)):
        return ENCODE_CATALOGUE if "mu" in names else GENERATE_CATALOGUE if store_format.IMAGES in names else None
    if table_format.RARITY_COLUMN in names:
        return RARITY_TABLE
    if set(table_format.SEARCH_COLUMNS) <= names:
        return SEARCH_TABLE
    if "mu" in names:
        return ENCODE_CATALOGUE
    if set(store_format.CORE) <= names:
        return STORE
    return None


def require_kind(f: Any, path: str | Path, expected: str | Iterable[str], role: str) -> str | None:
    """Refuse a file of another galhpc kind than `expected`, in one line naming it.

    A file whose kind cannot be told (`file_kind` None) passes: its reader then says what
    it lacks.

    Parameters
    ----------
    f : h5py.File
        The file, open for reading.
    path : str or Path
        Its name, for the message.
    expected : str or iterable of str
        The kind(s) accepted (members of `KINDS`).
    role : str
        What the command wanted it for, e.g. ``"--store"``.

    Returns
    -------
    str or None
        The file's kind.

    Raises
    ------
    FileKindError
        Its kind is another one.
    """
    wanted = (expected,) if isinstance(expected, str) else tuple(expected)
    kind = file_kind(f)
    if kind is not None and kind not in wanted:
        what = DESCRIPTIONS.get(kind, f"a file of galhpc_kind {kind!r}")
        need = " or ".join(DESCRIPTIONS[k] for k in wanted)
        raise FileKindError(f"{path} is {what}, but {role} needs {need}")
    return kind


def check_kind(path: str | Path, expected: str | Iterable[str], role: str) -> str | None:
    """`require_kind` and `check_filters` on the file at `path` (opened read-only, no locks).

    A missing or non-HDF5 file passes (its reader reports it); see `require_kind`.

    Parameters
    ----------
    path : str or Path
        The file.
    expected : str or iterable of str
        The kind(s) accepted.
    role : str
        What the command wants it for, for the message.

    Returns
    -------
    str or None
        The file's kind (None: not told, missing or not HDF5).

    Raises
    ------
    FileKindError
        Another kind, or a filter this HDF5 lacks.
    """
    path = Path(path)
    if not path.is_file() or not h5py.is_hdf5(str(path)):
        return None
    with open_h5_readonly(path) as f:
        kind = require_kind(f, path, expected, role)
        check_filters(f, path)
    return kind


def missing_filter(dcpl: Any) -> tuple[int, str] | None:
    """(filter id, name) of the first filter of a dataset's creation property list this HDF5 cannot apply.

    Parameters
    ----------
    dcpl : h5py.h5p.PropDCID
        A dataset creation property list (``dataset.id.get_create_plist()``).

    Returns
    -------
    tuple of (int, str) or None
        None when every filter is available.
    """
    for i in range(dcpl.get_nfilters()):
        code, _flags, _values, name = dcpl.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            return int(code), _text(name) or FILTERS.get(int(code), ("unknown", ""))[0]
    return None


def filter_error(path: str | Path, dataset: str, code: int, name: str) -> FileKindError:
    """The one-line error for dataset `dataset` of `path` compressed with an unavailable filter.

    Parameters
    ----------
    path : str or Path
        The file.
    dataset : str
        The dataset's name.
    code : int
        HDF5 filter id.
    name : str
        The filter's name as HDF5 reports it.

    Returns
    -------
    FileKindError
        Naming the filter, the package that provides it and how to point HDF5 at it.
    """
    label, package = FILTERS.get(code, (name, "hdf5plugin"))
    return FileKindError(
        f"{path}: dataset /{dataset.lstrip('/')} is compressed with the HDF5 filter {label} (id {code}), which this "
        f"HDF5 cannot decode; install the package that provides it ({package}: pip install {package}) and point "
        f"HDF5_PLUGIN_PATH at its plugins (python -c 'import {package}; print({package}.PLUGIN_PATH)'), or "
        "rewrite the file without it (h5repack -f NONE)")


def check_filters(f: Any, path: str | Path) -> None:
    """Refuse a file with a real (not virtual) root dataset whose filter this HDF5 lacks.

    Parameters
    ----------
    f : h5py.File
        Open for reading.
    path : str or Path
        Its name, for the message.

    Raises
    ------
    FileKindError
        Naming the file, the dataset, the filter and the package that provides it.
    """
    for name, obj in f.items():
        if isinstance(obj, h5py.Dataset) and not obj.is_virtual:
            found = missing_filter(obj.id.get_create_plist())
            if found is not None:
                raise filter_error(path, name, *found)
