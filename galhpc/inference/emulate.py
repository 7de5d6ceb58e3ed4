"""Survey emulation for synthetic catalogues: PSF convolution and noise.

The observed image of object i is its clean image convolved with a target PSF (a FITS
image or a GalSim profile) plus noise: white Gaussian of a given σ, or the correlated
noise of HST COSMOS (galsim.getCOSMOSNoise, scaled to σ² when σ is also given).  Noise
of object i is drawn from a generator seeded by (run seed, i), so it is the same on any
rank count.

GalSim PSF profiles and COSMOS noise are drawn at a pixel scale: by default the one the
model was trained at (`resolve_pixel_scale`: recorded in the checkpoint by the trainer,
or for older checkpoints read from the prep config of the checkpoint's training store),
else 0.03″ (COSMOS).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from galhpc.extras import require
from galhpc.inference.seeds import NOISE_STREAM, derived_seed
from galhpc.runtime.errors import EmulationError

if TYPE_CHECKING:
    from galhpc.config import RunConfig

COSMOS_PIXEL_SCALE = 0.03  # arcsec per pixel of the COSMOS noise field
DEFAULT_PIXEL_SCALE = COSMOS_PIXEL_SCALE  # when neither the user nor the training store gives one
GALSIM_PROFILES = ("gaussian", "moffat", "airy", "kolmogorov")


@dataclass(frozen=True)
class SurveyEmulation:
    """What to do to clean images; `psf` is a normalised (h, w) float32 array or None."""

    psf: np.ndarray | None = None
    noise_sigma: float | None = None
    cosmos_noise: bool = False
    pixel_scale: float = COSMOS_PIXEL_SCALE
    pixel_scale_source: str = field(default="", compare=False)  # where pixel_scale came from (not identity)

    @property
    def active(self) -> bool:
        """Whether any step (PSF, white noise, COSMOS noise) is applied."""
        return self.psf is not None or self.noise_sigma is not None or self.cosmos_noise

    def describe(self) -> dict[str, Any]:
        """JSON-able summary that identifies the emulation (for fingerprints).

        The pixel scale is part of it only with COSMOS noise, the one step it changes once the
        PSF is drawn (the PSF's hash covers its drawing), so a default that resolves
        differently elsewhere does not block resuming a run it cannot change.

        Returns
        -------
        dict
            ``psf_sha256``, ``noise_sigma``, ``cosmos_noise`` (and ``pixel_scale`` with COSMOS noise).
        """
        psf_hash = None if self.psf is None else hashlib.sha256(np.ascontiguousarray(self.psf).tobytes()).hexdigest()
        summary = {"psf_sha256": psf_hash, "noise_sigma": self.noise_sigma, "cosmos_noise": self.cosmos_noise}
        return {**summary, "pixel_scale": self.pixel_scale} if self.cosmos_noise else summary


@dataclass(frozen=True)
class PixelScale:
    """Arcsec per pixel for GalSim PSFs and COSMOS noise, and where the value came from."""

    value: float
    source: str
    known: bool = True  # False: the default, because nothing better was known


def resolve_pixel_scale(explicit: float | None, cfg: RunConfig | None = None,
                        recorded: tuple[float | None, str] | None = None) -> PixelScale:
    """The pixel scale to draw GalSim PSFs and COSMOS noise at.

    An explicit value wins; else the training pixel scale the checkpoint records
    (`recorded`, see `galhpc.checkpoint.recorded_pixel_scale`: (value or None, where it
    came from or why it is unknown)); for older checkpoints that record none, the scale of
    the checkpoint config's training store (`cfg.train.store`, when that file exists and
    its images have the model's size, see `galhpc.data.store.store_pixel_scale`); else
    DEFAULT_PIXEL_SCALE (0.03″, COSMOS) with `known=False`.

    Parameters
    ----------
    explicit : float or None
        ``--pixel-scale`` (arcsec per pixel).
    cfg : RunConfig, optional
        The checkpoint's config.
    recorded : (float or None, str), optional
        What the checkpoint records.

    Returns
    -------
    PixelScale
        The value (arcsec per pixel), its origin, and whether it is known.

    Raises
    ------
    EmulationError
        An explicit value that is not a positive finite number.
    """
    from galhpc.data.store import store_pixel_scale

    if explicit is not None:
        if not (math.isfinite(explicit) and explicit > 0):
            raise EmulationError(f"pixel scale must be a positive number of arcsec per pixel, got {explicit}")
        return PixelScale(float(explicit), "--pixel-scale")
    if recorded is not None:
        value, where = recorded
        if value is not None:
            return PixelScale(value, f"recorded in the checkpoint: {where}")
        why = f"the checkpoint records none: {where}"
    elif cfg is None:
        why = "no checkpoint config"
    elif not Path(cfg.train.store).is_file():
        why = f"the checkpoint's training store {cfg.train.store} is not found (from {Path.cwd()})"
    else:
        value, why = store_pixel_scale(cfg.train.store, cfg.model.image_size)
        if value is not None:
            return PixelScale(value, why)
    return PixelScale(DEFAULT_PIXEL_SCALE, f"default (COSMOS), as the training pixel scale is unknown: {why}",
                      known=False)


def is_galsim_profile(spec: str) -> bool:
    """Whether a --psf spec names a GalSim profile (drawn at a pixel scale), not a FITS file.

    Parameters
    ----------
    spec : str
        ``moffat:fwhm=0.7,beta=3.5``, or a FITS path.

    Returns
    -------
    bool
    """
    name, sep, _ = spec.partition(":")
    return name.lower() in GALSIM_PROFILES and (bool(sep) or not Path(spec).exists())


def load_psf(spec: str, pixel_scale: float = COSMOS_PIXEL_SCALE, max_size: int = 63) -> np.ndarray:
    """A PSF image, normalised to unit sum, from a FITS file or a GalSim profile spec.

    Profile specs look like `moffat:fwhm=0.7,beta=3.5` or `gaussian:sigma=0.1` (arcsec);
    they are drawn at `pixel_scale` on an odd stamp of at most `max_size` pixels.

    Parameters
    ----------
    spec : str
        A FITS file or a GalSim profile spec.
    pixel_scale : float, optional
        Arcsec per pixel for a profile (default 0.03, COSMOS).
    max_size : int, optional
        Largest stamp side for a profile, pixels.

    Returns
    -------
    numpy.ndarray
        (h, w) float32, sum 1.

    Raises
    ------
    EmulationError
        An unreadable or non-2-D FITS image, a bad profile spec, or a PSF without a positive finite sum.
    """
    name, _, params = spec.partition(":")
    if is_galsim_profile(spec):
        psf = _draw_galsim_profile(name.lower(), params, pixel_scale, max_size)
        where = f"GalSim profile {spec!r}"
    else:
        psf = _read_fits_psf(Path(spec))
        where = f"PSF file {spec}"
    total = float(psf.sum())
    if not np.isfinite(psf).all() or total <= 0:
        raise EmulationError(f"{where}: the PSF must be finite with a positive sum (sum = {total})")
    return (psf / total).astype(np.float32)


def _read_fits_psf(path: Path) -> np.ndarray:
    fitsio = require("fitsio", "fits", "a FITS PSF (galhpc-generate --psf)")

    if not path.is_file():
        raise EmulationError(
            f"PSF {str(path)!r} is neither a FITS file nor a GalSim profile "
            f"({', '.join(GALSIM_PROFILES)}:key=value,...)"
        )
    try:
        data = fitsio.read(str(path))
    except Exception as err:  # fitsio raises OSError and ValueError variants
        raise EmulationError(f"PSF file {path}: not a readable FITS image: {err}") from err
    if data is None or np.asarray(data).ndim != 2:
        raise EmulationError(f"PSF file {path}: primary image must be 2-D, got shape {np.shape(data)}")
    return np.asarray(data, dtype=np.float64)


def _draw_galsim_profile(name: str, params: str, pixel_scale: float, max_size: int) -> np.ndarray:
    galsim = require("galsim", "sim", "GalSim PSF profiles (galhpc-generate --psf)")

    kwargs: dict[str, float] = {}
    for item in filter(None, params.split(",")):
        key, eq, value = item.partition("=")
        try:
            kwargs[key.strip()] = float(value)
        except ValueError:
            raise EmulationError(f"PSF profile parameter {item!r}: expected key=number") from None
        if not eq:
            raise EmulationError(f"PSF profile parameter {item!r}: expected key=number")
    cls = {"gaussian": galsim.Gaussian, "moffat": galsim.Moffat, "airy": galsim.Airy,
           "kolmogorov": galsim.Kolmogorov}[name]
    try:
        profile = cls(**kwargs)
        size = min(max_size, profile.getGoodImageSize(pixel_scale)) | 1
        return profile.drawImage(nx=size, ny=size, scale=pixel_scale).array.astype(np.float64)
    except (TypeError, galsim.GalSimError) as err:
        raise EmulationError(f"GalSim profile {name}:{params}: {err}") from err


class Observer:
    """Applies a SurveyEmulation to batches of clean images (B, C, H, W)."""

    def __init__(self, emulation: SurveyEmulation, seed: int, device: torch.device | str = "cpu") -> None:
        self.emulation = emulation
        self.seed = seed
        self._cosmos = None
        # made here, outside inference mode, so the kernel's PSF-spectrum cache can track it
        self._psf = torch.from_numpy(emulation.psf).to(device) if emulation.psf is not None else None
        if emulation.cosmos_noise:
            galsim = require("galsim", "sim", "COSMOS noise (galhpc-generate --cosmos-noise)")

            variance = emulation.noise_sigma**2 if emulation.noise_sigma is not None else 0.0
            self._cosmos = galsim.getCOSMOSNoise(cosmos_scale=COSMOS_PIXEL_SCALE, variance=variance)

    def observe(self, clean: torch.Tensor, first_index: int) -> torch.Tensor:
        """Observed images of objects first_index, first_index + 1, ...

        Parameters
        ----------
        clean : torch.Tensor
            (N, C, H, W) float32 clean images.
        first_index : int
            Object index of the first image (keys the noise, `galhpc.inference.seeds`).

        Returns
        -------
        torch.Tensor
            Same shape as `clean`: PSF-convolved, with noise added.
        """
        out = clean
        if self._psf is not None:
            from galhpc.kernels import convolve_psf

            out = convolve_psf(out, self._psf)
        if self._cosmos is not None:
            out = out + self._cosmos_noise(out.shape, first_index).to(out.device, out.dtype)
        elif self.emulation.noise_sigma is not None:
            out = out + self._white_noise(out.shape, first_index).to(out.device, out.dtype)
        return out

    def _white_noise(self, shape: torch.Size, first_index: int) -> torch.Tensor:
        planes = [
            np.random.default_rng(derived_seed(self.seed, first_index + b, NOISE_STREAM)).standard_normal(shape[1:])
            for b in range(shape[0])
        ]
        return torch.from_numpy(np.stack(planes).astype(np.float32) * np.float32(self.emulation.noise_sigma))

    def _cosmos_noise(self, shape: torch.Size, first_index: int) -> torch.Tensor:
        galsim = require("galsim", "sim", "COSMOS noise (galhpc-generate --cosmos-noise)")

        n, c, h, w = shape
        noise = np.empty((n, c, h, w), dtype=np.float32)
        for b in range(n):
            rng = galsim.BaseDeviate(derived_seed(self.seed, first_index + b, NOISE_STREAM) % (2**31 - 1) + 1)
            field = self._cosmos.copy(rng=rng)
            for ch in range(c):
                image = galsim.ImageF(w, h, scale=self.emulation.pixel_scale)
                image.addNoise(field)
                noise[b, ch] = image.array
        return torch.from_numpy(noise)
