"""`galhpc-generate`: N synthetic galaxies from a checkpoint, sharded over ranks.

Objects are made by `model.sample(n, generator, **conditions)` in blocks aligned to
object indices: the batch grid [k·B, (k+1)·B), further cut where the requested
component changes (`--counts`).  The block starting at object s uses a generator seeded
by derived_seed(seed, s), stored per object in the `seed` column, so object i is row
i - s of `model.sample(len, torch.Generator().manual_seed(seed_i), ...)`.  Blocks depend
on object indices and B only, so any rank count gives the same catalogue.

With a target (AB magnitude, half-light radius) table (`--target-table`, rejection
sampling, `galhpc.inference.photometry.MagSizeTarget`), a pilot of `pilot` objects (seeded
by (seed, PILOT_STREAM)) gives the generator's own density and the keep probability per
grid cell; block s then draws candidates of B objects from its generator, each with its own
flux_norm and uniform from the stream (seed, s, ACCEPT_STREAM), and keeps them in order until
the block is full.  Object i is then the k-th kept candidate of its block (the catalogue is
still the same on any rank count); its `rejection_draws` column counts the candidates drawn
for it, so kept / Σ draws is the measured acceptance.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galhpc.formats.catalog import COMPONENT, IMAGES, IMAGES_CLEAN, OBJECT_ID, REJECTION_DRAWS, SEED, Shard, Z
from galhpc.inference.driver import RunResult, run_catalog
from galhpc.inference.emulate import Observer, SurveyEmulation, is_galsim_profile, load_psf, resolve_pixel_scale
from galhpc.inference.job import open_job
from galhpc.inference.options import GenerateOptions, OutputOptions, fingerprint_of, jsonable, to_record
from galhpc.inference.photometry import MagSizeTarget, Photometry, stamp_mag_size, store_photometry
from galhpc.inference.seeds import derived_seed
from galhpc.io.catalog_writer import run_meta
from galhpc.models.base import GalaxyModel
from galhpc.runtime.errors import CatalogError, DataError
from galhpc.runtime.precision import autocast
from galhpc.runtime.world import World

log = logging.getLogger("galhpc.inference.generate")

IMAGE_DTYPES = {"float16": np.float16, "float32": np.float32}
PILOT_STREAM = 3  # the rejection pilot's draws (seeds.SAMPLE_STREAM 0, NOISE_STREAM 1, photometry 2)
ACCEPT_STREAM = 4  # the rejection uniforms of each block
MAX_DRAWS_PER_OBJECT = 1000
TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class SurveySetup:
    """What the survey options of `GenerateOptions` resolve to once the checkpoint is read.

    Attributes
    ----------
    emulation : SurveyEmulation
        PSF, noise and pixel scale applied to the generated images.
    photometry : Photometry or None
        flux_norm, flux and mag_ab columns (`galhpc.inference.photometry`).
    rejection : Rejection or None
        Rejection sampling to a target (mag, r½) table.
    """

    emulation: SurveyEmulation = field(default_factory=SurveyEmulation)
    photometry: Photometry | None = None
    rejection: Rejection | None = None


@dataclass(frozen=True)
class Rejection:
    """Rejection sampling of generated objects to a target (AB magnitude, half-light radius) distribution.

    The grid, the keep probability per cell from the pilot, and their origin.
    """

    target: MagSizeTarget
    accept: np.ndarray  # (bins·bins,) keep probability per cell
    expected_acceptance: float  # kept / drawn on the pilot's distribution
    unreachable_fraction: float  # share of the target in cells the pilot never reached
    describe: Mapping[str, Any]  # table path, sha256, columns, bins, pilot size: the catalogue's identity

    def meta(self) -> dict[str, Any]:
        """/meta attributes: where the target came from and the pilot's acceptance.

        Returns
        -------
        dict
            ``rejection_target`` (JSON), ``rejection_expected_acceptance`` and
            ``rejection_unreachable_fraction``.
        """
        return {"rejection_target": json.dumps(dict(self.describe), sort_keys=True),
                "rejection_expected_acceptance": self.expected_acceptance,
                "rejection_unreachable_fraction": self.unreachable_fraction}


def component_segments(options: GenerateOptions) -> list[tuple[int, int, int | None]]:
    """The ranges of object indices and the mixture component each is drawn from.

    Parameters
    ----------
    options : GenerateOptions
        ``n`` and either ``component`` or ``counts``.

    Returns
    -------
    list of (int, int, int or None)
        (start, stop, component or None) ranges covering [0, n).

    Raises
    ------
    CatalogError
        Both a component and counts, or counts that are negative or do not sum to n.
    """
    if options.counts is not None:
        if options.component is not None:
            raise CatalogError("give either a component or per-component counts, not both")
        if any(c < 0 for c in options.counts) or sum(options.counts) != options.n:
            raise CatalogError(f"counts {list(options.counts)} must be non-negative and sum to n={options.n}")
        bounds = np.concatenate([[0], np.cumsum(options.counts)])
        return [(int(a), int(b), k) for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=False)) if b > a]
    return [(0, options.n, options.component)]


def sample_blocks(start: int, stop: int, batch_size: int,
                  segments: Sequence[tuple[int, int, int | None]]) -> list[tuple[int, int, int | None]]:
    """The sampling blocks covering objects [start, stop).

    The batch grid of size `batch_size` anchored at object 0, cut at component boundaries,
    so blocks depend on object indices only (the same on any rank count).

    Parameters
    ----------
    start, stop : int
        The object range.
    batch_size : int
        Objects per ``model.sample`` call.
    segments : sequence of (int, int, int or None)
        `component_segments`.

    Returns
    -------
    list of (int, int, int or None)
        (start, stop, component) blocks in order.
    """
    blocks = []
    for a, b, component in segments:
        lo, hi = max(a, start), min(b, stop)
        pos = lo
        while pos < hi:
            end = min(hi, (pos // batch_size + 1) * batch_size)
            blocks.append((pos, end, component))
            pos = end
    return blocks


class GenerateJob:
    """Produces the columns of generated objects for the catalogue driver."""

    def __init__(self, model: GalaxyModel, options: GenerateOptions, device: torch.device,
                 setup: SurveySetup | None = None, precision: str = "fp32") -> None:
        setup = setup or SurveySetup()
        if not model.generative:
            raise CatalogError(f"model {model.name!r} is not generative: it cannot make synthetic images")
        if options.dtype not in IMAGE_DTYPES:
            raise CatalogError(f"image dtype must be one of {sorted(IMAGE_DTYPES)}, got {options.dtype!r}")
        if options.keep_clean and not setup.emulation.active:
            raise CatalogError("--keep-clean needs survey emulation (--psf, --noise-sigma or --cosmos-noise)")
        unused = sorted(set(dict(options.conditions)) - {"component"})  # a component is checked per block
        if unused and model.sample_condition is None:
            # the unconditional models' sample() takes **conditions and ignores them: say so before any work
            raise CatalogError(f"model {model.name!r} is not conditional: --condition {', '.join(unused)} "
                               "would be ignored; drop it (--component picks a mixture component)")
        self.model = model.to(device).eval()
        self.options = options
        self.setup = setup
        self.precision = precision  # fp32 | bf16 | fp16: autocast of model.sample
        self.device = device
        self.n_objects = options.n
        self.batch_size = options.batch_size
        self.segments = component_segments(options)
        self.observer = Observer(setup.emulation, options.seed, device) if setup.emulation.active else None
        if setup.rejection is not None and setup.photometry is None:
            raise CatalogError("rejection sampling to a magnitude needs the photometry (flux_norm, zero point)")
        self.kept, self.drawn = 0, 0  # rejection sampling, this rank

    def prepare(self, shard_dir: Path) -> None:
        """Nothing to do once before the shards (the driver's hook).

        Parameters
        ----------
        shard_dir : Path
            Unused.
        """
        pass

    def start(self, shard_dir: Path) -> None:
        """Reset the rejection counters, so they count this run's objects, not the shard-size probe.

        Parameters
        ----------
        shard_dir : Path
            Unused: generation reads no saved state.
        """
        self.kept, self.drawn = 0, 0  # count this run's objects, not the driver's shard-size probe

    def master_groups(self, shard_dir: Path) -> Mapping[str, Mapping[str, np.ndarray]]:
        """The survey PSF as the master's /emulation group (none without a PSF).

        Parameters
        ----------
        shard_dir : Path
            Unused.

        Returns
        -------
        dict
            The PSF under ``emulation``; empty without one.
        """
        psf = self.setup.emulation.psf
        return {"emulation": {"psf": psf}} if psf is not None else {}

    def batches(self, shard: Shard) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """The columns of one shard, one `make` per batch.

        Parameters
        ----------
        shard : Shard
            The objects to generate.

        Yields
        ------
        int, dict
            Offset of the batch in the shard; its columns.
        """
        for lo in range(shard.start, shard.stop, self.batch_size):
            hi = min(lo + self.batch_size, shard.stop)
            yield lo - shard.start, self.make(lo, hi)

    @torch.inference_mode()
    def make(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """All columns of objects [start, stop).

        Parameters
        ----------
        start, stop : int
            The object range.

        Returns
        -------
        dict of str to numpy.ndarray
            ``images`` (N, H, W) or (N, C, H, W) of the output dtype, ``images_clean`` (with
            ``keep_clean``), ``z``, ``component`` int16, ``seed`` int64, ``object_id`` int64,
            ``rejection_draws`` (with a target) and the photometry columns.
        """
        pieces = [self._sample_block(*block) for block in sample_blocks(start, stop, self.batch_size, self.segments)]
        clean = torch.cat([p[0] for p in pieces])
        columns: dict[str, np.ndarray] = {}
        if self.observer is not None:
            observed = self.observer.observe(clean.float(), start)  # FFTs and noise in float32
            columns[IMAGES] = self._image_array(observed)
            if self.options.keep_clean:
                columns[IMAGES_CLEAN] = self._image_array(clean)
        else:
            columns[IMAGES] = self._image_array(clean)
        columns[Z] = torch.cat([p[1] for p in pieces]).float().cpu().numpy().reshape(stop - start, -1)
        columns[COMPONENT] = torch.cat([p[2] for p in pieces]).cpu().numpy().astype(np.int16)
        columns[SEED] = np.concatenate([p[3] for p in pieces])
        flux_norm = None
        if self.setup.rejection is not None:
            columns[REJECTION_DRAWS] = np.concatenate([p[4] for p in pieces])
            flux_norm = np.concatenate([p[5] for p in pieces])  # each kept candidate's own
        columns[OBJECT_ID] = np.arange(start, stop, dtype=np.int64)
        if self.setup.photometry is not None:  # fluxes of the noise-free stamps (the PSF keeps flux)
            flat = clean.float().cpu().numpy().reshape(stop - start, -1)
            columns.update(self.setup.photometry.columns(flat, self.options.seed, start, flux_norm))
        return columns

    def _sample_block(self, start: int, stop: int, component: int | None):
        seed = derived_seed(self.options.seed, start)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        n = stop - start
        if self.setup.rejection is not None:
            return self._reject_block(start, stop, component, generator, seed)
        samples = self._sample(n, generator, component)
        images = samples.images
        if images.shape[0] != n:
            raise CatalogError(f"model {self.model.name!r}: sample({n}) returned {images.shape[0]} images")
        component_col = samples.component.reshape(n)
        if component is not None and not bool((component_col == component).all()):
            raise CatalogError(
                f"model {self.model.name!r} ignored component={component} (it has no mixture prior or class "
                "condition); --component/--counts need a model that samples by component"
            )
        return images, samples.z, component_col, np.full(n, seed, dtype=np.int64)

    def _sample(self, n: int, generator: torch.Generator, component: int | None):
        """`model.sample(n, generator, **conditions)` under the run's precision."""
        conditions = dict(self.options.conditions)
        if component is not None:
            conditions["component"] = component
        try:
            with autocast(self.device, self.precision):
                return self.model.sample(n, generator, **conditions)
        except (TypeError, ValueError) as err:
            raise CatalogError(
                f"model {self.model.name!r} rejected sample() with conditions {conditions}: {err}"
            ) from err

    def _reject_block(self, start: int, stop: int, component: int | None, generator: torch.Generator, seed: int):
        """Objects [start, stop) by rejection sampling to the target.

        Candidates of `batch_size` come from the block's generator, each with its own flux_norm
        and uniform from the block's (seed, start, ACCEPT_STREAM) stream, kept in order until
        the block is full.  Returns (images, z, component, seed, rejection_draws, flux_norm) of
        the kept objects.
        """
        rejection, photometry = self.setup.rejection, self.setup.photometry
        n = stop - start
        rng = np.random.default_rng(derived_seed(self.options.seed, start, ACCEPT_STREAM))
        parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]] = []
        positions: list[np.ndarray] = []  # index of each kept candidate among all drawn in the block
        n_kept, drawn = 0, 0
        while n_kept < n:
            if drawn >= MAX_DRAWS_PER_OBJECT * n:
                raise CatalogError(f"rejection sampling kept {n_kept} of {n} objects of block {start} in {drawn} "
                                   "draws: the generator rarely reaches the target's magnitudes and sizes")
            samples = self._sample(self.batch_size, generator, component)
            m = samples.images.shape[0]
            norm = photometry.flux_norms[rng.integers(len(photometry.flux_norms), size=m)]
            u = rng.random(m)
            cell = rejection.target.cells(*stamp_mag_size(samples.images.float().cpu().numpy(), norm, photometry))
            take = np.flatnonzero((cell >= 0) & (u < rejection.accept[np.maximum(cell, 0)]))[:n - n_kept]
            index = torch.as_tensor(take, device=samples.images.device)
            parts.append((samples.images[index], samples.z[index], samples.component.reshape(-1)[index], norm[take]))
            positions.append(drawn + take)
            n_kept += len(take)
            drawn += m
        kept_at = np.concatenate(positions)
        self.kept += n
        self.drawn += int(kept_at[-1]) + 1  # candidates up to the last kept one
        draws = np.diff(np.concatenate([[-1], kept_at])).astype(np.int32)
        return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts]),
                np.full(n, seed, dtype=np.int64), draws, np.concatenate([p[3] for p in parts]))

    def _image_array(self, images: torch.Tensor) -> np.ndarray:
        """Images (N, C, H, W) as the output dtype, one channel squeezed.

        Converted on the device, so a float16 catalogue moves and holds no float32 copy.
        """
        array = images.to(TORCH_DTYPES[self.options.dtype]).cpu().numpy()
        return array[:, 0] if array.ndim == 4 and array.shape[1] == 1 else array


def generate_fingerprint(options: GenerateOptions, setup: SurveySetup, output: OutputOptions, checkpoint_sha256: str,
                         device: torch.device) -> dict[str, Any]:
    """Everything that decides a generate catalogue's bits and layout (JSON-normalised).

    Parameters
    ----------
    options : GenerateOptions
        Its fingerprinted fields (`galhpc.inference.options.fingerprint_of`).
    setup : SurveySetup
        The resolved emulation, photometry and rejection rule.
    output : OutputOptions
        Its fingerprinted fields and `device_type`.
    checkpoint_sha256 : str
        The checkpoint's SHA-256.
    device : torch.device
        Where the model runs.

    Returns
    -------
    dict
        The fingerprint.
    """
    fp = {
        "kind": "generate",
        "checkpoint_sha256": checkpoint_sha256,
        **fingerprint_of(options),
        "emulation": setup.emulation.describe(),
        "photometry": None if setup.photometry is None else setup.photometry.meta(),
        "rejection": None if setup.rejection is None else dict(setup.rejection.describe),
        **output.fingerprint(device.type),
    }
    return jsonable(fp)


def generate_catalog(model: GalaxyModel, options: GenerateOptions, out: str | Path, *, output: OutputOptions,
                     world: World, device: torch.device, checkpoint: str | Path, checkpoint_sha256: str,
                     config_yaml: str, setup: SurveySetup | None = None) -> RunResult:
    """Generate `options.n` objects from `model` into the sharded catalogue `out`.

    Parameters
    ----------
    model : GalaxyModel
        A generative model (moved to `device`).
    options : GenerateOptions
        What to generate.
    out : str or Path
        The master file; shards go to ``<out>.shards/``.
    output : OutputOptions
        How the catalogue is written (its precision is the autocast of ``model.sample``).
    world : World
        The ranks sharing the work.
    device : torch.device
        Where the model samples.
    checkpoint : str or Path
        The checkpoint, recorded in /meta.
    checkpoint_sha256 : str
        Its SHA-256 (fingerprint and /meta).
    config_yaml : str
        The run config, recorded in /meta.
    setup : SurveySetup, optional
        The resolved survey emulation, photometry and rejection rule (default: none).

    Returns
    -------
    RunResult
        This rank's shards and objects (`run_catalog`).
    """
    setup = setup or SurveySetup()
    job = GenerateJob(model, options, device, setup, output.precision)
    fingerprint = generate_fingerprint(options, setup, output, checkpoint_sha256, device)
    meta = run_meta("generate", fingerprint, checkpoint, checkpoint_sha256, config_yaml, model.name)
    emulation = setup.emulation
    meta.update(n_objects=options.n, seed=options.seed, batch_size=options.batch_size, image_dtype=options.dtype,
                pixel_scale=emulation.pixel_scale, pixel_scale_source=emulation.pixel_scale_source,
                psf="/emulation/psf" if emulation.psf is not None else "none: the training images' own",
                generate_options=to_record(options), output_options=to_record(output))
    if setup.photometry is not None:
        meta.update(setup.photometry.meta())
    if setup.rejection is not None:
        meta.update(setup.rejection.meta())
    result = run_catalog(job, out, fingerprint, meta, output, world)
    if setup.rejection is not None and job.drawn:
        log.info("rank %d: rejection sampling kept %d of %d candidates (acceptance %.3f; pilot %.3f)", world.rank,
                 job.kept, job.drawn, job.kept / job.drawn, setup.rejection.expected_acceptance)
    return result


def pilot_rejection(model: GalaxyModel, options: GenerateOptions, photometry: Photometry | None,
                    target_mag: np.ndarray, target_size: np.ndarray, describe: Mapping[str, Any],
                    device: torch.device, bins: int = 8, pilot: int = 2000, precision: str = "fp32") -> Rejection:
    """The rejection rule to a target (mag, r½) table from a pilot of the generator's own draws.

    Parameters
    ----------
    model : GalaxyModel
        The generator (sampled with the options' component and conditions).
    options : GenerateOptions
        Seed, batch size, component and conditions.
    photometry : Photometry or None
        The catalogue's photometry (with a zero point).
    target_mag, target_size : numpy.ndarray
        The target table's AB magnitudes and half-light radii (pixels of the stamps).
    describe : Mapping
        The target's origin (path, sha256, columns), recorded in the catalogue.
    device : torch.device
        Where the model samples.
    bins, pilot : int
        Grid cells per axis; pilot draws (each rank draws the same pilot).
    precision : str, optional
        Autocast of ``model.sample`` (fp32 | bf16 | fp16).

    Returns
    -------
    Rejection
        The grid, keep probability per cell and the pilot's acceptance.

    Raises
    ------
    CatalogError
        Without a zero point, with --counts, or when no pilot draw reaches the target's range.
    """
    if photometry is None or photometry.zero_point is None:
        raise CatalogError("--target-table: a target magnitude distribution needs a zero point (--zero-point or the "
                           "training store's zero_point attribute)")
    if options.counts is not None:
        raise CatalogError("--target-table draws one population to the target; it takes --component, not --counts")
    try:
        target = MagSizeTarget.from_table(target_mag, target_size, bins)
    except DataError as err:
        raise CatalogError(f"--target-table: {err}") from err
    job = GenerateJob(model, GenerateOptions(n=pilot, seed=options.seed, batch_size=options.batch_size,
                                             component=options.component, conditions=options.conditions), device,
                      precision=precision)
    generator = torch.Generator(device=device).manual_seed(derived_seed(options.seed, 0, PILOT_STREAM))
    norm_rng = np.random.default_rng(derived_seed(options.seed, 0, PILOT_STREAM))
    cells = []
    with torch.inference_mode():
        for lo in range(0, pilot, options.batch_size):
            m = min(options.batch_size, pilot - lo)
            images = job._sample(m, generator, options.component).images.float().cpu().numpy()
            norm = photometry.flux_norms[norm_rng.integers(len(photometry.flux_norms), size=m)]
            cells.append(target.cells(*stamp_mag_size(images, norm, photometry)))
    try:
        accept, unreachable, expected = target.acceptance(np.concatenate(cells))
    except DataError as err:
        raise CatalogError(f"--target-table: {err} ({pilot} pilot draws)") from err
    log.info("rejection sampling to %s: pilot acceptance %.3f, %.1f%% of the target in cells the generator never "
             "reached", describe.get("path"), expected, 100 * unreachable)
    return Rejection(target, accept, expected, unreachable, dict(describe, bins=bins, pilot=pilot))


def read_target_table(path: str | Path, columns: Sequence[str] = ("mag_ab", "half_light_radius")
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(magnitudes, sizes, description) of a target table any astropy format reads.

    Parameters
    ----------
    path : str or Path
        The table (CSV, ECSV, FITS, Parquet, ...).
    columns : sequence of str, optional
        Its magnitude and half-light radius (pixels) columns.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, dict)
        float64 magnitudes and sizes (masked entries NaN), and the table's path, SHA-256
        and columns.

    Raises
    ------
    CatalogError
        For an unreadable table or a missing column (naming the table's columns).
    """
    from astropy.table import Table

    from galhpc.checkpoint import file_sha256

    mag_col, size_col = columns
    try:
        table = Table.read(path)
    except Exception as err:  # astropy raises assorted errors for unreadable or unknown formats
        raise CatalogError(f"--target-table {path}: cannot read it as a table: {err}") from err
    missing = [c for c in (mag_col, size_col) if c not in table.colnames]
    if missing:
        raise CatalogError(f"--target-table {path}: no column(s) {missing}; columns: {', '.join(table.colnames)}")
    describe = {"path": str(path), "sha256": file_sha256(path), "columns": [mag_col, size_col]}
    return _floats(table[mag_col]), _floats(table[size_col]), describe


def _floats(column) -> np.ndarray:
    """A table column as float64 with masked entries NaN."""
    return np.ma.filled(np.ma.asarray(column, np.float64), np.nan)


def generate_from_checkpoint(checkpoint: str | Path, out: str | Path, generate: GenerateOptions,
                             output: OutputOptions | None = None) -> RunResult:
    """The whole `galhpc-generate` job: set up this rank (`open_job`), resolve the survey, generate.

    The pixel scale (`GenerateOptions.pixel_scale`, for GalSim PSF profiles and COSMOS
    noise): None takes the scale the model was trained at when the checkpoint records it
    (or, for older checkpoints, its training store tells it), else 0.03 (see
    `resolve_pixel_scale`); the value and its origin are logged and go to /meta.  The zero
    point and bunit override the training store's own attributes: every object gets
    `flux_norm`, `flux` (survey units) and `mag_ab` columns (`galhpc.inference.photometry`).
    A target table draws the catalogue to its (mag, r½) distribution by rejection sampling
    (see the module docstring); the pilot's acceptance goes to /meta
    (`rejection_expected_acceptance`) and each object's `rejection_draws` column counts its
    candidates.

    Parameters
    ----------
    checkpoint : str or Path
        The model checkpoint.
    out : str or Path
        The master file; shards go to ``<out>.shards/``.
    generate : GenerateOptions
        What to generate.
    output : OutputOptions, optional
        How the catalogue is written and where the model runs (default `OutputOptions()`);
        its precision (the autocast of ``model.sample``) is part of the fingerprint.

    Returns
    -------
    RunResult
        This rank's share of the work.

    Raises
    ------
    CatalogError
        A model that is not generative, bad options, an output of other settings.
    """
    from galhpc.checkpoint import recorded_pixel_scale

    output = output or OutputOptions()
    job = open_job(checkpoint, output, "galhpc-generate")
    cfg, world = job.config, job.world
    scale = resolve_pixel_scale(generate.pixel_scale, cfg, recorded_pixel_scale(job.payload))
    used = generate.cosmos_noise or bool(generate.psf and is_galsim_profile(generate.psf))
    if world.rank == 0:
        log.log(logging.WARNING if used and not scale.known else logging.INFO,
                "pixel scale %g arcsec/pixel%s: %s", scale.value,
                "" if used else " (unused: no GalSim PSF profile or COSMOS noise)", scale.source)
    emulation = SurveyEmulation(
        psf=load_psf(generate.psf, scale.value) if generate.psf else None, noise_sigma=generate.noise_sigma,
        cosmos_noise=generate.cosmos_noise, pixel_scale=scale.value, pixel_scale_source=scale.source,
    )
    photometry = store_photometry(cfg.train.store, generate.zero_point, generate.bunit,
                                  recorded=job.payload.get("flux_calibration"))
    setup = SurveySetup(emulation=emulation, photometry=photometry)
    if generate.target_table is not None:
        mags, sizes, describe = read_target_table(generate.target_table, tuple(generate.target_columns))
        rejection = pilot_rejection(job.model.to(job.device).eval(), generate, photometry, mags, sizes, describe,
                                    job.device, generate.target_bins, generate.target_pilot, output.precision)
        setup = dataclasses.replace(setup, rejection=rejection)
    result = generate_catalog(job.model, generate, out, output=output, world=world, device=job.device,
                              checkpoint=checkpoint, checkpoint_sha256=job.checkpoint_sha256,
                              config_yaml=cfg.to_yaml(), setup=setup)
    log.info("rank %d: %d objects in %d shard(s), %.1f objects/s", world.rank, result.objects_written,
             result.shards_written, result.objects_per_second)
    return result
