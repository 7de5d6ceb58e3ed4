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

Kinds "file" and "hdf5" are read by the data layer (`galhpc.data.psf.read_psf`) and handed
in as `image` (`galhpc.checkpoint.assemble_model` does it for configs): the layer reads no
file.  A fixed PSF is kept as a buffer, normalised to unit sum, so it travels in checkpoints.
Convolution goes through the differentiable kernel `galhpc.kernels.convolve_psf`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from galhpc.data.psf import normalise_spec
from galhpc.kernels import convolve_psf
from galhpc.runtime.errors import PSFError

log = logging.getLogger("galhpc.models.psf_layer")



def galsim_psf_image(profile: str = "moffat", fwhm: float = 0.7, beta: float = 3.5,
                     pixel_scale: float = 0.2, size: int = 25) -> np.ndarray:
    """A GalSim PSF profile sampled on a size x size grid without pixel response.

    Parameters
    ----------
    profile : {"moffat", "kolmogorov", "gaussian"}
        The GalSim profile.
    fwhm : float
        Full width at half maximum, in arcsec.
    beta : float
        Moffat index (moffat only).
    pixel_scale : float
        Arcsec per pixel of the grid.
    size : int
        Side of the grid, in pixels.

    Returns
    -------
    numpy.ndarray
        (size, size) float32, the profile's surface brightness per pixel (not yet normalised).

    Raises
    ------
    PSFError
        For an unknown profile.
    """
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


def check_psf(psf: np.ndarray | torch.Tensor, where: str) -> torch.Tensor:
    """A finite, positive-sum PSF, normalised to unit sum per PSF.

    Parameters
    ----------
    psf : numpy.ndarray or torch.Tensor
        (h, w) or (B, h, w) pixel values.
    where : str
        Where the PSF came from, for the message.

    Returns
    -------
    torch.Tensor
        float32 of psf's shape, each (h, w) summing to 1.

    Raises
    ------
    PSFError
        For another shape, NaN or inf pixels, or a sum ≤ 0.
    """
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

    def __init__(self, spec: str | dict[str, Any], image: np.ndarray | None = None) -> None:
        """Build the layer from a spec (see the module docstring).

        Parameters
        ----------
        spec : str or dict
            A PSF spec; a string is a FITS path (kind "file").
        image : numpy.ndarray, optional
            (h, w), the PSF read from the file a "file" or "hdf5" spec names
            (`galhpc.data.psf.read_psf(spec)`); required for those kinds.

        Raises
        ------
        PSFError
            For a "file"/"hdf5" spec without `image`, or an invalid PSF.
        """
        super().__init__()
        spec = normalise_spec(spec)
        self.kind = spec["kind"]
        if self.kind == "galsim":
            options = {k: v for k, v in spec.items() if k != "kind"}
            psf = check_psf(galsim_psf_image(**options), f"GalSim PSF {options}")
        elif self.kind in ("file", "hdf5"):
            if image is None:
                raise PSFError(f"PSF {spec['path']} (kind {self.kind!r}): models read no files; build the model with "
                               "galhpc.checkpoint.assemble_model, or hand in galhpc.data.psf.read_psf(spec) as image")
            psf = check_psf(image, f"PSF {spec['path']}")
        elif self.kind == "state":
            psf = torch.zeros(tuple(spec["shape"]))
        else:
            psf = torch.zeros(0)
        self.register_buffer("psf", psf)
        log.debug("PSF layer: kind %s, PSF shape %s", self.kind, tuple(psf.shape))

    @property
    def fixed(self) -> bool:
        """True when the PSF is held by the layer; False for kind "store" (per-object PSFs from the batch)."""
        return self.kind != "store"

    def spec_for_checkpoint(self) -> dict[str, Any]:
        """A spec that rebuilds this layer from a state dict alone (no file, no GalSim).

        Returns
        -------
        dict
            ``{"kind": "store"}``, or ``{"kind": "state", "shape": [h, w]}`` for a fixed PSF.
        """
        return {"kind": "store"} if self.kind == "store" else {"kind": "state", "shape": list(self.psf.shape)}

    def forward(self, images: torch.Tensor, psf: torch.Tensor | None = None) -> torch.Tensor:
        """PSF ⊛ images, the convolution of the PSF output layer (Cheng et al. 2020).

        Parameters
        ----------
        images : torch.Tensor
            (B, C, H, W) deconvolved images.
        psf : torch.Tensor, optional
            (B, h, w) or (h, w) pixels, overriding the fixed PSF (required for kind store);
            normalised to unit sum here.

        Returns
        -------
        torch.Tensor
            (B, C, H, W) convolved images in the input's units (flux is kept).

        Raises
        ------
        PSFError
            For kind store without `psf`, or an invalid `psf`.
        """
        if psf is None:
            if not self.fixed:
                raise PSFError("this model's PSF comes from the data (kind 'store'), but no 'psf' was given "
                               "(store the PSF with the images, e.g. store_psf: true for GalSim sets)")
            psf = self.psf
        else:
            psf = check_psf(psf.to(images.device), "batch 'psf'")
        return convolve_psf(images, psf)
