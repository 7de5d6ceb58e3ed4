"""Data sources of `galhpc-prep`: one signature, a registry of kinds, loaded lazily.

A source is a function

    read(source: SourceConfig, prep: PrepConfig) -> Iterator[Block]

that yields the objects of one `SourceConfig` in blocks of up to `prep.chunk_rows`
objects (a block is the unit of work and of memory; any size >= 1 is valid).  The prep
pipeline (`galhpc.data.prep`) then applies the recipe, quality metrics and filters to
every block and appends it to the store, so a source only reads or simulates.

What a source must do:
- Put raw pixels in `Block.images` as float32 (n, H, W) or (n, C, H, W); all blocks of a
  source must have the same per-object shape (the recipe makes them image_size later).
- Give every object an int64 id, unique within the source (`Block.object_id`).
- Put per-object values in `Block.labels` (name -> (n,) array: numeric, or fixed-length
  bytes `S<k>` for strings); true simulation parameters go here.
- Optionally give noise-free PSF-free images in `Block.truth` (same shape as images), the
  PSF in `Block.psf` (one (h, w) image, or (n, h, w) per object) and any other per-object
  arrays in `Block.extras` (name -> (n, ...) array, e.g. segmentation `masks` (n, H, W)
  uint8); extras with the images' (H, W) get the same crop/resize as the images.
- Name the file each object came from in `Block.files` (for error messages), if any.
- On bad input (unreadable file, missing HDU or id, wrong shape): raise `DataError`
  naming the file and object when `prep.on_error == "raise"`; otherwise skip the object
  and record a `Reject(object, file, reason)` in `Block.rejects` (a block may then hold
  zero objects and only rejects).  NaN/inf pixels are checked by the pipeline.
- Be deterministic: simulated sources derive every object's randomness from
  (source.seed, object index), e.g. with `object_rng(seed, index)`.

Register a new kind by adding "kind": "module:function" to `REGISTRY`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from galhpc.config import PrepConfig, SourceConfig
from galhpc.runtime.errors import DataError

REGISTRY: dict[str, str] = {
    "galsim": "galhpc.data.synth:read_source",
    "fits": "galhpc.data.fits:read_source",
    "survey_image": "galhpc.data.cutout:read_source",
    "real": "galhpc.data.real:read_source",
    "galsim_stars": "galhpc.data.starsim:read_source",
}


# per-pixel σ (same units as the images) and bad-pixel mask (uint8, non-zero = bad): a
# source's Block.extras of these names become store datasets beside `images` (docs/schema.md)
PIXEL_MAPS = ("sigma", "mask")

# label of the pixel scale (arcsec per stored pixel) a source read from its files' headers
PIXEL_SCALE_LABEL = "wcs_pixel_scale"

# label columns galhpc-prep itself writes (source, quality metrics, intensity coefficients):
# a catalogue column of one of these names is stored as catalog_<name>, never overwritten
PREP_LABELS = ("source_index", PIXEL_SCALE_LABEL, "resample_factor", "snr", "width", "non_uniformity", "border_noise",
               "sky", "flux_norm", "minmax_offset", "minmax_scale", "noise_sigma")


@dataclass
class Reject:
    """One object left out of a store, and why."""

    object: str
    file: str
    reason: str


@dataclass
class Block:
    """A block of objects from one source (see the module docstring for each field)."""

    images: np.ndarray
    object_id: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    truth: np.ndarray | None = None
    psf: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    files: list[str] | None = None
    rejects: list[Reject] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)  # label -> astropy unit string, where a catalogue gave one

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def select(self, keep: np.ndarray) -> Block:
        """The block restricted to the objects where `keep` is true (rejects kept).

        Parameters
        ----------
        keep : numpy.ndarray
            (n,) bool, one per object of the block.

        Returns
        -------
        Block
            A new block of the kept objects' images, ids, labels, truth, per-object PSFs,
            extras and files; a single PSF, the rejects and the units are carried over.
        """
        per_object_psf = self.psf is not None and self.psf.ndim == 3
        return Block(
            images=self.images[keep],
            object_id=self.object_id[keep],
            labels={k: v[keep] for k, v in self.labels.items()},
            truth=None if self.truth is None else self.truth[keep],
            psf=self.psf[keep] if per_object_psf else self.psf,
            extras={k: v[keep] for k, v in self.extras.items()},
            files=None if self.files is None else [f for f, k in zip(self.files, keep, strict=True) if k],
            rejects=list(self.rejects),
            units=dict(self.units),
        )


SourceReader = Callable[[SourceConfig, PrepConfig], Iterator[Block]]


def source_reader(kind: str) -> SourceReader:
    """The read function registered for `kind` in `REGISTRY`, imported on first use.

    Parameters
    ----------
    kind : str
        A source kind (``"galsim"``, ``"fits"``, ``"real"``, ...).

    Returns
    -------
    SourceReader
        ``read(source, prep) -> Iterator[Block]``.

    Raises
    ------
    DataError
        An unknown kind, or one whose module cannot be imported (an optional package missing).
    """
    try:
        target = REGISTRY[kind]
    except KeyError:
        raise DataError(f"unknown source kind {kind!r}; known: {sorted(REGISTRY)}") from None
    module, attr = target.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise DataError(f"source kind {kind!r} ({target}) is not available: {err}") from err


def object_rng(seed: int, index: int) -> np.random.Generator:
    """Random generator of one object, a pure function of (seed, object index).

    Parameters
    ----------
    seed : int
        The source's seed.
    index : int
        The object's index in the source.

    Returns
    -------
    numpy.random.Generator
        Seeded with ``SeedSequence([seed, index])``, so objects are independent of block size.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def object_seed(seed: int, index: int) -> int:
    """A 31-bit integer seed (e.g. for galsim.BaseDeviate) from (seed, object index).

    Parameters
    ----------
    seed, index : int
        The source's seed and the object's index in it (a third entry, 1, keeps this
        stream apart from `object_rng`'s).

    Returns
    -------
    int
        In [1, 2**31]: never 0, which GalSim reads as "seed from the clock".
    """
    return int(np.random.SeedSequence([int(seed), int(index), 1]).generate_state(1)[0] >> 1) + 1
