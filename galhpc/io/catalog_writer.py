"""The one HDF5 writer of galhpc catalogues: shard files and the virtual master file.

A shard holds one dataset per column, row r = object `start + r`, plus (unless turned
off) a compound dataset `catalog` with every non-image column, which astropy's
`Table.read(path="catalog")` reads as a table.  The master file stitches the shards
together with virtual datasets (relative paths, so the pair `out.h5` + `out.h5.shards/`
can be moved together) and carries the run's description in `/meta` attributes.

Files are written with the HDF5 1.10 format so that older tools (Debian's h5ls/h5dump
1.10) read them.  Layout choices for throughput: row chunks of about 1 MiB holding whole
images, compression optional (off by default; `gzip[:level]` adds the shuffle filter).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import galhpc
from galhpc.formats.catalog import (
    FINGERPRINT_ATTR,
    IMAGE_COLUMNS,
    META,
    SHARD_ATTR,
    START_ATTR,
    STOP_ATTR,
    TABLE,
    Shard,
    shard_file_name,
    shard_path,
)
from galhpc.formats.hdf5 import H5Output, open_h5_readonly
from galhpc.formats.kinds import CATALOGUE_KINDS, KIND_ATTR, missing_filter
from galhpc.io.catalog import read_meta
from galhpc.runtime.errors import CatalogError, ConfigError
from galhpc.runtime.files import atomic_path

log = logging.getLogger("galhpc.io.catalog_writer")

LIBVER = ("earliest", "v110")
CHUNK_BYTES = 1 << 20
COMPRESSIONS = ("none", "gzip")


def parse_compression(spec: str) -> dict[str, Any]:
    """'none' | 'gzip' | 'gzip:N' -> h5py create_dataset keyword arguments.

    lzf is refused: it is h5py's own filter, so h5dump, HDF5's C/Fortran library, netCDF
    and most non-Python readers cannot decode a catalogue compressed with it, and a
    catalogue is meant to be read by anyone (gzip is in every HDF5 build).

    Parameters
    ----------
    spec : str
        ``"none"``, ``"gzip"`` (level 4) or ``"gzip:N"`` (N in 0..9).

    Returns
    -------
    dict of str to Any
        Empty for none; else ``compression``, ``compression_opts`` and ``shuffle``.

    Raises
    ------
    ConfigError
        For lzf, an unknown name or a bad level.
    """
    name, _, level = spec.partition(":")
    if name == "lzf":
        raise ConfigError("compression 'lzf' is readable only through h5py (h5dump and other HDF5 readers cannot "
                          "decode it); use gzip[:LEVEL] for a catalogue others can read")
    if name not in COMPRESSIONS:
        raise ConfigError(f"unknown compression {spec!r}; use one of none, gzip or gzip:LEVEL")
    if name == "none":
        return {}
    try:
        opts = int(level) if level else 4
    except ValueError:
        raise ConfigError(f"--compression {spec!r}: the gzip level must be an integer 0..9") from None
    if not 0 <= opts <= 9:
        raise ConfigError(f"--compression {spec!r}: the gzip level must be 0..9, got {opts}")
    return {"compression": "gzip", "compression_opts": opts, "shuffle": True}


def chunk_rows(row_bytes: int, n_rows: int) -> int:
    """Rows per chunk: whole rows, about CHUNK_BYTES per chunk.

    Parameters
    ----------
    row_bytes : int
        Bytes of one row.
    n_rows : int
        Rows of the dataset.

    Returns
    -------
    int
        In [1, max(1, n_rows)].
    """
    return max(1, min(n_rows, CHUNK_BYTES // max(1, row_bytes)))


def table_dtype(columns: Mapping[str, np.ndarray]) -> np.dtype:
    """Compound dtype of the non-image columns (vector columns become array fields).

    Parameters
    ----------
    columns : mapping of str to numpy.ndarray
        A batch of columns, each (B, ...).

    Returns
    -------
    numpy.dtype
        One field per column not in `IMAGE_COLUMNS`, in order.
    """
    fields = [(name, a.dtype, a.shape[1:]) for name, a in columns.items() if name not in IMAGE_COLUMNS]
    return np.dtype([(n, d, s) if s else (n, d) for n, d, s in fields])


def to_table(columns: Mapping[str, np.ndarray], dtype: np.dtype) -> np.ndarray:
    """The rows of a batch as records of the compound `dtype` (`table_dtype`).

    Parameters
    ----------
    columns : mapping of str to numpy.ndarray
        Each (B, ...); every field of `dtype` must be among them.
    dtype : numpy.dtype
        The compound dtype.

    Returns
    -------
    numpy.ndarray
        Shape (B,) of `dtype`.
    """
    rows = np.empty(len(next(iter(columns.values()))), dtype=dtype)
    for name in dtype.names:
        rows[name] = columns[name]
    return rows


class ShardWriter:
    """Writes the columns of one shard; datasets are created from the first batch's shapes.

    Parameters
    ----------
    path : Path
        The file to create (a temporary of `galhpc.io.shards.shard_in_flight`).
    shard : Shard
        Its objects [start, stop), recorded as root attributes.
    compression : str
        `parse_compression` spec.
    table : bool
        Also write the compound dataset ``catalog`` of the non-image columns.
    attrs : mapping of str to Any, optional
        More root attributes (``galhpc_kind``, the run's ``fingerprint``).
    """

    def __init__(self, path: Path, shard: Shard, compression: str = "none", table: bool = True,
                 attrs: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.shard = shard
        self.filters = parse_compression(compression)
        self.table = table
        self.rows_written = 0
        self._table_dtype: np.dtype | None = None
        self._datasets: dict[str, h5py.Dataset] = {}  # kept open: no flush on every access
        self._out = H5Output(self.path, libver=LIBVER, rdcc_nbytes=4 * CHUNK_BYTES)  # full disk: OSError, no crash
        self.file = self._out.file
        self.file.attrs.update({SHARD_ATTR: shard.index, START_ATTR: shard.start, STOP_ATTR: shard.stop,
                                **(attrs or {})})

    def write(self, offset: int, columns: Mapping[str, np.ndarray]) -> None:
        """Write rows [offset, offset + B) of every column (offset relative to the shard).

        Parameters
        ----------
        offset : int
            First row, relative to the shard's start.
        columns : mapping of str to numpy.ndarray
            Each (B, ...), the same columns and row shapes in every call.

        Raises
        ------
        ValueError
            If the rows run past the shard's end.
        OSError
            If a write failed (a full disk: `galhpc.runtime.files.disk_full_error`).
        """
        n = len(next(iter(columns.values())))
        if offset + n > self.shard.size:
            raise ValueError(f"rows {offset}..{offset + n} exceed shard {self.shard.index} of {self.shard.size} rows")
        if not self._datasets:
            self._create(columns)
        for name, values in columns.items():
            self._datasets[name][offset:offset + n] = values
        if self._table_dtype is not None:
            self._datasets[TABLE][offset:offset + n] = to_table(columns, self._table_dtype)
        self._out.check()  # a failed write (full disk) ends the shard now, not at close
        self.rows_written += n

    def _create(self, columns: Mapping[str, np.ndarray]) -> None:
        rows = self.shard.size
        for name, values in columns.items():
            row_bytes = values.dtype.itemsize * int(np.prod(values.shape[1:], dtype=np.int64))
            self._datasets[name] = self.file.create_dataset(
                name, shape=(rows, *values.shape[1:]), dtype=values.dtype,
                chunks=(chunk_rows(row_bytes, rows), *values.shape[1:]), **self.filters,
            )
        if self.table:
            self._table_dtype = table_dtype(columns)
            self._datasets[TABLE] = self.file.create_dataset(
                TABLE, shape=(rows,), dtype=self._table_dtype,
                chunks=(chunk_rows(self._table_dtype.itemsize, rows),), **self.filters,
            )

    def close(self) -> None:
        """Flush and close the file once every row of the shard is written.

        Raises
        ------
        RuntimeError
            If rows are missing (the file is closed without flushing).
        OSError
            If a write failed.
        """
        if self.rows_written != self.shard.size:
            self.abort()
            raise RuntimeError(f"shard {self.shard.index}: {self.rows_written} of {self.shard.size} rows written")
        self._datasets.clear()
        self._out.close()  # flushes and closes the datasets too; raises OSError if a write failed

    def abort(self) -> None:
        """Close after a failure without raising (the caller removes the file)."""
        self._datasets.clear()
        self._out.abort()


class WriteBehind:
    """Runs `write(*args)` calls in a background thread so compute and I/O overlap.

    At most `depth` calls wait in the queue; an exception in the writer thread is raised
    again in the caller on the next `submit` or on `finish`.

    Parameters
    ----------
    write : callable
        Called as ``write(*args)`` for each `submit` in order, in the background thread.
    depth : int
        Most calls waiting.
    """

    def __init__(self, write: Callable[..., None], depth: int = 2) -> None:
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="galhpc-shard-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(*item)
                except BaseException as err:  # handed to the caller's thread
                    self._error = err

    def submit(self, *args: Any) -> None:
        """Queue ``write(*args)``, blocking while `depth` calls wait.

        Parameters
        ----------
        *args
            The call's arguments (arrays are not copied: do not modify them afterwards).
        """
        self._raise_pending()
        self._queue.put(args)

    def finish(self) -> None:
        """Wait for every submitted write; re-raise the writer's error if there was one."""
        self._queue.put(None)
        self._thread.join()
        self._raise_pending()

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error


def catalogue_attrs(kind: Any) -> dict[str, str]:
    """The root attribute ``galhpc_kind`` of the files of an ``encode``/``generate`` catalogue.

    Parameters
    ----------
    kind : Any
        The /meta ``kind`` (``"encode"``, ``"generate"``; anything else gives none, and
        the files then go by their layout: `galhpc.formats.kinds.file_kind`).

    Returns
    -------
    dict of str to str
    """
    return {KIND_ATTR: CATALOGUE_KINDS[kind]} if kind in CATALOGUE_KINDS else {}


def shard_problem(path: Path, shard: Shard, fingerprint: str | None) -> str | None:
    """Why the shard file `path` is not a valid complete `shard` of the run `fingerprint`, or None.

    Checks that it opens, that its ``start``/``stop`` attributes are the shard's, that every
    dataset holds the shard's rows, that no dataset needs a filter this HDF5 lacks, and,
    when both the file and `fingerprint` (JSON, sorted keys) record one, that the file's
    run fingerprint is this run's.  Data are not read: this runs on every shard of a re-run.

    Parameters
    ----------
    path : Path
        The shard file.
    shard : Shard
        What it should hold.
    fingerprint : str or None
        This run's fingerprint (JSON), or None not to compare.

    Returns
    -------
    str or None
        A short reason, e.g. ``"holds 99 rows of 'mu', expected 100"``.
    """
    try:
        with open_h5_readonly(path) as f:
            span = (f.attrs.get(START_ATTR), f.attrs.get(STOP_ATTR))
            if tuple(int(v) if v is not None else None for v in span) != (shard.start, shard.stop):
                return f"holds objects {span[0]}..{span[1]}, expected {shard.start}..{shard.stop}"
            recorded = f.attrs.get(FINGERPRINT_ATTR)
            if recorded is not None and fingerprint is not None:
                recorded = recorded.decode() if isinstance(recorded, bytes) else str(recorded)
                if json.loads(recorded) != json.loads(fingerprint):
                    return "written by another run (its fingerprint differs)"
            if not len(f):
                return "holds no datasets"
            for name, ds in f.items():
                if not isinstance(ds, h5py.Dataset):
                    return f"holds a group {name!r}, not a column"
                if ds.shape[:1] != (shard.size,):
                    return f"holds {ds.shape[0] if ds.shape else 0} rows of {name!r}, expected {shard.size}"
                found = missing_filter(ds.id.get_create_plist())
                if found is not None:
                    return f"{name!r} needs the unavailable HDF5 filter {found[1]} (id {found[0]})"
    except (OSError, KeyError, ValueError) as err:
        return f"unreadable: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return None


def run_meta(kind: str, fingerprint: Mapping[str, Any], checkpoint: str | Path, checkpoint_sha256: str,
             config_yaml: str, model_name: str) -> dict[str, Any]:
    """The /meta attributes shared by encode and generate masters.

    Parameters
    ----------
    kind : str
        ``"encode"`` or ``"generate"``.
    fingerprint : mapping of str to Any
        The run's fingerprint (stored as JSON, sorted keys).
    checkpoint : str or Path
        The model file (stored as an absolute path).
    checkpoint_sha256 : str
        Its SHA-256 (hex).
    config_yaml : str
        The checkpoint's config.
    model_name : str
        The model's registered name.

    Returns
    -------
    dict of str to Any
        Also ``galhpc_version`` and ``created`` (UTC, ISO 8601).
    """
    return {
        "kind": kind,
        "galhpc_version": galhpc.__version__,
        "checkpoint": os.path.abspath(checkpoint),  # absolute: readers run from other folders
        "checkpoint_sha256": checkpoint_sha256,
        "model": model_name,
        "config": config_yaml,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        FINGERPRINT_ATTR: json.dumps(dict(fingerprint), sort_keys=True),
    }


def read_master_fingerprint(path: Path) -> dict[str, Any] | None:
    """The /meta fingerprint of an existing master file.

    Parameters
    ----------
    path : Path
        An existing output (a master file, or anything else found there).

    Returns
    -------
    dict of str to Any or None
        None if it is unreadable or records none.
    """
    try:
        text = read_meta(path).get(FINGERPRINT_ATTR)
    except (CatalogError, KeyError):
        return None
    return json.loads(text) if text else None


def missing_value(dtype: np.dtype) -> np.ndarray:
    """The fill value of a master's virtual dataset.

    What a plain HDF5 reader gets for rows whose shard it cannot open.  NaN for floats, -1 for integers (every
    galhpc id, index and component is >= 0), per field for the compound table, so such rows cannot pass for
    data.

    Parameters
    ----------
    dtype : numpy.dtype
        A column's dtype (or the compound table's).

    Returns
    -------
    numpy.ndarray
        Shape () of `dtype` (zero for fields that are neither float nor integer).
    """
    dtype = np.dtype(dtype)
    value = np.zeros((), dtype)
    for name in dtype.names or (None,):
        base = (dtype[name] if name else dtype).base
        if base.kind in "fc":
            fill = np.array(np.nan, base)
        elif base.kind in "iu":
            fill = np.array(-1, np.int64).astype(base)  # unsigned: the largest value
        else:
            continue
        if name:
            value[name] = fill
        else:
            value[()] = fill
    return value


def write_master(out: Path, shard_dir: Path, shards: list[Shard], meta: Mapping[str, Any],
                 groups: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> Path:
    """Write the master file.

    One virtual dataset per shard column, /meta attributes, and small real datasets under `groups` (e.g. a
    fitted GMM).  Atomic (`galhpc.runtime.files.atomic_path`).

    Rows of a shard HDF5 cannot open read as `missing_value` (NaN, -1), never as zeros;
    galhpc's own reader (`galhpc.io.catalog`) reads the shards directly and refuses them.

    Parameters
    ----------
    out : Path
        The master file to write.
    shard_dir : Path
        The shard directory (its name is stored in the relative source paths).
    shards : list of Shard
        Every shard, in order, complete; the first's datasets give the schema.
    meta : mapping of str to Any
        The /meta attributes (`run_meta`).
    groups : mapping of str to mapping of str to numpy.ndarray, optional
        Small groups of real datasets.

    Returns
    -------
    Path
        `out`.
    """
    with open_h5_readonly(shard_path(shard_dir, shards[0].index)) as first:
        schema = {name: (ds.shape[1:], ds.dtype) for name, ds in first.items()}
    n_objects = shards[-1].stop
    with atomic_path(out) as tmp, H5Output(tmp, libver=LIBVER) as f:
        for name, (tail, dtype) in schema.items():
            layout = h5py.VirtualLayout(shape=(n_objects, *tail), dtype=dtype)
            for shard in shards:
                source = h5py.VirtualSource(
                    f"{shard_dir.name}/{shard_file_name(shard.index)}", name,
                    shape=(shard.size, *tail), dtype=dtype,
                )
                layout[shard.start:shard.stop] = source
            f.create_virtual_dataset(name, layout, fillvalue=missing_value(dtype))
        f.attrs.update(catalogue_attrs(meta.get("kind")))
        meta_group = f.create_group(META)
        for key, value in meta.items():
            meta_group.attrs[key] = value
        for group_name, arrays in (groups or {}).items():
            group = f.create_group(group_name)
            for name, values in arrays.items():
                group.create_dataset(name, data=values)
    log.info("wrote master %s: %d objects in %d shards, datasets %s", out, n_objects, len(shards), sorted(schema))
    return out


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write named arrays (e.g. the post-hoc GMM) to a small HDF5 file atomically (`atomic_path`).

    Parameters
    ----------
    path : Path
        The file to write.
    arrays : mapping of str to numpy.ndarray
        One dataset each.
    """
    with atomic_path(path) as tmp, H5Output(tmp, libver=LIBVER) as f:
        for name, values in arrays.items():
            f.create_dataset(name, data=values)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read back a file of `save_arrays`.

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    dict of str to numpy.ndarray

    Raises
    ------
    CatalogError
        If it is unreadable.
    """
    try:
        with open_h5_readonly(path) as f:
            return {name: f[name][()] for name in f}
    except OSError as err:
        raise CatalogError(f"{path} is unreadable ({err}); pass --overwrite to start afresh") from err
