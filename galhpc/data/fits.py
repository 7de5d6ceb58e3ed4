"""FITS cutouts through fitsio: single images, multi-extension files, cubes, a catalogue.

`SourceConfig` fields used by kind "fits":
- `path`: one file, a directory (files matching options.pattern, default "*.fit*",
  so .fits, .fits.gz and .fits.fz) or a glob; files are read in sorted order.
- `hdu`: the image HDU (number or EXTNAME) of every file; None reads every image HDU
  with data, so a multi-extension file gives one object per image extension.
- `catalog`: a FITS binary table (first table HDU, or options.catalog_hdu) whose
  `id_column` holds object ids and whose other scalar columns become label columns,
  joined to the images by id.

Object ids (options.id_from): "header" reads integer keyword options.id_keyword
(default OBJID) from the image HDU, else the primary header; "filename" takes the last
integer in the file name (cutout_00123.fits -> 123); "sequence" numbers objects in read
order; "auto" (default) tries header, then filename, then sequence.  A 3-D HDU is a
stack of cutouts (options.cube = "objects", default; plane k gets id + k) or one
multi-band image (options.cube = "bands", (C, H, W)).

Pixel scale: every object gets the label `wcs_pixel_scale` (arcsec per pixel, NaN when
unknown), read from its image HDU's header (else the primary header): the celestial WCS
(CD matrix, or CDELT with PC) through astropy's `proj_plane_pixel_scales`, else a
PIXSCALE keyword in arcsec.  galhpc-prep rescales it by the recipe's resize, and
`galhpc.data.store.store_pixel_scale` hands it to the trainer, which records it in the
checkpoint for galhpc-generate.
"""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from galhpc.config import ConfigError, PrepConfig, SourceConfig
from galhpc.data.sources import PIXEL_SCALE_LABEL, Block, DataError, Reject
from galhpc.extras import require

log = logging.getLogger("galhpc.data.fits")

OPTIONS = {"pattern", "id_from", "id_keyword", "cube", "catalog_hdu"}
ANISOTROPY_TOLERANCE = 0.01  # pixels whose two axes differ more than this are reported


def header_pixel_scale(header, primary=None, where: str = "") -> float:
    """Arcsec per pixel from a FITS header (an astropy Header, or fitsio's), else from the
    primary header; NaN when neither says.

    Parameters
    ----------
    header, primary : astropy.io.fits.Header or fitsio.FITSHDR or None
        The image HDU's header and the file's primary header.
    where : str
        Names the HDU in the warning for non-square pixels.

    Returns
    -------
    float
        The celestial WCS's pixel scale (CD matrix, or CDELT/PC: mean of the two axes of
        `astropy.wcs.utils.proj_plane_pixel_scales`, degrees converted to arcsec), else
        the PIXSCALE keyword (arcsec), else NaN.
    """
    for h in (header, primary):
        if h is None:
            continue
        h = _astropy_header(h)
        scale = _wcs_scale(h, where)
        if np.isfinite(scale):
            return scale
        for key in ("PIXSCALE", "PIXSCAL1", "SECPIX"):
            if key in h:
                try:
                    value = float(h[key])
                except (TypeError, ValueError):
                    continue
                if value > 0:
                    return value
    return float("nan")


def _astropy_header(header):
    from astropy.io import fits as afits

    if isinstance(header, afits.Header):
        return header
    cards = [r["card_string"] for r in header.records() if r.get("card_string")]
    return afits.Header.fromstring("".join(c[:80].ljust(80) for c in cards))


def _wcs_scale(header, where: str) -> float:
    import warnings

    from astropy import units as u
    from astropy.wcs import WCS, FITSFixedWarning
    from astropy.wcs.utils import proj_plane_pixel_scales

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except Exception:  # a malformed WCS is no pixel scale (PIXSCALE may still give one)
            return float("nan")
    if wcs.naxis != 2:
        return float("nan")
    units = [u.Unit(cu) if str(cu) else u.deg for cu in wcs.wcs.cunit]
    scales = np.array([(s * unit).to_value(u.arcsec) for s, unit in zip(proj_plane_pixel_scales(wcs), units)])
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        return float("nan")
    if abs(scales[0] - scales[1]) > ANISOTROPY_TOLERANCE * scales.mean():
        log.warning("%s: non-square pixels (%.4g\" x %.4g\"); recording their mean", where, *scales)
    return float(scales.mean())


def list_files(path: str, pattern: str = "*.fit*") -> list[Path]:
    """Files of a source path: a file, a directory's matching files, or a glob."""
    p = Path(path)
    if p.is_dir():
        files = sorted(q for q in p.glob(pattern) if q.is_file())
    elif p.is_file():
        files = [p]
    else:
        files = sorted(Path(q) for q in glob.glob(path))
    if not files:
        raise DataError(f"no FITS files at {path!r} (pattern {pattern!r})")
    return files


def read_catalog(path: str, id_column: str, hdu: int | str | None = None) -> tuple[dict[int, int], dict[str, np.ndarray]]:
    """(id -> row, label columns) of a FITS binary table; refuses missing or duplicate ids."""
    fitsio = require("fitsio", "fits", "FITS sources (galhpc-prep)")

    try:
        with fitsio.FITS(path) as f:
            if hdu is None:
                tables = [h for h in f if h.get_exttype() in ("BINARY_TBL", "ASCII_TBL")]
                if not tables:
                    raise DataError(f"catalog {path}: no table HDU")
                table = tables[0].read()
            else:
                table = f[hdu].read()
    except OSError as err:
        raise DataError(f"catalog {path}: unreadable FITS table: {err}") from err
    names = table.dtype.names or ()
    match = [n for n in names if n.lower() == id_column.lower()]
    if not match:
        raise DataError(f"catalog {path}: no id column {id_column!r}; columns: {list(names)}")
    ids = np.asarray(table[match[0]]).astype(np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"catalog {path}: duplicate ids in {id_column!r}, e.g. {unique[counts > 1][:5].tolist()}")
    labels = {}
    for name in names:
        column = np.asarray(table[name])
        if name == match[0]:
            continue
        if column.ndim != 1:
            log.warning("catalog %s: column %s is a vector column; not stored", path, name)
            continue
        labels[name.lower()] = column.astype(column.dtype.newbyteorder("="))
    return {int(i): row for row, i in enumerate(ids)}, labels


def _id_from_name(path: Path) -> int | None:
    digits = re.findall(r"\d+", path.name.split(".")[0])
    return int(digits[-1]) if digits else None


def _base_id(id_from: str, keyword: str, header, primary, path: Path, single: bool, where: str) -> int | None:
    """The id of an HDU's first object by the id_from rule; None means "number in sequence"."""
    if id_from in ("auto", "header"):
        oid = _header_id(header, primary, keyword)
        if oid is not None:
            return oid
        if id_from == "header":
            raise DataError(f"{path}: {where}: no integer keyword {keyword} for the object id")
    if id_from == "filename" or (id_from == "auto" and single):
        oid = _id_from_name(path)
        if oid is None and id_from == "filename":
            raise DataError(f"{path}: no integer in the file name for an object id")
        return oid
    return None


def _header_id(header, primary, keyword: str) -> int | None:
    for h in (header, primary):
        if h is not None and keyword in h:
            try:
                return int(h[keyword])
            except (TypeError, ValueError):
                return None
    return None


class _Objects:
    """Collects objects into uniform-shape blocks of at most `rows` objects."""

    def __init__(self, rows: int, labels: dict[str, np.ndarray] | None, index: dict[int, int] | None):
        self.rows, self.labels, self.index = rows, labels, index
        self.images: list[np.ndarray] = []
        self.ids: list[int] = []
        self.files: list[str] = []
        self.scales: list[float] = []
        self.rejects: list[Reject] = []

    def add(self, image: np.ndarray, oid: int, file: str, scale: float) -> Block | None:
        """Add one object (`scale`: arcsec per pixel or NaN); returns the finished block
        when the shape changes or it is full."""
        done = None
        if self.images and (image.shape != self.images[0].shape or len(self.images) >= self.rows):
            done = self.flush()
        self.images.append(image)
        self.ids.append(oid)
        self.files.append(file)
        self.scales.append(scale)
        return done

    def flush(self) -> Block | None:
        if not self.images and not self.rejects:
            return None
        ids = np.array(self.ids, dtype=np.int64)
        labels = {}
        if self.labels is not None and len(ids):
            rows = np.array([self.index[i] for i in ids])
            labels = {k: v[rows] for k, v in self.labels.items()}
        if len(ids):
            labels[PIXEL_SCALE_LABEL] = np.array(self.scales, dtype=np.float32)
        images = np.stack(self.images).astype(np.float32) if self.images else np.zeros((0, 1, 1), np.float32)
        block = Block(images, ids, labels, files=self.files, rejects=self.rejects)
        self.images, self.ids, self.files, self.scales, self.rejects = [], [], [], [], []
        return block


def _image_hdus(f, hdu, path: Path):
    if hdu is not None:
        try:
            return [f[hdu]]
        except (OSError, KeyError, IndexError) as err:
            raise DataError(f"{path}: no HDU {hdu!r} ({len(f)} HDUs in file)") from err
    hdus = [h for h in f if h.get_exttype() == "IMAGE_HDU" and h.has_data()]
    if not hdus:
        raise DataError(f"{path}: no image HDU with data")
    return hdus


def _planes(data: np.ndarray, cube: str, where: str) -> list[np.ndarray]:
    """The objects of one HDU's data: 2-D -> 1; 3-D -> planes (objects) or one (bands)."""
    if data.ndim == 2:
        return [data]
    if data.ndim == 3:
        return list(data) if cube == "objects" else [data]
    raise DataError(f"{where}: image of shape {data.shape}; need 2-D, or 3-D (cube)")


def undefined_to_nan(data: np.ndarray, header: Any) -> np.ndarray:
    """FITS-undefined pixels as NaN: an integer image's BLANK value (after BSCALE/BZERO).

    Float images mark undefined pixels with NaN already.  Prep then rejects (or, with
    ``on_error: raise``, refuses) every object with a NaN pixel, naming it.

    Parameters
    ----------
    data : ndarray
        The image as read by fitsio (BSCALE/BZERO applied; integers when they stay integral).
    header : mapping
        The HDU's header (BITPIX, BLANK, BSCALE, BZERO).

    Returns
    -------
    ndarray
        float32, NaN where the pixel is undefined.
    """
    out = data.astype(np.float32)
    if "BLANK" not in header or int(header.get("BITPIX", -32)) < 0:
        return out
    scaled = int(header["BLANK"]) * float(header.get("BSCALE", 1.0)) + float(header.get("BZERO", 0.0))
    if data.dtype.kind == "f":  # fitsio applies BSCALE/BZERO (in the data's precision), so does BLANK's value
        undefined = data == np.asarray(scaled, dtype=data.dtype)
    else:
        undefined = data.astype(np.float64) == scaled
    out[undefined] = np.nan
    return out


def _verify_checksums(hdu: Any, header: Any, where: str) -> None:
    """Refuse an HDU whose CHECKSUM or DATASUM (when present) does not match: a corrupt file."""
    if "CHECKSUM" not in header and "DATASUM" not in header:
        return
    # fitsio's public verify_checksum() also fails on a card that is absent; its C call tells
    # each sum apart: 1 matches, 0 absent, -1 mismatch (cfitsio fits_verify_chksum)
    result = hdu._FITS.verify_checksum(hdu._ext + 1)
    bad = [card for key, card in (("dataok", "DATASUM"), ("hduok", "CHECKSUM")) if result[key] == -1]
    if bad:
        raise DataError(f"{where}: {' and '.join(bad)} checksum mismatch: the file is corrupt")


def read_source(source: SourceConfig, prep: PrepConfig) -> Iterator[Block]:
    """Registered as kind "fits" (see the module docstring)."""
    fitsio = require("fitsio", "fits", "FITS sources (galhpc-prep)")

    opts = dict(source.options)
    unknown = sorted(set(opts) - OPTIONS)
    if unknown:
        raise ConfigError(f"source fits {source.path}: unknown option(s) {unknown}; allowed: {sorted(OPTIONS)}")
    if source.path is None:
        raise ConfigError("source fits: `path` (file, directory or glob) is required")
    id_from, keyword = opts.get("id_from", "auto"), opts.get("id_keyword", "OBJID")
    cube = opts.get("cube", "objects")
    if id_from not in ("auto", "header", "filename", "sequence") or cube not in ("objects", "bands"):
        raise ConfigError(f"source fits {source.path}: id_from must be auto|header|filename|sequence, cube objects|bands")
    index, labels = (None, None)
    if source.catalog:
        index, labels = read_catalog(source.catalog, source.id_column, opts.get("catalog_hdu"))
        log.info("catalog %s: %d objects, label columns %s", source.catalog, len(index), sorted(labels))
    objects = _Objects(prep.chunk_rows, labels, index)
    sequence = 0

    def fail(obj: str, file: str, reason: str) -> None:
        if prep.on_error == "raise":
            raise DataError(f"{file}: {obj}: {reason}")
        objects.rejects.append(Reject(obj, file, reason))

    for path in list_files(source.path, opts.get("pattern", "*.fit*")):
        where = "file"
        try:
            with fitsio.FITS(str(path)) as f:
                primary = f[0].read_header()
                hdus = _image_hdus(f, source.hdu, path)
                single = len(hdus) == 1 and len(hdus[0].get_dims()) == 2
                for hdu in hdus:
                    where = f"HDU {hdu.get_extnum()}" + (f" ({hdu.get_extname()})" if hdu.get_extname() else "")
                    header = hdu.read_header()
                    _verify_checksums(hdu, header, f"{path}: {where}")
                    data = hdu.read()
                    if data is None:
                        raise DataError(f"{path}: {where}: no image data")
                    data = undefined_to_nan(np.asarray(data), header)
                    base = _base_id(id_from, keyword, header, primary, path, single, where)
                    scale = header_pixel_scale(header, primary, f"{path}: {where}")
                    for k, plane in enumerate(_planes(np.asarray(data), cube, f"{path}: {where}")):
                        oid = sequence if base is None else base + k
                        sequence += 1
                        if index is not None and oid not in index:
                            fail(f"object_id {oid}", f"{path} {where}", f"id not in catalog {source.catalog}")
                            continue
                        if block := objects.add(plane.astype(np.float32), oid, f"{path} {where}", scale):
                            yield block
        except DataError as err:
            if prep.on_error == "raise":
                raise
            objects.rejects.append(Reject(where, str(path), str(err)))
        except (OSError, ValueError) as err:
            reason = f"unreadable FITS (corrupt or truncated?): {err}".replace("\n", " ")
            fail(where, str(path), reason)
    if block := objects.flush():
        yield block
