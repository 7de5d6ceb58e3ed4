"""A catalogue's scalar and vector columns as a FITS binary table or as Parquet, streamed.

Both read the catalogue with `galhpc.io.catalog` (every shard verified first) one shard
at a time, so memory is one shard of the exported columns, whatever N:

- FITS: one BINTABLE extension (EXTNAME CATALOG) written through astropy's
  `StreamingHDU`: the header (NAXIS2 = N, TTYPE/TFORM/TUNIT, TTYPE comments and TCOMMn
  descriptions as TOPCAT reads them) first, then each shard's rows.  Vector columns are
  fixed-length array columns (TFORM ``8E``), fixed-length text ``nA``.  Integer types FITS lacks are widened
  (int8 -> int16, uint16 -> int32, uint32 -> int64); float16 becomes float32.  Parquet
  widens the same types, which VOTable (the VOParquet metadata) lacks too.
- Parquet: one file, one row group per shard, following the IVOA VOParquet convention
  (a VOTable of the columns' types, units and descriptions in the key-value metadata
  ``IVOA.VOTable-Parquet.content``, as TOPCAT and astropy read it); vector columns as
  fixed-size lists or, with ``split_vectors``, one scalar column per element
  (``mu_0 … mu_{L-1}``, which TOPCAT's table view shows); units and descriptions also in
  the field metadata and the catalogue's /meta in the schema metadata (``galhpc``).

Outputs are written under temporary names and renamed when complete.  Image columns
(per-object arrays of 2 or more dimensions) are not in the tables; they are exported as
images: one FITS file per object (`export_fits_cutouts`) or one cube (`export_fits_cube`),
in the survey's units with BUNIT, PIXSCALE and magnitudes in the headers, and
`inject_stamps` adds stamps to a survey image at given RA/Dec (docs/api.md).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from galhpc.extras import require
from galhpc.formats import catalog as C
from galhpc.io.catalog import Catalog
from galhpc.io.columns import column_info
from galhpc.runtime.files import atomic_path, temp_path

log = logging.getLogger("galhpc.io.export")

# storage dtype -> the dtype written to FITS and Parquet: neither a FITS TFORM nor a VOTable
# datatype exists for int8, uint16, uint32 or float16 (types with a native one are kept)
WIDER = {np.dtype(np.int8): np.dtype(np.int16), np.dtype(np.uint16): np.dtype(np.int32),
              np.dtype(np.uint32): np.dtype(np.int64), np.dtype(np.float16): np.dtype(np.float32)}
TFORM_CODES = {"u1": "B", "i2": "I", "i4": "J", "i8": "K", "f4": "E", "f8": "D"}
FITS_SUFFIXES = (".fits", ".fit", ".fts")
META_CARDS = {"kind": "KIND", "model": "MODEL", "checkpoint_sha256": "CKPTSHA", "created": "CREATED",
              "galhpc_version": "GALHPCV", "n_shards": "NSHARDS", "pixel_scale": "PIXSCALE"}


def exportable_columns(cat: Catalog, columns: Sequence[str] | None = None) -> list[str]:
    """`columns`, or every scalar and vector column (not images) of `cat`, in catalogue order.

    Parameters
    ----------
    cat : Catalog
        The catalogue to export (its row shapes tell the images, of two or more
        dimensions per row, apart).
    columns : sequence of str, optional
        Columns asked for by name, in the order wanted; None exports every column but
        the images.

    Returns
    -------
    list of str

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
    dtype = WIDER.get(np.dtype(dtype), np.dtype(dtype))
    if dtype.kind == "S":  # fixed-length text (e.g. a store label passed through): TFORM nA
        return dtype
    if dtype.str[1:] not in TFORM_CODES:
        raise ValueError(f"no FITS binary-table type for {dtype}")
    return dtype.newbyteorder(">")


def fits_header(cat: Catalog, names: Sequence[str]):
    """The BINTABLE header of an export and the big-endian record dtype of one row.

    Parameters
    ----------
    cat : Catalog
        The open catalogue.
    names : sequence of str
        The exported columns (`exportable_columns`).

    Returns
    -------
    header : astropy.io.fits.Header
        NAXIS2 = len(cat) rows; TTYPEn/TFORMn/TUNITn/TCOMMn per column, /meta as keywords.
    record : numpy.dtype
        Big-endian compound dtype of one row.
    """
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
    r"""`text` as printable ASCII, which is all a FITS header card may hold (FITS standard 4.0, section 4.1.2.3).

    Other characters become Python escapes (``é`` -> ``\xe9``).

    Parameters
    ----------
    text : str
        Any text.

    Returns
    -------
    str
        ASCII 32..126 only.
    """
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    return "".join(c if " " <= c <= "~" else repr(c)[1:-1] for c in escaped)


def _one_line(fits, key: str, value, comment: str = "") -> tuple[object, str]:
    """(value, comment) cut so that card `key` stays one 80-character line.

    The comment is shortened first, then a string value (no CONTINUE cards, which not every FITS reader takes);
    strings are made printable ASCII first (`fits_text`).
    """
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


# HATS partitions: a reducing task holds one partition (about twice its bytes, measured), so their size, not
# N, bounds the export's memory; the default threshold keeps a partition's exported columns near this
PARTITION_BYTES = 64 << 20
PIXEL_THRESHOLD_RANGE = (1_000, 1_000_000)
VOPARQUET_VERSION = "1.0"  # IVOA "VOTable-Parquet" convention (as astropy's ``parquet.votable`` reads it)


def export_names(cat: Catalog, names: Sequence[str], split_vectors: bool) -> list[tuple[str, str, int | None]]:
    """(exported name, catalogue column, element index or None) of each exported column.

    With `split_vectors` a vector column ``mu`` of L elements becomes scalar columns ``mu_0 … mu_{L-1}`` (TOPCAT
    shows no array columns in its table view).

    Parameters
    ----------
    cat : Catalog
        Gives each column's row shape.
    names : sequence of str
        Exported catalogue columns.
    split_vectors : bool
        One scalar column per vector element.

    Returns
    -------
    list of tuple of (str, str, int or None)
    """
    out: list[tuple[str, str, int | None]] = []
    for name in names:
        shape = cat.shape(name)[1:]
        if shape and split_vectors:
            out.extend((f"{name}_{k}", name, k) for k in range(int(shape[0])))
        else:
            out.append((name, name, None))
    return out


def _describe(cat: Catalog, name: str, element: int | None) -> tuple[str | None, str]:
    info = column_info(name, cat.meta)
    return info.unit, info.description if element is None else f"{info.description}, element {element}"


def votable_xml(cat: Catalog, exported: Sequence[tuple[str, str, int | None]]) -> str:
    """The VOTable document of the VOParquet convention.

    One FIELD per exported column with its datatype, arraysize, unit and DESCRIPTION, and a ``PARQUET`` element
    in place of DATA.

    Written with astropy.io.votable from a one-row table of the exported columns, so the
    FIELD types are astropy's own mapping of the dtypes (TOPCAT and astropy's
    ``Table.read(..., format="parquet.votable")`` read it back).

    Parameters
    ----------
    cat : Catalog
        Gives dtypes, units (`galhpc.io.columns`) and descriptions.
    exported : sequence of tuple of (str, str, int or None)
        `export_names`.

    Returns
    -------
    str
        The VOTable XML (UTF-8 text).
    """
    import io
    import xml.etree.ElementTree as ET

    from astropy.io.votable.tree import VOTableFile
    from astropy.table import Table

    one = Table()
    for label, name, element in exported:
        dtype = WIDER.get(np.dtype(cat.dtype(name)), np.dtype(cat.dtype(name)))
        shape = cat.shape(name)[1:] if element is None else ()
        one[label] = np.zeros((1, *shape), dtype) if dtype.kind != "S" else np.array([""], dtype="U1")
        unit, description = _describe(cat, name, element)
        one[label].unit = unit or None
        one[label].description = description
    vot = VOTableFile.from_table(one)
    for field in vot.resources[0].tables[0].fields:
        field.description = one[field.name].description
        if field.datatype == "char":
            field.arraysize = "*"
    buf = io.BytesIO()
    vot.to_xml(buf)
    ns = "{http://www.ivoa.net/xml/VOTable/v1.3}"
    root = ET.fromstring(buf.getvalue())
    table = root.find(f"{ns}RESOURCE").find(f"{ns}TABLE")
    table.remove(table.find(f"{ns}DATA"))
    ET.SubElement(table, f"{ns}PARQUET", type="Parquet-local-XML")
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def arrow_schema(cat: Catalog, names: Sequence[str], split_vectors: bool = False):
    """The pyarrow schema of the Parquet export.

    Fixed-size lists for vector columns (or one scalar column per element with `split_vectors`), unit and
    description in each field's metadata, the VOParquet VOTable (``IVOA.VOTable-Parquet.content``/``.version``)
    and the catalogue's /meta (``galhpc``) in the schema's.

    Parameters
    ----------
    cat : Catalog
        The catalogue exported (its dtypes, units and /meta).
    names : sequence of str
        Exported columns.
    split_vectors : bool
        Vectors as one scalar field per element.

    Returns
    -------
    pyarrow.Schema
    """
    pa = require("pyarrow", "export", "Parquet export")
    exported = export_names(cat, names, split_vectors)
    fields = []
    for label, name, element in exported:
        dtype = WIDER.get(np.dtype(cat.dtype(name)), np.dtype(cat.dtype(name)))
        kind = pa.string() if dtype.kind == "S" else pa.from_numpy_dtype(dtype)
        shape = cat.shape(name)[1:]
        if shape and element is None:
            kind = pa.list_(kind, int(shape[0]))
        unit, description = _describe(cat, name, element)
        meta = {"description": description, **({"unit": unit} if unit is not None else {})}
        fields.append(pa.field(label, kind, nullable=False, metadata=meta))
    meta = {k: v for k, v in cat.meta.items() if isinstance(v, (str, int, float))}
    return pa.schema(fields, metadata={"galhpc": json.dumps(meta, sort_keys=True),
                                       "IVOA.VOTable-Parquet.version": VOPARQUET_VERSION,
                                       "IVOA.VOTable-Parquet.content": votable_xml(cat, exported)})


def arrow_batch(cat: Catalog, names: Sequence[str], values: dict[str, np.ndarray], split_vectors: bool, schema):
    """One shard's `values` (`Catalog.iter_shards`) as a pyarrow Table of `schema`.

    Parameters
    ----------
    cat : Catalog
        For the exported names.
    names : sequence of str
        Exported columns.
    values : dict of str to numpy.ndarray
        Each column's rows of one shard, (n, ...).
    split_vectors : bool
        As in `arrow_schema`.
    schema : pyarrow.Schema
        `arrow_schema`'s.

    Returns
    -------
    pyarrow.Table
        n rows (types VOTable lacks widened as `WIDER` says, bytes decoded to str).
    """
    pa = require("pyarrow", "export", "Parquet export")
    arrays = []
    for _label, name, element in export_names(cat, names, split_vectors):
        v = values[name] if element is None else values[name][:, element]
        if v.dtype in WIDER:
            v = v.astype(WIDER[v.dtype])
        if v.dtype.kind == "S":
            v = np.char.decode(v, "utf-8")
        if v.ndim == 2:
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(v).reshape(-1)), v.shape[1]))
        else:
            arrays.append(pa.array(np.ascontiguousarray(v)))
    return pa.Table.from_arrays(arrays, schema=schema)


def export_parquet(cat: Catalog, out: str | Path, columns: Sequence[str] | None = None,
                   overwrite: bool = False, compression: str = "zstd", split_vectors: bool = False) -> Path:
    """Write the scalar and vector columns of a catalogue as one VOParquet file, one row group per shard.

    Parameters
    ----------
    cat : Catalog
        An open catalogue (`galhpc.open_catalog`).
    out : str or Path
        The Parquet file to write; ``pyarrow.parquet.read_table``, pandas, astropy
        (``Table.read(out, format="parquet.votable")``, with units) and TOPCAT
        (``topcat -f parquet out``) read it.
    columns : sequence of str, optional
        Columns to export (default: every scalar and vector column).
    overwrite : bool
        Replace an existing `out`.
    compression : str
        Parquet codec (default ``"zstd"``).
    split_vectors : bool
        Write each vector column ``mu`` (N, L) as L float columns ``mu_0 … mu_{L-1}``
        instead of one fixed-size-list column.

    Returns
    -------
    Path
        `out`: len(cat) rows; memory while writing is one shard of the exported columns.

    Raises
    ------
    MissingExtraError
        Without pyarrow (``pip install 'galhpc[export]'``).
    ValueError, KeyError
        For image or unknown columns.
    FileExistsError
        If `out` exists and not `overwrite`.
    CatalogError
        If a shard became unreadable while writing (the temporary Parquet file is removed,
        an existing `out` stays as it was).
    """
    pq = require("pyarrow.parquet", "export", "Parquet export")
    out, names = _target(cat, out, columns, overwrite)
    schema = arrow_schema(cat, names, split_vectors)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema, compression=compression) as writer:
        for _, values in cat.iter_shards(names):
            writer.write_table(arrow_batch(cat, names, values, split_vectors, schema))
    log.info("wrote %s: %d rows in %d row groups, columns %s", out, len(cat), len(cat.shards), names)
    return out


def _field_bytes(kind) -> int:
    """Bytes of one value of a pyarrow type (a fixed-size list: its elements'; text: a guess of 32)."""
    if hasattr(kind, "list_size"):
        return kind.list_size * _field_bytes(kind.value_type)
    try:
        return kind.byte_width
    except ValueError:  # variable width (text)
        return 32


def hats_pixel_threshold(row_bytes: int, partition_bytes: int = PARTITION_BYTES) -> int:
    """Rows of one HATS partition so that it holds about `partition_bytes` of exported columns.

    Parameters
    ----------
    row_bytes : int
        Bytes of one exported row (every column, the pointers and hats' spatial index).
    partition_bytes : int
        The partition size wanted, in bytes (default `PARTITION_BYTES`, 64 MiB).

    Returns
    -------
    int
        ``partition_bytes // row_bytes`` within `PIXEL_THRESHOLD_RANGE` (1,000 to 10^6 rows).
    """
    lo, hi = PIXEL_THRESHOLD_RANGE
    return int(min(hi, max(lo, partition_bytes // max(1, row_bytes))))


def export_hats(cat: Catalog, out: str | Path, columns: Sequence[str] | None = None, overwrite: bool = False,
                n_workers: int = 1, pixel_threshold: int | None = None, chunk_rows: int = 65_536,
                client=None, split_vectors: bool = True, extra: Mapping[str, np.ndarray] | None = None,
                extra_source: str = "another table", sky_region: Sequence[float] | None = None,
                sky_seed: int = 0) -> Path:
    """Write the scalar and vector columns of a catalogue as a HATS catalogue (LSDB reads it).

    The format's own importer, hats-import, partitions the rows by HEALPix pixel on a
    Dask cluster (``dataset/Norder=K/Dir=D/Npix=N.parquet``, ``properties``,
    ``partition_info.csv``).  Its input files are the catalogue's shard files, read by
    `galhpc.io.hats.CatalogueShardReader` `chunk_rows` rows at a time (verified, straight
    from the HDF5: nothing staged), so a task's memory is one block, and a partition holds
    at most `pixel_threshold` rows (by default about 64 MiB of its columns), whatever N:
    the export's memory is bounded by those two, not by N.  Vector columns become one column per
    element (``mu_0 … mu_{L-1}``) or fixed-size lists; ``shard`` and ``row`` say where
    each object is in the HDF5 shard files (``<master>.shards/NNNNNN.h5``, row ``row``:
    its images stay there).

    Parameters
    ----------
    cat : Catalog
        An open catalogue with columns ``ra`` and ``dec`` (ICRS degrees), or without them
        and a `sky_region`.
    out : str or Path
        The HATS catalogue directory to write; its name is the catalogue's name.
    columns : sequence of str, optional
        Columns to export (default: every scalar and vector column); ``ra``/``dec`` are added.
    overwrite : bool
        Replace an existing `out`.
    n_workers : int
        Workers of the local Dask cluster hats-import starts (when `client` is None).
    pixel_threshold : int, optional
        Most rows of one HEALPix partition (hats-import's adaptive split): with
        `chunk_rows`, what bounds the memory (a reducing task holds one partition).
        Default: `hats_pixel_threshold` of the exported row's bytes, partitions of about
        `PARTITION_BYTES` (64 MiB; 404,000 rows of an encode catalogue of 20 latents).
    chunk_rows : int
        Most rows a reading task holds at a time.
    client : dask.distributed.Client, optional
        A running Dask client (e.g. a dask-jobqueue Slurm cluster's) to use instead.
    split_vectors : bool
        Vector columns as ``mu_0 … mu_{L-1}`` (default; TOPCAT shows them) or, False, as
        one fixed-size-list column each (pyarrow ``fixed_size_list``; pandas reads arrays).
    extra : mapping of str to numpy.ndarray, optional
        More columns, each shape (N,) in catalogue row order (e.g. the rarity scores of
        `galhpc-rarity`, whose rows are the catalogue's), staged memory-mapped beside
        `out` and read a block at a time.
    extra_source : str
        Where `extra` came from, for its columns' descriptions.
    sky_region : sequence of 4 float, optional
        ``(ra_min, ra_max, dec_min, dec_max)`` in degrees, for a catalogue without
        positions (galhpc-generate's): ``ra``/``dec`` are drawn uniformly on the sphere
        within it (`galhpc.io.hats.sky_positions`, seeded by `sky_seed` and each shard's
        index: the same catalogue, region and seed give the same positions).
    sky_seed : int
        Seed of the `sky_region` draw.

    Returns
    -------
    Path
        `out`.

    Raises
    ------
    FileExistsError
        If `out` exists and not `overwrite`.
    ValueError
        If the catalogue has no ``ra``/``dec`` columns and no `sky_region` is given (or has
        them and one is), for a region outside the sky, for image columns, or for an
        `extra` column that is not (N,) or clashes with an exported column.
    MissingExtraError
        Without the ``[hats]`` extra.
    """
    import tempfile

    require("hats", "hats", "HATS export (galhpc-export --hats)")
    pipeline = require("hats_import", "hats", "HATS export (galhpc-export --hats)")
    pa = require("pyarrow", "hats", "HATS export (galhpc-export --hats)")
    from hats_import.catalog.arguments import ImportArguments

    from galhpc.io.hats import ROW, SHARD, CatalogueShardReader, sky_positions

    out = Path(out)
    names = exportable_columns(cat, columns)
    missing = [c for c in ("ra", "dec") if c not in cat]
    if sky_region is not None:
        ra_min, ra_max, dec_min, dec_max = (float(v) for v in sky_region)
        if not (0 <= ra_min < ra_max <= 360 and -90 <= dec_min < dec_max <= 90):
            raise ValueError(f"sky region RA {ra_min}..{ra_max}, Dec {dec_min}..{dec_max} deg is not a box on the "
                             "sky (0 <= ra_min < ra_max <= 360, -90 <= dec_min < dec_max <= 90)")
        if len(missing) < 2:
            own = "/".join(c for c in ("ra", "dec") if c in cat)
            raise ValueError(f"{cat.path} has its own {own}; a sky region is for a catalogue without positions")
        sky_positions((ra_min, ra_max, dec_min, dec_max), sky_seed, 0, 1)  # (a bad seed fails here, not in Dask)
        names = [c for c in names if c not in ("ra", "dec")]
    elif missing:
        raise ValueError(f"{cat.path}: no {'/'.join(missing)} column; a HATS catalogue needs sky positions "
                         "(a store with ra/dec labels, docs/schema.md; or a sky region to draw them in, "
                         "--sky-region)")
    else:
        names = [c for c in ("ra", "dec") if c not in names] + names
    clash = [c for c in (SHARD, ROW) if c in names]
    if clash:
        raise ValueError(f"{cat.path}: column(s) {', '.join(clash)} clash with the HATS export's pointers into "
                         "the shard files; leave them out (--columns)")
    extra = dict(extra or {})
    labels = {label for label, _, _ in export_names(cat, names, split_vectors)} | {SHARD, ROW, "ra", "dec"}
    for name, values in extra.items():
        if name in labels or np.shape(values) != (len(cat),):
            raise ValueError(f"{extra_source}: column {name!r} " + (
                "clashes with an exported column" if name in labels else
                f"has shape {np.shape(values)}, the catalogue {cat.path} has {len(cat)} rows: not one row per object"))
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite (--overwrite) to replace it")
    schema = arrow_schema(cat, names, split_vectors=split_vectors)
    if sky_region is not None:
        drawn = (f"drawn uniformly on the sphere in RA {ra_min:g}..{ra_max:g}, Dec {dec_min:g}..{dec_max:g} deg "
                 f"(seed {sky_seed}, per shard): not a measured position")
        schema = pa.schema([pa.field(c, pa.float64(), nullable=False, metadata={"unit": "deg", "description": (
            f"{'right ascension' if c == 'ra' else 'declination'} (ICRS), {drawn}")}) for c in ("ra", "dec")]
            + list(schema), metadata=schema.metadata)
    for name, values in extra.items():
        info = column_info(name, cat.meta)
        description = info.description if info.description != name else f"{name}, joined by row from {extra_source}"
        schema = schema.append(pa.field(name, pa.from_numpy_dtype(np.asarray(values).dtype), nullable=False,
                                        metadata={"description": description,
                                                  **({"unit": info.unit} if info.unit is not None else {})}))
    schema = schema.append(pa.field(SHARD, pa.int32(), nullable=False, metadata={
        "description": "index of the HDF5 shard file holding the object (<master>.shards/NNNNNN.h5)"}))
    schema = schema.append(pa.field(ROW, pa.int64(), nullable=False, metadata={
        "description": "row of the object in its HDF5 shard file"}))
    if pixel_threshold is None:  # + 8 bytes: the _healpix_29 column hats-import adds
        pixel_threshold = hats_pixel_threshold(sum(_field_bytes(f.type) for f in schema) + 8)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work:
        staged = None
        if extra:
            staged = Path(work) / "extra.npy"
            rows = np.lib.format.open_memmap(staged, mode="w+", dtype=[(n, np.asarray(v).dtype)
                                                                      for n, v in extra.items()], shape=(len(cat),))
            for name, values in extra.items():
                rows[name] = values
            rows.flush()
            del rows
        args = ImportArguments(
            output_path=work, output_artifact_name=out.name,
            input_file_list=[str(s.path) for s in cat.shards],
            file_reader=CatalogueShardReader(cat.path, names, schema, chunk_rows, split_vectors, staged,
                                             None if sky_region is None else (ra_min, ra_max, dec_min, dec_max,
                                                                              int(sky_seed))),
            ra_column="ra", dec_column="dec",
            pixel_threshold=pixel_threshold, tmp_dir=Path(work) / "tmp", dask_tmp=Path(work) / "dask",
            dask_n_workers=n_workers, resume=False, progress_bar=False)
        if client is None:
            pipeline.pipeline(args)
        else:
            pipeline.pipeline_with_client(args, client)
        if out.exists():
            shutil.rmtree(out)
        os.replace(Path(work) / out.name, out)
    log.info("wrote HATS catalogue %s: %d rows (partitions of at most %d), columns %s", out, len(cat),
             pixel_threshold, [*names, *extra, SHARD, ROW])
    return out


# Images: one FITS per object, a cube, and injection into a survey image ---------------------------
def survey_images(cat: Catalog, values: dict[str, np.ndarray]) -> np.ndarray:
    """A shard's images (n, H, W) (channels averaged) in the survey's units.

    Stored pixels · flux_norm / flux_scale when the catalogue records them (galhpc.inference.photometry), else
    as stored.

    Parameters
    ----------
    cat : Catalog
        A generate catalogue (its /meta ``flux_scale``).
    values : dict of str to numpy.ndarray
        A shard's ``images`` (n, H, W) or (n, C, H, W) and, where written, ``flux_norm`` (n,).

    Returns
    -------
    numpy.ndarray
        Shape (n, H, W) float32.
    """
    images = np.asarray(values[C.IMAGES], np.float32)
    if images.ndim == 4:
        images = images.mean(axis=1)
    if "flux_norm" in values:
        scale = np.asarray(values["flux_norm"], np.float64) / float(cat.meta.get("flux_scale", 1.0))
        images = (images * scale[:, None, None]).astype(np.float32)
    return images


def image_header(cat: Catalog, values: dict[str, np.ndarray] | None = None, row: int | None = None):
    """FITS header cards of exported images.

    BUNIT, PIXSCALE (arcsec/pixel) and CDELT1/2 (degrees/pixel, no celestial WCS: the stamps have no position),
    MAGZP; with `values` and `row`, that object's OBJ_ID, MAG (AB), FLUX and COMPONENT.

    Parameters
    ----------
    cat : Catalog
        A generate catalogue (its /meta pixel scale, unit and zero point).
    values : dict of str to numpy.ndarray, optional
        A shard's columns.
    row : int, optional
        The object's row within `values`.

    Returns
    -------
    astropy.io.fits.Header
        The cards, ORIGIN last.
    """
    from astropy.io import fits

    header = fits.Header()
    bunit = str(cat.meta.get("image_bunit", "unknown"))
    if bunit not in ("unknown", "stored"):
        header["BUNIT"] = (bunit, "survey pixel unit")
    header["IMUNITS"] = (bunit, "pixel unit (stored: the model's own units)")
    scale = cat.meta.get("pixel_scale")
    if isinstance(scale, (int, float, np.floating)) and np.isfinite(scale):
        header["PIXSCALE"] = (float(scale), "arcsec per pixel")
        header["CDELT1"] = (float(scale) / 3600.0, "degrees per pixel")
        header["CDELT2"] = (float(scale) / 3600.0, "degrees per pixel")
    zp = cat.meta.get("zero_point")
    if isinstance(zp, (int, float, np.floating)) and np.isfinite(zp):
        header["MAGZP"] = (float(zp), "AB mag of one BUNIT summed over an object")
    if values is not None and row is not None:
        header["OBJ_ID"] = (int(values[C.OBJECT_ID][row]), "galhpc object id")
        for key, column, comment in (("MAG", "mag_ab", "AB magnitude"), ("FLUX", "flux", "total flux, BUNIT"),
                                     ("COMPONT", C.COMPONENT, "mixture component sampled from")):
            if column in values:
                value = values[column][row].item()
                header[key] = (value if np.isfinite(value) else "NaN", comment) if isinstance(value, float) \
                    else (value, comment)
    header["ORIGIN"] = "galhpc-export"
    return header


def _image_target(cat: Catalog, out: str | Path, overwrite: bool) -> tuple[Path, list[str]]:
    """(`out` as a Path, the columns an image export reads), after the checks both image exports make first."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite (--overwrite) to replace it")
    if C.IMAGES not in cat.columns:
        raise ValueError(f"{cat.path}: no images column to export (a galhpc-generate catalogue has one)")
    return out, [c for c in (C.IMAGES, C.OBJECT_ID, "flux_norm", "flux", "mag_ab", C.COMPONENT) if c in cat.columns]


def export_fits_cutouts(cat: Catalog, out: str | Path, overwrite: bool = False) -> Path:
    """One FITS file per object, ``out/object_<object_id>.fits``.

    A primary image in the survey's units (`survey_images`) with BUNIT, PIXSCALE, CDELT1/2, MAGZP, MAG, FLUX,
    OBJ_ID.

    Parameters
    ----------
    cat : Catalog
        An open `galhpc-generate` catalogue.
    out : str or Path
        Directory to write; written under a temporary name and renamed when complete.
    overwrite : bool
        Replace an existing `out`.

    Returns
    -------
    Path
        The directory of FITS files, `out`.

    Raises
    ------
    ValueError
        If the catalogue has no images.
    FileExistsError
        If `out` exists and not `overwrite`.
    """
    from astropy.io import fits

    out, names = _image_target(cat, out, overwrite)
    tmp = temp_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for _, values in cat.iter_shards(names):
            images = survey_images(cat, values)
            for i, image in enumerate(images):
                fits.PrimaryHDU(image, header=image_header(cat, values, i)).writeto(
                    tmp / f"object_{int(values['object_id'][i])}.fits")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s: %d FITS cutouts", out, len(cat))
    return out


def export_fits_cube(cat: Catalog, out: str | Path, overwrite: bool = False) -> Path:
    """Every image as one FITS cube plus a BINTABLE ``OBJECTS``, streamed one shard at a time.

    The cube is the primary HDU (NAXIS3 = N objects, survey units, header of
    `image_header`); ``OBJECTS`` holds object_id, flux, mag_ab and component (row i = plane i).

    Parameters
    ----------
    cat : Catalog
        An open `galhpc-generate` catalogue.
    out : str or Path
        The FITS file to write (atomically).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The cube written, `out`.

    Raises
    ------
    FileExistsError
        If `out` exists and not `overwrite`.
    ValueError
        If the catalogue has no images.
    """
    from astropy.io import fits
    from astropy.table import Table, vstack

    out, names = _image_target(cat, out, overwrite)
    h, w = cat.shape(C.IMAGES)[-2:]
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 3
    header["NAXIS1"], header["NAXIS2"], header["NAXIS3"] = int(w), int(h), len(cat)
    header.extend(image_header(cat))
    tables = []
    with atomic_path(out) as tmp:
        stream = fits.StreamingHDU(str(tmp), header)
        try:
            for _, values in cat.iter_shards(names):
                stream.write(survey_images(cat, values).astype(">f4"))
                tables.append(Table({c: values[c] for c in names if c not in (C.IMAGES, "flux_norm")}))
        finally:
            stream.close()
        table = fits.table_to_hdu(vstack(tables))
        table.name = "OBJECTS"
        fits.append(tmp, table.data, table.header)
    log.info("wrote %s: a cube of %d images of %dx%d", out, len(cat), h, w)
    return out


def inject_stamps(image: np.ndarray, wcs, stamps: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Add stamps to a survey image, each centred at its (RA, Dec), by plain addition.

    The recipe of docs/export.md for testing a detection pipeline with generated galaxies:
    `astropy.wcs.WCS.world_to_pixel` gives each position; the stamp is shifted by its
    sub-pixel offset (cubic spline, `scipy.ndimage.shift`) and added to the image, cut at
    its edges.  Stamps and image must share pixel scale, units and PSF (export with
    `export_fits_cutouts`, which writes survey units).

    Parameters
    ----------
    image : numpy.ndarray
        (Ny, Nx) survey image; not modified.
    wcs : astropy.wcs.WCS
        Its celestial WCS.
    stamps : numpy.ndarray
        (n, h, w) stamps in the image's units, centred at pixel ((h − 1) / 2, (w − 1) / 2).
    ra, dec : numpy.ndarray
        (n,) degrees.

    Returns
    -------
    numpy.ndarray
        A new (Ny, Nx) image with the stamps added.
    """
    from scipy import ndimage

    out = np.array(image, dtype=np.float64, copy=True)
    x, y = wcs.world_to_pixel_values(np.asarray(ra, np.float64), np.asarray(dec, np.float64))
    n, h, w = np.shape(stamps)
    for stamp, xc, yc in zip(np.asarray(stamps, np.float64), np.atleast_1d(x), np.atleast_1d(y), strict=False):
        x0, y0 = int(np.floor(xc)) - (w - 1) // 2, int(np.floor(yc)) - (h - 1) // 2
        # the stamp's centre (w-1)/2 lands on xc: shift by the rest
        shifted = ndimage.shift(stamp, (yc - np.floor(yc) - (h - 1) / 2 + (h - 1) // 2,
                                        xc - np.floor(xc) - (w - 1) / 2 + (w - 1) // 2), order=3, mode="constant")
        ys, xs = slice(max(y0, 0), min(y0 + h, out.shape[0])), slice(max(x0, 0), min(x0 + w, out.shape[1]))
        if ys.start < ys.stop and xs.start < xs.stop:
            out[ys, xs] += shifted[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    return out
