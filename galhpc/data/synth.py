"""Simulated galaxy stamps with GalSim: de Vaucouleurs bulge + exponential disk.

Every object draws its parameters from its own generator, a pure function of
(source.seed, object index), so a set is identical whatever the number of workers.
The true parameters are stored as label columns; `morph_class` (0 disk-dominated,
1 intermediate, 2 bulge-dominated, from the bulge fraction) and `has_companion` are
the ground truth that clustering is evaluated against.

Knobs live in `SourceConfig.options` (see `SimOptions`); stamps are drawn directly at
`prep.image_size`.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from galhpc.config import ConfigError, PrepConfig, SourceConfig, options_dataclass
from galhpc.data.sources import Block, object_rng, object_seed
from galhpc.extras import require

log = logging.getLogger("galhpc.data.synth")

MORPH_CLASS_EDGES = (1 / 3, 2 / 3)  # bulge fraction edges: disk | intermediate | bulge


@dataclass(frozen=True)
class SimOptions:
    """Distributions of the simulated set (angles in degrees, sizes in arcsec)."""

    pixel_scale: float = 0.2
    flux_min: float = 2e3  # flux is log-uniform in [flux_min, flux_max]
    flux_max: float = 5e4
    bulge_fraction_min: float = 0.0
    bulge_fraction_max: float = 1.0
    disk_hlr_median: float = 0.9  # log-normal half-light radius of the disk
    disk_hlr_sigma: float = 0.3  # σ of ln(hlr)
    bulge_to_disk_size: float = 0.5  # bulge hlr = this x disk hlr
    q_min: float = 0.3  # axis ratio uniform in [q_min, 1]
    max_shift: float = 0.5  # sub-pixel centroid shift, uniform in ±max_shift pixels
    companion_probability: float = 0.2
    companion_distance: tuple[float, float] = (1.5, 4.0)  # arcsec
    companion_flux_ratio: tuple[float, float] = (0.1, 0.6)
    psf: str = "moffat"  # moffat | kolmogorov
    psf_fwhm: float | tuple[float, float] = 0.7  # arcsec; a pair [lo, hi] gives per-object PSFs
    moffat_beta: float = 3.5
    psf_size: int = 25  # stored PSF stamp (odd)
    noise: str = "gaussian"  # gaussian | cosmos
    noise_sigma: float = 10.0  # per pixel, in flux units
    store_truth: bool = False
    store_psf: bool = False
    # size-scaled stamps (the Galaxy Zoo convention): each stamp spans size_scaled x R90 of
    # its galaxy, i.e. pixel scale size_scaled x R90 / image_size, with the sky noise per
    # pixel scaled by the pixel side (constant noise per unit area); None: fixed pixel_scale
    size_scaled: float | None = None

    @classmethod
    def from_options(cls, options: dict, where: str) -> SimOptions:
        """The options of a source, checked field by field.

        Parameters
        ----------
        options : dict
            Field name -> value (`options_dataclass` types each one).
        where : str
            The source, for the one-line error.

        Returns
        -------
        SimOptions

        Raises
        ------
        ConfigError
            An unknown or mistyped field; `psf` other than moffat/kolmogorov, `noise` other
            than gaussian/cosmos.
        """
        opts = options_dataclass(cls, options, where)
        if opts.psf not in ("moffat", "kolmogorov"):
            raise ConfigError(f"{where}: psf must be moffat or kolmogorov, got {opts.psf!r}")
        if opts.noise not in ("gaussian", "cosmos"):
            raise ConfigError(f"{where}: noise must be gaussian or cosmos, got {opts.noise!r}")
        return opts

    @property
    def per_object_psf(self) -> bool:
        """One PSF image per object: per-object FWHMs, or per-object pixel scales."""
        return isinstance(self.psf_fwhm, tuple) or self.size_scaled is not None


LABELS = (
    "flux", "bulge_fraction", "disk_hlr", "bulge_hlr", "q", "angle", "shift_x", "shift_y",
    "psf_fwhm", "has_companion", "companion_flux", "companion_dx", "companion_dy", "morph_class",
    "edge_on", "ellipticity", "log_hlr", "r90", "pixel_scale",
)  # fmt: skip
EDGE_ON_Q = 0.4  # axis ratio below which a disk counts as seen edge-on (the `edge_on` class)


def draw_parameters(opts: SimOptions, seed: int, index: int) -> dict[str, float]:
    """The true parameters of object `index`: a pure function of (opts, seed, index).

    Parameters
    ----------
    opts : SimOptions
        The set's distributions.
    seed : int
        The source's seed.
    index : int
        The object's index.

    Returns
    -------
    dict
        The `LABELS` but ``pixel_scale``: flux (counts), bulge_fraction, disk_hlr and
        bulge_hlr (arcsec), q, angle (degrees), shift_x/shift_y (pixels), psf_fwhm (arcsec),
        companion flux and offset (arcsec), morph_class (0 disk, 1 intermediate, 2 bulge),
        edge_on (q < `EDGE_ON_Q`), ellipticity (1-q)/(1+q), log_hlr (log10 arcsec), r90 (arcsec).
    """
    rng = object_rng(seed, index)
    bulge_fraction = rng.uniform(opts.bulge_fraction_min, opts.bulge_fraction_max)
    disk_hlr = opts.disk_hlr_median * np.exp(opts.disk_hlr_sigma * rng.standard_normal())
    params = {
        "flux": float(np.exp(rng.uniform(np.log(opts.flux_min), np.log(opts.flux_max)))),
        "bulge_fraction": float(bulge_fraction),
        "disk_hlr": float(disk_hlr),
        "bulge_hlr": float(disk_hlr * opts.bulge_to_disk_size),
        "q": float(rng.uniform(opts.q_min, 1.0)),
        "angle": float(rng.uniform(0.0, 180.0)),
        "shift_x": float(rng.uniform(-opts.max_shift, opts.max_shift)),
        "shift_y": float(rng.uniform(-opts.max_shift, opts.max_shift)),
        "psf_fwhm": float(rng.uniform(*opts.psf_fwhm) if isinstance(opts.psf_fwhm, tuple) else opts.psf_fwhm),
        "morph_class": int(np.searchsorted(MORPH_CLASS_EDGES, bulge_fraction, side="right")),
    }
    params["edge_on"] = int(params["q"] < EDGE_ON_Q)
    params["ellipticity"] = (1.0 - params["q"]) / (1.0 + params["q"])  # |e| of the shear (galsim "g")
    params["log_hlr"] = float(np.log10(_half_light_radius(params)))
    params["r90"] = float(light_radius(params, 0.9))  # arcsec
    has_companion = rng.random() < opts.companion_probability
    distance, phi = rng.uniform(*opts.companion_distance), rng.uniform(0, 2 * np.pi)
    ratio = rng.uniform(*opts.companion_flux_ratio)
    params["has_companion"] = int(has_companion)
    params["companion_flux"] = float(ratio * params["flux"]) if has_companion else 0.0
    params["companion_dx"] = float(distance * np.cos(phi)) if has_companion else 0.0
    params["companion_dy"] = float(distance * np.sin(phi)) if has_companion else 0.0
    return params


def _half_light_radius(p: dict[str, float]) -> float:
    """Half-light radius (arcsec, circularised, before the PSF) of the bulge + disk."""
    return light_radius(p, 0.5)


def light_radius(p: dict[str, float], fraction: float) -> float:
    """Radius enclosing `fraction` of the flux of a bulge + disk, before the PSF.

    The profile is f_b deVauc(r_b) + (1 - f_b) Exp(r_d); the radius is found by bisection on
    the analytic enclosed-flux profiles (Sersic n = 4 and n = 1, b_n solving γ(2n, b_n) = Γ(2n)/2).

    Parameters
    ----------
    p : dict
        ``bulge_fraction``, ``disk_hlr`` and ``bulge_hlr`` (arcsec), as `draw_parameters`.
    fraction : float
        Of the total flux, in (0, 1): 0.5 gives the half-light radius, 0.9 R90.

    Returns
    -------
    float
        The circularised radius in arcsec.
    """
    from scipy.special import gammainc

    fb, rd, rb = p["bulge_fraction"], p["disk_hlr"], p["bulge_hlr"]
    b1, b4 = 1.678347, 7.669249  # Sersic b_n for n = 1 and n = 4

    def enclosed(r: float) -> float:
        return fb * gammainc(8.0, b4 * (r / rb) ** 0.25) + (1.0 - fb) * gammainc(2.0, b1 * r / rd)

    lo, hi = 0.0, 10.0 * max(rd, rb)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if enclosed(mid) < fraction else (lo, mid)
    return 0.5 * (lo + hi)


def _psf(galsim, opts: SimOptions, fwhm: float):
    if opts.psf == "moffat":
        return galsim.Moffat(beta=opts.moffat_beta, fwhm=fwhm)
    return galsim.Kolmogorov(fwhm=fwhm)


def _galaxy(galsim, p: dict[str, float]):
    """Bulge + disk (+ companion, a small exponential disk) in arcsec, before the PSF."""
    disk = galsim.Exponential(half_light_radius=p["disk_hlr"], flux=1.0 - p["bulge_fraction"])
    bulge = galsim.DeVaucouleurs(half_light_radius=p["bulge_hlr"], flux=p["bulge_fraction"])
    shape = galsim.Shear(q=p["q"], beta=p["angle"] * galsim.degrees)
    galaxy = galsim.Add([disk, bulge]).shear(shape).withFlux(p["flux"])
    if p["has_companion"]:
        companion = galsim.Exponential(half_light_radius=0.5 * p["disk_hlr"], flux=p["companion_flux"])
        galaxy = galsim.Add([galaxy, companion.shift(p["companion_dx"], p["companion_dy"])])
    return galaxy


def simulate_stamp(opts: SimOptions, size: int, seed: int, index: int) -> dict[str, np.ndarray | dict]:
    """One object: noisy PSF-convolved image, truth, PSF image and parameters.

    Parameters
    ----------
    opts : SimOptions
        The set's distributions, noise and what to store.
    size : int
        Stamp side in pixels.
    seed, index : int
        The source's seed and the object's index (`draw_parameters`, `object_seed`).

    Returns
    -------
    dict
        ``image`` (size, size) float32 in counts with the noise added; ``params``
        (`draw_parameters` plus ``pixel_scale``, arcsec); with `opts.store_truth`, ``truth``
        (size, size) float32 (noise-free, PSF-free, sampled at pixel centres); with
        `opts.store_psf`, ``psf`` (`psf_image`).
    """
    galsim = require("galsim", "sim", "simulated GalSim sources (galhpc-prep kind galsim)")

    p = draw_parameters(opts, seed, index)
    scale = opts.pixel_scale if opts.size_scaled is None else opts.size_scaled * p["r90"] / size
    p["pixel_scale"] = float(scale)
    noise_sigma = opts.noise_sigma * scale / opts.pixel_scale
    galaxy = _galaxy(galsim, p)
    psf = _psf(galsim, opts, p["psf_fwhm"])
    offset = (p["shift_x"], p["shift_y"])
    image = galsim.Convolve([galaxy, psf]).drawImage(nx=size, ny=size, scale=scale, offset=offset)
    noise_rng = np.random.default_rng(object_seed(seed, index))  # numpy: much faster than galsim deviates
    if opts.noise == "gaussian":
        image.array[:] += noise_rng.normal(0.0, noise_sigma, image.array.shape)
    else:
        image.array[:] += noise_sigma * cosmos_noise(noise_rng, size, scale)
    out: dict[str, np.ndarray | dict] = {"image": image.array.astype(np.float32), "params": p}
    if opts.store_truth:
        truth = galaxy.drawImage(nx=size, ny=size, scale=scale, offset=offset, method="no_pixel")
        out["truth"] = truth.array.astype(np.float32)
    if opts.store_psf:
        out["psf"] = psf_image(opts, p["psf_fwhm"], scale)
    return out


@functools.lru_cache(maxsize=8)
def _cosmos_amplitude(size: int, scale: float) -> np.ndarray:
    """Square root of the power spectrum of COSMOS F814W noise, unit variance.

    From galsim.getCOSMOSNoise, on a (2 size + 1)^2 periodic grid of pixel `scale` arcsec.
    """
    galsim = require("galsim", "sim", "simulated GalSim sources (galhpc-prep kind galsim)")

    m = 2 * size + 1  # odd, so lag 0 falls on a pixel; twice the stamp, so no wrap-around
    corr = galsim.getCOSMOSNoise().drawImage(galsim.ImageD(m, m, scale=scale)).array
    power = np.fft.rfft2(np.fft.ifftshift(corr / corr[size, size])).real
    return np.sqrt(np.clip(power, 0.0, None))


def cosmos_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """A field of unit-variance COSMOS-correlated noise.

    White noise filtered by the square root of the COSMOS power spectrum (what
    galsim.CorrelatedNoise does, with the spectrum computed once per process instead of once
    per stamp).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the (2 size + 1)^2 white-noise draws.
    size : int
        Side of the field in pixels.
    scale : float
        Pixel scale in arcsec (the correlation is in arcsec).

    Returns
    -------
    numpy.ndarray
        (size, size) float64, unit variance (multiply by σ).
    """
    amplitude = _cosmos_amplitude(size, float(scale))
    m = 2 * size + 1
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((m, m))) * amplitude, s=(m, m))
    return field[:size, :size]


def psf_image(opts: SimOptions, fwhm: float, scale: float | None = None) -> np.ndarray:
    """The PSF convolved with the pixel response, unit sum.

    `truth` is the galaxy sampled at pixel centres (no pixel response), so
    image ≈ truth ⊛ psf + noise, the pair a deconvolution model needs.

    Parameters
    ----------
    opts : SimOptions
        The PSF kind (Moffat or Kolmogorov), its β and the stamp side `psf_size`.
    fwhm : float
        The PSF's FWHM in arcsec.
    scale : float or None
        Pixel scale in arcsec (None: `opts.pixel_scale`).

    Returns
    -------
    numpy.ndarray
        (psf_size, psf_size) float32 summing to 1.
    """
    galsim = require("galsim", "sim", "simulated GalSim sources (galhpc-prep kind galsim)")

    scale = opts.pixel_scale if scale is None else scale  # arcsec per pixel of the stamp
    img = _psf(galsim, opts, fwhm).drawImage(nx=opts.psf_size, ny=opts.psf_size, scale=scale)
    arr = img.array.astype(np.float64)
    return (arr / arr.sum()).astype(np.float32)


def simulate_block(opts: SimOptions, size: int, seed: int, start: int, stop: int) -> Block:
    """Objects start..stop-1 of a set as one Block.

    Parameters
    ----------
    opts : SimOptions
        The set's distributions and what to store besides the images (truth, PSF).
    size : int
    seed : int
    start : int
        The first object's index.
    stop : int
        One past the last object's index.

    Returns
    -------
    Block
        Images (n, size, size) float32, object ids = the indices (int64), the `LABELS`
        (int64 for the classes, float64 otherwise), truth (n, size, size) and the PSF
        ((h, w), or (n, h, w) per object) when stored.
    """
    stamps = [simulate_stamp(opts, size, seed, i) for i in range(start, stop)]
    labels = {}
    for name in LABELS:
        values = [s["params"][name] for s in stamps]
        integer = name in ("has_companion", "morph_class", "edge_on")
        labels[name] = np.array(values, dtype=np.int64 if integer else np.float64)
    truth = np.stack([s["truth"] for s in stamps]) if opts.store_truth else None
    psf = None
    if opts.store_psf:
        psf = np.stack([s["psf"] for s in stamps]) if opts.per_object_psf else stamps[0]["psf"]
    return Block(
        images=np.stack([s["image"] for s in stamps]),
        object_id=np.arange(start, stop, dtype=np.int64),
        labels=labels,
        truth=truth,
        psf=psf,
    )


def _simulate_block_task(args: tuple) -> Block:
    return simulate_block(*args)


def _start_method() -> str:
    """The start method of the simulation workers: "fork" while GalSim is not loaded here.

    No OpenMP state to inherit, so children start in a fraction of a second instead of
    re-importing torch and GalSim; "spawn" otherwise.
    """
    return "fork" if "galsim" not in sys.modules and "fork" in multiprocessing.get_all_start_methods() else "spawn"


def read_source(source: SourceConfig, prep: PrepConfig) -> Iterator[Block]:
    """GalSim bulge+disk galaxies: kind "galsim".

    Parameters
    ----------
    source : SourceConfig
        `n` stamps of `prep.image_size`, `seed` and `options` (`SimOptions`); simulated by
        `prep.workers` processes, order kept.
    prep : PrepConfig
        `image_size`, `chunk_rows`, `workers`.

    Yields
    ------
    Block
        One `simulate_block` per `chunk_rows` objects, in index order.

    Raises
    ------
    ConfigError
        `n` < 1; an option `SimOptions` lacks, or one of the wrong type.
    """
    opts = SimOptions.from_options(source.options, f"source galsim (seed {source.seed})")
    if source.n < 1:
        raise ConfigError(f"source galsim: n must be >= 1, got {source.n}")
    rows = max(1, min(prep.chunk_rows, -(-source.n // max(1, prep.workers))))
    tasks = [(opts, prep.image_size, source.seed, a, min(a + rows, source.n)) for a in range(0, source.n, rows)]
    parallel = prep.workers > 1 and len(tasks) > 1
    method = _start_method() if parallel else "in process"
    log.info("simulating %d GalSim stamps of %dx%d, %d worker(s) (%s)", source.n, prep.image_size, prep.image_size,
             prep.workers if parallel else 1, method)
    if not parallel:
        for task in tasks:
            yield _simulate_block_task(task)
        return
    with multiprocessing.get_context(method).Pool(prep.workers) as pool:
        yield from pool.imap(_simulate_block_task, tasks)
