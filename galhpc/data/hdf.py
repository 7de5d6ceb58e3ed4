"""A real development data set: HST cutouts of the Hubble Deep Field, built as a survey would.

scikit-image ships the Hubble Deep Field (Williams et al. 1996, AJ 112, 1335) as an
872x1000 RGB JPEG of real HST WFPC2 pixels (`skimage.data.hubble_deep_field`).  This
module turns it into what a survey hands out, with the astronomers' tools:

1. one band: the sum of the three channels (JPEG counts, 0..765; the press image is
   stretched, so fluxes are relative, not calibrated);
2. a WCS: TAN projection centred on the HDF-N pointing (RA 12h36m49.4s,
   Dec +62d12m58s, J2000), north up and east left, at WFPC2's Wide Field camera scale of
   0.1 arcsec per pixel (`PIXEL_SCALE`; the JPEG is a reduced copy of the 0.04"/px
   drizzled mosaic, so 0.1"/px is an assumption that keeps galaxies a few arcsec wide);
3. the background and its RMS with `photutils.background.Background2D` (sigma-clipped
   median in 50x50 boxes), a per-pixel σ with `photutils.utils.calc_total_error` (sky RMS
   plus Poisson noise of the sources for an effective gain `EFFECTIVE_GAIN`), and a DQ
   map (8 = saturated: a channel at 255; 1 = no data: all channels 0);
4. detection and deblending with `photutils.segmentation.SourceFinder` on the
   background-subtracted, Gaussian-smoothed image (threshold `DETECT_NSIGMA` x RMS,
   `DETECT_NPIXELS` connected pixels), then `SourceCatalog`: centroid, RA/Dec through the
   WCS, segment flux, R50/R90 (`flux_radius`) and Kron radius;
5. HST-style cutouts (`write_stamps`): one multi-extension FITS file per object,
   PRIMARY (TELESCOP, INSTRUME, OBJID) + SCI + ERR + DQ, each image extension with the
   cut's own WCS (`astropy.nddata.Cutout2D`) and OBJID; sky is left in (as in
   un-subtracted survey cutouts) so the prep's sky step has something to do;
6. a catalogue (`write_catalog`, any format astropy writes: .fits, .ecsv, .csv, ...)
   with `object_id, ra, dec, x, y, flux, r50, r90, kron_radius, held_out`, where
   `held_out` is a split by position (`position_split`: a vertical strip of the image), so
   held-out galaxies never share sky with training ones;
7. the field itself (`write_field`): the SCI image and its inverse-variance weight map
   (WHT, 0 where DQ is bad), as drizzled survey products come, for the cutting source kind.

Only objects whose whole stamp lies on the image get a file; the catalogue lists every
detection (a stamp file per row with `has_stamp`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galhpc.extras import require

log = logging.getLogger("galhpc.data.hdf")

HDF_RA_DEG = 189.205833  # 12h36m49.4s: the HDF-N pointing (Williams et al. 1996)
HDF_DEC_DEG = 62.216111  # +62d12m58s
PIXEL_SCALE = 0.1  # arcsec per pixel: WFPC2 Wide Field camera
EFFECTIVE_GAIN = 4.0  # JPEG counts -> "electrons" for the Poisson part of σ
BACKGROUND_BOX = 50  # pixels per Background2D box
DETECT_NSIGMA = 2.0  # detection threshold in units of the background RMS
DETECT_NPIXELS = 10  # connected pixels above threshold for a detection
DQ_NO_DATA, DQ_SATURATED = 1, 8  # WFPC2 data-quality bits used here
STAMP_SIZE = 48  # pixels (a side) of a default cutout


@dataclass
class HDFField:
    """The Hubble Deep Field as one band with its errors, flags, WCS and sources.

    Attributes
    ----------
    sci : ndarray, float32 (872, 1000)
        Sum of the JPEG's R, G, B channels (counts), sky not subtracted.
    err : ndarray, float32 (872, 1000)
        Per-pixel σ (counts): background RMS and source Poisson noise.
    dq : ndarray, int16 (872, 1000)
        Data-quality flags, 0 = good (`DQ_NO_DATA`, `DQ_SATURATED`).
    background : ndarray, float32 (872, 1000)
        Background2D's sky level (counts).
    wcs : astropy.wcs.WCS
        TAN WCS of the image (`PIXEL_SCALE` arcsec per pixel).
    catalog : astropy.table.Table
        One row per detected source (see the module docstring for the columns).
    """

    sci: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    background: np.ndarray
    wcs: object
    catalog: object


def hdf_wcs(shape: tuple[int, int], pixel_scale: float = PIXEL_SCALE):
    """A TAN WCS centred on HDF-N for an image of `shape` (ny, nx), north up, east left.

    Parameters
    ----------
    shape : (int, int)
        Image shape (ny, nx) in pixels.
    pixel_scale : float
        Arcsec per pixel.

    Returns
    -------
    astropy.wcs.WCS
        CTYPE RA---TAN/DEC--TAN, CRVAL the HDF-N pointing at the image centre, CD matrix
        diag(-scale, +scale) in degrees.
    """
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [HDF_RA_DEG, HDF_DEC_DEG]
    wcs.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    wcs.wcs.cd = np.diag([-pixel_scale / 3600.0, pixel_scale / 3600.0])
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.equinox = 2000.0
    return wcs


def position_split(x: np.ndarray, width: int, held_out_fraction: float = 0.2) -> np.ndarray:
    """Held-out flags by position: the right-most strip of the image (x >= (1 - f) * width).

    A split by position keeps held-out galaxies away from training ones on the sky (no
    shared neighbours or sky patch), as survey validation sets are drawn.

    Parameters
    ----------
    x : ndarray, float (n,)
        Object centroids' x pixel coordinate (0-based).
    width : int
        Image width in pixels.
    held_out_fraction : float
        Fraction of the image width held out, in (0, 1).

    Returns
    -------
    ndarray, bool (n,)
        True for held-out objects.
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    return np.asarray(x, dtype=np.float64) >= (1.0 - held_out_fraction) * width


def build_field(held_out_fraction: float = 0.2, pixel_scale: float = PIXEL_SCALE) -> HDFField:
    """Detect and measure the galaxies of scikit-image's Hubble Deep Field (see the module).

    Parameters
    ----------
    held_out_fraction : float
        Fraction of the image width (right-most strip) flagged `held_out`.
    pixel_scale : float
        Arcsec per pixel of the WCS.

    Returns
    -------
    HDFField
        The image, its σ, DQ, sky, WCS and source catalogue (ids 1..n in SourceFinder's
        label order).
    """
    skimage_data = require("skimage.data", "hdf", "the Hubble Deep Field data set")
    require("photutils", "hdf", "the Hubble Deep Field data set")
    from astropy.convolution import convolve
    from astropy.stats import SigmaClip
    from astropy.table import Table
    from photutils.background import Background2D, MedianBackground
    from photutils.segmentation import SourceCatalog, SourceFinder, make_2dgaussian_kernel
    from photutils.utils import calc_total_error

    rgb = np.asarray(skimage_data.hubble_deep_field())
    sci = rgb.astype(np.float32).sum(axis=-1)
    dq = np.zeros(sci.shape, dtype=np.int16)
    dq[(rgb == 255).any(axis=-1)] |= DQ_SATURATED
    dq[(rgb == 0).all(axis=-1)] |= DQ_NO_DATA
    bad = dq != 0
    bkg = Background2D(sci, BACKGROUND_BOX, filter_size=3, sigma_clip=SigmaClip(sigma=3.0),
                       bkg_estimator=MedianBackground(), mask=bad)
    err = calc_total_error(np.clip(sci - bkg.background, 0.0, None), bkg.background_rms, EFFECTIVE_GAIN)
    signal = convolve(sci - bkg.background, make_2dgaussian_kernel(2.0, size=5))
    finder = SourceFinder(n_pixels=DETECT_NPIXELS, progress_bar=False)
    segments = finder(signal, DETECT_NSIGMA * bkg.background_rms)
    wcs = hdf_wcs(sci.shape, pixel_scale)
    sources = SourceCatalog(sci - bkg.background, segments, convolved_data=signal, error=err, wcs=wcs)
    x, y = np.asarray(sources.x_centroid), np.asarray(sources.y_centroid)
    ra, dec = wcs.wcs_pix2world(x, y, 0)
    catalog = Table()
    catalog["object_id"] = np.asarray(sources.label, dtype=np.int64)
    catalog["ra"] = np.asarray(ra, dtype=np.float64)
    catalog["ra"].unit = "deg"
    catalog["dec"] = np.asarray(dec, dtype=np.float64)
    catalog["dec"].unit = "deg"
    catalog["x"], catalog["y"] = x, y
    catalog["flux"] = np.asarray(sources.segment_flux, dtype=np.float64)
    catalog["r50"] = np.asarray(sources.flux_radius(0.5).value, dtype=np.float64)
    catalog["r90"] = np.asarray(sources.flux_radius(0.9).value, dtype=np.float64)
    catalog["kron_radius"] = np.asarray(sources.kron_radius.value, dtype=np.float64)
    for name in ("r50", "r90", "kron_radius"):
        catalog[name].unit = "pix"
    catalog["held_out"] = position_split(x, sci.shape[1], held_out_fraction)
    log.info("HDF: %d sources above %.1f sigma", len(catalog), DETECT_NSIGMA)
    return HDFField(sci, err.astype(np.float32), dq, bkg.background.astype(np.float32), wcs, catalog)


def _image_hdu(data: np.ndarray, name: str, wcs, object_id: int | None, bunit: str):
    from astropy.io import fits

    header = wcs.to_header()
    header["EXTVER"] = 1
    header["BUNIT"] = bunit
    if object_id is not None:
        header["OBJID"] = (int(object_id), "object id of the catalogue")
    return fits.ImageHDU(data, header=header, name=name)


def _primary(object_id: int | None = None):
    from astropy.io import fits

    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "HST"
    primary.header["INSTRUME"] = "WFPC2"
    primary.header["ORIGIN"] = "galhpc.data.hdf (skimage.data.hubble_deep_field)"
    if object_id is not None:
        primary.header["OBJID"] = int(object_id)
    return primary


def stamp_hdus(field: HDFField, row: int, size: int = STAMP_SIZE):
    """The HST-style PRIMARY + SCI + ERR + DQ HDUs of one catalogue row's cutout.

    Parameters
    ----------
    field : HDFField
        From `build_field`.
    row : int
        Catalogue row.
    size : int
        Stamp side in pixels.

    Returns
    -------
    astropy.io.fits.HDUList or None
        None when the stamp does not lie wholly on the image.
    """
    from astropy.io import fits
    from astropy.nddata import Cutout2D, NoOverlapError, PartialOverlapError

    entry = field.catalog[row]
    oid = int(entry["object_id"])
    position = (float(entry["x"]), float(entry["y"]))
    try:
        cuts = [Cutout2D(plane, position, size, wcs=field.wcs, mode="strict")
                for plane in (field.sci, field.err, field.dq)]
    except (NoOverlapError, PartialOverlapError):
        return None
    return fits.HDUList([
        _primary(oid),
        _image_hdu(cuts[0].data.astype(np.float32), "SCI", cuts[0].wcs, oid, "COUNTS"),
        _image_hdu(cuts[1].data.astype(np.float32), "ERR", cuts[1].wcs, oid, "COUNTS"),
        _image_hdu(cuts[2].data.astype(np.int16), "DQ", cuts[2].wcs, oid, "UNITLESS"),
    ])


def write_stamps(field: HDFField, folder: str | Path, size: int = STAMP_SIZE,
                 scale_by: str | None = None, scale_factor: float = 3.0, max_objects: int | None = None) -> list[Path]:
    """Write one HST-style cutout file per object, `hdf_<object_id:05d>.fits`.

    Parameters
    ----------
    field : HDFField
        From `build_field`.
    folder : str or Path
        Output folder (created).
    size : int
        Stamp side in pixels when `scale_by` is None.
    scale_by : str or None
        A radius column of the catalogue (``"r90"``, ``"kron_radius"``): the side is then
        ``2 * scale_factor * radius`` pixels (at least 16), as AstroVaDEr's cutouts.
    scale_factor : float
        Radii per half-side when `scale_by` is given.
    max_objects : int or None
        Stop after this many files (None: every object).

    Returns
    -------
    list of Path
        The files written, in catalogue order; the catalogue's `has_stamp` column is set.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    has_stamp = np.zeros(len(field.catalog), dtype=bool)
    for row in range(len(field.catalog)):
        if max_objects is not None and len(written) >= max_objects:
            break
        side = size
        if scale_by is not None:
            radius = float(field.catalog[scale_by][row])
            if not np.isfinite(radius):
                continue
            side = max(16, int(round(2 * scale_factor * radius)))
        hdus = stamp_hdus(field, row, side)
        if hdus is None:
            continue
        path = folder / f"hdf_{int(field.catalog['object_id'][row]):05d}.fits"
        hdus.writeto(path, overwrite=True, checksum=True)
        written.append(path)
        has_stamp[row] = True
    field.catalog["has_stamp"] = has_stamp
    return written


def write_catalog(field: HDFField, path: str | Path) -> Path:
    """Write the source catalogue in the format of the suffix (.fits, .ecsv, .csv, .parquet, .vot).

    Parameters
    ----------
    field : HDFField
        From `build_field` (after `write_stamps` for the `has_stamp` column).
    path : str or Path
        Output file; astropy's unified I/O picks the format from the suffix.

    Returns
    -------
    Path
        `path`.
    """
    path = Path(path)
    kwargs = {"format": "votable"} if path.suffix in (".vot", ".xml") else {}
    field.catalog.write(path, overwrite=True, **kwargs)
    return path


def write_field(field: HDFField, folder: str | Path) -> tuple[Path, Path]:
    """Write the whole field as drizzled survey products: `hdf_sci.fits` and `hdf_wht.fits`.

    Parameters
    ----------
    field : HDFField
        The field of `build_field`: its SCI image, σ, DQ and WCS.
    folder : str or Path
        Where the two files go; made if missing.

    Returns
    -------
    (Path, Path)
        The science image (PRIMARY + SCI with the WCS) and its inverse-variance weight map
        (PRIMARY + WHT, 1/σ² in counts⁻², 0 where the DQ flags a pixel).
    """
    from astropy.io import fits

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weight = np.where(field.dq == 0, 1.0 / np.square(field.err.astype(np.float64)), 0.0).astype(np.float32)
    sci_path, wht_path = folder / "hdf_sci.fits", folder / "hdf_wht.fits"
    fits.HDUList([_primary(), _image_hdu(field.sci, "SCI", field.wcs, None, "COUNTS")]).writeto(
        sci_path, overwrite=True, checksum=True)
    fits.HDUList([_primary(), _image_hdu(weight, "WHT", field.wcs, None, "COUNTS-2")]).writeto(
        wht_path, overwrite=True, checksum=True)
    return sci_path, wht_path


def build_hdf_cutouts(folder: str | Path, size: int = STAMP_SIZE, catalog_name: str = "hdf_catalog.fits",
                      max_objects: int | None = None, held_out_fraction: float = 0.2) -> tuple[list[Path], Path]:
    """Build the whole development set in one call.

    Writes `folder`/stamps/hdf_<id>.fits, the catalogue `folder`/`catalog_name` and the field
    `folder`/field/hdf_{sci,wht}.fits.

    Parameters
    ----------
    folder : str or Path
        Output folder (created).
    size : int
        Stamp side in pixels.
    catalog_name : str
        Catalogue file name (its suffix picks the format).
    max_objects : int or None
        At most this many stamps.
    held_out_fraction : float
        See `position_split`.

    Returns
    -------
    (list of Path, Path)
        The stamp files and the catalogue file.
    """
    field = build_field(held_out_fraction)
    stamps = write_stamps(field, Path(folder) / "stamps", size, max_objects=max_objects)
    write_field(field, Path(folder) / "field")
    return stamps, write_catalog(field, Path(folder) / catalog_name)
