"""A catalogue's scalar and vector columns as a FITS binary table or as Parquet, streamed.

Both read the catalogue with `galhpc.io.catalog` (every shard verified first) one shard
at a time, so memory is one shard of the exported columns, whatever N:

- FITS: one BINTABLE extension (EXTNAME CATALOG) written through astropy's
  `StreamingHDU`: the header (NAXIS2 = N, TTYPE/TFORM/TUNIT, TTYPE comments and TCOMMn
  descriptions as TOPCAT reads them) first, then each shard's rows.  Vector columns are
  fixed-length array columns (TFORM ``8E``), fixed-length text ``nA``.  Integer types FITS lacks are widened
  (int8 -> int16, uint16 -> int32, uint32 -> int64); float16 becomes float32.
- Parquet: a directory with one file per shard (``part-000017.parquet``: the LSST/Dask
  convention of a partitioned dataset), vector columns as fixed-size lists, units and
  descriptions in the field metadata and the catalogue's /meta in the schema metadata.

Outputs are written under temporary names and renamed when complete.  Image columns
(per-object arrays of 2 or more dimensions) are not exported.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from galhpc.extras import require
from galhpc.io.catalog import Catalog
from galhpc.io.columns import column_info
from galhpc.runtime.files import atomic_path, temp_path

log = logging.getLogger("galhpc.io.export")

# storage dtype -> the dtype written to FITS (types with a native TFORM are kept)
FITS_WIDER = {np.dtype(np.int8): np.dtype(np.int16), np.dtype(np.uint16): np.dtype(np.int32),
              np.dtype(np.uint32): np.dtype(np.int64), np.dtype(np.float16): np.dtype(np.float32)}
TFORM_CODES = {"u1": "B", "i2": "I", "i4": "J", "i8": "K", "f4": "E", "f8": "D"}
FITS_SUFFIXES = (".fits", ".fit", ".fts")
META_CARDS = {"kind": "KIND", "model": "MODEL", "checkpoint_sha256": "CKPTSHA", "created": "CREATED",
              "galhpc_version": "GALHPCV", "n_shards": "NSHARDS", "pixel_scale": "PIXSCALE"}


def exportable_columns(cat: Catalog, columns: Sequence[str] | None = None) -> list[str]:
    """`columns`, or every scalar and vector column (not images) of `cat`, in catalogue order.

    Raises
    ------
    KeyError
        For a column the catalogue lacks.
    ValueError
        For a column of two or more dimensions per row (an image).
    """
    names = [n for n in cat.columns if len(cat.shape(n)) <= 2] if columns is None else list(columns)
    for name in names:
        if len(cat.shape(name)) > 2:
            raise ValueError(f"{cat.path}: column {name!r} has shape {cat.shape(name)}; only scalar and vector "
                             "columns are exported")
    return names


def _target(cat: Catalog, out: str | Path, columns: Sequence[str] | None, overwrite: bool) -> tuple[Path, list[str]]:
    """(`out` as a Path, the columns to export) after the checks both exports make first.

    Raises
    ------
    FileExistsError
        If `out` exists and not `overwrite`.
    ValueError, KeyError
        For image or unknown columns (`exportable_columns`).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite (--overwrite) to replace it")
    return out, exportable_columns(cat, columns)


def _fits_dtype(dtype: np.dtype) -> np.dtype:
    dtype = FITS_WIDER.get(np.dtype(dtype), np.dtype(dtype))
    if dtype.kind == "S":  # fixed-length text (e.g. a store label passed through): TFORM nA
        return dtype
    if dtype.str[1:] not in TFORM_CODES:
        raise ValueError(f"no FITS binary-table type for {dtype}")
    return dtype.newbyteorder(">")


def fits_header(cat: Catalog, names: Sequence[str]):
    """The BINTABLE header of the export of `names` (NAXIS2 = len(cat)) and the big-endian
    record dtype of one row."""
    from astropy.io import fits

    cols, fields = [], []
    for name in names:
        dtype = _fits_dtype(cat.dtype(name))
        shape = cat.shape(name)[1:]
        repeat = int(shape[0]) if shape else 1
        info = column_info(name, cat.meta)
        code = "A" if dtype.kind == "S" else TFORM_CODES[dtype.str[1:]]
        repeat = dtype.itemsize if dtype.kind == "S" else repeat
        cols.append(fits.Column(name=name, format=f"{repeat}{code}",
                                unit=info.unit or None))
        fields.append((name, dtype, shape) if shape else (name, dtype))
    header = fits.BinTableHDU.from_columns(cols, nrows=0).header
    header["NAXIS2"] = len(cat)
    header["EXTNAME"] = ("CATALOG", "galhpc catalogue export")
    for i, name in enumerate(names, start=1):
        description = column_info(name, cat.meta).description
        header.comments[f"TTYPE{i}"] = _one_line(fits, f"TTYPE{i}", name, description)[1]
        header.insert(f"TFORM{i}", (f"TCOMM{i}", _one_line(fits, f"TCOMM{i}", description)[0]), after=True)
    for key, card in META_CARDS.items():
        value = cat.meta.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            header[card] = _one_line(fits, card, value)[0]
    return header, np.dtype(fields)


def fits_text(text: str) -> str:
    """`text` as printable ASCII, which is all a FITS header card may hold (FITS standard
    4.0, section 4.1.2.3): other characters become Python escapes (``é`` -> ``\\xe9``)."""
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    return "".join(c if " " <= c <= "~" else repr(c)[1:-1] for c in escaped)


def _one_line(fits, key: str, value, comment: str = "") -> tuple[object, str]:
    """(value, comment) cut so that card `key` stays one 80-character line: the comment
    is shortened first, then a string value (no CONTINUE cards, which not every FITS
    reader takes); strings are made printable ASCII first (`fits_text`)."""
    comment = fits_text(comment)
    if isinstance(value, str):
        value = fits_text(value)
    def fits_line(v, c) -> bool:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = fits.Card(key, v, c).image
        return len(image) == 80 and not caught
    while comment and not fits_line(value, comment):
        comment = comment[:-1]
    while isinstance(value, str) and value and not fits_line(value, comment):
        value = value[:-1]
    return value, comment.rstrip()


def export_fits(cat: Catalog, out: str | Path, columns: Sequence[str] | None = None, overwrite: bool = False) -> Path:
    """Write the scalar and vector columns of a catalogue to a FITS binary table, shard by shard.

    Parameters
    ----------
    cat : Catalog
        An open catalogue (`galhpc.open_catalog`).
    out : str or Path
        The FITS file to write.
    columns : sequence of str, optional
        Columns to export (default: every scalar and vector column).
    overwrite : bool
        Replace an existing `out`.

    Returns
    -------
    Path
        `out`: a primary HDU plus a BINTABLE extension ``CATALOG`` of len(cat) rows.

    Raises
    ------
    FileExistsError
        If the file `out` exists and not `overwrite`.
    ValueError, KeyError
        For image or unknown columns.
    CatalogError
        If a shard became unreadable while exporting; the temporary file is removed and
        an existing `out` is left as it was.
    """
    from astropy.io import fits

    out, names = _target(cat, out, columns, overwrite)
    header, record = fits_header(cat, names)
    with atomic_path(out) as tmp:
        primary = fits.PrimaryHDU()
        primary.header["ORIGIN"] = "galhpc-export"
        primary.header["CATALOG"] = _one_line(fits, "CATALOG", cat.path.name, "galhpc catalogue master file")
        primary.writeto(tmp)
        stream = fits.StreamingHDU(str(tmp), header)
        try:
            for shard, values in cat.iter_shards(names):
                rows = np.empty(shard.size, record)
                for name in names:
                    rows[name] = values[name]
                stream.write(rows.view(np.uint8))
        finally:
            stream.close()
    log.info("wrote %s: %d rows, columns %s", out, len(cat), names)
    return out


def arrow_schema(cat: Catalog, names: Sequence[str]):
    """The pyarrow schema of the Parquet export: fixed-size lists for vector columns, unit
    and description in each field's metadata, the catalogue's /meta in the schema's."""
    pa = require("pyarrow", "export", "Parquet export")
    fields = []
    for name in names:
        dtype = np.dtype(cat.dtype(name))
        kind = pa.string() if dtype.kind == "S" else pa.from_numpy_dtype(np.float32 if dtype == np.float16 else dtype)
        shape = cat.shape(name)[1:]
        if shape:
            kind = pa.list_(kind, int(shape[0]))
        info = column_info(name, cat.meta)
        meta = {"description": info.description, **({"unit": info.unit} if info.unit is not None else {})}
        fields.append(pa.field(name, kind, nullable=False, metadata=meta))
    meta = {k: v for k, v in cat.meta.items() if isinstance(v, (str, int, float))}
    return pa.schema(fields, metadata={"galhpc": json.dumps(meta, sort_keys=True)})


def export_parquet(cat: Catalog, out: str | Path, columns: Sequence[str] | None = None,
                   overwrite: bool = False, compression: str = "zstd") -> Path:
    """Write the scalar and vector columns of a catalogue as Parquet, one file per shard.

    Parameters
    ----------
    cat : Catalog
        An open catalogue (`galhpc.open_catalog`).
    out : str or Path
        The directory to write (``out/part-NNNNNN.parquet``, NNNNNN the shard number);
        ``pyarrow.dataset.dataset(out)`` or ``dask.dataframe.read_parquet(out)`` read it.
    columns : sequence of str, optional
        Columns to export (default: every scalar and vector column).
    overwrite : bool
        Replace an existing `out`.
    compression : str
        Parquet codec (default ``"zstd"``).

    Returns
    -------
    Path
        `out`.

    Raises
    ------
    FileExistsError
        If the directory `out` exists and not `overwrite`.
    ValueError, KeyError
        For image or unknown columns.
    CatalogError
        If a shard became unreadable while exporting; the part files written so far are
        removed and an existing `out` is left as it was.
    """
    pa = require("pyarrow", "export", "Parquet export")
    pq = require("pyarrow.parquet", "export", "Parquet export")
    out, names = _target(cat, out, columns, overwrite)
    schema = arrow_schema(cat, names)
    tmp = temp_path(out)  # a directory: the runtime's temp name, renamed when complete
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for shard, values in cat.iter_shards(names):
            arrays = []
            for field in schema:
                v = values[field.name]
                if v.dtype == np.float16:
                    v = v.astype(np.float32)
                if v.dtype.kind == "S":
                    v = np.char.decode(v, "utf-8")
                if v.ndim == 2:
                    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1]))
                else:
                    arrays.append(pa.array(v))
            pq.write_table(pa.Table.from_arrays(arrays, schema=schema), tmp / f"part-{shard.index:06d}.parquet",
                           compression=compression)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s: %d rows in %d files, columns %s", out, len(cat), len(cat.shards), names)
    return out

