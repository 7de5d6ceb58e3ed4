"""Read a galhpc catalogue from its shard files directly, verified, with few files open.

A catalogue written by `galhpc-encode`/`galhpc-generate` is a master file of HDF5 virtual
datasets plus `<master>.shards/NNNNNN.h5` (docs/schema.md).  Reading through the virtual
datasets is unsafe at scale: HDF5 opens every source file and keeps it open, and a source
it cannot open (a missing shard, a renamed pair, the open-file limit reached) silently
reads as the fill value.  `Catalog` therefore uses the master only as the map and reads
the shard files itself, checking each before any of its rows is returned:

- at open, one column's virtual sources (``object_id``'s, else the first column's) are
  listed and every shard file they name must exist; the first files (as many as the pool
  keeps open) are opened and checked: their run fingerprint and ``start``/``stop`` rows
  against the master's, and each dataset's dtype, row shape and number of rows;
- any other column is mapped when it is first read (a master of C columns over S shards
  holds C x S sources, each costing about as much as reading a small shard); its new
  files must exist then, and each shard file and dataset is checked the same way, once,
  when a read first opens it: a whole-column read opens each shard once;
- a compression filter a dataset needs is looked for only when its read fails, and every
  failed read names its shard file;
- at most `max_open` files are open at a time (least recently used closed first), and
  the soft RLIMIT_NOFILE is raised towards the hard limit where the system allows it; a
  read over more files than that keeps each file open only while reading it (HDF5's
  open and close slow down with the number of files open);
- files are opened read-only without HDF5 file locks (a published catalogue is never
  modified; Lustre/NFS often refuse locks), through h5py's low-level API: each shard's
  part of a read is one H5Dread into the output array;
- random rows are sorted once, grouped by shard, read in increasing order per shard as
  slabs of at most SLAB_BYTES (about one chunk; consecutive rows straight into the
  output) and returned in the order asked for;
- memory is that of the rows asked for plus one slab (at most SLAB_BYTES) and the
  chunk caches of the open files, whatever the number of shards.

A master + shard directory copied under another name (`run1.h5` + `run1.h5.shards/`)
still works: shard sources are looked up in the master's own `<master>.shards/` when it
exists, and its `manifest.json` must record the master's fingerprint.  A plain HDF5 file
of real (not virtual) per-object datasets (e.g. written by hand with h5py) is read as a
catalogue of one shard, itself.

A `Catalog` is not thread-safe; open one per thread or process.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import resource
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from galhpc.formats.catalog import (
    FINGERPRINT_ATTR,
    META,
    OBJECT_ID,
    SHARDS_SUFFIX,
    START_ATTR,
    STOP_ATTR,
    Shard,
    manifest_path,
    shard_dir_for,
)
from galhpc.formats.hdf5 import open_h5_readonly, read_rows_any_order
from galhpc.formats.kinds import CATALOGUES, filter_error, missing_filter, require_kind
from galhpc.io.reader import Reader
from galhpc.runtime.errors import CatalogError  # also raised for a catalogue that cannot be read correctly

log = logging.getLogger("galhpc.io.catalog")

DEFAULT_MAX_OPEN = 64
NOFILE_TARGET = 65536  # the soft open-file limit is raised towards the hard one, up to this
SLAB_BYTES = 1 << 20  # requested rows within this many bytes of each other are read as one slab
MAX_LISTED = 10  # shard problems named in an error message


class _Segment(NamedTuple):  # a tuple: a master maps one per shard and column, made 3x faster than a dataclass
    start: int
    stop: int
    path: Path
    dataset: str
    offset: int  # row of the source dataset that holds catalogue row `start`

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class _Column:
    name: str
    shape: tuple[int, ...]  # per row
    dtype: np.dtype
    segments: tuple[_Segment, ...]
    starts: np.ndarray  # segments' start rows, for searchsorted

    @property
    def row_bytes(self) -> int:
        return self.dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))


def raise_open_file_limit(target: int = NOFILE_TARGET) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards its hard limit (at most `target`).

    Parameters
    ----------
    target : int
        The soft limit wanted (descriptors).

    Returns
    -------
    int
        The soft limit now in force (`target` when unlimited).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return target
    want = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            log.debug("raised the soft open-file limit from %d to %d", soft, want)
            soft = want
        except (ValueError, OSError) as err:
            log.debug("could not raise the soft open-file limit %d: %s", soft, err)
    return soft


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def file_budget(max_open: int) -> int:
    """How many catalogue files to keep open.

    `max_open`, at most half of the descriptors still free under the soft limit (after
    raising it), and at least 1.

    Parameters
    ----------
    max_open : int
        The most catalogue files the caller would keep open at once.

    Returns
    -------
    int
        Files to keep open, >= 1.
    """
    free = raise_open_file_limit() - _open_descriptors()
    return max(1, min(max_open, free // 2))


@functools.cache
def _read_fapl() -> Any:
    """The file-access property list of every shard opened for reading (made once.

    A list per file costs a fifth of opening the file).
    """
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_WEAK)
    fapl.set_file_locking(False, True)
    return fapl


def _open_fid(path: Path) -> Any:
    """A low-level read-only file id.

    No file locks (unless this process already holds the file open with them: HDF5 refuses mixed flags).  Its
    close degree is h5py's (weak): HDF5 refuses to open one file twice in a process with different degrees, and
    callers open the same file with h5py while a `Catalog` holds it.
    """
    try:
        return h5py.h5f.open(bytes(path), h5py.h5f.ACC_RDONLY, fapl=_read_fapl())
    except OSError as err:
        if "locking flag" not in str(err):
            raise
        return h5py.h5f.open(bytes(path), h5py.h5f.ACC_RDONLY)


def _read_rows(ds: Any, first: int, out: np.ndarray) -> None:
    """Rows [first, first + len(out)) of the open dataset `ds` into `out`, in one H5Dread.

    `out` is C-contiguous, of the dataset's dtype and row shape; no high-level selection
    objects are made (they cost several times the read of a small shard).
    """
    if out.size == 0:
        return
    space = ds.get_space()
    if first == 0 and space.shape == out.shape:  # the whole dataset (a shard read whole): no selections
        ds.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
        return
    space.select_hyperslab((first,) + (0,) * (out.ndim - 1), out.shape)
    ds.read(h5py.h5s.create_simple(out.shape), space, out)


class _FilePool:
    """Open HDF5 files (read-only, no locks), the least recently used closed beyond `size`.

    Low-level file and dataset ids: opening and closing cost about half of h5py.File's,
    which matters when every shard is opened once per read.
    """

    def __init__(self, size: int, label: Path, check: Callable[[Path, Any, str | None], str | None] | None = None,
                 ) -> None:
        self.size = size
        self.label = label
        self._check = check
        self._checked: set[tuple[Path, str | None]] = set()  # (file, None): its attributes; (file, dataset)
        self._files: OrderedDict[Path, tuple[Any, dict[str, Any]]] = OrderedDict()

    def open(self, path: Path) -> Any:
        """The open file id of `path`.

        The first time a file is opened, `check(path, fid, None)` checks the file, and the first time each
        of its datasets is opened, `check(path, dataset_id, name)` checks that (once: a file closed and
        reopened later is not checked again).
        """
        entry = self._files.get(path)
        if entry is not None:
            self._files.move_to_end(path)
            return entry[0]
        while len(self._files) >= self.size:
            _, (old, _) = self._files.popitem(last=False)
            old.close()
        fid = self._open_shard(path)
        try:
            self._run_check(path, fid, None)
        except CatalogError:
            fid.close()
            raise
        self._files[path] = (fid, {})
        return fid

    def _run_check(self, path: Path, obj: Any, name: str | None) -> None:
        if self._check is None or (path, name) in self._checked:
            return
        try:
            why = self._check(path, obj, name)
        except OSError as err:
            why = f"unreadable: {_first_line(err)}"
        if why:
            raise CatalogError(f"{self.label}: shard file {path} cannot supply its rows ({why})")
        self._checked.add((path, name))

    def adopt(self, path: Path, fid: Any, names: Sequence[str]) -> None:
        """Keep `fid`, already open and checked (datasets `names` too), as the open file of `path`."""
        self._checked.update([(path, None), *((path, n) for n in names)])
        if len(self._files) >= self.size:
            fid.close()
            return
        self._files[path] = (fid, {})

    def dataset(self, path: Path, name: str) -> Any:
        """The open low-level dataset id (`h5py.h5d.DatasetID`) of dataset `name` of `path`."""
        fid = self.open(path)
        datasets = self._files[path][1]
        if name not in datasets:
            try:
                dsid = h5py.h5d.open(fid, name.encode())
            except KeyError as err:
                raise CatalogError(f"{self.label}: shard file {path} cannot supply its rows (no dataset {name!r})") \
                    from err
            try:
                self._run_check(path, dsid, name)
            except BaseException:
                dsid.close()
                raise
            datasets[name] = dsid
        return datasets[name]

    def _open_shard(self, path: Path) -> Any:
        """A low-level file id of shard `path`; a CatalogError naming it when it cannot be opened."""
        try:
            return _open_fid(path)
        except OSError as err:
            raise CatalogError(f"{self.label}: shard {path} cannot be opened ({_first_line(err)}); "
                               "the catalogue changed since it was opened") from err

    def borrow(self, path: Path, name: str) -> tuple[Any, Any]:
        """(file id, dataset id) of dataset `name` of `path`, opened and checked (once) but not kept.

        For a sweep over more files than the pool holds: the caller closes both (dataset first), and
        no least-recently-used bookkeeping is paid per file.
        """
        fid = self._open_shard(path)
        try:
            if (path, None) not in self._checked:
                self._run_check(path, fid, None)
            try:
                dsid = h5py.h5d.open(fid, name.encode())
            except KeyError as err:
                raise CatalogError(f"{self.label}: shard file {path} cannot supply its rows (no dataset {name!r})") \
                    from err
            if (path, name) not in self._checked:
                try:
                    self._run_check(path, dsid, name)
                except BaseException:
                    dsid.close()
                    raise
        except BaseException:
            fid.close()
            raise
        return fid, dsid

    def forget(self, path: Path) -> None:
        """Check the file's attributes again when next opened (the segments it supplies changed)."""
        self._checked.discard((path, None))
        self.release(path)

    def release(self, path: Path) -> None:
        """Close `path` if it is open (its chunk caches with it)."""
        entry = self._files.pop(path, None)
        if entry is not None:
            entry[0].close()

    def close(self) -> None:
        while self._files:
            _, (fid, _) = self._files.popitem(last=False)
            fid.close()

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path: Path) -> bool:
        return path in self._files


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _hyperslab_rows(space: Any, shape: tuple[int, ...], what: str) -> tuple[int, int]:
    """(first, last + 1) rows of a selection that covers whole rows."""
    lo, hi = space.get_select_bounds()
    if len(lo) > 1 and any(low != 0 or high != n - 1 for low, high, n in zip(lo[1:], hi[1:], shape[1:], strict=False)):
        raise CatalogError(f"{what}: a virtual source maps part of a row; not a galhpc catalogue layout")
    return int(lo[0]), int(hi[0]) + 1


class Catalog(Reader):
    """A galhpc catalogue opened for reading; see the module docstring for the guarantees.

    Parameters
    ----------
    path : str or Path
        The master file (`synth.h5`, `clusters.h5`) of a catalogue, its shards in
        `<path>.shards/` (or where its virtual datasets say), or a plain HDF5 file of
        per-object datasets.
    max_open : int, optional
        Most files open at a time (default 64; fewer when the open-file limit is low).
    kinds : sequence of str, optional
        The `galhpc.formats.kinds` accepted (default: either catalogue kind).
    role : str, optional
        What the caller reads it as, for the message refusing another kind.

    Raises
    ------
    CatalogError
        If the file is missing or not HDF5, has no per-object dataset, or a shard file it
        names is missing, unreadable, short of rows, or belongs to another run: one line
        naming the files (raised by `read` for what is checked when first read).
    FileKindError
        If it is another kind of galhpc file (a training store, a search table), or (from
        `read`) a dataset needs an HDF5 filter this HDF5 lacks.
    """

    def __init__(self, path: str | Path, max_open: int = DEFAULT_MAX_OPEN, *,
                 kinds: Sequence[str] = CATALOGUES, role: str = "a catalogue reader") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CatalogError(f"catalogue not found: {self.path}")
        self._pool = _FilePool(file_budget(max_open), self.path, self._check_opened)
        own = shard_dir_for(self.path)
        self._own_shards = own if own.is_dir() else None
        self._resolved: dict[str, Path] = {}
        self._layouts: dict[str, tuple[tuple[int, ...], np.dtype]] = {}  # every column: (row shape, dtype)
        self._columns: dict[str, _Column] = {}  # the columns mapped so far
        self._uses: dict[Path, list[tuple[_Column, _Segment]]] = {}  # file -> the segments it supplies
        self._checked_dirs: set[Path] = set()
        try:
            master = open_h5_readonly(self.path)
        except OSError as err:
            raise CatalogError(f"{self.path} is not a readable HDF5 file: {_first_line(err)}") from err
        with master:
            require_kind(master, self.path, kinds, role)
            self.meta: dict[str, Any] = _meta_of(master) or {}
            self.groups: list[str] = sorted(name for name in master if name != META  # (no dataset opened)
                                            and master.get(name, getclass=True) is h5py.Group)
            layout_ds = self._list_columns(master)
            column = self._map_column(master, self._layout_column, layout_ds)
        self._verify(column)

    # ---- opening ----------------------------------------------------------------------

    def _list_columns(self, master: h5py.File) -> Any:
        """Each per-object dataset's row shape and dtype (their virtual mappings are read when a column is first used.

        HDF5 copies a mapping whole, and a master of C columns and S shards holds C x S sources); picks the
        column whose mapping is read at open (``object_id``, else the first) and returns its dataset, open
        (opening a virtual dataset decodes its whole mapping).
        """
        shapes = {}
        for name in master:
            link = master.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                continue
            try:
                ds = h5py.h5d.open(master.id, name.encode())
            except (KeyError, TypeError):  # a group (or another kind of object)
                continue
            if len(ds.shape) >= 1 and ds.dtype.names is None:
                shapes[name] = (tuple(ds.shape), ds.dtype, ds)
            else:
                ds.close()
        if not shapes:
            raise CatalogError(f"{self.path} has no per-object datasets; is it a galhpc catalogue?")
        n = self.meta.get("n_objects")
        if n is None:
            lengths = [shape[0] for shape, _, _ in shapes.values()]
            n = max(set(lengths), key=lengths.count)
        self._n = int(n)
        self._layouts = {name: (shape[1:], dtype) for name, (shape, dtype, _) in shapes.items() if shape[0] == self._n}
        if not self._layouts:
            for _, _, ds in shapes.values():
                ds.close()
            raise CatalogError(f"{self.path} has no per-object datasets of its {self._n} rows")
        self._layout_column = OBJECT_ID if OBJECT_ID in self._layouts else min(self._layouts)
        for name, (_, _, ds) in shapes.items():
            if name != self._layout_column:
                ds.close()
        return shapes[self._layout_column][2]

    def _map_column(self, master: h5py.File, name: str, ds: Any = None) -> _Column:
        """Map column `name` (its dataset `ds` if open) onto its source files, and check what is new in it.

        The source of a real dataset is the master itself.  Checked: its shard
        directories' manifests, that its files exist, and (for a file already checked for
        other columns) its rows' span.
        """
        shape, dtype = self._layouts[name]
        ds = h5py.h5d.open(master.id, name.encode()) if ds is None else ds
        try:
            dcpl = ds.get_create_plist()  # a virtual dataset's mapping, copied once
            try:
                if dcpl.get_layout() == h5py.h5d.VIRTUAL:
                    segments = self._segments(dcpl, name)
                else:
                    segments = (_Segment(0, self._n, self.path, name, 0),)
            finally:
                dcpl.close()
        finally:
            ds.close()
        column = _Column(name, shape, dtype, segments, np.array([s.start for s in segments], np.int64))
        layout = self._columns.get(self._layout_column)
        same = layout is not None and [(s.start, s.stop, s.path) for s in layout.segments] == \
            [(s.start, s.stop, s.path) for s in segments]
        new_files = []
        for seg in segments:
            uses = self._uses.setdefault(seg.path, [])
            if not uses:
                new_files.append(seg.path)
            elif not same:  # a file checked for other rows is checked again for these
                self._pool.forget(seg.path)
            uses.append((column, seg))
        self._columns[name] = column
        self._check_shard_dirs({Path(d) for d in {os.path.dirname(p) for p in new_files if p != self.path}})
        missing = [p for p in new_files if not os.path.isfile(p)]
        if missing:
            self._raise_problems({p: "missing" for p in missing}, len(new_files))
        return column

    def _segments(self, dcpl: Any, name: str) -> tuple[_Segment, ...]:
        what = f"{self.path}: /{name}"
        n_rows = self._n
        row_shape = self._layouts[name][0]
        whole_lo, whole_hi = (0,) * len(row_shape), tuple(d - 1 for d in row_shape)  # a row's bounds, whole
        segments = []
        # the fewest calls per source (a master maps one per shard: this loop runs S times per column)
        for i in range(dcpl.get_virtual_count()):
            lo, hi = dcpl.get_virtual_vspace(i).get_select_bounds()
            if lo[1:] != whole_lo or hi[1:] != whole_hi:
                _hyperslab_rows(dcpl.get_virtual_vspace(i), (n_rows, *row_shape), what)  # raises
            start, stop = lo[0], hi[0] + 1
            src_space = dcpl.get_virtual_srcspace(i)
            if src_space.get_select_type() == h5py.h5s.SEL_ALL:  # the whole source dataset
                offset, src_stop = 0, stop - start
            else:
                offset, src_stop = _hyperslab_rows(src_space, src_space.shape, what)
            if src_stop - offset != stop - start:
                raise CatalogError(f"{what}: a virtual source maps {src_stop - offset} rows onto {stop - start}")
            segments.append(_Segment(start, stop, self._resolve(dcpl.get_virtual_filename(i)),
                                     dcpl.get_virtual_dsetname(i), offset))
        segments.sort(key=lambda s: s.start)
        covered = 0
        for s in segments:
            if s.start != covered:
                raise CatalogError(f"{what}: rows {covered}..{s.start - 1} are in no shard" if s.start > covered
                                   else f"{what}: shards overlap at row {s.start}")
            covered = s.stop
        if covered != n_rows:
            raise CatalogError(f"{what}: rows {covered}..{n_rows - 1} are in no shard")
        return tuple(segments)

    def _resolve(self, file_name: str) -> Path:
        """The file a virtual source names.

        The master itself ("."), a shard of the master's own `<master>.shards/` when that exists (so a
        renamed pair reads its own shards), else the name relative to the master's directory.
        """
        if file_name == ".":
            return self.path
        found = self._resolved.get(file_name)
        if found is None:  # every column names the same shard files
            folder, _, base = file_name.rpartition("/")
            if folder.endswith(SHARDS_SUFFIX) and self._own_shards is not None:
                found = Path(f"{self._own_shards}/{base}")
            else:
                found = Path(file_name) if os.path.isabs(file_name) else self.path.parent / file_name
            self._resolved[file_name] = found
        return found

    def _check_shard_dirs(self, dirs: set[Path]) -> None:
        """Every shard directory's manifest must record this master's fingerprint."""
        recorded = self.meta.get(FINGERPRINT_ATTR)
        for d in sorted(dirs - self._checked_dirs):
            manifest = manifest_path(d)
            if recorded and manifest.is_file():
                try:
                    theirs = json.loads(manifest.read_text())
                except (OSError, json.JSONDecodeError) as err:
                    raise CatalogError(f"{self.path}: shard manifest {manifest} is unreadable: {_first_line(err)}") \
                        from err
                if theirs != json.loads(recorded):
                    raise CatalogError(f"{self.path}: the shards in {d} belong to another run (their manifest.json "
                                       "fingerprint differs from the master's /meta fingerprint)")
            self._checked_dirs.add(d)

    def _verify(self, column: _Column) -> None:
        """Open the first shard files of `column` and check they hold the rows the master maps onto them.

        As many files are opened as the file pool keeps open, so reads reuse them.  A shard
        beyond those, or a dataset of another column, is checked the same way, once, when
        a read first opens it (`_check_opened`): a whole-column read opens each shard once.
        """
        problems: dict[Path, str] = {}
        files = sorted({seg.path for seg in column.segments}, key=str)
        for path in files[:self._pool.size]:
            uses = self._uses[path]
            try:
                fid = _open_fid(path)
            except OSError as err:
                problems[path] = f"unreadable: {_first_line(err)}"
                continue
            try:
                why = _check_file(fid, uses, self._shard_fingerprint(path))
            except OSError as err:
                why = f"unreadable: {_first_line(err)}"
            except BaseException:
                fid.close()
                raise
            if why:
                problems[path] = why
                fid.close()
            else:
                self._pool.adopt(path, fid, [seg.dataset for _, seg in uses])
        if problems:
            self._raise_problems(problems, len(files))

    def _raise_problems(self, problems: dict[Path, str], n_files: int) -> None:
        listed = [f"{self._short(p)} ({why})" for p, why in list(problems.items())[:MAX_LISTED]]
        more = f" and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise CatalogError(
            f"{self.path}: {len(problems)} of {n_files} shard file(s) missing or unreadable, so its rows "
            f"cannot be read: {', '.join(listed)}{more}")

    def _check_opened(self, path: Path, obj: Any, name: str | None) -> str | None:
        """Why a shard file (`name` None.

        Its attributes) or its dataset `name` just opened cannot supply its rows, or None (the `_FilePool`
        check).
        """
        uses = self._uses.get(path, [])
        if name is None:
            return _check_span(obj, uses, self._shard_fingerprint(path))
        return next((why for col, seg in uses if seg.dataset == name and (why := _check_dataset(obj, col, seg))),
                    None)

    def _shard_fingerprint(self, path: Path) -> str | None:
        """The run fingerprint a shard file must record (none for the master itself)."""
        return self.meta.get(FINGERPRINT_ATTR) if path != self.path else None

    def _short(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.path.parent))
        except ValueError:
            return str(path)

    # ---- the public surface -----------------------------------------------------------

    @property
    def columns(self) -> list[str]:
        """Names of the per-object columns (not the compound `catalog` table), sorted."""
        return sorted(self._layouts)

    def shape(self, column: str) -> tuple[int, ...]:
        """Shape (N, ...) of `column`.

        Parameters
        ----------
        column : str
            A name of `columns`.

        Returns
        -------
        tuple of int
            (N, ...): N rows, then the row shape.
        """
        return (self._n, *self._layout(column)[0])

    def dtype(self, column: str) -> np.dtype:
        """Storage dtype of `column`.

        Parameters
        ----------
        column : str
            One of the per-object columns (`columns`).

        Returns
        -------
        numpy.dtype
            As stored in the shards (float16 images stay float16).
        """
        return self._layout(column)[1]

    @property
    def shards(self) -> list[Shard]:
        """The files holding the rows, in row order (from the first column's layout).

        Returns
        -------
        list of Shard
            Shard k holds rows [start, stop) in file `path` from row `offset` on.
        """
        first = self._columns[self._layout_column]
        return [Shard(i, s.start, s.stop, s.path, s.offset) for i, s in enumerate(first.segments)]

    def __len__(self) -> int:
        return self._n

    def __contains__(self, column: str) -> bool:
        return column in self._layouts

    def __repr__(self) -> str:
        return f"<galhpc Catalog {self.path}: {self._n} rows, {len(self.shards)} shard(s), columns {self.columns}>"

    def _layout(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        try:
            return self._layouts[name]
        except KeyError:
            raise KeyError(f"{self.path}: no column {name!r}; columns: {', '.join(self.columns)}") from None

    def _column(self, name: str) -> _Column:
        """Column `name` mapped onto its files (read from the master the first time)."""
        column = self._columns.get(name)
        if column is None:
            self._layout(name)
            with self._reopen_master() as master:
                column = self._map_column(master, name)
        return column

    def _reopen_master(self) -> h5py.File:
        """The master file opened again (read-only, no locks); a CatalogError if it no longer opens."""
        try:
            return open_h5_readonly(self.path)
        except OSError as err:
            raise CatalogError(f"{self.path}: the master became unreadable since it was opened "
                               f"({_first_line(err)})") from err

    def read_group(self, name: str) -> dict[str, np.ndarray]:
        """Every dataset of one of the master's small groups (`groups`, e.g. the post-hoc ``gmm``), read whole.

        Parameters
        ----------
        name : str
            A name of `groups`.

        Returns
        -------
        dict of str to numpy.ndarray
            Each dataset of the group by name, in its stored dtype and shape.

        Raises
        ------
        KeyError
            If the master has no such group.
        CatalogError
            If the master no longer opens.
        """
        if name not in self.groups:
            raise KeyError(f"{self.path}: no group {name!r}; groups: {', '.join(self.groups) or 'none'}")
        with self._reopen_master() as master:
            return {key: ds[()] for key, ds in master[name].items() if isinstance(ds, h5py.Dataset)}

    def read(self, column: str, rows: Sequence[int] | np.ndarray | slice | None = None) -> np.ndarray:
        """Values of `column` at `rows`, in the order asked for.

        Parameters
        ----------
        column : str
            A name of `columns`.
        rows : array_like of int, bool mask of length N, slice, or None
            Row indices (any order, repeats allowed), or None for every row.

        Returns
        -------
        numpy.ndarray
            Shape (len(rows), ...) of the column's storage dtype.

        Raises
        ------
        KeyError
            For an unknown column.
        IndexError
            For a row outside [0, N).
        CatalogError
            If a shard became unreadable after the catalogue was opened.
        """
        col = self._column(column)
        if rows is None:
            return self._read_range(col, 0, self._n)
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self._n)
            if step == 1:
                return self._read_range(col, start, max(start, stop))
            rows = np.arange(start, stop, step)
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (self._n,):
                raise IndexError(f"a boolean row mask must have shape ({self._n},), got {rows.shape}")
            rows = np.flatnonzero(rows)
        if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
            raise IndexError(f"rows must be a 1-D array of integers, got shape {rows.shape} dtype {rows.dtype}")
        rows = rows.astype(np.int64, copy=False)
        if rows.size and (rows.min() < 0 or rows.max() >= self._n):
            bad = rows[(rows < 0) | (rows >= self._n)][0]
            raise IndexError(f"row {bad} is outside the catalogue's {self._n} rows")
        return read_rows_any_order(lambda uniq: self._read_unique(col, uniq), rows)

    def _read_unique(self, col: _Column, uniq: np.ndarray) -> np.ndarray:
        """Rows `uniq` (sorted, unique, in range) of a column, each shard's part read in increasing order."""
        values = np.empty((len(uniq), *col.shape), col.dtype)
        # uniq[bounds[k]:bounds[k + 1]] are the rows segment k holds
        bounds = np.append(np.searchsorted(uniq, col.starts), len(uniq))
        picked = {int(k): (int(bounds[k]), int(bounds[k + 1])) for k in np.flatnonzero(np.diff(bounds))}
        for k, ds in self._open_each(col, picked):
            i, j = picked[k]
            seg = col.segments[k]
            self._read_sorted(col, seg, ds, uniq[i:j] - (seg.start - seg.offset), values[i:j])
        return values

    def _open_each(self, col: _Column, which: Sequence[int]) -> Iterator[tuple[int, Any]]:
        """Segments `which` of `col` (indices, increasing), each with its open dataset.

        A read over more files than the pool keeps open (a sweep) reads the segments whose
        file is open first, then closes the pool and keeps each other file open only while
        it is read: HDF5's open and close cost grows with the number of files open (by a
        third at 64), and a sweep would evict every file it opened anyway.
        """
        segments = [(k, col.segments[k]) for k in which]
        if len({seg.path for _, seg in segments}) <= self._pool.size:
            for k, seg in segments:
                yield k, self._pool.dataset(seg.path, seg.dataset)
            return
        held = [(k, seg) for k, seg in segments if seg.path in self._pool]
        for k, seg in held:
            yield k, self._pool.dataset(seg.path, seg.dataset)
        self._pool.close()
        done = {k for k, _ in held}
        for k, seg in segments:
            if k not in done:
                fid, ds = self._pool.borrow(seg.path, seg.dataset)
                try:
                    yield k, ds
                finally:
                    ds.close()
                    fid.close()

    def _read_into(self, seg: _Segment, ds: Any, first: int, out: np.ndarray) -> None:
        """`_read_rows` of segment `seg`'s open dataset, a failure named by its shard file.

        Raises
        ------
        GalhpcError
            If the dataset needs a compression filter this HDF5 lacks (`filter_error`): the
            filters are looked at only when a read fails, not for every shard opened.
        CatalogError
            If the read fails otherwise (a damaged shard file).
        """
        try:
            _read_rows(ds, first, out)
        except OSError as err:
            found = missing_filter(ds.get_create_plist())
            if found is not None:
                raise filter_error(seg.path, seg.dataset, *found) from err
            raise CatalogError(f"{self.path}: shard file {seg.path} cannot supply its rows "
                               f"(reading {seg.dataset!r} failed: {_first_line(err)})") from err

    def _read_sorted(self, col: _Column, seg: _Segment, ds: Any, local: np.ndarray, out: np.ndarray) -> None:
        """Source rows `local` (sorted, unique) of one segment (its open dataset `ds`) into `out`.

        Read as slabs of at most SLAB_BYTES (a catalogue chunk is about that size, so a slab
        touches at most two); a run of consecutive rows is read straight into `out`.
        """
        span_rows = max(1, SLAB_BYTES // max(1, col.row_bytes))
        i = 0
        while i < len(local):
            lo = int(local[i])
            j = int(np.searchsorted(local, lo + span_rows, side="left"))
            hi = int(local[j - 1]) + 1
            if hi - lo == j - i:
                self._read_into(seg, ds, lo, out[i:j])
            else:
                slab = np.empty((hi - lo, *col.shape), col.dtype)
                self._read_into(seg, ds, lo, slab)
                out[i:j] = slab[local[i:j] - lo]
            i = j

    def _read_range(self, col: _Column, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a column, each shard's part read in one call straight into the output."""
        out = np.empty((stop - start, *col.shape), col.dtype)
        first = max(0, int(np.searchsorted(col.starts, start, side="right")) - 1)
        last = int(np.searchsorted(col.starts, stop, side="left"))  # segments first..last-1 hold rows
        for k, ds in self._open_each(col, range(first, last)):
            seg = col.segments[k]
            lo, hi = max(start, seg.start), min(stop, seg.stop)
            self._read_into(seg, ds, lo - seg.start + seg.offset, out[lo - start:hi - start])
        return out

    def iter_blocks(self, column: str, block_rows: int = 65536, rank: int = 0,
                    n_ranks: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """Stream a column in row order, shard by shard, at most `block_rows` rows at a time.

        Under mpirun each rank passes ``rank=comm.rank, n_ranks=comm.size`` and reads its
        share: the shards ``k`` with ``k % n_ranks == rank`` (every row read by exactly one
        rank, each rank opening only its own shard files).

        Parameters
        ----------
        column : str
            A name of `columns`.
        block_rows : int
            Most rows per block; a block never spans two shards.
        rank, n_ranks : int
            This process's rank and the number of ranks sharing the column (default: one
            process reads it all).

        Yields
        ------
        start : int
            Catalogue row of the block's first row.
        values : numpy.ndarray
            Shape (rows, ...) of the column's storage dtype.
        """
        if block_rows < 1:
            raise ValueError(f"block_rows must be positive, got {block_rows}")
        if not 0 <= rank < n_ranks:
            raise ValueError(f"rank must be in [0, n_ranks={n_ranks}), got {rank}")
        col = self._column(column)
        mine = col.segments[rank::n_ranks]
        sweep = len({seg.path for seg in mine}) > self._pool.size
        if sweep:  # each file is open only while its blocks are read (see `_open_each`)
            self._pool.close()
        for seg in mine:
            for lo in range(seg.start, seg.stop, block_rows):
                hi = min(lo + block_rows, seg.stop)
                yield lo, self._read_range(col, lo, hi)
            if sweep:
                self._pool.release(seg.path)

    def iter_shards(self, columns: Sequence[str] | None = None) -> Iterator[tuple[Shard, dict[str, np.ndarray]]]:
        """Stream the catalogue one shard at a time (memory.

        One shard of `columns`; each shard file is closed once read).

        Parameters
        ----------
        columns : sequence of str, optional
            Columns to read (default: every column).

        Yields
        ------
        shard : Shard
            The shard's rows [start, stop) and file.
        values : dict of str to numpy.ndarray
            Each column's rows of the shard, shape (shard.size, ...).
        """
        names = list(self.columns if columns is None else columns)
        cols = [self._column(n) for n in names]
        for shard in self.shards:
            values = {c.name: self._read_range(c, shard.start, shard.stop) for c in cols}
            if shard.path != self.path:  # done with it: the open files' chunk caches would grow with N
                self._pool.release(shard.path)
            yield shard, values

    def scalar_columns(self) -> list[str]:
        """Columns with one number per row (shape (N,)).

        Returns
        -------
        list of str
            Sorted, a subset of `columns`.
        """
        return [n for n in self.columns if not self._layouts[n][0]]

    def table(self, columns: Sequence[str] | None = None, rows: Sequence[int] | np.ndarray | None = None):
        """The scalar columns (or `columns`) as an astropy Table, with units where known.

        Parameters
        ----------
        columns : sequence of str, optional
            Columns to include (default: every scalar column; vector columns are allowed
            and become multidimensional table columns).
        rows : array_like of int, optional
            Rows to include (default: all N; mind the memory at 10^8 rows).

        Returns
        -------
        astropy.table.Table
            One column per name, units and descriptions from `galhpc.io.columns` (ra, dec
            in deg; a passed-through store column with the unit its store recorded), and
            the master's /meta attributes in `Table.meta`.
        """
        from astropy.table import Column, Table

        from galhpc.io.columns import column_info

        names = list(self.scalar_columns() if columns is None else columns)
        table = Table(meta={k: v for k, v in self.meta.items() if k != "config"})
        for name in names:
            info = column_info(name, self.meta)
            table.add_column(Column(self.read(name, rows), name=name, unit=info.unit,
                                    description=info.description))
        return table

    def to_pandas(self, columns: Sequence[str] | None = None, rows: Sequence[int] | np.ndarray | None = None):
        """The scalar columns (or `columns`) as a pandas DataFrame, vectors split into columns.

        Parameters
        ----------
        columns : sequence of str, optional
            Columns to include (default: every scalar column); a vector column ``mu`` of L
            elements becomes L columns ``mu_0 … mu_{L-1}``.
        rows : array_like of int, optional
            Rows to include (default: all N; mind the memory at 10^8 rows).

        Returns
        -------
        pandas.DataFrame
            One column per scalar (fixed-length text decoded to str), in the order asked.

        Raises
        ------
        MissingExtraError
            Without pandas (``pip install 'galhpc[export]'``).
        """
        from galhpc.extras import require

        pd = require("pandas", "export", "Catalog.to_pandas")
        data: dict[str, np.ndarray] = {}
        for name in (self.scalar_columns() if columns is None else columns):
            values = self.read(name, rows)
            if values.dtype.kind == "S":
                values = np.char.decode(values, "utf-8")
            if values.ndim == 1:
                data[name] = values
            else:
                for k in range(values.shape[1]):
                    data[f"{name}_{k}"] = values[:, k]
        return pd.DataFrame(data)

    def close(self) -> None:
        """Close every open file (reading again reopens them)."""
        self._pool.close()


def _check_file(fid: Any, uses: list[tuple[_Column, _Segment]], fingerprint: str | None = None) -> str | None:
    """Why the open shard file `fid` cannot supply the segments `uses` of their columns, or None.

    Every dataset (`_check_dataset`), then the file's attributes (`_check_span`).

    Uses h5py's low-level API (2-3x faster per file than File/Dataset objects: this runs
    once per shard file a catalogue opens).
    """
    for col, seg in uses:
        try:
            ds = h5py.h5d.open(fid, seg.dataset.encode())
        except KeyError:
            return f"no dataset {seg.dataset!r}"
        try:
            why = _check_dataset(ds, col, seg)
        finally:
            ds.close()
        if why:
            return why
    return _check_span(fid, uses, fingerprint)


def _check_dataset(ds: Any, col: _Column, seg: _Segment) -> str | None:
    """Why the open dataset `ds` cannot supply segment `seg` of column `col`, or None.

    Its row shape, dtype and number of rows (a filter it needs is looked for only if a read fails:
    `Catalog._read_into`).
    """
    shape, dtype = ds.shape, ds.dtype
    if tuple(shape[1:]) != col.shape or dtype != col.dtype:
        return f"{seg.dataset!r} is {dtype}{shape}, the master expects {col.dtype}(N, {col.shape})"
    if shape[0] < seg.offset + seg.size:
        return f"{seg.dataset!r} holds {shape[0]} rows, the master expects {seg.offset + seg.size}"
    return None


def _check_span(fid: Any, uses: list[tuple[_Column, _Segment]], fingerprint: str | None = None) -> str | None:
    """Why the file's root attributes differ from what the master expects, or None.

    A recorded run ``fingerprint`` (JSON) must equal the master's `fingerprint` (a shard of another run copied
    in is refused), and ``start``/``stop`` (a shard's objects) the rows the master maps onto it.
    """
    theirs = _text_attr(fid, FINGERPRINT_ATTR.encode()) if fingerprint else None
    if theirs and theirs != fingerprint and json.loads(theirs) != json.loads(fingerprint):
        return "written by another run (its fingerprint differs from the master's)"
    span = [_scalar_attr(fid, name.encode()) for name in (START_ATTR, STOP_ATTR)]
    if None in span:
        return None
    for _, seg in uses:
        if seg.offset == 0 and tuple(span) != (seg.start, seg.stop):
            return f"holds objects {span[0]}..{span[1] - 1}, the master expects {seg.start}..{seg.stop - 1}"
    return None


def _open_attr(fid: Any, name: bytes) -> Any:
    """Attribute `name` of the file's root group, open, or None (one HDF5 call: no H5Aexists first)."""
    try:
        return h5py.h5a.open(fid, name)
    except KeyError:
        return None


def _scalar_attr(fid: Any, name: bytes) -> int | None:
    """Integer attribute `name` of the file's root group (one value), or None (low-level API, fewest calls.

    This runs for every shard file a catalogue opens).
    """
    attr = _open_attr(fid, name)
    if attr is None:
        return None
    try:
        if attr.get_space().get_simple_extent_npoints() != 1:
            return None  # (HDF5 would write every value into the one-value buffer)
        value = np.empty((), np.int64)
        attr.read(value, mtype=h5py.h5t.NATIVE_INT64)  # HDF5 converts any number
    except TypeError:  # not a number: HDF5 has no conversion
        return None
    finally:
        attr.close()
    return int(value)


_VLEN_TEXT = h5py.string_dtype()
_VLEN_TEXT_TYPE = h5py.h5t.py_create(_VLEN_TEXT)  # made once: the memory type of every fingerprint read


def _text_attr(fid: Any, name: bytes) -> str | None:
    """String attribute `name` of the file's root group, or None.

    Read as a variable-length string (how h5py writes text) without asking the attribute's
    type first; any other string type is read through its own dtype.
    """
    attr = _open_attr(fid, name)
    if attr is None:
        return None
    try:
        if attr.get_space().get_simple_extent_type() != h5py.h5s.SCALAR:
            return None  # (HDF5 would write every value into the one-value buffer)
        value = np.empty((), _VLEN_TEXT)
        try:
            attr.read(value, mtype=_VLEN_TEXT_TYPE)
        except OSError:  # fixed-length text (or not text): HDF5 has no conversion to variable-length
            value = np.empty((), attr.dtype)
            attr.read(value)
    finally:
        attr.close()
    value = value[()]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value if isinstance(value, str) else None


def _attrs(group: h5py.Group) -> dict[str, Any]:
    out = {}
    for key, value in group.attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def _meta_of(master: h5py.File) -> dict[str, Any] | None:
    """The /meta attributes of an open master file (text decoded); None when it has no /meta group."""
    return _attrs(master[META]) if isinstance(master.get(META), h5py.Group) else None


def read_meta(path: str | Path) -> dict[str, Any]:
    """The /meta attributes of a catalogue's master file, read without opening its shards or checking its kind.

    What `Catalog.meta` holds; how a catalogue is resumed or re-run from its own record.

    Parameters
    ----------
    path : str or Path
        The master file of a galhpc-encode or galhpc-generate catalogue.

    Returns
    -------
    dict of str to Any
        Attribute name -> value (text decoded, numpy scalars as Python numbers).

    Raises
    ------
    CatalogError
        The file is missing, unreadable, or has no /meta.
    """
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"catalogue not found: {path}")
    try:
        with open_h5_readonly(path) as master:
            meta = _meta_of(master)
    except OSError as err:
        raise CatalogError(f"{path} is not a readable HDF5 file: {err}") from err
    if meta is None:
        raise CatalogError(f"{path} has no /{META}: it is not a galhpc catalogue")
    return meta


def open_catalog(path: str | Path, max_open: int = DEFAULT_MAX_OPEN, *, kinds: Sequence[str] = CATALOGUES,
                 role: str = "a catalogue reader") -> Catalog:
    """Open a galhpc catalogue (encode or generate output) for verified, lazy reading.

    Every shard file is checked before any of its rows is returned (exists, readable, of
    this run, holds the expected rows; see the module docstring for when); rows are read
    from the shard files directly, never through the virtual datasets, with at most
    `max_open` files open.

    Parameters
    ----------
    path : str or Path
        The master file, e.g. ``clusters.h5`` (shards in ``clusters.h5.shards/``), or a
        plain HDF5 file of per-object datasets.
    max_open : int, optional
        Most files open at a time (default 64).
    kinds : sequence of str, optional
        The `galhpc.formats.kinds` accepted (default: an encoded or a synthetic catalogue).
    role : str, optional
        What the caller reads it as (``"galhpc-search --catalog"``), for the refusal.

    Returns
    -------
    Catalog
        ``len(cat)`` rows; ``cat.columns``; ``cat.read(column, rows)`` -> numpy array
        (N_rows, ...); ``cat.table()`` -> astropy Table of the scalar columns;
        ``cat.iter_blocks(column, block_rows)``; ``cat.meta``.  Use it as a context
        manager to close its files.

    Raises
    ------
    CatalogError
        If the file is not a readable catalogue, or a shard file is missing, unreadable,
        short of rows or of another run (one line naming the shard files; for a column
        other than ``object_id``, when that column is first read).
    FileKindError
        If it is another kind of galhpc file (`galhpc.formats.kinds`), e.g. a store.

    Examples
    --------
    >>> with open_catalog("clusters.h5") as cat:          # doctest: +SKIP
    ...     mu = cat.read("mu", rows=[10, 3, 99])          # (3, L) float32
    ...     t = cat.table(["object_id", "component"])
    """
    return Catalog(path, max_open=max_open, kinds=kinds, role=role)
