"""The HDF5 training store: written once by `galhpc-prep`, read by `StoreLoader`.

Layout (docs/schema.md, "Training store"): `images` (N, H, W) or (N, C, H, W) float32
chunked in blocks of rows; `object_id` int64; `labels/<name>` one dataset per column;
optional `truth`, `psf`, extra per-object datasets; `rejects/{object,file,reason}`; root
attributes `galhpc_version`, `config` (prep YAML), `created`, `n_objects`.
`store_pixel_scale` reads the pixel scale of the images from that prep config.

`StoreWriter` writes to a hidden temporary file beside the target and renames it only
when complete, so an interrupted prep never leaves a file that looks whole.  A published
store is never modified again, so readers open it without HDF5 file locking (which
parallel file systems such as Lustre often refuse).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import galhpc
from galhpc.config import ConfigError, PrepConfig, config_from_yaml_text, load_yaml
from galhpc.data.sources import PIXEL_SCALE_LABEL, Block, DataError, Reject
from galhpc.formats import store as fmt
from galhpc.formats.hdf5 import H5Output, open_h5_readonly
from galhpc.formats.kinds import KIND_ATTR, STORE, check_filters, require_kind
from galhpc.runtime.files import disk_full_error, is_disk_full, publish, remove_stale_temps, temp_path

log = logging.getLogger("galhpc.data.store")

STRING_LEN = 64  # fixed-length bytes for string labels and rejects


def _fill_value(dtype: np.dtype):
    if dtype.kind == "f":
        return np.nan
    if dtype.kind in "iu":
        return -1 if dtype.kind == "i" else 0
    return b""


def _storable(name: str, values: np.ndarray) -> np.ndarray:
    """Numeric arrays as they are; strings as fixed-length bytes."""
    values = np.asarray(values)
    if values.dtype.kind == "U":
        values = np.char.encode(values, "utf-8")
    if values.dtype.kind == "S":
        return values.astype(f"S{STRING_LEN}")
    if values.dtype.kind == "b":
        return values.astype(np.int8)
    if values.dtype.kind not in "iuf":
        raise DataError(f"label {name!r} has unsupported dtype {values.dtype}")
    return values


def reject_summary(rejects: Iterable[Reject], examples: int = 4) -> str:
    """One line counting rejects by reason, most frequent first.

    Numbers in a reason are replaced by N, e.g. "7 x image NxN is smaller than crop_size N
    (...); 2 x N NaN/inf pixels: the centre pixel is bad".

    Parameters
    ----------
    rejects : iterable of Reject
        The objects prep refused.
    examples : int
        Most reasons named; the rest are counted together.

    Returns
    -------
    str
    """
    import re
    from collections import Counter

    counts = Counter(re.sub(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", "N", r.reason) for r in rejects)
    items = [f"{k} x {reason}" for reason, k in counts.most_common(examples)]
    if len(counts) > examples:
        items.append(f"{sum(counts.values()) - sum(k for _, k in counts.most_common(examples))} x other reasons")
    return "; ".join(items)


class StoreWriter:
    """Append blocks of objects to a new store; `close()` publishes it atomically.

    Use as a context manager: on an exception the temporary file is removed and no store
    appears at `path`.
    """

    def __init__(self, path: str | Path, config_yaml: str, chunk_rows: int = 256, compression: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.path)
        stale = remove_stale_temps(self.path.parent, self.path.name)
        if stale:
            log.warning("removed leftover temporary file(s) of an interrupted prep: %s", ", ".join(map(str, stale)))
        self.chunk_rows = max(1, int(chunk_rows))
        if compression not in (None, "lzf", "gzip"):
            raise DataError(f"{path}: compression must be none, lzf or gzip, got {compression!r}")
        self.compression = compression
        self._out = H5Output(self.tmp)  # a full disk raises OSError naming the store, never crashes HDF5
        self.file = self._out.file
        self.file.attrs[fmt.VERSION_ATTR] = galhpc.__version__
        self.file.attrs[KIND_ATTR] = STORE
        self.file.attrs[fmt.CONFIG_ATTR] = config_yaml
        self.file.attrs[fmt.CREATED_ATTR] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        self.n = 0
        self.rejects: list[Reject] = []
        self.psf: np.ndarray | None = None
        self.psf_per_object: bool | None = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self.file.id.valid:
            self.abort()

    def _rows_dataset(self, name: str, sample: np.ndarray, fill) -> h5py.Dataset:
        """A resizable (N, ...) dataset chunked by blocks of rows, back-filled to self.n."""
        shape = sample.shape[1:]
        ds = self.file.create_dataset(
            name,
            shape=(self.n, *shape),
            maxshape=(None, *shape),
            dtype=sample.dtype,
            chunks=(self.chunk_rows, *shape),
            fillvalue=fill,
            compression=self.compression if len(shape) >= 2 else None,  # pixel arrays only
        )
        return ds

    def _append(self, name: str, values: np.ndarray, what: str) -> None:
        if name not in self.file:
            # a label or σ missing for some objects is NaN/-1/b"" (unknown), never a value
            fill = _fill_value(values.dtype) if name.startswith(fmt.LABELS + "/") or name == "sigma" else 0
            self._rows_dataset(name, values, fill)
        ds = self.file[name]
        if ds.shape[1:] != values.shape[1:]:
            raise DataError(f"{what} {name!r}: shape {values.shape[1:]} differs from earlier objects' {ds.shape[1:]}")
        start = self.n
        ds.resize(start + len(values), axis=0)
        ds[start:] = values.astype(ds.dtype, copy=False)

    def append(self, block: Block, source_index: int = 0) -> None:
        """Add a block's objects (and rejects); labels missing from it are filled (NaN/-1/b"").

        Parameters
        ----------
        block : Block
            Images (n, H, W) or (n, C, H, W), object ids, labels and extras of n objects.
        source_index : int
            Which prep source they came from (label ``source_index``).

        Raises
        ------
        DataError
            A column whose row shape differs from earlier blocks', or mixed PSF kinds.
        OSError
            A failed write (a full disk names the store).
        """
        self.rejects.extend(block.rejects)
        n = len(block)
        if n == 0:
            return
        where = f"objects {block.object_id[0]}..{block.object_id[-1]}"
        if block.files:
            where = f"{block.files[0]}: {where}"
        self._append(fmt.IMAGES, np.asarray(block.images, dtype=np.float32), where)
        self._append(fmt.OBJECT_ID, np.asarray(block.object_id, dtype=np.int64), where)
        labels = {fmt.SOURCE_INDEX: np.full(n, source_index, dtype=np.int16), **block.labels}
        for name, values in labels.items():
            self._append(fmt.label_path(name), _storable(name, values), where)
            if name in block.units:  # read by galhpc-encode into its catalogue's column_units
                self.file[fmt.label_path(name)].attrs[fmt.UNIT_ATTR] = block.units[name]
        if block.truth is not None:
            self._append(fmt.TRUTH, np.asarray(block.truth, dtype=np.float32), where)
        for name, values in block.extras.items():
            self._append(name, np.asarray(values), where)
        if block.psf is not None:
            self._add_psf(np.asarray(block.psf, dtype=np.float32), where)
        try:
            self._out.check()  # a failed write (full disk) stops prep at this block
        except OSError as err:
            raise (disk_full_error(self.path) if is_disk_full(err) else err) from err
        self.n += n
        for name in self.file:  # columns absent from this block: extend with fill values
            ds = self.file[name]
            if isinstance(ds, h5py.Group):
                for sub in ds.values():
                    if sub.shape[0] < self.n:
                        sub.resize(self.n, axis=0)
            elif (name != fmt.PSF or self.psf_per_object) and ds.shape[0] < self.n:
                ds.resize(self.n, axis=0)

    def _add_psf(self, psf: np.ndarray, where: str) -> None:
        per_object = psf.ndim == 3
        if self.psf_per_object is None:
            self.psf_per_object = per_object
            if not per_object:
                self.file.create_dataset(fmt.PSF, data=psf)
                self.psf = psf
        if per_object != self.psf_per_object:
            raise DataError(f"{where}: mixes one shared PSF with per-object PSFs")
        if per_object:
            self._append(fmt.PSF, psf, where)
        elif not np.array_equal(psf, self.psf):
            raise DataError(f"{where}: a second, different shared PSF; give per-object PSFs (n, h, w) instead")

    def _write_rejects(self) -> None:
        if not self.rejects:
            return
        group = self.file.create_group(fmt.REJECTS)
        for field in fmt.REJECT_FIELDS:
            values = [str(getattr(r, field)).encode("utf-8")[:256] for r in self.rejects]
            group.create_dataset(field, data=np.array(values, dtype="S256"))

    def close(self) -> Path:
        """Finish the file and rename it to its final name; returns the path.

        Returns
        -------
        Path
            The published store.

        Raises
        ------
        DataError
            No objects were written.
        OSError
            The file could not be finished (a full disk names the store).
        """
        if self.n == 0:
            self.abort()
            why = f": {reject_summary(self.rejects)}" if self.rejects else ""
            raise DataError(f"no objects to write to {self.path} ({len(self.rejects)} rejected{why})")
        try:
            self._write_rejects()
            self.file.attrs[fmt.N_OBJECTS_ATTR] = self.n
            self._out.close()
            publish(self.tmp, self.path)
        except BaseException as err:
            self.abort()
            if is_disk_full(err):
                raise disk_full_error(self.path) from err
            raise
        log.info("wrote %s: %d objects, %d rejects", self.path, self.n, len(self.rejects))
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; nothing appears at the target path."""
        try:
            self._out.abort()
        finally:
            self.tmp.unlink(missing_ok=True)


def recorded_prep(text: str | bytes | None, path: str | Path) -> PrepConfig | None:
    """The prep config a store records (its attribute ``config``, YAML), with defaults filled in.

    Parameters
    ----------
    text : str or bytes or None
        The attribute's value (`StoreInfo.config`, ``StoreReader.file.attrs``).
    path : str or Path
        The store, for the message.

    Returns
    -------
    PrepConfig or None
        None when the store records none (no or empty text).

    Raises
    ------
    DataError
        The text is no valid prep config.
    """
    if not text:
        return None
    try:
        return config_from_yaml_text(text.decode() if isinstance(text, bytes) else str(text)).prep
    except ConfigError as err:
        raise DataError(f"{path}: its prep config (attribute {fmt.CONFIG_ATTR!r}) is unreadable: {err}") from err


def prep_record(text: str | bytes | None) -> dict[str, Any]:
    """The ``prep`` section of a store's recorded config as written, without defaults filled in.

    A field the recorded YAML does not set is absent here (a default is no record).

    Parameters
    ----------
    text : str or bytes or None
        The store's attribute ``config`` (`StoreInfo.config`).

    Returns
    -------
    dict
        The section's mapping; empty without a config or when the YAML is unreadable.
    """
    import yaml

    try:
        config = load_yaml(text or "") or {}
        prep = config.get("prep") or {}
    except (yaml.YAMLError, AttributeError):
        return {}
    return prep if isinstance(prep, dict) else {}


def read_dataset(path: str | Path, name: str) -> np.ndarray | None:
    """Dataset `name` of an HDF5 file (a store's one shared ``psf``), read whole.

    Parameters
    ----------
    path : str or Path
        The file (opened read-only, without file locks).
    name : str
        The dataset.

    Returns
    -------
    numpy.ndarray or None
        None when the file has no such name.

    Raises
    ------
    OSError
        From h5py: a missing or non-HDF5 file.
    """
    with open_h5_readonly(path) as f:
        return f[name][()] if name in f else None


@dataclass(frozen=True)
class StoreInfo:
    """What a store holds, read from its metadata without touching pixels."""

    path: Path
    n: int
    image_shape: tuple[int, ...]  # (H, W) or (C, H, W)
    channels: int
    label_names: list[str]
    has_truth: bool
    psf_shape: tuple[int, ...] | None
    n_rejects: int
    config: str
    galhpc_version: str
    created: str
    chunk_rows: int

    @property
    def prep(self) -> PrepConfig | None:
        """The recorded prep config with defaults filled in (`recorded_prep`; None without one).

        Raises
        ------
        DataError
            The recorded config is unreadable.
        """
        return recorded_prep(self.config, self.path)

    @property
    def prep_record(self) -> dict[str, Any]:
        """The recorded ``prep`` section as written, without defaults (`prep_record`; empty without one)."""
        return prep_record(self.config)


def locate_column(f: h5py.File, name: str, n: int) -> tuple[str, bool] | None:
    """Where store column `name` lives in the open store `f` of `n` images, and whether it is per object.

    None when there is none.

    A label column (`labels/<name>`) first, else a root dataset other than `images` and
    `object_id`: per object when it is chunked with one row per image (`truth`, `masks`,
    per-object `psf`), else shared by every image (one `psf` (h, w)).  The loader, the
    catalogue jobs and the report all find columns by this one rule.

    Parameters
    ----------
    f : h5py.File
        The store, open for reading.
    name : str
        A label or dataset name.
    n : int
        Number of images N.

    Returns
    -------
    tuple of (str, bool) or None
        (dataset path, per object).
    """
    if fmt.label_path(name) in f:
        return fmt.label_path(name), True
    if name in fmt.CORE or name not in f or not isinstance(f[name], h5py.Dataset):
        return None
    ds = f[name]
    return name, ds.ndim >= 1 and ds.shape[0] == n and ds.chunks is not None


def read_store_info(path: str | Path) -> StoreInfo:
    """Open a store and describe it; a missing or foreign file gives a DataError naming it.

    Parameters
    ----------
    path : str or Path
        A training store written by galhpc-prep.

    Returns
    -------
    StoreInfo
        Read from its metadata (no pixels).

    Raises
    ------
    DataError
        Missing, not HDF5, or not a store.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"store not found: {path}")
    try:
        with open_h5_readonly(path) as f:
            return describe_store(f, path)
    except OSError as err:
        raise DataError(f"{path} is not a readable HDF5 store: {err}") from err


FLUX_CALIBRATION_VALUES = 4096  # quantiles of flux_norm a checkpoint keeps: a few kB whatever the store's size


def flux_calibration(path: str | Path, max_values: int = FLUX_CALIBRATION_VALUES) -> dict[str, Any]:
    """A store's photometric calibration, small enough to travel in a checkpoint.

    Generated stamps are in stored units (input / flux_norm · flux_scale, galhpc.data.prep);
    galhpc.inference.photometry turns them back into survey units with a flux_norm drawn from
    this distribution, so a checkpoint moved away from its store still generates in survey units.

    Parameters
    ----------
    path : str or Path
        The training store.
    max_values : int
        Most flux_norm values kept: larger stores keep that many evenly spaced quantiles.

    Returns
    -------
    dict
        ``flux_norms`` (sorted list of float, survey units · pixel; empty when no value is finite
        and positive; None when the store has no ``flux`` step), ``flux_scale`` (float, the
        prep's flux_scale), ``bunit`` (str or None, the store's ``bunit`` attribute) and
        ``zero_point`` (float or None, AB magnitude of one survey unit, the store's
        ``zero_point`` attribute), ``source`` (str, for the catalogue's /meta).
    """
    path = Path(path)
    with open_h5_readonly(path) as f:
        attrs = dict(f.attrs)
        norms = f[fmt.label_path("flux_norm")][()].astype(np.float64) if fmt.label_path("flux_norm") in f else None
    zero_point = float(attrs["zero_point"]) if "zero_point" in attrs else None
    if norms is not None:
        norms = np.sort(norms[np.isfinite(norms) & (norms > 0)])
        if len(norms) > max_values:
            norms = np.quantile(norms, (np.arange(max_values) + 0.5) / max_values)
    try:
        prep = recorded_prep(attrs.get(fmt.CONFIG_ATTR), path)
    except DataError:  # an unreadable prep config: the default scale, as galhpc-prep writes it
        prep = None
    return {"flux_norms": None if norms is None else [float(v) for v in norms],
            "flux_scale": float(prep.flux_scale) if prep is not None else 100.0,
            "bunit": str(attrs["bunit"]) if "bunit" in attrs else None,
            "zero_point": zero_point if zero_point is not None and math.isfinite(zero_point) else None,
            "source": f"{path}: labels/flux_norm" if norms is not None else f"{path}: no flux step"}


def describe_store(f: h5py.File, path: Path) -> StoreInfo:
    """The StoreInfo of the store open as `f` (read from metadata, no pixels).

    A catalogue or table (`galhpc.formats.kinds`) or a dataset needing a missing filter is refused.

    Parameters
    ----------
    f : h5py.File
        The store, open for reading.
    path : Path
        Its name, for messages.

    Returns
    -------
    StoreInfo
        Its N, image shape, label names, PSF shape, rejects and prep config.

    Raises
    ------
    DataError
        No images/object_id; `FileKindError` for another kind of file or a missing filter.
    """
    require_kind(f, path, STORE, "a training-store reader (galhpc-train, galhpc-report --store)")
    check_filters(f, path)
    if fmt.IMAGES not in f or fmt.OBJECT_ID not in f:
        raise DataError(f"{path} is not a galhpc store (no images/object_id datasets)")
    images = f[fmt.IMAGES]
    shape = tuple(images.shape[1:])
    return StoreInfo(
        path=path,
        n=int(images.shape[0]),
        image_shape=shape,
        channels=1 if len(shape) == 2 else int(shape[0]),
        label_names=sorted(f[fmt.LABELS]) if fmt.LABELS in f else [],
        has_truth=fmt.TRUTH in f,
        psf_shape=tuple(f[fmt.PSF].shape) if fmt.PSF in f else None,
        n_rejects=int(f[fmt.reject_path("object")].shape[0]) if fmt.REJECTS in f else 0,
        config=str(f.attrs.get(fmt.CONFIG_ATTR, "")),
        galhpc_version=str(f.attrs.get(fmt.VERSION_ATTR, "")),
        created=str(f.attrs.get(fmt.CREATED_ATTR, "")),
        chunk_rows=int(images.chunks[0]) if images.chunks else int(images.shape[0]),
    )


# source kinds of galhpc-prep that draw their stamps at a known pixel scale: their options class
PIXEL_SCALE_SOURCES = {"galsim": "galhpc.data.synth:SimOptions", "galsim_stars": "galhpc.data.starsim:StarSimOptions"}


def store_pixel_scale(path: str | Path, image_size: int | None = None) -> tuple[float | None, str]:
    """The pixel scale of a training store's images (arcsec per pixel) and where it came from.

    Every source of the prep config the store records must know its scale, and all must
    agree (relative 1e-6).  Simulated kinds (galsim, galsim_stars) draw at
    `options.pixel_scale` and `prep.image_size`, so a `crop` then `resize` recipe scales it
    by crop_size / image_size.  FITS sources record each object's scale from its header
    in the label `wcs_pixel_scale` (already per stored pixel; see galhpc.data.fits), which
    must be known for every object of the source.  Real stamps record none.  With
    `image_size`, a store whose images have another size is not taken (not the model's store).

    Parameters
    ----------
    path : str or Path
        The store.
    image_size : int, optional
        The model's image size (pixels), to refuse another store.

    Returns
    -------
    scale : float or None
        Arcsec per stored pixel, or None when not known.
    how : str
        Where it came from, or why it is not known.
    """
    try:
        info = read_store_info(path)
    except DataError as err:
        return None, str(err)
    if image_size is not None and info.image_shape[-1] != image_size:
        return None, f"store {path} holds {info.image_shape[-1]}-pixel images, the model makes {image_size}-pixel ones"
    try:
        prep = info.prep
    except DataError as err:
        return None, f"store {err}"
    if prep is None:
        return None, f"store {path} records no prep config"
    if prep.crop_r90 is not None and "crop" in prep.recipe:
        return None, f"store {path}: size-scaled crops (crop_r90): each stamp has its own pixel scale"
    scales, hows = [], []
    for index, source in enumerate(prep.sources):
        where = f"store {path}: source {index} ({source.kind})"
        if source.kind == "fits":
            value, why = _header_scale(path, index, len(prep.sources))
            if value is None:
                return None, f"{where} records no pixel scale ({why})"
            scales.append(value)
            hows.append(f"fits {PIXEL_SCALE_LABEL} {value:g} from the FITS headers")
            continue
        target = PIXEL_SCALE_SOURCES.get(source.kind)
        if target is None:
            return None, f"{where} records no pixel scale"
        module, name = target.split(":")
        try:
            options = getattr(importlib.import_module(module), name).from_options(source.options, where)
        except (ConfigError, ImportError, AttributeError) as err:
            return None, f"{where}: options unreadable: {err}"
        if getattr(options, "size_scaled", None) is not None:
            return None, f"{where} is size-scaled: each stamp has its own pixel scale (label column pixel_scale)"
        drawn = prep.image_size
        cropped = prep.crop_size if "crop" in prep.recipe and prep.crop_size is not None else drawn
        final = prep.image_size if "resize" in prep.recipe else cropped
        if final != info.image_shape[-1]:
            return None, f"store {path}: its prep config gives {final}-pixel images, it holds {info.image_shape[-1]}"
        how = "" if cropped == final else f", {cropped}-pixel crop resized to {final}"
        scales.append(float(options.pixel_scale) * cropped / final)
        hows.append(f"{source.kind} pixel_scale {float(options.pixel_scale):g}{how}")
    if not scales:
        return None, f"store {path} records no sources"
    if any(not math.isclose(s, scales[0], rel_tol=1e-6) for s in scales):
        return None, f"store {path} mixes sources of pixel scales {scales}"
    return scales[0], f"training store {path} ({hows[0]})"


def _header_scale(path: str | Path, source: int, n_sources: int) -> tuple[float | None, str]:
    """The one pixel scale the FITS headers gave every object of source number `source`."""
    with open_h5_readonly(path) as f:
        if fmt.label_path(PIXEL_SCALE_LABEL) not in f:
            return None, f"no {PIXEL_SCALE_LABEL} label: its FITS headers had no celestial WCS or PIXSCALE"
        values = f[fmt.label_path(PIXEL_SCALE_LABEL)][()]
        if n_sources > 1:
            values = values[f[fmt.label_path(fmt.SOURCE_INDEX)][()] == source]
    if len(values) == 0:
        return None, "no objects"
    unknown = int(np.isnan(values).sum())
    if unknown:
        return None, f"{unknown} of {len(values)} objects have no celestial WCS or PIXSCALE in their FITS header"
    lo, hi = float(values.min()), float(values.max())
    if not math.isclose(lo, hi, rel_tol=1e-6):
        return None, f"its objects' FITS headers disagree: {lo:g} to {hi:g} arcsec per pixel"
    return float(np.mean(values, dtype=np.float64)), ""


class StoreReader:
    """Contiguous row ranges of a store's `images` (as (B, C, H, W) float32) and `object_id`.

    Opened read-only without file locks (`open_h5_readonly`); every failure is a `DataError`
    naming the file and dataset.  What the catalogue jobs read their input through.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.file = open_h5_readonly(self.path)
        except (OSError, FileNotFoundError) as err:
            raise DataError(f"input store {self.path} cannot be opened as HDF5: {err}") from err
        try:
            require_kind(self.file, self.path, STORE, "galhpc-encode --store (or galhpc-search --image)")
            check_filters(self.file, self.path)
        except DataError:
            self.file.close()
            raise
        if fmt.IMAGES not in self.file or not isinstance(self.file[fmt.IMAGES], h5py.Dataset):
            raise DataError(f"input store {self.path} has no dataset /images")
        self.images = self.file[fmt.IMAGES]
        if self.images.ndim not in (3, 4):
            raise DataError(f"{self.path}: /images must be (N, H, W) or (N, C, H, W), got shape {self.images.shape}")
        self.n = self.images.shape[0]
        self.object_id = self.file.get(fmt.OBJECT_ID)
        if self.object_id is not None and self.object_id.shape != (self.n,):
            raise DataError(f"{self.path}: /object_id has shape {self.object_id.shape}, expected ({self.n},)")

    def has(self, name: str) -> bool:
        """Whether the store holds `name`.

        Parameters
        ----------
        name : str
            A dataset or group, or a path such as ``labels/ra``.

        Returns
        -------
        bool
        """
        return name in self.file

    def layout(self, name: str) -> tuple[tuple[int, ...], np.dtype] | None:
        """Shape and dtype of dataset `name`; None when the store has no such dataset (or it is a group).

        Parameters
        ----------
        name : str
            A dataset, or a path such as ``labels/ra``.

        Returns
        -------
        (tuple of int, numpy.dtype) or None
        """
        ds = self.file.get(name)
        return (tuple(ds.shape), ds.dtype) if isinstance(ds, h5py.Dataset) else None

    @property
    def label_names(self) -> list[str]:
        """The label columns (datasets of ``labels/``), sorted."""
        return sorted(self.file[fmt.LABELS]) if fmt.LABELS in self.file else []

    def label_unit(self, label: str) -> str | None:
        """The unit galhpc-prep recorded on a label column (astropy string), None where it recorded none.

        Parameters
        ----------
        label : str
            The column's name (``ra``, not ``labels/ra``); it must exist.

        Returns
        -------
        str or None
        """
        unit = self.file[fmt.label_path(label)].attrs.get(fmt.UNIT_ATTR)
        if unit is None:
            return None
        return unit.decode() if isinstance(unit, bytes) else str(unit)

    @property
    def columns(self) -> set[str]:
        """Its columns: `images`, `object_id`, the label names and the datasets `locate_column` finds."""
        found = {name for name in self.file if name in fmt.CORE or locate_column(self.file, name, self.n) is not None}
        return found | set(self.label_names)

    @functools.cached_property
    def prep(self) -> PrepConfig | None:
        """The prep config the store records (attribute ``config``), parsed once.

        Returns
        -------
        PrepConfig or None
            None for a store that records none.

        Raises
        ------
        DataError
            The recorded config is unreadable (naming the store).
        """
        return recorded_prep(self.file.attrs.get(fmt.CONFIG_ATTR), self.path)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image (C = 1 for a store of (N, H, W) images)."""
        shape = self.images.shape[1:]
        return (1, *shape) if len(shape) == 2 else tuple(shape)

    def check_fits(self, model_name: str, channels: int, image_size: int) -> None:
        """Refuse images of another shape than the model's (C, H, W) = (channels, size, size).

        Parameters
        ----------
        model_name : str
            For the message.
        channels : int
            C the model expects.
        image_size : int
            H = W the model expects (pixels).

        Raises
        ------
        DataError
            Another shape, or no images.
        """
        c, h, w = self.image_shape
        if (c, h, w) != (channels, image_size, image_size):
            raise DataError(
                f"{self.path}: /images holds {c}-channel {h}x{w} images, but the checkpoint's model "
                f"{model_name!r} expects {channels}-channel {image_size}x{image_size} images"
            )
        if self.n == 0:
            raise DataError(f"{self.path}: /images is empty")

    def read(self, start: int, stop: int, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Images and object ids of rows start, start + step, ... below stop.

        Parameters
        ----------
        start, stop, step : int
            The row range, as a slice.

        Returns
        -------
        images : numpy.ndarray
            Shape (n, C, H, W) float32.
        object_id : numpy.ndarray
            Shape (n,) int64 (the row numbers for a store without ``object_id``).

        Raises
        ------
        DataError
            If the read fails, naming the file and rows.
        """
        try:
            images = np.asarray(self.images[start:stop:step], dtype=np.float32)
            ids = (np.asarray(self.object_id[start:stop:step], dtype=np.int64) if self.object_id is not None
                   else np.arange(start, stop, step, dtype=np.int64))
        except OSError as err:
            raise DataError(f"{self.path}: reading /images rows {start}..{stop - 1} failed: {err}") from err
        return images.reshape(len(images), *self.image_shape), ids

    def read_columns(self, names: Iterable[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """Store columns a model's `reconstruct` needs (e.g. per-object `psf`) for rows start..stop-1.

        A per-object dataset (root or labels/) gives those rows, a shared one (e.g. one PSF (h, w)) is
        returned whole.

        Parameters
        ----------
        names : iterable of str
            Store columns (`locate_column`).
        start, stop : int
            The row range.

        Returns
        -------
        dict of str to numpy.ndarray
            (stop - start, ...) per object, or the shared array whole.

        Raises
        ------
        DataError
            A column the store lacks, or a failed read.
        """
        out = {}
        for name in names:
            found = locate_column(self.file, name, self.n)
            if found is None:
                raise DataError(f"{self.path}: the model needs the store column {name!r} to reconstruct "
                                   "its inputs, but the store has none")
            where, per_object = found
            try:
                out[name] = np.asarray(self.file[where][start:stop] if per_object else self.file[where][()])
            except OSError as err:
                raise DataError(f"{self.path}: reading /{where} rows {start}..{stop - 1} failed: {err}") from err
        return out

    def identity(self) -> dict[str, Any]:
        """What identifies the input's content cheaply (no full read): shapes, size, id samples.

        Returns
        -------
        dict of str to Any
            ``images_shape``, ``images_dtype``, ``file_bytes`` and ``object_id_sample_sha256``
            (of the first and last 1000 ids).
        """
        head = self.read(0, min(self.n, 1000))[1]
        tail = self.read(max(0, self.n - 1000), self.n)[1]
        digest = hashlib.sha256(head.tobytes() + tail.tobytes()).hexdigest()
        return {"images_shape": list(self.images.shape), "images_dtype": str(self.images.dtype),
                "file_bytes": os.path.getsize(self.path), "object_id_sample_sha256": digest}

    def close(self) -> None:
        """Close the store's file."""
        self.file.close()
