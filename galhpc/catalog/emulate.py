"""Survey emulation for synthetic catalogues: PSF convolution and noise.

The observed image of object i is its clean image convolved with a target PSF (a FITS
image or a GalSim profile) plus noise: white Gaussian of a given σ, or the correlated
noise of HST COSMOS (galsim.getCOSMOSNoise, scaled to σ² when σ is also given).  Noise
of object i is drawn from a generator seeded by (run seed, i), so it is the same on any
rank count.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galhpc.catalog.seeds import NOISE_STREAM, derived_seed

COSMOS_PIXEL_SCALE = 0.03  # arcsec per pixel of the COSMOS noise field
GALSIM_PROFILES = ("gaussian", "moffat", "airy", "kolmogorov")


class EmulationError(ValueError):
    """A PSF or noise setting that cannot be used."""


@dataclass(frozen=True)
class SurveyEmulation:
    """What to do to clean images; `psf` is a normalised (h, w) float32 array or None."""

    psf: np.ndarray | None = None
    noise_sigma: float | None = None
    cosmos_noise: bool = False
    pixel_scale: float = COSMOS_PIXEL_SCALE

    @property
    def active(self) -> bool:
        return self.psf is not None or self.noise_sigma is not None or self.cosmos_noise

    def describe(self) -> dict[str, Any]:
        """JSON-able summary that identifies the emulation (for fingerprints and /meta)."""
        psf_hash = None if self.psf is None else hashlib.sha256(np.ascontiguousarray(self.psf).tobytes()).hexdigest()
        return {"psf_sha256": psf_hash, "noise_sigma": self.noise_sigma, "cosmos_noise": self.cosmos_noise,
                "pixel_scale": self.pixel_scale}


def load_psf(spec: str, pixel_scale: float = COSMOS_PIXEL_SCALE, max_size: int = 63) -> np.ndarray:
    """A PSF image, normalised to unit sum, from a FITS file or a GalSim profile spec.

    Profile specs look like `moffat:fwhm=0.7,beta=3.5` or `gaussian:sigma=0.1` (arcsec);
    they are drawn at `pixel_scale` on an odd stamp of at most `max_size` pixels.
    """
    name, sep, params = spec.partition(":")
    if name.lower() in GALSIM_PROFILES and (sep or not Path(spec).exists()):
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
    import fitsio

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
    import galsim

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
            import galsim

            variance = emulation.noise_sigma**2 if emulation.noise_sigma is not None else 0.0
            self._cosmos = galsim.getCOSMOSNoise(cosmos_scale=COSMOS_PIXEL_SCALE, variance=variance)

    def observe(self, clean: torch.Tensor, first_index: int) -> torch.Tensor:
        """Observed images of objects first_index, first_index + 1, ... (same shape as clean)."""
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
        import galsim

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
