"""The `galhpc-prep` pipeline: sources -> recipe -> quality metrics -> filters -> store.

Each source yields blocks (galhpc.data.sources); every block goes through the same steps:
1. non-finite pixels are rejected (or raise, naming the file and object);
2. geometric steps of the recipe (grey, crop, resize) on images, truth and extras;
3. quality metrics (snr, width, non_uniformity, border_noise) become label columns and
   the config's filters (<metric>_min / <metric>_max) drop objects, recorded as rejects;
4. intensity steps (flux, arcsinh, minmax) on images; truth gets the same transform (the
   image's own coefficients, so truth ⊛ psf stays the noise-free image).  Each step's
   per-object coefficients become label columns, so every pixel maps back to input units:
   `flux_norm` (flux: stored = input / flux_norm · flux_scale), `minmax_offset` and
   `minmax_scale` (minmax: stored = (x − offset) · scale); arcsinh's scale is one number
   for the whole store (its config).  `noise_sigma` is the per-pixel noise σ of the sky in
   stored units (border noise carried through every step, arcsinh linearised at 0): the
   known σ of a Gaussian likelihood.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import yaml

from galhpc.config import ConfigError, PrepConfig
from galhpc.data import pixels
from galhpc.data import preprocess as pp
from galhpc.data.sources import PIXEL_MAPS, PIXEL_SCALE_LABEL, Block, DataError, Reject, source_reader
from galhpc.data.store import StoreWriter, reject_summary
from galhpc.kernels import quality
from galhpc.runtime import progress

log = logging.getLogger("galhpc.data.prep")

GEOMETRIC_STEPS = ("grey", "crop", "resize")
INTENSITY_STEPS = ("flux", "arcsinh", "minmax")
METRICS = ("snr", "width", "non_uniformity", "border_noise")
NEIGHBOUR_MODES = ("mask", "noise")
FILL_SEED = 0x5EED_F111  # noise that fills bad pixels: from (FILL_SEED, object_id)


def quality_metrics(img: np.ndarray, border: int) -> dict[str, float]:
    """The four quality metrics of one image, with the numpy recipe functions.

    The per-image reference of the batch path in `process_block` (which uses
    `galhpc.kernels.quality`); the border noise is computed once.

    Parameters
    ----------
    img : numpy.ndarray
        (H, W) or (C, H, W) float, after the geometric steps (bands averaged first).
    border : int
        Patch side of the border noise, in pixels.

    Returns
    -------
    dict
        ``snr`` (dimensionless, inf when noiseless), ``width`` (pixels, NaN when nothing to
        fit), ``non_uniformity`` (max / mean), ``border_noise`` (σ in the image's units).
    """
    noise = pp.border_noise(img, border)
    peak = float(pp.resize_area(pp.single_band(img), 16).max())
    return {
        "snr": peak / noise if noise > 0 else float("inf"),
        "width": pp.width(img),
        "non_uniformity": pp.non_uniformity(img),
        "border_noise": noise,
    }


def check_prep_config(prep: PrepConfig) -> None:
    """Refuse recipes, filters and options that cannot work, before any data is read.

    Parameters
    ----------
    prep : PrepConfig
        The prep section of a run config.

    Raises
    ------
    ConfigError
        An unknown recipe step, an intensity step before a geometric one, an unknown filter,
        or an option out of its range (one line naming the key and the allowed values).
    """
    unknown = [s for s in prep.recipe if s not in GEOMETRIC_STEPS + INTENSITY_STEPS]
    if unknown:
        raise ConfigError(f"prep.recipe: unknown step(s) {unknown}; "
                          f"known: {list(GEOMETRIC_STEPS + INTENSITY_STEPS)}")
    kinds = [s in INTENSITY_STEPS for s in prep.recipe]
    if kinds != sorted(kinds):
        raise ConfigError(f"prep.recipe {prep.recipe}: geometric steps {GEOMETRIC_STEPS} must come before "
                          f"{INTENSITY_STEPS}")
    for key in prep.filters:
        metric, _, bound = key.rpartition("_")
        if metric not in METRICS or bound not in ("min", "max"):
            raise ConfigError(f"prep.filters: unknown filter {key!r}; use <metric>_min or <metric>_max "
                              f"with metric in {sorted(METRICS)}")
    if prep.on_error not in ("raise", "skip"):
        raise ConfigError(f"prep.on_error must be 'raise' or 'skip', got {prep.on_error!r}")
    if prep.compression not in (None, "lzf", "gzip"):
        raise ConfigError(f"prep.compression must be null, lzf or gzip, got {prep.compression!r}")
    if prep.crop_r90 is not None and prep.crop_r90 <= 0:
        raise ConfigError(f"prep.crop_r90 must be > 0 (box side in units of R90), got {prep.crop_r90}")
    if prep.flux_scale <= 0:
        raise ConfigError(f"prep.flux_scale must be > 0, got {prep.flux_scale}")
    if prep.image_size < 16:
        raise ConfigError(f"prep.image_size must be >= 16 (the SNR block-averages to 16x16), got {prep.image_size}")
    if not 0.0 <= prep.max_bad_fraction < 1.0:
        raise ConfigError(f"prep.max_bad_fraction must be in [0, 1), got {prep.max_bad_fraction}")
    if prep.saturated not in ("mask", "reject"):
        raise ConfigError(f"prep.saturated must be 'mask' or 'reject', got {prep.saturated!r}")
    if prep.neighbours is not None and prep.neighbours not in NEIGHBOUR_MODES:
        raise ConfigError(f"prep.neighbours must be null, mask or noise, got {prep.neighbours!r}")
    if not prep.sky:
        raise ConfigError("prep.sky must be 'border', 'none' or a label column name")
    if not prep.sources:
        raise ConfigError("prep.sources is empty: nothing to prepare")


def _describe(block: Block, i: int, source_desc: str) -> tuple[str, str]:
    """(object, file) names of object i of a block, for errors and rejects."""
    file = block.files[i] if block.files is not None else source_desc
    return f"object_id {int(block.object_id[i])}", file


def _nearest(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape[-2:]
    rows = ((np.arange(size) + 0.5) * h / size).astype(int)
    cols = ((np.arange(size) + 0.5) * w / size).astype(int)
    return arr[..., rows[:, None], cols[None, :]]


def _size_scaled(arr: np.ndarray, prep: PrepConfig, r90: np.ndarray, integer: bool,
                 variance: bool = False) -> np.ndarray:
    """Per-object boxes of prep.crop_r90 x R90, each resampled to prep.image_size."""
    out = []
    for a, r in zip(arr, r90, strict=True):
        if integer:
            side = int(np.clip(np.ceil(prep.crop_r90 * r), 4, min(a.shape[-2:])))
            out.append(_nearest(pp.centre_crop(a, side), prep.image_size))
        else:
            out.append(pp.size_scaled_crop(a, float(r), prep.crop_r90, prep.image_size, variance)[0])
    return np.stack(out) if out else arr[:, ..., : prep.image_size, : prep.image_size]


def _geometric(arr: np.ndarray, prep: PrepConfig, integer: bool = False, r90: np.ndarray | None = None,
               variance: bool = False) -> np.ndarray:
    """Apply the recipe's geometric steps to a stack (n, H, W) or (n, C, H, W).

    With prep.crop_r90 the crop is per object, from `r90` (n,) in input pixels; `variance`:
    the stack is a variance map, resampled as the variance of each area average.
    """
    for step in prep.recipe:
        if step == "grey" and arr.ndim == 4 and not integer:
            arr = pp.to_grey(arr)
        elif step == "crop" and prep.crop_r90 is not None:
            arr = _size_scaled(arr, prep, r90, integer, variance)
        elif step == "crop" and prep.crop_size is not None:
            arr = pp.centre_crop(arr, prep.crop_size)
        elif step == "resize" and arr.shape[-2:] != (prep.image_size, prep.image_size):
            arr = _nearest(arr, prep.image_size) if integer else pp.resize_area(arr, prep.image_size, variance)
    return arr


def _object_rng(object_id: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([FILL_SEED, int(object_id) & 0xFFFFFFFFFFFFFFFF]))


def _pixel_maps(block: Block, prep: PrepConfig) -> Block:
    """Give a block per-pixel `sigma` and `mask` extras and fill its bad pixels.

    Done when the source gave either map, when prep.neighbours is set, or when a kept
    object has NaN/inf pixels (so the mask records what was filled).  A σ the source did
    not give is the stamp's sigma-clipped border σ.  Bad pixels (and, with neighbours,
    other sources) get the border sky plus noise of the local σ; "mask" neighbours are
    also masked.
    """
    images = block.images
    mask, sigma = block.extras.get("mask"), block.extras.get("sigma")
    if mask is None and sigma is None and prep.neighbours is None and np.isfinite(images).all():
        return block
    mask = np.zeros(images.shape, np.uint8) if mask is None else np.asarray(mask, np.uint8).copy()
    sigma = np.full(images.shape, np.nan, np.float32) if sigma is None else np.asarray(sigma, np.float32).copy()
    mask |= (~np.isfinite(images)).astype(np.uint8)
    filled = np.empty(images.shape, dtype=np.float32)
    for i in range(len(block)):
        bad = mask[i].any(axis=0) if mask[i].ndim == 3 else mask[i] != 0
        saturated = pixels.saturated_pixels(mask[i], images[i])
        sky, std = pixels.border_sky(images[i], bad, prep.border)
        known = np.isfinite(sigma[i]) & (sigma[i] > 0)
        fallback = std if np.isfinite(std) else (float(np.median(sigma[i][known])) if known.any() else 0.0)
        sigma[i] = np.where(known, sigma[i], fallback)
        rng = _object_rng(block.object_id[i])
        img = pixels.fill_bad_pixels(images[i], sigma[i], bad & ~saturated, sky, rng)
        if prep.neighbours is not None:
            others = pixels.neighbour_mask(img, sigma[i], prep.neighbours_nsigma, sky) & ~bad
            if others.any():
                img = pixels.fill_bad_pixels(img, sigma[i], others, sky, rng)
                if prep.neighbours == "mask":
                    mask[i][..., others] = 1
        filled[i] = img
    extras = {**block.extras, "sigma": sigma, "mask": mask}
    return dataclasses.replace(block, images=filled, extras=extras)


def _resample_factor(labels: dict[str, np.ndarray], r90: np.ndarray | None, crop: int,
                     in_hw: tuple[int, int], out_side: int) -> np.ndarray | float:
    """Input pixels per stored pixel: per object with a size-scaled crop, else one number."""
    if r90 is not None:
        return labels["resample_factor"]  # per object: box side / image_size
    return (min(crop, in_hw[-1]) if crop else in_hw[-1]) / out_side


def _without_grey(prep: PrepConfig) -> PrepConfig:
    return dataclasses.replace(prep, recipe=[step for step in prep.recipe if step != "grey"])


def _sigma_geometric(sigma: np.ndarray, prep: PrepConfig, r90: np.ndarray | None) -> np.ndarray:
    """σ through the geometric steps, carried as a variance.

    The grey mean of C bands has variance mean(σ²)/C, an area average Σ w² σ² over its
    weights w (independent pixel noise; for f x f whole input pixels mean(σ²)/f²).
    """
    var = np.square(sigma.astype(np.float64))
    if "grey" in prep.recipe and var.ndim == 4:
        var = var.mean(axis=1) / var.shape[1]
    var = _geometric(var.astype(np.float32), _without_grey(prep), r90=r90, variance=True).astype(np.float64)
    return np.sqrt(var).astype(np.float32)


def _mask_geometric(mask: np.ndarray, prep: PrepConfig, r90: np.ndarray | None) -> np.ndarray:
    """The mask through the geometric steps.

    A stored pixel is bad if any input pixel in its footprint (or band, after grey) was.
    """
    bad = (mask != 0).astype(np.float32)
    if "grey" in prep.recipe and bad.ndim == 4:
        bad = bad.max(axis=1)
    return (_geometric(bad, _without_grey(prep), r90=r90) > 0).astype(np.uint8)


def _sky(images: np.ndarray, mask: np.ndarray | None, labels: dict[str, np.ndarray], prep: PrepConfig,
         source_desc: str) -> np.ndarray:
    """(n,) sky level per object for the flux step (input units, per stored pixel)."""
    n = len(images)
    if prep.sky == "none" or "flux" not in prep.recipe:
        return np.zeros(n)
    measured = np.full(n, np.nan)
    if prep.sky != "border":
        if prep.sky not in labels:
            raise DataError(f"{source_desc}: prep.sky {prep.sky!r} is neither 'border', 'none' nor a label "
                            f"column; columns: {sorted(labels)}")
        measured = np.asarray(labels[prep.sky], dtype=np.float64)
    for i in np.flatnonzero(~np.isfinite(measured)):  # a null catalogue sky is measured
        bad = (np.zeros(images.shape[-2:], bool) if mask is None
               else (mask[i] != 0).reshape(-1, *images.shape[-2:]).any(axis=0))
        measured[i] = pixels.border_sky(images[i], bad, prep.border)[0]
    return measured


def _reject_or_raise(prep: PrepConfig, rejects: list[Reject], obj: str, file: str, reason: str) -> None:
    if prep.on_error == "raise":
        raise DataError(f"{file}: {obj}: {reason}")
    rejects.append(Reject(obj, file, reason))


def process_block(block: Block, prep: PrepConfig, source_desc: str) -> Block:
    """Steps 1-4 of the module docstring on one block.

    Parameters
    ----------
    block : Block
        Raw objects from a source: images (n, H, W) or (n, C, H, W) float in input units.
    prep : PrepConfig
        The recipe, metrics, filters, pixel-map options and `on_error`.
    source_desc : str
        Names the source in errors and rejects when an object has no file.

    Returns
    -------
    Block
        The kept objects: images (n', [C,] image_size, image_size) float32 in stored units,
        the metric and coefficient label columns (`flux_norm`, `minmax_offset`,
        `minmax_scale`, `sky`, `noise_sigma`, ...), ``sigma``/``mask`` extras where the source
        gave pixel maps; the rejects of this block appended to the source's.

    Raises
    ------
    DataError
        Images that are not 3-D or 4-D, a missing R90 or sky column; with
        ``on_error: raise``, an object with too many bad pixels (or a bad centre), smaller
        than the crop, or without a usable R90.
    """
    if block.images.ndim not in (3, 4):
        raise DataError(f"{source_desc}: images must be (n, H, W) or (n, C, H, W), got shape {block.images.shape}")
    n = len(block)
    if n == 0:
        return block
    rejects = list(block.rejects)
    keep = np.ones(n, dtype=bool)
    mask = block.extras.get("mask")
    for i in range(n):
        reason = pixels.bad_pixel_verdict(block.images[i], None if mask is None else mask[i], prep.max_bad_fraction,
                                          prep.saturated)
        if reason is not None:
            obj, file = _describe(block, i, source_desc)
            _reject_or_raise(prep, rejects, obj, file, reason)
            keep[i] = False
    h, w = block.images.shape[-2:]
    crop = prep.crop_size if "crop" in prep.recipe and prep.crop_size is not None else 0
    if crop > min(h, w):
        for i in np.flatnonzero(keep):
            obj, file = _describe(block, i, source_desc)
            _reject_or_raise(prep, rejects, obj, file, f"image {h}x{w} is smaller than crop_size {crop} "
                             "(set prep.crop_size to at most the stamp size, or null)")
        keep[:] = False
    block = block.select(keep)
    block.rejects = rejects
    if len(block) == 0:
        return block
    block = _pixel_maps(block, prep)
    in_hw = block.images.shape[-2:]
    labels = dict(block.labels)
    r90 = None
    if prep.crop_r90 is not None and "crop" in prep.recipe:
        block, r90 = _r90_or_reject(block, prep, rejects, source_desc)
        if len(block) == 0:
            return block
        labels = dict(block.labels)
        labels["resample_factor"] = np.clip(np.ceil(prep.crop_r90 * r90), 4, min(in_hw)) / prep.image_size
    try:
        images = _geometric(block.images.astype(np.float32, copy=False), prep, r90=r90)
        truth = None if block.truth is None else _geometric(block.truth.astype(np.float32, copy=False), prep, r90=r90)
    except ValueError as err:
        raise DataError(f"{source_desc}: objects {block.object_id[0]}..{block.object_id[-1]}: {err}") from err
    extras = {}
    maps = {name: block.extras[name] for name in PIXEL_MAPS if name in block.extras}
    if maps:
        extras["sigma"] = _sigma_geometric(maps["sigma"], prep, r90)
        extras["mask"] = _mask_geometric(maps["mask"], prep, r90)
    for name, values in block.extras.items():
        if name in PIXEL_MAPS:
            continue
        spatial = values.shape[-2:] == in_hw
        extras[name] = _geometric(values, prep, integer=values.dtype.kind in "iub", r90=r90) if spatial else values
    if PIXEL_SCALE_LABEL in labels:  # arcsec per source pixel -> per stored pixel (crop keeps it, resampling scales it)
        factor = _resample_factor(labels, r90, crop, in_hw, images.shape[-1])
        labels[PIXEL_SCALE_LABEL] = (labels[PIXEL_SCALE_LABEL] * factor).astype(np.float32)
    keep = np.ones(len(block), dtype=bool)
    if prep.metrics or prep.filters:
        batch = quality.metrics(images, prep.border)  # numba, parallel over the block
        values = {name: batch[name] for name in METRICS}
        if prep.metrics:
            labels.update(values)
        for key, limit in prep.filters.items():
            metric, _, bound = key.rpartition("_")
            bad = values[metric] < limit if bound == "min" else values[metric] > limit
            bad |= np.isnan(values[metric])
            for i in np.flatnonzero(bad & keep):
                obj, file = _describe(block, i, source_desc)
                rejects.append(Reject(obj, file, f"filtered: {metric} {values[metric][i]:.4g} fails {key} {limit}"))
            keep &= ~bad
    if any(step in INTENSITY_STEPS for step in prep.recipe):
        noise = (values["border_noise"] if prep.metrics or prep.filters
                 else quality.metrics(images, prep.border)["border_noise"])
        sky = _sky(images, extras.get("mask"), labels, prep, source_desc)
        images, truth, sigma_map, coefficients = _intensity(images, truth, prep, noise, sky, extras.get("sigma"))
        if sigma_map is not None:
            extras["sigma"] = sigma_map
        labels.update(coefficients)
    elif prep.metrics:
        labels["noise_sigma"] = values["border_noise"]
    out = Block(images, block.object_id, labels, truth, block.psf, extras, block.files, rejects, block.units)
    return out.select(keep)


def _r90_or_reject(block: Block, prep: PrepConfig, rejects: list[Reject],
                   source_desc: str) -> tuple[Block, np.ndarray]:
    """The block's R90 column (input pixels) for size-scaled crops.

    Objects without a finite positive R90 are rejected (or raise), naming the object.
    """
    if prep.r90_column not in block.labels:
        raise DataError(f"{source_desc}: prep.crop_r90 needs the label column {prep.r90_column!r} "
                        f"(R90 in input pixels); columns: {sorted(block.labels)}")
    r90 = np.asarray(block.labels[prep.r90_column], dtype=np.float64)
    good = np.isfinite(r90) & (r90 > 0)
    for i in np.flatnonzero(~good):
        obj, file = _describe(block, i, source_desc)
        _reject_or_raise(prep, rejects, obj, file, f"{prep.r90_column} = {r90[i]} is not a finite positive radius")
    block = block.select(good)
    block.rejects = rejects
    return block, r90[good]


def _intensity(images: np.ndarray, truth: np.ndarray | None, prep: PrepConfig, noise: np.ndarray,
               sky: np.ndarray, sigma_map: np.ndarray | None,
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
    """The recipe's intensity steps on a block.

    Returns images, truth, the per-pixel σ map (or None) and the per-object coefficient
    columns (module docstring), with `noise_sigma` the border noise `noise` (n,) carried
    into stored units.  The flux step first subtracts `sky` (n,), stored as the label `sky`.
    """
    images = images.astype(np.float64)
    sigma_map = None if sigma_map is None else sigma_map.astype(np.float64)
    truth = None if truth is None else truth.astype(np.float64)
    sigma = np.asarray(noise, dtype=np.float64).copy()
    coefficients: dict[str, np.ndarray] = {}
    per_object = (slice(None),) + (None,) * (images.ndim - 1)
    for step in prep.recipe:
        if step == "flux":
            images = images - sky[per_object]
            coefficients["sky"] = np.asarray(sky, dtype=np.float64)
            flux = np.array([pp.flux_coefficient(img, s) for img, s in zip(images, sigma, strict=True)])
            factor = prep.flux_scale / flux
            coefficients["flux_norm"] = flux
        elif step == "arcsinh":
            images = np.arcsinh(images / prep.stretch_scale)
            truth = None if truth is None else np.arcsinh(truth / prep.stretch_scale)
            sigma = sigma / prep.stretch_scale  # d/dx arcsinh(x / s) at the sky level
            if sigma_map is not None:  # per pixel: d/dx arcsinh(x / s) at the pixel's value
                before = np.sinh(images) * prep.stretch_scale
                sigma_map = sigma_map / prep.stretch_scale / np.sqrt(1.0 + np.square(before / prep.stretch_scale))
            continue
        elif step == "minmax":
            pairs = np.array([pp.minmax_coefficients(img) for img in images])
            coefficients["minmax_offset"], coefficients["minmax_scale"] = pairs[:, 0], pairs[:, 1]
            images = images - pairs[:, 0][per_object]
            truth = None if truth is None else truth - pairs[:, 0][per_object]
            factor = pairs[:, 1]
        else:
            continue
        images = images * factor[per_object]
        truth = None if truth is None else truth * factor[per_object]
        sigma = sigma * factor
        sigma_map = None if sigma_map is None else sigma_map * np.abs(factor[per_object])
    coefficients["noise_sigma"] = sigma
    return (images.astype(np.float32), None if truth is None else truth.astype(np.float32),
            None if sigma_map is None else sigma_map.astype(np.float32), coefficients)


def prep_config_yaml(prep: PrepConfig) -> str:
    """The prep section as YAML text of a run config.

    Parameters
    ----------
    prep : PrepConfig
        The prep section (after command-line overrides).

    Returns
    -------
    str
        ``prep:`` and its fields, in declaration order; `galhpc.config.config_from_yaml_text`
        reads it back (the store keeps it as its recipe).
    """
    return yaml.safe_dump({"prep": dataclasses.asdict(prep)}, sort_keys=False)


def run_prep(prep: PrepConfig, output: str | Path | None = None, on_error: str | None = None) -> Path:
    """Read every source of `prep`, process it, and write one training store.

    Parameters
    ----------
    prep : PrepConfig
        The sources, recipe, filters and store options.
    output : str or Path or None
        The store to write (None: `prep.output`).
    on_error : str or None
        ``"raise"`` or ``"skip"`` (None: `prep.on_error`).

    Returns
    -------
    Path
        The store written (HDF5, its layout in docs/schema.md); rejected objects are listed
        in its ``rejects/`` table.

    Raises
    ------
    ConfigError
        The configuration cannot work (`check_prep_config`), or a source's options are wrong.
    DataError
        A source cannot be read; with ``on_error: raise``, the first bad object.
    """
    changes = {"on_error": on_error, "output": None if output is None else str(output)}
    prep = dataclasses.replace(prep, **{k: v for k, v in changes.items() if v is not None})
    check_prep_config(prep)
    counts = {"kept": 0, "rejected": 0}
    with StoreWriter(prep.output, prep_config_yaml(prep), prep.chunk_rows, prep.compression) as writer:
        for index, source in enumerate(prep.sources):
            desc = f"source {index} ({source.kind}{': ' + source.path if source.path else ''})"
            log.info("reading %s", desc)
            reader = source_reader(source.kind)
            bar = progress(reader(source, prep), desc=f"prep {source.kind}", unit="block")
            for block in bar:
                done = process_block(block, prep, desc)
                writer.append(done, source_index=index)
                counts["kept"] += len(done)
                counts["rejected"] += len(done.rejects)
                bar.set_postfix(counts)
    path = writer.path
    log.info("%d objects kept, %d rejected -> %s", counts["kept"], counts["rejected"], path)
    if writer.rejects:
        log.warning("rejected by reason: %s (all in the store's rejects/ table)", reject_summary(writer.rejects))
    return path
