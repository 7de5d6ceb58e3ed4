"""Simulated multi-band fields of stars and galaxies with GalSim, with truth labels and masks.

For unsupervised star/galaxy separation and pixel segmentation (issue 8).  Every stamp
holds one central object, a star (the band's PSF, a point source) or a galaxy (bulge +
disk convolved with the PSF), and with some probability a neighbour of either class.
Brightness is set by magnitudes per band (colours differ by class but overlap, so shape
is what separates the classes); the PSF is a Moffat whose FWHM varies with band and seeing.

Truth stored per object: `is_star` (central object), `mag_<band>`, the galaxy shape
parameters (0 for stars), the seeing and the neighbour's class; and a per-pixel mask
`masks` (H, W) uint8 in `Block.extras`: 0 background, 1 star, 2 galaxy, from the
noise-free images (a pixel belongs to the object giving it most flux where the summed
noise-free flux exceeds `mask_threshold` noise σ).

Knobs live in `SourceConfig.options` (see `StarSimOptions`); stamps are drawn at
`prep.image_size`.  Everything about object i is a pure function of (seed, i).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from galhpc.config import ConfigError, PrepConfig, SourceConfig, options_dataclass
from galhpc.data.sources import Block, object_rng, object_seed
from galhpc.extras import require

log = logging.getLogger("galhpc.data.starsim")

MASK_BACKGROUND, MASK_STAR, MASK_GALAXY = 0, 1, 2


@dataclass(frozen=True)
class StarSimOptions:
    """Distributions of the set (magnitudes AB-like, sizes in arcsec, noise in flux units)."""

    bands: tuple[str, ...] = ("u", "g", "r", "i", "z")
    zeropoint: float = 30.0  # flux = 10^(-0.4 (mag - zeropoint))
    star_fraction: float = 0.5
    mag_min: float = 18.0  # r-band magnitude of the central object, uniform in [min, max]
    mag_max: float = 23.5
    pixel_scale: float = 0.2
    seeing: tuple[float, float] = (0.7, 0.9)  # r-band Moffat FWHM, uniform per object
    band_seeing_factor: tuple[float, ...] = (1.15, 1.07, 1.0, 0.96, 0.93)
    moffat_beta: float = 3.5
    noise_sigma: tuple[float, ...] = (8.0, 4.0, 4.0, 5.0, 8.0)  # per band, per pixel
    hlr_median: float = 0.7  # galaxy half-light radius: log-normal, clipped below at hlr_min
    hlr_sigma: float = 0.35
    hlr_min: float = 0.2
    q_min: float = 0.3
    max_shift: float = 0.5  # pixels
    neighbour_probability: float = 0.0
    neighbour_distance: tuple[float, float] = (1.5, 2.8)  # arcsec
    mask_threshold: float = 1.0  # in units of the summed noise σ

    @classmethod
    def from_options(cls, options: dict, where: str) -> StarSimOptions:
        """The options of a source, checked field by field and against each other.

        Parameters
        ----------
        options : dict
            `SourceConfig.options` (field name -> value; lists become tuples).
        where : str
            Names the source in error messages.

        Returns
        -------
        StarSimOptions
            The defaults overridden by `options`.

        Raises
        ------
        ConfigError
            An unknown or mistyped field, per-band lists of another length than `bands`,
            no r band, or a probability outside [0, 1].
        """
        opts = options_dataclass(cls, options, where)
        n = len(opts.bands)
        if len(opts.band_seeing_factor) != n or len(opts.noise_sigma) != n:
            raise ConfigError(f"{where}: band_seeing_factor and noise_sigma need one value per band ({n} bands)")
        if "r" not in opts.bands:
            raise ConfigError(f"{where}: magnitudes are drawn in the r band, which bands {opts.bands} lack")
        if not 0.0 <= opts.star_fraction <= 1.0 or not 0.0 <= opts.neighbour_probability <= 1.0:
            raise ConfigError(f"{where}: star_fraction and neighbour_probability must lie in [0, 1]")
        return opts


# Mean colours relative to r, per band (u, g, r, i, z), and their scatter: stars follow a
# one-parameter (temperature) sequence, galaxies a broader cloud; the two overlap.
STAR_COLOUR_SLOPE = np.array([2.6, 1.0, 0.0, -0.45, -0.7])
GALAXY_COLOUR_MEAN = np.array([1.9, 0.75, 0.0, -0.35, -0.6])
GALAXY_COLOUR_SIGMA = np.array([0.45, 0.25, 0.0, 0.12, 0.2])
FIVE_BANDS = ("u", "g", "r", "i", "z")


def _band_colours(opts: StarSimOptions, colours: np.ndarray) -> np.ndarray:
    """Colours (mag − r) of the configured bands; bands outside ugriz get 0."""
    table = dict(zip(FIVE_BANDS, colours, strict=True))
    return np.array([table.get(b, 0.0) for b in opts.bands])


def draw_object(opts: StarSimOptions, rng: np.random.Generator, is_star: bool) -> dict[str, float | np.ndarray]:
    """Class, magnitudes per band and (for galaxies) shape of one object.

    Parameters
    ----------
    opts : StarSimOptions
        The set's distributions.
    rng : numpy.random.Generator
        The object's generator (`object_rng`); advanced by the draws.
    is_star : bool
        Draw a star (a point source on the stellar colour sequence) or a galaxy.

    Returns
    -------
    dict
        ``is_star`` (int 0/1), ``mags`` ((C,) float64 AB-like magnitudes of `opts.bands`),
        ``hlr`` (half-light radius, arcsec; 0 for stars), ``bulge_fraction`` (of the flux),
        ``q`` (axis ratio; 1 for stars), ``angle`` (position angle, degrees).
    """
    mag_r = rng.uniform(opts.mag_min, opts.mag_max)
    if is_star:
        colours = STAR_COLOUR_SLOPE * rng.uniform(0.25, 1.4) + rng.normal(0, 0.05, 5) * (STAR_COLOUR_SLOPE != 0)
    else:
        colours = GALAXY_COLOUR_MEAN + rng.normal(0, 1, 5) * GALAXY_COLOUR_SIGMA
    hlr = max(opts.hlr_min, opts.hlr_median * float(np.exp(opts.hlr_sigma * rng.standard_normal())))
    return {
        "is_star": int(is_star),
        "mags": mag_r + _band_colours(opts, colours),
        "hlr": 0.0 if is_star else hlr,
        "bulge_fraction": 0.0 if is_star else float(rng.uniform(0.0, 1.0)),
        "q": 1.0 if is_star else float(rng.uniform(opts.q_min, 1.0)),
        "angle": float(rng.uniform(0.0, 180.0)),
    }


def draw_parameters(opts: StarSimOptions, seed: int, index: int) -> dict:
    """Central object, seeing, sub-pixel shift and optional neighbour of stamp `index`.

    Parameters
    ----------
    opts : StarSimOptions
        The set's distributions.
    seed : int
        The source's seed.
    index : int
        The stamp's index: the parameters are a pure function of (seed, index).

    Returns
    -------
    dict
        ``central`` (a `draw_object` dict), ``seeing`` (r-band Moffat FWHM, arcsec),
        ``shift`` ((2,) float64 sub-pixel offset, pixels) and ``neighbour`` (a `draw_object`
        dict with ``offset`` (2,) in arcsec, or None).
    """
    rng = object_rng(seed, index)
    params = {
        "central": draw_object(opts, rng, bool(rng.random() < opts.star_fraction)),
        "seeing": float(rng.uniform(*opts.seeing)),
        "shift": rng.uniform(-opts.max_shift, opts.max_shift, 2),
        "neighbour": None,
    }
    if rng.random() < opts.neighbour_probability:
        distance, phi = rng.uniform(*opts.neighbour_distance), rng.uniform(0.0, 2.0 * np.pi)
        neighbour = draw_object(opts, rng, bool(rng.random() < 0.5))
        neighbour["offset"] = np.array([distance * np.cos(phi), distance * np.sin(phi)])
        params["neighbour"] = neighbour
    return params


def _profile(galsim, obj: dict):
    """Unit-flux light profile of one object before the PSF (a delta function for stars)."""
    if obj["is_star"]:
        return galsim.DeltaFunction(flux=1.0)
    disk = galsim.Exponential(half_light_radius=obj["hlr"], flux=1.0 - obj["bulge_fraction"])
    bulge = galsim.DeVaucouleurs(half_light_radius=0.5 * obj["hlr"], flux=obj["bulge_fraction"])
    return galsim.Add([disk, bulge]).shear(galsim.Shear(q=obj["q"], beta=obj["angle"] * galsim.degrees))


def _flux(opts: StarSimOptions, mag: float) -> float:
    return float(10.0 ** (-0.4 * (mag - opts.zeropoint)))


def simulate_stamp(opts: StarSimOptions, size: int, seed: int, index: int) -> dict:
    """One stamp: the noisy image, its truth mask and the parameters drawn.

    Parameters
    ----------
    opts : StarSimOptions
        The set's distributions.
    size : int
        Stamp side in pixels (of `opts.pixel_scale` arcsec).
    seed : int
        The source's seed.
    index : int
        The stamp's index.

    Returns
    -------
    dict
        ``image`` (C, size, size) float32 in flux units (zero point `opts.zeropoint`) with
        Gaussian noise of `opts.noise_sigma` per band; ``mask`` (size, size) uint8
        (`truth_mask`); ``params`` (`draw_parameters`).
    """
    galsim = require("galsim", "sim", "simulated GalSim star/galaxy stamps (galhpc-prep kind galsim_stars)")

    p = draw_parameters(opts, seed, index)
    objects = [p["central"]] + ([p["neighbour"]] if p["neighbour"] is not None else [])
    offsets = [np.zeros(2)] + ([p["neighbour"]["offset"]] if p["neighbour"] is not None else [])
    n_bands = len(opts.bands)
    clean = np.zeros((len(objects), n_bands, size, size))  # noise-free flux per object and band
    for b in range(n_bands):
        psf = galsim.Moffat(beta=opts.moffat_beta, fwhm=p["seeing"] * opts.band_seeing_factor[b])
        for k, (obj, offset) in enumerate(zip(objects, offsets, strict=False)):
            profile = _profile(galsim, obj).withFlux(_flux(opts, obj["mags"][b])).shift(*offset)
            image = galsim.Convolve([profile, psf]).drawImage(nx=size, ny=size, scale=opts.pixel_scale,
                                                              offset=tuple(p["shift"]))
            clean[k, b] = image.array
    noise_rng = np.random.default_rng(object_seed(seed, index))
    sigma = np.asarray(opts.noise_sigma, dtype=np.float64)[:, None, None]
    noisy = clean.sum(axis=0) + sigma * noise_rng.standard_normal((n_bands, size, size))
    return {"image": noisy.astype(np.float32), "mask": truth_mask(clean, objects, opts), "params": p}


def truth_mask(clean: np.ndarray, objects: list[dict], opts: StarSimOptions) -> np.ndarray:
    """The class of each pixel, from the noise-free images of a stamp's objects.

    A pixel belongs to the object giving it most flux, where the summed noise-free flux
    exceeds `opts.mask_threshold` times the noise σ summed over bands in quadrature.

    Parameters
    ----------
    clean : numpy.ndarray
        (K, C, H, W) float noise-free flux of each of the K objects in each band.
    objects : list of dict
        The K objects (`draw_object`), for their ``is_star``.
    opts : StarSimOptions
        For `mask_threshold` and `noise_sigma`.

    Returns
    -------
    numpy.ndarray
        (H, W) uint8: `MASK_BACKGROUND` 0, `MASK_STAR` 1, `MASK_GALAXY` 2.
    """
    per_object = clean.sum(axis=1)  # (K, H, W) flux summed over bands
    threshold = opts.mask_threshold * float(np.sqrt(np.sum(np.square(opts.noise_sigma))))
    owner = per_object.argmax(axis=0)
    classes = np.array([MASK_STAR if o["is_star"] else MASK_GALAXY for o in objects], dtype=np.uint8)
    mask = classes[owner]
    mask[per_object.sum(axis=0) <= threshold] = MASK_BACKGROUND
    return mask.astype(np.uint8)


def _labels(opts: StarSimOptions, p: dict) -> dict[str, float]:
    c, nb = p["central"], p["neighbour"]
    labels = {f"mag_{band}": float(c["mags"][b]) for b, band in enumerate(opts.bands)}
    labels.update(
        is_star=c["is_star"], hlr=c["hlr"], bulge_fraction=c["bulge_fraction"], q=c["q"],
        seeing=p["seeing"], shift_x=float(p["shift"][0]), shift_y=float(p["shift"][1]),
        has_neighbour=int(nb is not None), neighbour_is_star=int(nb["is_star"]) if nb is not None else -1,
    )  # fmt: skip
    return labels


INTEGER_LABELS = ("is_star", "has_neighbour", "neighbour_is_star")


def simulate_block(opts: StarSimOptions, size: int, seed: int, start: int, stop: int) -> Block:
    """Stamps start..stop-1 as one Block.

    Parameters
    ----------
    opts : StarSimOptions
        The set's distributions.
    size : int
        Stamp side in pixels.
    seed : int
        The source's seed.
    start, stop : int
        The stamps' index range (stop excluded).

    Returns
    -------
    Block
        Images (n, C, size, size) float32, object ids = the indices (int64), the truth labels
        (``is_star``, ``mag_<band>``, shape, ``seeing``, shift, neighbour) and ``masks``
        (n, size, size) uint8 in `extras`.
    """
    stamps = [simulate_stamp(opts, size, seed, i) for i in range(start, stop)]
    rows = [_labels(opts, s["params"]) for s in stamps]
    labels = {
        name: np.array([r[name] for r in rows], dtype=np.int64 if name in INTEGER_LABELS else np.float64)
        for name in rows[0]
    }
    return Block(
        images=np.stack([s["image"] for s in stamps]),
        object_id=np.arange(start, stop, dtype=np.int64),
        labels=labels,
        extras={"masks": np.stack([s["mask"] for s in stamps])},
    )


def _simulate_block_task(args: tuple) -> Block:
    return simulate_block(*args)


def read_source(source: SourceConfig, prep: PrepConfig) -> Iterator[Block]:
    """Simulated star/galaxy fields: kind "galsim_stars".

    Parameters
    ----------
    source : SourceConfig
        `n` multi-band stamps of `prep.image_size`, `seed` and `options`
        (`StarSimOptions`); simulated by `prep.workers` processes, order kept.
    prep : PrepConfig
        `image_size` (stamp side, pixels), `chunk_rows` and `workers`.

    Yields
    ------
    Block
        `simulate_block` of each run of `chunk_rows` indices: (n, C, H, W) float32, truth
        labels and `masks`.

    Raises
    ------
    ConfigError
        Fewer than one stamp asked for, or options `StarSimOptions.from_options` refuses.
    """
    opts = StarSimOptions.from_options(source.options, f"source galsim_stars (seed {source.seed})")
    if source.n < 1:
        raise ConfigError(f"source galsim_stars: n must be >= 1, got {source.n}")
    rows = max(1, min(prep.chunk_rows, -(-source.n // max(1, prep.workers))))
    tasks = [(opts, prep.image_size, source.seed, a, min(a + rows, source.n)) for a in range(0, source.n, rows)]
    log.info(
        "simulating %d star/galaxy stamps, %d bands of %dx%d, with %d worker(s)",
        source.n, len(opts.bands), prep.image_size, prep.image_size, prep.workers,
    )  # fmt: skip
    if prep.workers <= 1 or len(tasks) == 1:
        for task in tasks:
            yield _simulate_block_task(task)
        return
    with multiprocessing.get_context("spawn").Pool(prep.workers) as pool:
        yield from pool.imap(_simulate_block_task, tasks)
