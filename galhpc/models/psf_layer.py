"""PSF output layer: convolve a decoder's output with the survey PSF.

A model whose last layer is this learns the *deconvolved* galaxy: its loss compares
PSF ⊛ decoder(z) with the observed image, so decoder(z) itself is the galaxy before the
PSF.  The PSF comes from one of (`psf` model parameter):

- ``{"kind": "galsim", "profile": "moffat", "fwhm": 0.7, "beta": 3.5, "pixel_scale": 0.2,
  "size": 25}`` (profiles: moffat, kolmogorov, gaussian) drawn without pixel response,
- ``{"kind": "file", "path": "psf.fits", "hdu": 0}`` (or just the path as a string),
- ``{"kind": "hdf5", "path": "store.h5", "dataset": "psf"}``: the one PSF a training store holds,
- ``{"kind": "store"}``: one PSF per object, read from the batch's ``"psf"`` entry,
- ``{"kind": "state", "shape": [h, w]}``: the PSF is whatever the model's state dict holds
  (used when a checkpoint must rebuild the model without the original file).

A fixed PSF is kept as a buffer, normalised to unit sum, so it travels in checkpoints.
Convolution goes through the differentiable kernel `galhpc.kernels.convolve_psf`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from galhpc.kernels import convolve_psf
from galhpc.runtime.errors import PSFError
from galhpc.runtime.files import open_h5_readonly

log = logging.getLogger("galhpc.models.psf_layer")

PSF_KINDS = ("galsim", "file", "hdf5", "store", "state")


def normalise_spec(spec: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """The canonical dict form of a `psf` parameter (a bare string is a FITS path)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return {"kind": "file", "path": spec}
    if not isinstance(spec, dict) or spec.get("kind") not in PSF_KINDS:
        raise PSFError(f"psf must be a FITS path or a mapping with kind in {PSF_KINDS}, got {spec!r}")
    return dict(spec)


def galsim_psf_image(profile: str = "moffat", fwhm: float = 0.7, beta: float = 3.5,
                     pixel_scale: float = 0.2, size: int = 25) -> np.ndarray:
    """A GalSim PSF profile sampled on a size x size grid without pixel response."""
    import galsim

    if profile == "moffat":
        psf = galsim.Moffat(beta=beta, fwhm=fwhm)
    elif profile == "kolmogorov":
        psf = galsim.Kolmogorov(fwhm=fwhm)
    elif profile == "gaussian":
        psf = galsim.Gaussian(fwhm=fwhm)
    else:
        raise PSFError(f"unknown GalSim PSF profile {profile!r}; choose moffat, kolmogorov or gaussian")
    return psf.drawImage(nx=size, ny=size, scale=pixel_scale, method="no_pixel").array.astype(np.float32)


def read_psf_file(path: str | Path, hdu: int | str = 0) -> np.ndarray:
    """A 2-D PSF image from a FITS file (fitsio)."""
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


def read_psf_hdf5(path: str | Path, dataset: str = "psf") -> np.ndarray:
    """The single (h, w) PSF stored in an HDF5 file, e.g. a GalSim training store."""
    path = Path(path)
    if not path.is_file():
        raise PSFError(f"PSF file not found: {path}")
    try:
        with open_h5_readonly(path) as f:
            if dataset not in f:
                raise PSFError(f"{path} has no dataset {dataset!r} (prepare GalSim sets with store_psf: true)")
            image = f[dataset][()]
    except OSError as err:
        raise PSFError(f"PSF file {path} is not readable HDF5: {err}") from err
    if image.ndim != 2:
        raise PSFError(f"{path}:{dataset} holds PSFs of shape {image.shape}; one (h, w) PSF is needed here "
                       "(per-object PSFs: use kind 'store')")
    return image.astype(np.float32)


def check_psf(psf: np.ndarray | torch.Tensor, where: str) -> torch.Tensor:
    """A finite, positive-sum PSF (h, w) or (B, h, w), normalised to unit sum per PSF."""
    psf = torch.as_tensor(psf, dtype=torch.float32)
    if psf.dim() not in (2, 3):
        raise PSFError(f"{where}: PSF must be (h, w) or (B, h, w), got shape {tuple(psf.shape)}")
    if not torch.isfinite(psf).all():
        raise PSFError(f"{where}: PSF has NaN or inf pixels")
    total = psf.sum(dim=(-2, -1), keepdim=True)
    if (total <= 0).any():
        raise PSFError(f"{where}: PSF must have a positive sum")
    return psf / total


class PSFLayer(nn.Module):
    """Convolves images (B, C, H, W) with a fixed PSF buffer or per-object PSFs."""

    def __init__(self, spec: str | dict[str, Any]) -> None:
        super().__init__()
        spec = normalise_spec(spec)
        self.kind = spec["kind"]
        if self.kind == "galsim":
            options = {k: v for k, v in spec.items() if k != "kind"}
            psf = check_psf(galsim_psf_image(**options), f"GalSim PSF {options}")
        elif self.kind == "file":
            psf = check_psf(read_psf_file(spec["path"], spec.get("hdu", 0)), f"PSF file {spec['path']}")
        elif self.kind == "hdf5":
            dataset = spec.get("dataset", "psf")
            psf = check_psf(read_psf_hdf5(spec["path"], dataset), f"PSF {spec['path']}:{dataset}")
        elif self.kind == "state":
            psf = torch.zeros(tuple(spec["shape"]))
        else:
            psf = torch.zeros(0)
        self.register_buffer("psf", psf)
        log.debug("PSF layer: kind %s, PSF shape %s", self.kind, tuple(psf.shape))

    @property
    def fixed(self) -> bool:
        return self.kind != "store"

    def spec_for_checkpoint(self) -> dict[str, Any]:
        """A spec that rebuilds this layer from a state dict alone (no file, no GalSim)."""
        return {"kind": "store"} if self.kind == "store" else {"kind": "state", "shape": list(self.psf.shape)}

    def forward(self, images: torch.Tensor, psf: torch.Tensor | None = None) -> torch.Tensor:
        """PSF ⊛ images; `psf` (B, h, w) or (h, w) overrides the fixed PSF (required for kind store)."""
        if psf is None:
            if not self.fixed:
                raise PSFError("this model's PSF comes from the data (kind 'store'), but no 'psf' was given "
                               "(store the PSF with the images, e.g. store_psf: true for GalSim sets)")
            psf = self.psf
        else:
            psf = check_psf(psf.to(images.device), "batch 'psf'")
        return convolve_psf(images, psf)
