"""Stamps cut from a large survey image at a catalogue's RA/Dec (source kind "survey_image").

`SourceConfig` fields used:
- `path`: the image (FITS); its science HDU is `hdu`, else found by convention (SCI, else
  the first image HDU with data that is not a companion map; see galhpc.data.fits).
- `catalog`, `id_column`, `passthrough`: the catalogue (any format astropy reads,
  `galhpc.data.fits.read_catalog`) with the object ids and positions.

Options:
- `ra_column`, `dec_column` (default: found by convention, ra/dec, RAJ2000/DEJ2000,
  RA_ICRS/DE_ICRS, ALPHA_J2000/DELTA_J2000, ...): position columns (degrees, any angle
  unit the table records, or sexagesimal text);
- `size` (pixels, default 64): stamp side; or `scale_by` (a radius column in pixels,
  e.g. r90 or petro_r90) with `scale_factor` (default 4): side = scale_factor x radius,
  at least `min_size` (16) pixels, as AstroVaDEr's cutouts scaled to each galaxy;
- `weight` (a FITS file, or an EXTNAME of the image file) with `weight_type` "ivar"
  (default: WHT, 1/σ²), "sigma" or "variance"; `mask` (file or EXTNAME; non-zero = bad).
  A pixel of weight <= 0 or NaN (chip gaps, unexposed drizzle pixels) is a bad pixel.
  Without a weight map σ is unknown (the prep uses the stamp's border σ).

Each stamp is `astropy.nddata.Cutout2D(..., mode="strict")` around the catalogue
position through the image's celestial WCS; the pixel map stamps are cut at the same
pixels.  An object partly or wholly off the image, or whose position is null, is a
reject with that reason.  Objects are read by stamp size, then catalogue order.  Labels:
the catalogue's columns, `ra`/`dec`, `wcs_pixel_scale`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from galhpc.config import ConfigError, PrepConfig, SourceConfig, check_options
from galhpc.data.fits import COMPANION_NAMES, ObjectBlocks, header_pixel_scale, read_catalog
from galhpc.data.sources import Block, DataError, Reject

log = logging.getLogger("galhpc.data.cutout")

OPTIONS: dict[str, Any] = {  # option -> the type it takes (checked by galhpc.config.check_options)
    "ra_column": str, "dec_column": str, "size": int, "scale_by": str | None, "scale_factor": float, "min_size": int,
    "weight": str | int | None, "weight_type": str, "mask": str | int | None,
}
WEIGHT_TYPES = ("ivar", "sigma", "variance")


def _science(hdus, hdu, path: str):
    """The science image HDU of an open astropy HDUList."""
    if hdu is not None:
        try:
            return hdus[hdu]
        except (KeyError, IndexError) as err:
            raise DataError(f"{path}: no HDU {hdu!r} ({len(hdus)} HDUs in file)") from err
    images = [h for h in hdus if h.is_image and h.data is not None and h.data.ndim == 2]
    for h in images:
        if h.name.upper() == "SCI":
            return h
    for h in images:
        if h.name.upper() not in COMPANION_NAMES:
            return h
    raise DataError(f"{path}: no 2-D science image HDU")


def _map(spec: str | None, image_path: str, image_hdus, shape: tuple[int, int], what: str):
    """A pixel map from another file (its science-like HDU) or an extension of the image file."""
    from astropy.io import fits

    if spec is None:
        return None
    if Path(spec).is_file():
        with fits.open(spec, memmap=False) as other:
            data = [h for h in other if h.is_image and h.data is not None and h.data.ndim == 2]
            if not data:
                raise DataError(f"{spec}: no 2-D image HDU for the {what} map")
            values = np.asarray(data[0].data)
            where = f"{spec} HDU {other.index_of(data[0])}"
    else:
        try:
            values, where = np.asarray(image_hdus[spec].data), f"{image_path} HDU {spec}"
        except KeyError as err:
            raise DataError(f"{image_path}: the {what} map {spec!r} is neither a file nor an HDU") from err
    if values.shape != shape:
        raise DataError(f"{where}: {what} map of shape {values.shape} differs from the image's {shape}")
    return values


def _sigma_from(weight: np.ndarray | None, kind: str) -> np.ndarray | None:
    if weight is None:
        return None
    w = weight.astype(np.float64)
    positive = np.where(w > 0, w, 1.0)
    if kind == "ivar":
        return np.where(w > 0, 1.0 / np.sqrt(positive), np.nan)
    if kind == "variance":
        return np.where(w > 0, np.sqrt(positive), np.nan)
    return np.where(w > 0, w, np.nan)


def _world_to_pixel(wcs, coords) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) 0-based pixel positions of sky positions, NaN where the WCS has none.

    None: the far side of a projection, or where a SIP distortion's inversion does not converge.
    """
    from astropy.wcs import NoConvergence

    try:
        x, y = wcs.world_to_pixel(coords)
    except NoConvergence as err:  # far outside the image a distortion polynomial diverges
        best = np.array(err.best_solution, dtype=np.float64).reshape(-1, 2)
        for bad in (err.divergent, err.slow_conv):
            if bad is not None:
                best[np.asarray(bad, dtype=int)] = np.nan
        x, y = best[:, 0], best[:, 1]
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def read_source(source: SourceConfig, prep: PrepConfig) -> Iterator[Block]:
    """Stamps cut from one survey image around catalogue positions: kind "survey_image".

    Parameters
    ----------
    source : SourceConfig
        `path` (the image), `catalog` and `id_column`, `passthrough`, `hdu` and `options`
        (size, scale_by, weight, mask, ...: see the module docstring).
    prep : PrepConfig
        Its `chunk_rows`, `on_error`, and the `r90_column` and `sky` columns to keep.

    Yields
    ------
    Block
        Stamps of one side each (objects sorted by stamp size), float32 in the image's
        units, with `sigma` (from the weight map) and `mask` extras, `ra`/`dec` labels in
        degrees and the off-image rejects.

    Raises
    ------
    ConfigError
        No image or catalogue, or an unknown option or weight type.
    DataError
        An unreadable image, no celestial WCS, a missing catalogue column, a duplicate id;
        or, with ``on_error: raise``, an object off the image.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.nddata import Cutout2D, NoOverlapError, PartialOverlapError
    from astropy.wcs import WCS, FITSFixedWarning

    opts = check_options(OPTIONS, source.options, f"source survey_image {source.path}")
    if source.path is None or not source.catalog:
        raise ConfigError("source survey_image: `path` (the image) and `catalog` (ids and RA/Dec) are required")
    weight_type = opts.get("weight_type", "ivar")
    if weight_type not in WEIGHT_TYPES:
        raise ConfigError(f"source survey_image: weight_type must be one of {WEIGHT_TYPES}, got {weight_type!r}")
    size, scale_by = int(opts.get("size", 64)), opts.get("scale_by")
    factor, min_size = float(opts.get("scale_factor", 4.0)), int(opts.get("min_size", 16))
    ra_key, dec_key = "ra", "dec"  # read_catalog's names for the position columns, whatever the catalogue's
    needed = tuple(c for c in (prep.r90_column, prep.sky, scale_by) if c)
    index, labels, units = read_catalog(source.catalog, source.id_column, None, source.passthrough, needed=needed,
                                 ra_column=opts.get("ra_column"), dec_column=opts.get("dec_column"))
    for key in (ra_key, dec_key) + ((scale_by.lower(),) if scale_by else ()):
        if key not in labels:
            raise DataError(f"catalog {source.catalog}: no column {key!r}; columns: {sorted(labels)}")
    image_path = str(source.path)
    try:
        hdus = fits.open(image_path, memmap=True)
    except OSError as err:
        raise DataError(f"{image_path}: unreadable FITS image: {err}") from err
    with hdus:
        sci = _science(hdus, source.hdu, image_path)
        data = np.asarray(sci.data, dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(sci.header).celestial
        if not wcs.has_celestial:
            raise DataError(f"{image_path}: HDU {sci.name}: no celestial WCS to place the catalogue's RA/Dec")
        sigma = _sigma_from(_map(opts.get("weight"), image_path, hdus, data.shape, "weight"), weight_type)
        mask = _map(opts.get("mask"), image_path, hdus, data.shape, "mask")
        scale = header_pixel_scale(sci.header, hdus[0].header, f"{image_path}: HDU {sci.name}")
        objects = ObjectBlocks(prep.chunk_rows, labels, index, units)
        ra_all, dec_all = labels[ra_key], labels[dec_key]
        radius_all = labels[scale_by.lower()] if scale_by else None
        planned = []  # (side, row, id, reason): equal sides together, so blocks stay large
        for oid, row in index.items():
            ra, dec = float(ra_all[row]), float(dec_all[row])
            side, reason = size, None
            if not (np.isfinite(ra) and np.isfinite(dec)):
                reason = "no position (null ra/dec in the catalogue)"
            elif abs(dec) > 90:
                reason = f"dec {dec} is not a declination (|dec| > 90 deg)"
            elif radius_all is not None:
                radius = float(radius_all[row])
                if not np.isfinite(radius) or radius <= 0:
                    reason = f"{scale_by} = {radius} is not a finite positive radius"
                else:
                    side = max(min_size, int(np.ceil(factor * radius)))
            planned.append((side, row, oid, reason))
        planned.sort(key=lambda p: (p[0], p[1]))
        finite = np.isfinite(ra_all) & np.isfinite(dec_all) & (np.abs(np.nan_to_num(dec_all)) <= 90)
        x_all, y_all = np.full(len(ra_all), np.nan), np.full(len(ra_all), np.nan)
        if finite.any():  # one vectorised WCS transform; Cutout2D then cuts at pixel positions
            x_all[finite], y_all[finite] = _world_to_pixel(
                wcs, SkyCoord(ra_all[finite] * u.deg, dec_all[finite] * u.deg, frame="icrs"))
        for side, row, oid, reason in planned:
            obj, where = f"object_id {oid}", f"{image_path} (catalog {source.catalog} row {row})"
            ra, dec = float(ra_all[row]), float(dec_all[row])
            if reason is None and not (np.isfinite(x_all[row]) and np.isfinite(y_all[row])):
                # e.g. a position on the far side of the sky of a TAN projection: no pixel at all
                reason = f"off the image edge (ra {ra:.6f}, dec {dec:.6f} has no pixel position in {image_path})"
            if reason is None:
                try:
                    cut = Cutout2D(data, (float(x_all[row]), float(y_all[row])), side, mode="strict")
                except NoOverlapError:
                    reason = f"off the image edge (ra {ra:.6f}, dec {dec:.6f} is outside {image_path})"
                except PartialOverlapError:
                    reason = f"partly off the image edge (a {side}x{side} stamp at ra {ra:.6f}, dec {dec:.6f})"
            if reason is not None:
                if prep.on_error == "raise":
                    raise DataError(f"{where}: {obj}: {reason}")
                objects.rejects.append(Reject(obj, where, reason))
                continue
            window = cut.slices_original
            stamp_sigma = None if sigma is None else sigma[window].astype(np.float32)
            stamp_mask = None if mask is None else (np.asarray(mask[window]) != 0)
            if stamp_sigma is not None:  # weight <= 0 (a chip gap, a drizzle's unexposed pixel, SCI = 0 there) is bad
                no_weight = ~np.isfinite(stamp_sigma)
                stamp_mask = no_weight if stamp_mask is None else (stamp_mask | no_weight)
            objects.check_unique(oid, where)
            if block := objects.add(cut.data.astype(np.float32), oid, where, scale, stamp_sigma, stamp_mask, (ra, dec)):
                yield block
        if block := objects.flush():
            yield block
