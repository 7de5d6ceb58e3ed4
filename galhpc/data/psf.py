"""Survey PSF images read from files, for models with a PSF output layer.

A `psf` model parameter of kind "file" (a FITS image, or a bare path) or "hdf5" (the one
PSF a training store holds) is read here and handed to the model
(`galhpc.checkpoint.assemble_model`); models read no files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from galhpc.data.store import read_dataset
from galhpc.formats.store import PSF
from galhpc.runtime.errors import PSFError

PSF_KINDS = ("galsim", "file", "hdf5", "store", "state")


def normalise_spec(spec: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """The canonical dict form of a `psf` model parameter.

    Parameters
    ----------
    spec : str or dict or None
        A bare path (a FITS image), or a mapping with ``kind`` in `PSF_KINDS` and that
        kind's fields (``path``, ``hdu``, ``dataset``, ...).

    Returns
    -------
    dict or None
        A copy with ``kind`` set (``{"kind": "file", "path": spec}`` for a string); None for None.

    Raises
    ------
    PSFError
        Neither a string nor a mapping with a known ``kind``.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        return {"kind": "file", "path": spec}
    if not isinstance(spec, dict) or spec.get("kind") not in PSF_KINDS:
        raise PSFError(f"psf must be a FITS path or a mapping with kind in {PSF_KINDS}, got {spec!r}")
    return dict(spec)


def read_psf_file(path: str | Path, hdu: int | str = 0) -> np.ndarray:
    """A 2-D PSF image from a FITS file (read with fitsio).

    Parameters
    ----------
    path : str or Path
        The FITS file.
    hdu : int or str
        The HDU holding the image: its number, or its EXTNAME.

    Returns
    -------
    numpy.ndarray
        The PSF (h, w) float32, in the file's pixels and normalisation.

    Raises
    ------
    PSFError
        The file is missing or unreadable, or the HDU is not a 2-D image.
    """
    import fitsio

    path = Path(path)
    if not path.is_file():
        raise PSFError(f"PSF file not found: {path}")
    try:
        image = fitsio.read(str(path), ext=hdu)
    except Exception as err:  # fitsio raises IOError/OSError/ValueError for bad files and HDUs
        raise PSFError(f"PSF file {path} (HDU {hdu!r}) is unreadable: {err}") from err
    if image is None or np.ndim(image) != 2:
        raise PSFError(f"PSF file {path} (HDU {hdu!r}) must hold a 2-D image, got shape {np.shape(image)}")
    return np.asarray(image, dtype=np.float32)


def read_psf_hdf5(path: str | Path, dataset: str = PSF) -> np.ndarray:
    """The single PSF stored in an HDF5 file, e.g. a GalSim training store.

    Parameters
    ----------
    path : str or Path
        The HDF5 file (opened read-only, without file locking).
    dataset : str
        The dataset holding the PSF.

    Returns
    -------
    numpy.ndarray
        The PSF (h, w) float32.

    Raises
    ------
    PSFError
        The file is missing or not HDF5, has no `dataset`, or holds per-object PSFs
        (N, h, w) rather than one.
    """
    path = Path(path)
    if not path.is_file():
        raise PSFError(f"PSF file not found: {path}")
    try:
        image = read_dataset(path, dataset)
    except OSError as err:
        raise PSFError(f"PSF file {path} is not readable HDF5: {err}") from err
    if image is None:
        raise PSFError(f"{path} has no dataset {dataset!r} (prepare GalSim sets with store_psf: true)")
    if image.ndim != 2:
        raise PSFError(f"{path}:{dataset} holds PSFs of shape {image.shape}; one (h, w) PSF is needed here "
                       "(per-object PSFs: use kind 'store')")
    return image.astype(np.float32)


def read_psf(spec: str | dict[str, Any] | None) -> np.ndarray | None:
    """The PSF image a "file" or "hdf5" spec names.

    Parameters
    ----------
    spec : str or dict or None
        A `psf` model parameter (see `normalise_spec`).

    Returns
    -------
    numpy.ndarray or None
        The PSF (h, w) float32; None for None and for the kinds that carry no file
        ("galsim", "store", "state": the model or the batches supply those).

    Raises
    ------
    PSFError
        A missing or unreadable file, a missing dataset, or not one 2-D PSF (message names the file).
    """
    spec = normalise_spec(spec)
    if spec is None:
        return None
    if spec["kind"] == "file":
        return read_psf_file(spec["path"], spec.get("hdu", 0))
    if spec["kind"] == "hdf5":
        return read_psf_hdf5(spec["path"], spec.get("dataset", PSF))
    return None
