"""Survey emulation for synthetic catalogues: PSF convolution and noise.

The observed image of object i is its clean image convolved with a target PSF (a FITS
image or a GalSim profile) plus noise: white Gaussian of a given σ, or the correlated
noise of HST COSMOS (galsim.getCOSMOSNoise, scaled to σ² when σ is also given).  Noise
of object i is drawn from a generator seeded by (run seed, i), so it is the same on any
rank count.

GalSim PSF profiles and COSMOS noise are drawn at a pixel scale: by default the one the
model was trained at (`resolve_pixel_scale`: read from the prep config recorded in the
checkpoint's training store), else 0.03″ (COSMOS).
"""

from __future__ import annotations

import hashlib
import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from galhpc.catalog.seeds import NOISE_STREAM, derived_seed

if TYPE_CHECKING:
    from galhpc.config import RunConfig

COSMOS_PIXEL_SCALE = 0.03  # arcsec per pixel of the COSMOS noise field
DEFAULT_PIXEL_SCALE = COSMOS_PIXEL_SCALE  # when neither the user nor the training store gives one
GALSIM_PROFILES = ("gaussian", "moffat", "airy", "kolmogorov")
# source kinds of galhpc-prep that draw their stamps at a known pixel scale: their options class
PIXEL_SCALE_SOURCES = {"galsim": "galhpc.data.synth:SimOptions", "galsim_stars": "galhpc.data.starsim:StarSimOptions"}


class EmulationError(ValueError):
    """A PSF or noise setting that cannot be used."""


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
        return self.psf is not None or self.noise_sigma is not None or self.cosmos_noise

    def describe(self) -> dict[str, Any]:
        """JSON-able summary that identifies the emulation (for fingerprints and /meta)."""
        psf_hash = None if self.psf is None else hashlib.sha256(np.ascontiguousarray(self.psf).tobytes()).hexdigest()
        return {"psf_sha256": psf_hash, "noise_sigma": self.noise_sigma, "cosmos_noise": self.cosmos_noise,
                "pixel_scale": self.pixel_scale}


@dataclass(frozen=True)
class PixelScale:
    """Arcsec per pixel for GalSim PSFs and COSMOS noise, and where the value came from."""

    value: float
    source: str
    known: bool = True  # False: the default, because nothing better was known


def store_pixel_scale(path: str | Path, image_size: int | None = None) -> tuple[float | None, str]:
    """(arcsec per pixel of a training store's images, a description of where it came from),
    or (None, why it is not known).

    Read from the prep config the store records: every source must be a simulated kind that
    draws at a pixel scale (galsim, galsim_stars: `options.pixel_scale`) and all must agree;
    the stamps are drawn at `prep.image_size`, so a `crop` then `resize` recipe scales it by
    crop_size / image_size.  FITS cutouts and real stamps record no scale.  With
    `image_size`, a store whose images have another size is not taken (not the model's store).
    """
    from galhpc.config import ConfigError, config_from_yaml_text
    from galhpc.data.sources import DataError
    from galhpc.data.store import read_store_info

    try:
        info = read_store_info(path)
    except DataError as err:
        return None, str(err)
    if image_size is not None and info.image_shape[-1] != image_size:
        return None, f"store {path} holds {info.image_shape[-1]}-pixel images, the model makes {image_size}-pixel ones"
    if not info.config:
        return None, f"store {path} records no prep config"
    try:
        prep = config_from_yaml_text(info.config).prep
    except ConfigError as err:
        return None, f"store {path}: its prep config is unreadable: {err}"
    scales = []
    for index, source in enumerate(prep.sources):
        where = f"store {path}: source {index} ({source.kind})"
        target = PIXEL_SCALE_SOURCES.get(source.kind)
        if target is None:
            return None, f"{where} records no pixel scale"
        module, name = target.split(":")
        try:
            options = getattr(importlib.import_module(module), name).from_options(source.options, where)
        except (ConfigError, ImportError, AttributeError) as err:
            return None, f"{where}: options unreadable: {err}"
        scales.append(float(options.pixel_scale))
    if not scales:
        return None, f"store {path} records no sources"
    if any(not math.isclose(s, scales[0], rel_tol=1e-9) for s in scales):
        return None, f"store {path} mixes sources of pixel scales {scales}"
    drawn = prep.image_size
    cropped = prep.crop_size if "crop" in prep.recipe and prep.crop_size is not None else drawn
    final = prep.image_size if "resize" in prep.recipe else cropped
    if final != info.image_shape[-1]:
        return None, f"store {path}: its prep config gives {final}-pixel images, it holds {info.image_shape[-1]}"
    value = scales[0] * cropped / final
    how = "" if cropped == final else f", {cropped}-pixel crop resized to {final}"
    return value, f"training store {path} ({prep.sources[0].kind} pixel_scale {scales[0]:g}{how})"


def resolve_pixel_scale(explicit: float | None, cfg: RunConfig | None = None) -> PixelScale:
    """The pixel scale to draw GalSim PSFs and COSMOS noise at.

    An explicit value wins; else the scale of the checkpoint config's training store
    (`cfg.train.store`, when that file exists and its images have the model's size, see
    `store_pixel_scale`); else DEFAULT_PIXEL_SCALE (0.03″, COSMOS) with `known=False`.
    """
    if explicit is not None:
        if not (math.isfinite(explicit) and explicit > 0):
            raise EmulationError(f"pixel scale must be a positive number of arcsec per pixel, got {explicit}")
        return PixelScale(float(explicit), "--pixel-scale")
    if cfg is None:
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
    """True when a --psf spec names a GalSim profile (drawn at a pixel scale), not a FITS file."""
    name, sep, _ = spec.partition(":")
    return name.lower() in GALSIM_PROFILES and (bool(sep) or not Path(spec).exists())


def load_psf(spec: str, pixel_scale: float = COSMOS_PIXEL_SCALE, max_size: int = 63) -> np.ndarray:
    """A PSF image, normalised to unit sum, from a FITS file or a GalSim profile spec.

    Profile specs look like `moffat:fwhm=0.7,beta=3.5` or `gaussian:sigma=0.1` (arcsec);
    they are drawn at `pixel_scale` on an odd stamp of at most `max_size` pixels.
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
