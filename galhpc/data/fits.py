"""FITS cutouts through astropy: single images, multi-extension files, cubes, a catalogue.

`SourceConfig` fields used by kind "fits":
- `path`: one file, a directory (files matching options.pattern, default "*.fit*",
  so .fits, .fits.gz and .fits.fz) or a glob; files are read in sorted order.
- `hdu`: the science HDU.  None (default) finds it by convention: every extension named
  SCI is one object (a multi-object file holds several, told apart by EXTVER); a file
  without SCI gives one object per image HDU with data that is not a companion map (below).
  A name takes every extension of that EXTNAME, a number that HDU.
- Companion maps of each science HDU (same EXTVER, or the only one in a single-object
  file): ERR/SIGMA/RMS/ERROR/NOISE (σ), VAR/VARIANCE (σ²), WHT/WGT/IVAR/WEIGHT/INVVAR
  (1/σ²) and DQ/MASK/MSK/FLAGS/BPM/BADPIX (non-zero = bad pixel, or only the bits of
  options.mask_bad_bits, e.g. to ignore HSC's DETECTED plane); options.sigma_hdu,
  variance_hdu, ivar_hdu, mask_hdu name another HDU (number or EXTNAME) or "none".  A weight <= 0, a
  non-finite σ or a BLANK pixel is a bad pixel.  A map may also ship as its own file beside
  the stamp, named `<stamp><. _ -><token>.fits[.fz|.gz]` (tokens err/rms/sigma/noise/unc,
  var, wht/weight/wgt/ivar, dq/mask/flag(s)/bpm: `g_01.wht.fits` is g_01.fits's inverse
  variance); a map in the stamp's own file wins; a map file without its stamp is a reject.  Every object
  gets `Block.extras` "sigma" (NaN where no map says) and "mask" (uint8); the prep fills and stores them.
  A companion map is never read as a galaxy.
- `catalog`: any table astropy reads (FITS: first table HDU or options.catalog_hdu;
  CSV, ECSV, Parquet, VOTable by suffix) whose `id_column` holds object ids; its other
  scalar columns (only `passthrough` ones, with ra, dec and the prep's radius and sky
  columns, when given) become label columns, joined by id; nulls stay nulls
  (`read_catalog`).

Object ids (options.id_from): "header" reads integer keyword options.id_keyword
(default OBJID) from the image HDU, else the primary header; "filename" takes the last
integer in the file name (cutout_00123.fits -> 123); "sequence" numbers objects in read
order; "auto" (default) tries header, then filename, then sequence.  Two objects with
one id (in the catalogue, or from headers or file names) are refused, naming both.  A 3-D
HDU is a stack of cutouts (options.cube = "objects"; plane k gets id + k) or one
multi-band image (options.cube = "bands", (C, H, W)); "auto" (default) reads a 3-D HDU whose
header names its bands (BANDS or BAND0, as Legacy Surveys cutouts; CTYPE3 BAND or FILTER)
as one multi-band object, any other as a stack of objects.

Sky position: labels `ra`, `dec` (float64 degrees): the catalogue's, else the image
centre through its celestial WCS (astropy), else NaN.

Pixel scale: every object gets the label `wcs_pixel_scale` (arcsec per pixel, NaN when
unknown), read from its image HDU's header (else the primary header): the celestial WCS
(CD matrix, or CDELT with PC) through astropy's `proj_plane_pixel_scales`, else a
PIXSCALE keyword in arcsec.  galhpc-prep rescales it by the recipe's resize, and
`galhpc.data.store.store_pixel_scale` hands it to the trainer, which records it in the
checkpoint for galhpc-generate.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from galhpc.config import ConfigError, PrepConfig, SourceConfig, check_options
from galhpc.data.pixels import MASK_BAD, MASK_SATURATED
from galhpc.data.sources import PIXEL_SCALE_LABEL, PREP_LABELS, Block, DataError, Reject
from galhpc.extras import require

log = logging.getLogger("galhpc.data.fits")

OPTIONS: dict[str, Any] = {  # option -> the type it takes (checked by galhpc.config.check_options)
    "pattern": str, "id_from": str, "id_keyword": str, "cube": str, "catalog_hdu": int | str | None,
    **{f"{kind}_hdu": int | str | None for kind in ("sigma", "variance", "ivar", "mask")},
    "mask_bad_bits": int | None, "saturated_bits": int | None,
}
ANISOTROPY_TOLERANCE = 0.01  # pixels whose two axes differ more than this are reported


def header_pixel_scale(header, primary=None, where: str = "") -> float:
    """Arcsec per pixel from a FITS header, else from the primary header; NaN when neither says.

    Parameters
    ----------
    header, primary : astropy.io.fits.Header or fitsio.FITSHDR or None
        The image HDU's header and the file's primary header (astropy's, or fitsio's).
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

    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except Exception:  # a malformed WCS is no pixel scale (PIXSCALE may still give one)
            return float("nan")
    return _celestial_scale(wcs, where)


def _celestial_scale(wcs, where: str) -> float:
    """Arcsec per pixel of a celestial WCS (mean of its two axes); NaN when it has none."""
    from astropy import units as u
    from astropy.wcs.utils import proj_plane_pixel_scales

    if wcs.naxis != 2:
        return float("nan")
    units = [u.Unit(cu) if str(cu) else u.deg for cu in wcs.wcs.cunit]
    scales = np.array([(s * unit).to_value(u.arcsec)
                       for s, unit in zip(proj_plane_pixel_scales(wcs), units, strict=False)])
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        return float("nan")
    if abs(scales[0] - scales[1]) > ANISOTROPY_TOLERANCE * scales.mean():
        log.warning("%s: non-square pixels (%.4g\" x %.4g\"); recording their mean", where, *scales)
    return float(scales.mean())


def list_files(path: str, pattern: str = "*.fit*") -> list[Path]:
    """Files of a source path: a file, a directory's matching files, or a glob.

    Parameters
    ----------
    path : str
        One file, a directory, or a glob pattern.
    pattern : str
        Glob of the files taken from a directory (the default takes .fits, .fit, .fits.gz,
        .fits.fz).

    Returns
    -------
    list of Path
        The files, sorted by name.

    Raises
    ------
    DataError
        Nothing matches.
    """
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


# conventional names of catalogue positions (VizieR, SExtractor, Gaia, SDSS), tried in order
RA_NAMES = ("ra", "raj2000", "ra_icrs", "alpha_j2000", "ra_deg", "radeg")
DEC_NAMES = ("dec", "dej2000", "decj2000", "de_icrs", "dec_icrs", "delta_j2000", "dec_deg", "dedeg")


def _position_column(names: dict[str, str], chosen: str | None, conventional: tuple[str, ...], path: str) -> str | None:
    """The lower-cased catalogue column holding ra (or dec).

    `chosen`, else the first conventional name present, else None.
    """
    if chosen is not None:
        if chosen.lower() not in names:
            raise DataError(f"catalog {path}: no column {chosen!r}; columns: {list(names.values())}")
        return chosen.lower()
    return next((c for c in conventional if c in names), None)


def read_catalog(path: str, id_column: str, hdu: int | str | None = None, passthrough: list[str] | None = None,
                 needed: tuple[str, ...] = (), ra_column: str | None = None,
                 dec_column: str | None = None) -> tuple[dict[int, int], dict[str, np.ndarray], dict[str, str]]:
    """(id -> row, label columns) of a catalogue in any format astropy's Table reads.

    Parameters
    ----------
    path : str
        FITS (first table HDU, or `hdu`), CSV, ECSV, Parquet or VOTable file; the format
        comes from the suffix (`astropy.table.Table.read`).
    id_column : str
        Integer id column (case-insensitive); no nulls, no duplicates.
    hdu : int or str or None
        FITS table HDU.
    passthrough : list of str or None
        Columns to keep as labels (beside ra, dec and `needed`); None keeps every scalar one.
        A column named like a label the prep writes (`galhpc.data.sources.PREP_LABELS`:
        snr, width, sky, source_index, ...) is kept as `catalog_<name>`.
    needed : tuple of str
        Columns the prep uses (the radius column, a sky column), kept when present.
    ra_column, dec_column : str or None
        The position columns; None finds them by convention (ra/dec, RAJ2000/DEJ2000,
        RA_ICRS/DE_ICRS, ALPHA_J2000/DELTA_J2000, ...).  They become labels `ra`, `dec`.

    Returns
    -------
    (dict, dict, dict)
        Object id -> catalogue row; lower-cased column name -> (n,) array; and label ->
        unit (astropy string) of the columns whose table records one (`ra`, `dec`: deg).  Nulls
        (FITS TNULL, masked or empty cells, NaN) are NaN (integer and boolean columns with
        nulls become float64) or b"" for strings: never a value.  `ra`/`dec` are float64
        degrees (numbers in degrees or any recorded angle unit; text sexagesimal).

    Raises
    ------
    DataError
        Unreadable file, missing/null/non-integer/duplicate ids, missing passthrough or
        position columns, a position that is not an angle.
    """
    import warnings

    from astropy.table import Table
    from astropy.units import UnitsError

    kwargs: dict[str, Any] = {}
    if hdu is not None:
        kwargs["hdu"] = hdu
    if str(path).lower().endswith((".vot", ".xml")):
        kwargs["format"] = "votable"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "hdu= was not specified": the first table is the documented choice
            table = _read_parquet(path) if str(path).lower().endswith(".parquet") else Table.read(path, **kwargs)
    except Exception as err:  # astropy raises many kinds (OSError, ValueError, IORegistryError, ...)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"catalog {path}: not readable as a table by astropy ({type(err).__name__}: {reason}); "
                        "formats: FITS, CSV, ECSV, Parquet, VOTable") from err
    names = {n.lower(): n for n in table.colnames}
    if id_column.lower() not in names:
        raise DataError(f"catalog {path}: no id column {id_column!r}; columns: {table.colnames}")
    id_col = table[names[id_column.lower()]]
    null = np.asarray(getattr(id_col, "mask", np.zeros(len(id_col), bool)), dtype=bool)
    if null.any():
        raise DataError(f"catalog {path}: null ids in {id_column!r} at rows {np.flatnonzero(null)[:5].tolist()}")
    values = np.asarray(id_col)
    if values.dtype.kind not in "iu" and (
            values.dtype.kind != "f" or not np.all(np.isfinite(values) & (values == np.round(values)))):
        raise DataError(f"catalog {path}: id column {id_column!r} holds non-integer values ({values.dtype})")
    ids = values.astype(np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"catalog {path}: duplicate ids in {id_column!r}, e.g. {unique[counts > 1][:5].tolist()}")
    positions = {_position_column(names, ra_column, RA_NAMES, path): "ra",
                 _position_column(names, dec_column, DEC_NAMES, path): "dec"}
    positions.pop(None, None)
    wanted = None
    if passthrough is not None:
        missing = [c for c in passthrough if c.lower() not in names]
        if missing:
            raise DataError(f"catalog {path}: no passthrough column(s) {missing}; columns: {table.colnames}")
        wanted = {c.lower() for c in passthrough} | set(positions) | {c.lower() for c in needed}
    labels, units = {}, {}
    for original, name in names.items():
        if original == id_column.lower() or (wanted is not None and original not in wanted):
            continue
        key = positions.get(original, "" if original in ("ra", "dec") else original)
        if not key:  # a column named ra/dec that is not the chosen position must not overwrite it
            log.warning("catalog %s: column %s is not the position column; not stored", path, name)
            continue
        if key in PREP_LABELS and key not in {c.lower() for c in needed if c}:
            key = f"catalog_{key}"  # the prep writes a label of this name (snr, width, sky, ...)
            log.warning("catalog %s: column %s is stored as label %s (galhpc-prep writes its own %s)",
                        path, name, key, original)
        column = table[name]
        if column.ndim != 1:
            log.warning("catalog %s: column %s is a vector column; not stored", path, name)
            continue
        if key in ("ra", "dec") and column.unit is not None:
            try:
                column = column.to("deg")
            except UnitsError:
                raise DataError(f"catalog {path}: column {name} has unit {column.unit}, not an angle") from None
        stored = _null_safe(column)
        if stored is None:
            log.warning("catalog %s: column %s of dtype %s is not numeric or text; not stored", path, name,
                        column.dtype)
            continue
        labels[key] = _degrees(stored, key, f"catalog {path}: column {name}") if key in ("ra", "dec") else stored
        if key in ("ra", "dec"):
            units[key] = "deg"
        elif getattr(column, "unit", None) is not None:
            units[key] = column.unit.to_string()
    return {int(i): row for row, i in enumerate(ids)}, labels, units


def _degrees(values: np.ndarray, key: str, where: str) -> np.ndarray:
    """An ra/dec column as float64 degrees.

    Numbers are degrees; text is sexagesimal (ra in hours "12:36:49.4" / "12h36m49.4s", dec
    in degrees) or decimal degrees; empty is NaN.
    """
    if values.dtype.kind in "iufb":
        return values.astype(np.float64)
    from astropy import units as u
    from astropy.coordinates import Angle

    text = np.char.decode(values, "utf-8") if values.dtype.kind == "S" else values.astype(str)
    out = np.full(len(text), np.nan)
    for i, value in enumerate(text):
        value = value.strip()
        if not value:
            continue
        try:
            out[i] = float(value)
            continue
        except ValueError:
            pass
        try:
            out[i] = Angle(value, unit=u.hourangle if key == "ra" else u.deg).deg
        except (ValueError, u.UnitsError) as err:
            raise DataError(f"{where}: row {i}: {value!r} is not an angle ({err})") from None
    return out


def _read_parquet(path: str):
    """A Parquet file as an astropy Table through pyarrow; null cells become masked entries.

    astropy's own Parquet reader needs pandas, which is not a requirement.
    """
    from astropy.table import MaskedColumn, Table

    pq = require("pyarrow.parquet", "export", "Parquet catalogues")
    arrow = pq.read_table(path)
    table = Table()
    for name in arrow.column_names:
        column = arrow.column(name)
        nulls = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        values = column.fill_null(0 if column.type != "string" else "") if nulls.any() else column
        table[name] = MaskedColumn(np.asarray(values.to_numpy(zero_copy_only=False)), mask=nulls)
    return table


def _null_safe(column) -> np.ndarray | None:
    """A table column as a label array whose nulls are NaN (numbers) or b"" (text)."""
    data = np.asarray(column)
    mask = np.asarray(getattr(column, "mask", np.zeros(len(column), bool)), dtype=bool)
    mask = np.broadcast_to(mask, data.shape)
    kind = data.dtype.kind
    if kind in "US":
        return np.where(mask, "" if kind == "U" else b"", data)
    if kind not in "iufb":
        return None
    if mask.any():  # an integer null must not become a value (TNULL -999 is not a class)
        out = data.astype(np.float64)
        out[mask] = np.nan
        return out
    return data.astype(data.dtype.newbyteorder("="))


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


class DuplicateIdError(DataError):
    """Two objects of a source carry one id: refused whatever on_error says.

    A store with one id for two galaxies would silently answer queries with either.
    """


class ObjectBlocks:
    """Collects objects (pixels, σ, mask, id) into uniform-shape blocks of at most `rows`."""

    def __init__(self, rows: int, labels: dict[str, np.ndarray] | None, index: dict[int, int] | None,
                 units: dict[str, str] | None = None):
        self.rows, self.labels, self.index = rows, labels, index
        self.units = {"ra": "deg", "dec": "deg", PIXEL_SCALE_LABEL: "arcsec", **(units or {})}
        self.images: list[np.ndarray] = []
        self.sigmas: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.ids: list[int] = []
        self.files: list[str] = []
        self.scales: list[float] = []
        self.positions: list[tuple[float, float]] = []
        self.rejects: list[Reject] = []
        self.seen: dict[int, str] = {}

    def check_unique(self, oid: int, where: str) -> None:
        """Refuse a second object with an id already read (overlapping tiles, copied headers).

        Parameters
        ----------
        oid : int
            The object's id.
        where : str
            Where it was read (file and HDU), remembered for the message.

        Raises
        ------
        DuplicateIdError
            `oid` was read before; the message names both places.
        """
        if oid in self.seen:
            raise DuplicateIdError(f"duplicate object id {oid}: {self.seen[oid]} and {where} "
                                   "(give each object its own OBJID, or use options.id_from: sequence)")
        self.seen[oid] = where

    def add(self, image: np.ndarray, oid: int, file: str, scale: float, sigma: np.ndarray | None = None,
            mask: np.ndarray | None = None, position: tuple[float, float] = (np.nan, np.nan)) -> Block | None:
        """Add one object; the block collected so far is finished when the shape changes or it is full.

        Parameters
        ----------
        image : numpy.ndarray
            (H, W) or (C, H, W) float, raw pixels in the file's units.
        oid : int
            The object's id.
        file : str
            Where it was read, for errors and rejects.
        scale : float
            Arcsec per pixel, or NaN when unknown.
        sigma : numpy.ndarray or None
            Per-pixel σ, same shape as `image`, NaN where unknown (None: unknown everywhere).
        mask : numpy.ndarray or None
            Same shape, uint8: 0 good, `MASK_BAD` or `MASK_SATURATED` (None: all good).
        position : (float, float)
            (ra, dec) of the centre in degrees (NaN when the image has no celestial WCS).

        Returns
        -------
        Block or None
            The finished block of the objects before this one, or None.
        """
        done = None
        if self.images and (image.shape != self.images[0].shape or len(self.images) >= self.rows):
            done = self.flush()
        self.images.append(image)
        self.sigmas.append(np.full(image.shape, np.nan, np.float32) if sigma is None else sigma.astype(np.float32))
        self.masks.append(np.zeros(image.shape, np.uint8) if mask is None else np.asarray(mask, np.uint8))
        self.ids.append(oid)
        self.files.append(file)
        self.scales.append(scale)
        self.positions.append(position)
        return done

    def flush(self) -> Block | None:
        """The block of the objects and rejects collected so far, and start a new one.

        Returns
        -------
        Block or None
            Images (n, [C,] H, W) float32, ids int64, labels (`wcs_pixel_scale` arcsec, ``ra``,
            ``dec`` degrees: the catalogue's, else the WCS centre's; the catalogue's columns),
            ``sigma`` float32 and ``mask`` uint8 extras, files and rejects; None when nothing
            was collected.
        """
        if not self.images and not self.rejects:
            return None
        ids = np.array(self.ids, dtype=np.int64)
        labels: dict[str, np.ndarray] = {}
        if len(ids):
            labels[PIXEL_SCALE_LABEL] = np.array(self.scales, dtype=np.float32)
            radec = np.array(self.positions, dtype=np.float64).reshape(-1, 2)
            labels["ra"], labels["dec"] = radec[:, 0], radec[:, 1]
        if self.labels is not None and len(ids):
            rows = np.array([self.index[i] for i in ids])
            for key, values in self.labels.items():
                column = values[rows]
                if key in ("ra", "dec"):  # the catalogue's position wins; the WCS fills its nulls
                    column = np.where(np.isfinite(column), column, labels[key])
                labels[key] = column
        extras = {}
        if self.images:
            images = np.stack(self.images).astype(np.float32)
            extras = {"sigma": np.stack(self.sigmas), "mask": np.stack(self.masks)}
        else:
            images = np.zeros((0, 1, 1), np.float32)
        block = Block(images, ids, labels, extras=extras, files=self.files, rejects=self.rejects,
                      units={k: u for k, u in self.units.items() if k in labels})
        self.images, self.sigmas, self.masks, self.ids, self.files, self.scales, self.positions, self.rejects = (
            [], [], [], [], [], [], [], [])
        return block


SCIENCE_NAMES = ("SCI",)
SIGMA_NAMES = ("ERR", "SIGMA", "RMS", "ERROR", "NOISE")
VARIANCE_NAMES = ("VAR", "VARIANCE")
IVAR_NAMES = ("WHT", "WGT", "IVAR", "WEIGHT", "INVVAR")  # HST/JWST WHT, DES WGT, Legacy Surveys INVVAR
MASK_NAMES = ("DQ", "MASK", "MSK", "FLAGS", "BPM", "BADPIX")  # HST/JWST DQ, HSC MASK, DES MSK
COMPANION_NAMES = SIGMA_NAMES + VARIANCE_NAMES + IVAR_NAMES + MASK_NAMES
# option -> (EXTNAMEs found by convention, how the data become σ or mask)
COMPANIONS = {"sigma_hdu": (SIGMA_NAMES, "sigma"), "variance_hdu": (VARIANCE_NAMES, "variance"),
              "ivar_hdu": (IVAR_NAMES, "ivar"), "mask_hdu": (MASK_NAMES, "mask")}


def _name(h) -> str:
    return (h.name or "").strip().upper()


def _extver(h) -> int:
    return int(h.ver or 1)


def _has_image(h) -> bool:
    """An image HDU (plain or tile-compressed) with pixels."""
    return bool(h.is_image) and h.header.get("NAXIS", 0) > 0 and h.data is not None


def _where(h, f) -> str:
    index = f.index_of(h)
    named = index > 0 and _name(h) not in ("", "PRIMARY", "COMPRESSED_IMAGE")
    return f"HDU {index}" + (f" ({h.name},{h.ver})" if named else "")


def _image_hdus(f, hdu, path: Path):
    """The science HDUs of a file.

    `hdu` (a number, or every extension of that EXTNAME), else every SCI extension, else
    every image HDU with data that is not a σ/weight/mask companion.
    """
    images = [h for h in f if _has_image(h)]
    if hdu is not None:
        if isinstance(hdu, str):
            named = [h for h in images if _name(h) == hdu.strip().upper()]
            if named:
                return named
        try:
            return [f[hdu]]
        except (OSError, KeyError, IndexError, ValueError) as err:
            raise DataError(f"{path}: no HDU {hdu!r} ({len(f)} HDUs in file)") from err
    science = [h for h in images if _name(h) in SCIENCE_NAMES]
    if science:
        return science
    # a 1-D image HDU (an SDSS frame's calibration vector) is never a galaxy
    science = [h for h in images if _name(h) not in COMPANION_NAMES and h.data.ndim >= 2]
    if not science:
        names = [h.name for h in images]
        raise DataError(f"{path}: no science image HDU (image HDUs with data: {names or 'none'}; "
                        f"{'/'.join(COMPANION_NAMES)} are error, weight or mask maps)")
    return science


def _companions(f, science: list, sci, opts: dict[str, Any], path: Path) -> dict[str, Any]:
    """The σ / variance / inverse variance / mask map HDUs of one science HDU, by kind.

    An option's HDU (number or EXTNAME; "none" for no map), else the HDU of a conventional
    EXTNAME with the same EXTVER, else the only one of its kind in a single-object file.
    """
    found: dict[str, Any] = {}
    images = [h for h in f if _has_image(h) and h is not sci]
    for option, (names, kind) in COMPANIONS.items():
        chosen = opts.get(option)
        if chosen is not None:
            if str(chosen).lower() == "none":
                continue
            same = [h for h in images
                    if isinstance(chosen, str) and _name(h) == chosen.upper() and _extver(h) == _extver(sci)]
            if same:
                found[kind] = same[0]
                continue
            try:
                found[kind] = f[chosen]
            except (OSError, KeyError, IndexError, ValueError) as err:
                raise DataError(f"{path}: options.{option}: no HDU {chosen!r} ({len(f)} HDUs in file)") from err
            continue
        candidates = [h for h in images if _name(h) in names]
        same = [h for h in candidates if _extver(h) == _extver(sci)]
        if same:
            found[kind] = same[0]
        elif len(candidates) == 1 and len(science) == 1:
            found[kind] = candidates[0]
    return found


def _read_maps(companions: dict[str, tuple[Any, str]], shape: tuple[int, ...], where: str,
               bad_bits: int | None = None, saturated_bits: int | None = None,
               ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The (σ or None, mask or None) of a science HDU from its companion HDUs.

    `companions` is {kind: (HDU, where it is)}.  A weight <= 0, a non-finite σ, an undefined
    (BLANK) pixel of any map and a mask pixel with any of `bad_bits` set (None: any non-zero
    value) are bad pixels (`MASK_BAD`); mask pixels with any of `saturated_bits` set (e.g. 8
    in WFPC2's DQ, 256 in ACS/WFC3's) and no other bad bit are `MASK_SATURATED`.
    """
    sigma, mask, saturated = None, None, None
    for kind, (h, place) in companions.items():
        data = h.data  # astropy: BSCALE/BZERO applied, BLANK pixels NaN
        what = f"{where}: {kind} map {place}"
        if data is None or np.shape(data) != shape:
            raise DataError(f"{what}: shape {np.shape(data)} differs from the image's {shape}")
        data = np.asarray(data)
        if kind == "mask" and saturated_bits is not None:
            if data.dtype.kind not in "iu":
                raise DataError(f"{what}: options.saturated_bits needs an integer mask, not {data.dtype}")
            flags = data.astype(np.int64)
            saturated = ((flags & int(saturated_bits)) != 0) & ((flags & ~int(saturated_bits)) == 0)
        if kind == "mask" and bad_bits is not None:
            if data.dtype.kind not in "iu":
                raise DataError(f"{what}: options.mask_bad_bits needs an integer mask, not {data.dtype}")
            bad = (data.astype(np.int64) & int(bad_bits)) != 0
        elif kind == "mask":
            bad = data != 0
        else:
            values = data.astype(np.float64)
            if kind == "ivar":
                values = np.where(values > 0, 1.0 / np.sqrt(np.where(values > 0, values, 1.0)), np.nan)
            elif kind == "variance":
                values = np.where(values > 0, np.sqrt(np.where(values > 0, values, 1.0)), np.nan)
            else:
                values = np.where(values > 0, values, np.nan)
            bad = ~np.isfinite(values)
            sigma = values.astype(np.float32) if sigma is None else sigma
        mask = bad if mask is None else (mask | bad)
    if mask is None:
        return sigma, None
    flags = mask.astype(np.uint8) * MASK_BAD
    if saturated is not None:
        flags[mask & saturated] = MASK_SATURATED
    return sigma, flags


# a map shipped as its own file beside the stamp: <stamp name><sep><token>.fits
MAP_FILE_TOKENS = {"sigma": ("err", "error", "sigma", "rms", "noise", "unc"), "variance": ("var", "variance"),
                   "ivar": ("wht", "weight", "wgt", "ivar", "invvar"),
                   "mask": ("dq", "mask", "msk", "flag", "flags", "bpm", "badpix")}
_MAP_FILE = re.compile(r"^(?P<stem>.+)[._-](?P<token>" + "|".join(t for ts in MAP_FILE_TOKENS.values() for t in ts)
                       + r")$", re.IGNORECASE)


def _stem(path: Path) -> str:
    """A file name without its FITS suffixes (.fits, .fit, .fts, .fz, .gz)."""
    return re.sub(r"(\.(fits?|fts))?(\.(fz|gz))?$", "", path.name, flags=re.IGNORECASE)


def _pair_map_files(paths: list[Path]) -> tuple[list[Path], dict[Path, dict[str, Path]], list[tuple[Path, str]]]:
    """Split a source's files into stamps and the σ/weight/mask maps shipped beside them.

    E.g. `g_0001.fits` with `g_0001.wht.fits`, `g_0001_rms.fits`, `g_0001-mask.fits.fz`.

    Returns
    -------
    (list, dict, list)
        The stamp files; stamp -> {"sigma" | "variance" | "ivar" | "mask": map file}; and
        (file, reason) of map-named files with no stamp of their name beside them (never read
        as a galaxy).
    """
    stems = {_stem(p): p for p in paths}
    stamps, maps, orphans = [], {}, []
    for p in paths:
        match = _MAP_FILE.match(_stem(p))
        if match is None:
            stamps.append(p)
            continue
        kind = next(k for k, tokens in MAP_FILE_TOKENS.items() if match["token"].lower() in tokens)
        owner = stems.get(match["stem"])
        if owner is None or _MAP_FILE.match(_stem(owner)):
            orphans.append((p, f"named as a {kind} map ({match['token']}) but no stamp {match['stem']}.fits beside it"))
        else:
            maps.setdefault(owner, {})[kind] = p
    return stamps, maps, orphans


def _beside_hdu(f, path: Path, sci, n_science: int):
    """The HDU of a map file for one science HDU.

    The image HDU with its EXTNAME and EXTVER, else the only image HDU when the stamp file
    holds one object.
    """
    images = [h for h in f if _has_image(h)]
    same = [h for h in images if _name(h) == _name(sci) and _extver(h) == _extver(sci)]
    if same:
        return same[0]
    if len(images) == 1 and n_science == 1:
        return images[0]
    raise DataError(f"{path}: cannot tell which of its {len(images)} image HDUs is the map of "
                    f"{_name(sci) or 'PRIMARY'},{_extver(sci)}")


def _celestial_wcs(header):
    """The celestial WCS of an astropy Header, or None (absent or malformed)."""
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    if header is None or "CTYPE1" not in header:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except Exception:  # a malformed WCS gives no position
            return None
    return wcs if wcs.naxis == 2 and wcs.has_celestial else None


def _centre_radec(wcs, shape: tuple[int, ...]) -> tuple[float, float]:
    """(ra, dec) ICRS degrees of the image centre through a celestial WCS; NaN without one."""
    if wcs is None:
        return float("nan"), float("nan")
    try:
        icrs = wcs.pixel_to_world((shape[-1] - 1) / 2.0, (shape[-2] - 1) / 2.0).icrs
    except Exception:  # a WCS that cannot place its centre gives no position
        return float("nan"), float("nan")
    return float(icrs.ra.deg), float(icrs.dec.deg)


def _cube(hdu, option: str) -> str:
    """How a 3-D HDU is read: as one multi-band object ("bands") or a stack ("objects").

    `option` unless "auto"; then "bands" when its header names its bands (BANDS/BAND0
    keywords, CTYPE3 BAND or FILTER), else "objects".
    """
    if option != "auto":
        return option
    header = hdu.header
    named = "BANDS" in header or "BAND0" in header
    named = named or str(header.get("CTYPE3", "")).strip().upper() in ("BAND", "FILTER")
    return "bands" if named else "objects"


def _planes(data: np.ndarray, cube: str, where: str) -> list[np.ndarray]:
    """The objects of one HDU's data: 2-D -> 1; 3-D -> planes (objects) or one (bands)."""
    if data.ndim == 2:
        return [data]
    if data.ndim == 3:
        return list(data) if cube == "objects" else [data]
    raise DataError(f"{where}: image of shape {data.shape}; need 2-D, or 3-D (cube)")


def _verify_checksums(hdu: Any, where: str) -> None:
    """Refuse an HDU whose CHECKSUM or DATASUM (when present) does not match: a corrupt file.

    astropy's `verify_checksum` / `verify_datasum` give 1 (matches), 0 (mismatch), 2 (absent).
    """
    header = hdu.header
    if "CHECKSUM" not in header and "DATASUM" not in header:
        return
    bad = []
    if "DATASUM" in header and hdu.verify_datasum() == 0:
        bad.append("DATASUM")
    if "CHECKSUM" in header and hdu.verify_checksum() == 0:
        bad.append("CHECKSUM")
    if bad:
        raise DataError(f"{where}: {' and '.join(bad)} checksum mismatch: the file is corrupt")


def _open(path: Path):
    """An astropy HDUList with every HDU loaded; a truncated or garbage file raises OSError."""
    import warnings

    from astropy.io import fits as afits

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = afits.open(path, memmap=False, lazy_load_hdus=False, checksum=False)
        try:
            for h in f:
                _ = h.data  # read now: a short file fails here, not later
        except BaseException:
            f.close()
            raise
    troubles = [str(w.message) for w in caught if "truncated" in str(w.message) or "missing" in str(w.message)]
    if troubles:
        f.close()
        raise OSError(troubles[0])
    return f


def read_source(source: SourceConfig, prep: PrepConfig) -> Iterator[Block]:
    """FITS cutouts, one object per science HDU or cube plane: kind "fits".

    Parameters
    ----------
    source : SourceConfig
        `path` (file, folder or glob), `hdu`, `catalog`, `id_column`, `passthrough` and
        `options` (see the module docstring).
    prep : PrepConfig
        For `chunk_rows` (block size) and `on_error` (raise, or record a reject and go on).

    Yields
    ------
    Block
        Objects of one shape per block, in file order: float32 pixels as stored in the
        file, ids by `options.id_from`, `sigma`/`mask` extras from the companion maps.

    Raises
    ------
    ConfigError
        No path, or an unknown option.
    DataError
        No file matches, two objects share an id; or, with ``on_error: raise``, an
        unreadable file, HDU or id.
    """
    opts = check_options(OPTIONS, source.options, f"source fits {source.path}")
    if source.path is None:
        raise ConfigError("source fits: `path` (file, directory or glob) is required")
    id_from, keyword = opts.get("id_from", "auto"), opts.get("id_keyword", "OBJID")
    cube_option = opts.get("cube", "auto")
    if id_from not in ("auto", "header", "filename", "sequence") or cube_option not in ("auto", "objects", "bands"):
        raise ConfigError(f"source fits {source.path}: id_from must be auto|header|filename|sequence, "
                          "cube auto|objects|bands")
    index, labels, units = None, None, None
    if source.catalog:
        index, labels, units = read_catalog(source.catalog, source.id_column, opts.get("catalog_hdu"),
                                            source.passthrough, needed=(prep.r90_column, prep.sky))
        log.info("catalog %s: %d objects, label columns %s", source.catalog, len(index), sorted(labels))
    objects = ObjectBlocks(prep.chunk_rows, labels, index, units)
    sequence = 0

    def fail(obj: str, file: str, reason: str) -> None:
        if prep.on_error == "raise":
            raise DataError(f"{file}: {obj}: {reason}")
        objects.rejects.append(Reject(obj, file, reason))

    files, companion_files, orphans = _pair_map_files(list_files(source.path, opts.get("pattern", "*.fit*")))
    for path, reason in orphans:
        fail("file", str(path), reason)
    for path in files:
        where = "file"
        try:
            with contextlib.ExitStack() as stack:
                f = stack.enter_context(_open(path))
                beside = {kind: (stack.enter_context(_open(other)), other)
                          for kind, other in companion_files.get(path, {}).items()}
                primary = f[0].header
                hdus = _image_hdus(f, source.hdu, path)
                single = len(hdus) == 1 and (hdus[0].data.ndim == 2 or _cube(hdus[0], cube_option) == "bands")
                for hdu in hdus:
                    cube = _cube(hdu, cube_option)
                    where = _where(hdu, f)
                    header = hdu.header
                    _verify_checksums(hdu, f"{path}: {where}")
                    data = hdu.data  # astropy: BSCALE/BZERO applied, BLANK pixels NaN
                    if data is None:
                        raise DataError(f"{path}: {where}: no image data")
                    data = np.asarray(data, dtype=np.float32)
                    maps = {kind: (h, _where(h, f)) for kind, h in _companions(f, hdus, hdu, opts, path).items()}
                    for kind, (other, other_path) in beside.items():
                        if kind not in maps:  # a map inside the file wins over one beside it
                            maps[kind] = (_beside_hdu(other, other_path, hdu, len(hdus)), str(other_path))
                    sigma, mask = _read_maps(maps, data.shape, f"{path}: {where}", opts.get("mask_bad_bits"),
                                             opts.get("saturated_bits"))
                    base = _base_id(id_from, keyword, header, primary, path, single, where)
                    own_wcs = _celestial_wcs(header)  # parsed once: the scale and the centre's position
                    scale = _celestial_scale(own_wcs, f"{path}: {where}") if own_wcs is not None else float("nan")
                    if not np.isfinite(scale):
                        scale = header_pixel_scale(header, primary, f"{path}: {where}")
                    wcs = (own_wcs or _celestial_wcs(primary)) if data.ndim == 2 or cube == "bands" else None
                    position = _centre_radec(wcs, data.shape)
                    planes = _planes(np.asarray(data), cube, f"{path}: {where}")
                    sigmas = [None] * len(planes) if sigma is None else _planes(sigma, cube, where)
                    masks = [None] * len(planes) if mask is None else _planes(mask, cube, where)
                    for k, plane in enumerate(planes):
                        oid = sequence if base is None else base + k
                        sequence += 1
                        objects.check_unique(oid, f"{path} {where}")
                        if index is not None and oid not in index:
                            fail(f"object_id {oid}", f"{path} {where}", f"id not in catalog {source.catalog}")
                            continue
                        if block := objects.add(plane.astype(np.float32), oid, f"{path} {where}", scale,
                                                sigmas[k], masks[k], position):
                            yield block
        except DataError as err:
            if prep.on_error == "raise" or isinstance(err, DuplicateIdError):
                raise
            objects.rejects.append(Reject(where, str(path), str(err)))
        except (OSError, ValueError, TypeError, IndexError, KeyError) as err:  # astropy's ways of failing on bad bytes
            reason = f"unreadable FITS (corrupt or truncated?): {err}".replace("\n", " ")
            fail(where, str(path), reason)
    if block := objects.flush():
        yield block
