"""`galhpc-encode`: embed and cluster every object of a training store, sharded over ranks.

Per object: μ, log σ² (when the encoder has one), γ over the K mixture components,
`component` = argmax γ (the most probable mixture component, int16), `recon_mse` = mean
squared error of `model.reconstruct(x)` (the reconstruction in the input's space as the
model's loss compares it, e.g. PSF ⊛ decode(μ) for a PSF model) against the input x,
object_id, and the model's `extra_columns`.  Row i of the catalogue is row i of the store.

The store's sky coordinates and catalogue columns travel along (`passthrough_columns`):
`ra` and `dec` when the store has them, then the catalogue columns its prep config's
sources name (`passthrough: [mag_r, ...]`), or exactly those named by `galhpc-encode
--passthrough`; copied as stored (ra/dec float64 degrees), their units in /meta
`column_units`, the list in /meta `passthrough` and in the fingerprint.

γ comes from the model's own mixture (AstroVaDEr) or, for models without a mixture
prior, from a post-hoc GMM: rank 0 encodes an evenly strided subsample of the store,
finds K with a stick-breaking BayesianGaussianMixture (galhpc.mixture.bayesian), fits a
diagonal GMM with that K and saves it as `<out>.shards/gmm.h5` before any shard is
written.  Every rank then loads that file, and a resumed run reuses it, so every shard
uses the same GMM.  It is copied into the master file's /gmm group.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galhpc.config import PrepConfig
from galhpc.data.store import StoreReader
from galhpc.formats.catalog import (
    COMPONENT,
    GAMMA,
    GMM_FILE,
    GMM_GROUP,
    GMM_KEYS,
    LOGVAR,
    MU,
    OBJECT_ID,
    RECON_MSE,
    STANDARD_COLUMNS,
    Shard,
)
from galhpc.formats.store import label_path
from galhpc.inference.driver import RunResult, run_catalog
from galhpc.inference.job import open_job
from galhpc.inference.options import EncodeOptions, OutputOptions, fingerprint_of, jsonable, to_record
from galhpc.io.catalog_writer import load_arrays, run_meta, save_arrays
from galhpc.models.base import GalaxyModel
from galhpc.runtime.batching import run_batched, to_numpy
from galhpc.runtime.errors import CatalogError, DataError, GalhpcError
from galhpc.runtime.precision import autocast
from galhpc.runtime.transfer import as_tensors, device_prefetch
from galhpc.runtime.world import LOCAL, World

log = logging.getLogger("galhpc.inference.encode")

SKY_COLUMNS = ("ra", "dec")


def declared_passthrough(reader: StoreReader) -> list[str]:
    """The catalogue columns the store's prep config names.

    Parameters
    ----------
    reader : StoreReader
        The open input store.

    Returns
    -------
    list of str
        Each source's `passthrough` list, in source order (label names in lower case, as
        galhpc.data.fits stores them); empty without a recorded config.

    Raises
    ------
    DataError
        The store's recorded prep config is unreadable.
    """
    prep = reader.prep
    if prep is None:
        return []
    return [name.lower() for source in prep.sources for name in (source.passthrough or [])]


def passthrough_columns(reader: StoreReader, requested: Sequence[str] | None = None) -> list[str]:
    """The store label columns an encode catalogue carries, in a fixed order.

    Parameters
    ----------
    reader : StoreReader
        The open input store.
    requested : sequence of str, optional
        The user's choice (``galhpc-encode --passthrough``); an empty sequence carries none.

    Returns
    -------
    list of str
        `requested`, else ``ra``, ``dec`` when the store has both labels, then the
        `passthrough` columns its prep config's sources name (`declared_passthrough`).

    Raises
    ------
    DataError
        A named column that is not a per-object label of the store, is not numeric or
        fixed-length text, or has the name of a standard catalogue column; one line naming
        the store.
    """
    if requested is not None:
        names = list(requested)
    else:
        sky = [n for n in SKY_COLUMNS if all(reader.has(label_path(s)) for s in SKY_COLUMNS)]
        names = sky + declared_passthrough(reader)
    names = list(dict.fromkeys(names))
    for name in names:
        if name in STANDARD_COLUMNS:
            raise DataError(f"{reader.path}: passthrough column {name!r} has the name of a standard catalogue column")
        found = reader.layout(label_path(name))
        if found is None or found[0] != (reader.n,):  # missing, a group, or not one value per object
            have = ", ".join(reader.label_names) or "none"
            raise DataError(f"{reader.path}: no per-object label column {name!r} to pass through (labels: {have})")
        if found[1].kind not in "iufS":
            raise DataError(f"{reader.path}: label column {name!r} has dtype {found[1]}; only numbers and "
                            "fixed-length text pass through")
    return names


def passthrough_units(reader: StoreReader, names: Sequence[str]) -> dict[str, str]:
    """Units of passthrough columns the store records (label dataset attribute ``unit``).

    Parameters
    ----------
    reader : StoreReader
        The open input store.
    names : sequence of str
        Label columns (`passthrough_columns`).

    Returns
    -------
    dict of str to str
        Column -> unit, for the columns that have one.
    """
    units = {name: reader.label_unit(name) for name in names}
    return {name: unit for name, unit in units.items() if unit is not None}


class EncodeJob:
    """Produces the per-object encode columns for the catalogue driver."""

    def __init__(self, model: GalaxyModel, reader: StoreReader, options: EncodeOptions, device: torch.device,
                 precision: str = "fp32") -> None:
        self.model = model.to(device).eval()
        self.reader = reader
        self.options = options
        self.device = device
        self.precision = precision  # fp32 | bf16 | fp16: autocast of the forward passes
        self.n_objects = reader.n
        self.batch_size = options.batch_size
        self.gmm: dict[str, torch.Tensor] | None = None
        self.passthrough = passthrough_columns(reader, options.passthrough)

    @property
    def needs_post_hoc_gmm(self) -> bool:
        """Whether γ comes from a post-hoc GMM (the model has no mixture prior of its own)."""
        return not self.model.has_mixture

    def prepare(self, shard_dir: Path) -> None:
        """Fit and save the post-hoc GMM, unless the model has a mixture or a resumed run saved one.

        Rank 0 only, before any shard (`CatalogJob.prepare`).

        Parameters
        ----------
        shard_dir : Path
            Where ``gmm.h5`` is saved.
        """
        path = shard_dir / GMM_FILE
        if self.needs_post_hoc_gmm and not path.exists():
            save_arrays(path, self.fit_post_hoc_gmm())

    def start(self, shard_dir: Path) -> None:
        """Load the saved post-hoc GMM onto this rank's device (models with a mixture: nothing).

        Parameters
        ----------
        shard_dir : Path
            Where `prepare` saved ``gmm.h5``.
        """
        if self.needs_post_hoc_gmm:
            self.gmm = {k: torch.from_numpy(v).to(self.device) for k, v in load_arrays(shard_dir / GMM_FILE).items()
                        if k in GMM_KEYS}

    def master_groups(self, shard_dir: Path) -> Mapping[str, Mapping[str, np.ndarray]]:
        """The post-hoc GMM as the master's /gmm group (models with a mixture: none).

        Every rank used this one GMM, so the master keeps it beside the catalogue.

        Parameters
        ----------
        shard_dir : Path
            Where ``gmm.h5`` was saved.

        Returns
        -------
        dict of str to dict
            ``{"gmm": {name: array}}``, or empty for a model with its own mixture.
        """
        return {GMM_GROUP: load_arrays(shard_dir / GMM_FILE)} if self.needs_post_hoc_gmm else {}

    def fit_post_hoc_gmm(self) -> dict[str, np.ndarray]:
        """Stick-breaking BGM for K, then a diagonal GMM with K components, on a strided subsample.

        Returns
        -------
        dict of str to numpy.ndarray
            ``log_pi`` (K,), ``mu`` (K, L), ``var`` (K, L) and ``components_per_batch``.

        Raises
        ------
        CatalogError
            The mixture cannot be fitted on the store's embeddings.
        """
        from galhpc.mixture.bayesian import fit_stick_breaking_bgm
        from galhpc.mixture.diagonal import fit_diag_gmm

        step = max(1, self.n_objects // self.options.gmm_fit_objects)
        def checked(lo: int) -> np.ndarray:
            images, ids = self.reader.read(lo, min(self.n_objects, lo + step * self.batch_size), step)
            refuse_non_finite(images, ids, self.reader.path)
            return images

        reads = (checked(lo) for lo in range(0, self.n_objects, step * self.batch_size))
        mus = run_batched(self.model, lambda x, _: to_numpy(self.model.encode(x).mu.float()), reads)
        embeddings = np.concatenate(mus)[: self.options.gmm_fit_objects]
        log.info("fitting the post-hoc GMM on %d embeddings (every %d-th object)", len(embeddings), step)
        try:
            found = fit_stick_breaking_bgm(embeddings, self.options.gmm_components, seed=self.options.seed)
            gmm = fit_diag_gmm(embeddings, found.k, seed=self.options.seed)
        except ValueError as err:
            raise CatalogError(f"cannot fit the post-hoc GMM on {self.reader.path}: {err}") from err
        return {**dict(zip(GMM_KEYS, (gmm.log_pi.numpy(), gmm.mu.numpy(), gmm.var.numpy()), strict=True)),
                "components_per_batch": np.asarray(found.counts, dtype=np.int64)}

    def batches(self, shard: Shard) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """The catalogue columns of one shard, batch by batch (store reads prefetched to the device).

        Parameters
        ----------
        shard : Shard
            The object range.

        Yields
        ------
        (int, dict of str to numpy.ndarray)
            Row offset within the shard, and the batch's columns (`encode_batch` and the
            passthrough columns).
        """
        ranges = [(lo, min(lo + self.batch_size, shard.stop)) for lo in range(shard.start, shard.stop, self.batch_size)]
        # the store's bad-pixel mask, so recon_mse leaves masked pixels out (as the likelihoods do)
        mask = ("mask",) if self.reader.has("mask") and "mask" not in self.model.reconstruct_columns else ()
        names = tuple(self.model.reconstruct_columns) + mask
        def checked() -> Iterator[tuple]:
            for lo, hi in ranges:
                images, ids = self.reader.read(lo, hi)
                refuse_non_finite(images, ids, self.reader.path)
                columns = self.reader.read_columns(names, lo, hi) if names else None
                carried = self.reader.read_columns(self.passthrough, lo, hi)
                yield lo, torch.from_numpy(images), ids, as_tensors(columns), carried

        for lo, images, ids, columns, carried in device_prefetch(checked(), self.device):
            out = self.encode_batch(images, ids, columns)
            for name, values in carried.items():
                if name in out:
                    raise CatalogError(f"{self.reader.path}: passthrough column {name!r} clashes with the model "
                                       f"{self.model.name!r}'s column of that name")
                out[name] = values
            yield lo - shard.start, out

    @torch.inference_mode()
    def encode_batch(self, images: np.ndarray | torch.Tensor, object_id: np.ndarray,
                     columns: Mapping[str, np.ndarray | torch.Tensor] | None = None) -> dict[str, np.ndarray]:
        """Catalogue columns of one batch.

        The model runs under the autocast of `precision`; columns are float32.

        Parameters
        ----------
        images : numpy.ndarray or torch.Tensor
            (B, C, H, W) float32 in the store's pixel units.
        object_id : numpy.ndarray
            (B,) int64.
        columns : Mapping, optional
            The store columns the model's `reconstruct` needs (`reconstruct_columns`, e.g.
            per-object PSFs) for these rows, and the store's ``mask`` (non-zero = bad pixel),
            which `recon_mse` leaves out.

        Returns
        -------
        dict of str to numpy.ndarray
            ``object_id``, ``mu`` (B, L), ``logvar`` (when the encoder has one), ``gamma``
            (B, K), ``component`` (B,) int16, ``recon_mse`` (B,) and the model's extra columns.
        """
        from galhpc.models.pixels import valid_pixels

        x = torch.as_tensor(images, device=self.device)
        columns = dict(columns) if columns else {}
        mask = columns.pop("mask", None) if "mask" not in self.model.reconstruct_columns else None
        columns = columns or None
        with autocast(self.device, self.precision):
            enc = self.model.encode(x)
            recon = self.model.reconstruct(
                x, None if columns is None else {k: torch.as_tensor(v, device=self.device) for k, v in columns.items()},
                encoding=enc)
            gamma = self.model.cluster_probs(enc.mu) if self.gmm is None else self._post_hoc_gamma(enc.mu)
        columns = {
            OBJECT_ID: object_id,
            MU: _numpy(enc.mu, np.float32),
            GAMMA: _numpy(gamma, np.float32),
            COMPONENT: _numpy(gamma.argmax(dim=1), np.int16),  # the most probable mixture component
            RECON_MSE: _numpy(_masked_mse(recon.float(), x.float(), valid_pixels({"mask": mask}, x.float())),
                                np.float32),
        }
        if enc.logvar is not None:
            columns[LOGVAR] = _numpy(enc.logvar, np.float32)
        for name, values in self.model.extra_columns(x, enc).items():
            if name in columns:
                raise CatalogError(f"model {self.model.name!r}: extra column {name!r} clashes with a standard column")
            columns[name] = _numpy(values, None)
        return columns

    def _post_hoc_gamma(self, mu: torch.Tensor) -> torch.Tensor:
        from galhpc.mixture.diagonal import gmm_responsibilities

        return gmm_responsibilities(mu.float(), *(self.gmm[key] for key in GMM_KEYS))


def _masked_mse(recon: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-object mean squared error (B,) over the pixels with weight 1 (all without weights)."""
    err = (recon - x).pow(2).flatten(1)
    if weight is None:
        return err.mean(dim=1)
    w = weight.reshape(err.shape)
    return (err * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


def refuse_non_finite(images: np.ndarray, object_id: np.ndarray, store: str | Path) -> None:
    """Refuse a batch with NaN/inf pixels, naming the store and the objects (their latents would be NaN).

    Parameters
    ----------
    images : numpy.ndarray
        (B, ...) pixels.
    object_id : numpy.ndarray
        (B,) their ids.
    store : str or Path
        The store, for the message.

    Raises
    ------
    DataError
        One line: the store, how many objects, their object ids (at most 10 shown).
    """
    bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
    if bad.any():
        ids = object_id[bad]
        shown = ", ".join(str(int(i)) for i in ids[:10]) + (", ..." if len(ids) > 10 else "")
        raise DataError(f"{store}: {len(ids)} object(s) with NaN/inf pixels (object_id {shown}); "
                        "remake the store with galhpc-prep, which fills and masks bad pixels")


def _numpy(values: torch.Tensor, dtype: Any) -> np.ndarray:
    """Tensor -> numpy for storage: floats as float32 unless `dtype` says, bools as int8."""
    if values.dtype in (torch.bfloat16, torch.float16):  # autocast outputs; numpy has no bfloat16
        values = values.float()
    array = values.detach().cpu().numpy()
    if dtype is not None:
        return array.astype(dtype, copy=False)
    if array.dtype == np.bool_:
        return array.astype(np.int8)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    return array



def encode_fingerprint(options: EncodeOptions, output: OutputOptions, checkpoint_sha256: str, store: dict[str, Any],
                       device: torch.device, post_hoc_gmm: bool, passthrough: Sequence[str] = ()) -> dict[str, Any]:
    """Everything that decides an encode catalogue's rows and layout (JSON-normalised).

    Parameters
    ----------
    options : EncodeOptions
        Its fingerprinted fields (`galhpc.inference.options.fingerprint_of`); the post-hoc
        GMM's only when that GMM is used.
    output : OutputOptions
        Its fingerprinted fields and `device_type`.
    checkpoint_sha256 : str
        The checkpoint's SHA-256.
    store : dict
        The input store's identity (`StoreReader.identity`).
    device : torch.device
        Where the model runs.
    post_hoc_gmm : bool
        Whether γ comes from a post-hoc GMM.
    passthrough : sequence of str
        The resolved passthrough columns.

    Returns
    -------
    dict
        The fingerprint; ``cluster_column`` keeps shards with a ``label`` column out of a resume.
    """
    fp = {
        "kind": "encode",
        "cluster_column": COMPONENT,
        "checkpoint_sha256": checkpoint_sha256,
        "input": store,
        "passthrough": list(passthrough),
        **fingerprint_of(options, omit_groups=() if post_hoc_gmm else ("post_hoc_gmm",)),
        **output.fingerprint(device.type),
    }
    return jsonable(fp)


def encode_catalog(model: GalaxyModel, store: str | Path, options: EncodeOptions, out: str | Path, *,
                   output: OutputOptions, world: World, device: torch.device, channels: int, image_size: int,
                   checkpoint: str | Path, checkpoint_sha256: str, config_yaml: str,
                   input_name: str | Path | None = None) -> RunResult:
    """Encode every object of `store` with `model` into the sharded catalogue `out`.

    Parameters
    ----------
    model : GalaxyModel
        The model (moved to `device`).
    store : str or Path
        The training store to encode.
    options : EncodeOptions
        What to compute.
    out : str or Path
        The master file; shards go to ``<out>.shards/``.
    output : OutputOptions
        How the catalogue is written (its precision is the model's autocast).
    world : World
        The ranks sharing the work.
    device : torch.device
        Where the model runs.
    channels, image_size : int
        The model's input shape, checked against the store.
    checkpoint, checkpoint_sha256, config_yaml : str or Path
        The checkpoint, its SHA-256 (also in the fingerprint) and its run config, recorded in /meta.
    input_name : str or Path, optional
        What /meta ``input`` names (default `store`), e.g. the FITS cutouts a temporary
        store was made from.

    Returns
    -------
    RunResult
        This rank's part (`run_catalog`).
    """
    reader = StoreReader(store)
    try:
        reader.check_fits(model.name, channels, image_size)
        job = EncodeJob(model, reader, options, device, output.precision)
        fingerprint = encode_fingerprint(options, output, checkpoint_sha256, reader.identity(), device,
                                         job.needs_post_hoc_gmm, job.passthrough)
        meta = run_meta("encode", fingerprint, checkpoint, checkpoint_sha256, config_yaml, model.name)
        meta.update(input=os.path.abspath(input_name or store),  # search/rarity find it from any folder
                    n_objects=reader.n, batch_size=options.batch_size,
                    gmm="post-hoc" if job.needs_post_hoc_gmm else "model", passthrough=json.dumps(job.passthrough),
                    column_units=json.dumps(passthrough_units(reader, job.passthrough), sort_keys=True),
                    encode_options=to_record(options), output_options=to_record(output))
        return run_catalog(job, out, fingerprint, meta, output, world)
    finally:
        reader.close()


HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5_file(path: str | Path) -> bool:
    """Whether `path` is an HDF5 file: its signature at byte 0, 512, 1024, 2048, ... (a user block).

    Parameters
    ----------
    path : str or Path
        Any path; a missing file or a folder is not HDF5.

    Returns
    -------
    bool
        True for an existing HDF5 file (HDF5 file format specification, section 2.1).
    """
    path = Path(path)
    if not path.is_file():
        return False
    size = path.stat().st_size
    with open(path, "rb") as fh:
        offset = 0
        while offset + len(HDF5_SIGNATURE) <= size:
            fh.seek(offset)
            if fh.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else 2 * offset
    return False


def is_store_path(path: str | Path) -> bool:
    """Whether `path` names a store (HDF5) rather than FITS cutouts.

    Parameters
    ----------
    path : str or Path
        An input path, file or glob.

    Returns
    -------
    bool
        True for an HDF5 suffix or an existing HDF5 file.
    """
    return Path(path).suffix.lower() in HDF5_SUFFIXES or is_hdf5_file(path)


def fits_prep(fits_input: str | Path, prep: PrepConfig) -> PrepConfig:
    """The checkpoint's prep recipe applied to other FITS cutouts (a file, directory or glob).

    Size, recipe, crop and intensity steps are those of the training store; the FITS
    conventions (HDU choice and options) of its first FITS source are kept, without its
    catalogue (other cutouts are not in it) unless `fits_input` is that source's own path;
    filters are off so every object is encoded.

    Parameters
    ----------
    fits_input : str or Path
        FITS file, directory or glob.
    prep : PrepConfig
        The training store's prep config.

    Returns
    -------
    PrepConfig
        One FITS source, no filters.
    """
    from galhpc.config import SourceConfig

    trained = next((s for s in prep.sources if s.kind == "fits"), None)
    if trained is None:
        source = SourceConfig(kind="fits", path=str(fits_input))
    elif trained.path is not None and str(trained.path) == str(fits_input):
        source = trained  # the training cutouts themselves: their catalogue (ids, ra/dec) too
    else:
        source = dataclasses.replace(trained, path=str(fits_input), catalog=None)
    return dataclasses.replace(prep, sources=[source], filters={})


@contextmanager
def fits_as_store(fits_input: str | Path, prep: PrepConfig, near: Path, world: World | None = None) -> Iterator[Path]:
    """FITS cutouts prepared with `prep` (`fits_prep`) into a temporary store, removed at exit.

    Parameters
    ----------
    fits_input : str or Path
        FITS file, directory or glob.
    prep : PrepConfig
        The checkpoint's prep recipe (`galhpc.checkpoint.inference_prep`).
    near : Path
        An output path: the temporary store is made in a hidden directory beside it (shared
        by the ranks, unlike a node-local TMPDIR), written through the store's atomic writer.
    world : World, optional
        Rank 0 prepares, every rank gets the path; rank 0 removes it after a barrier.

    Yields
    ------
    Path
        The temporary store.

    Raises
    ------
    CatalogError
        The FITS input cannot be prepared (the message names the file and object).
    """
    from galhpc.data.prep import run_prep

    made: list[Path] = []

    def make() -> Path:
        near.parent.mkdir(parents=True, exist_ok=True)
        made.append(Path(tempfile.mkdtemp(prefix=f".{near.name}.prep-", dir=near.parent)))
        log.info("preparing FITS input %s with the checkpoint's prep recipe %s (%d px)", fits_input, prep.recipe,
                 prep.image_size)
        try:
            return run_prep(fits_prep(fits_input, prep), output=made[0] / "input.h5")
        except Exception as err:  # the data layer names the file and object
            raise CatalogError(f"cannot prepare FITS input {fits_input}: {err}") from err

    try:
        world = world or LOCAL
        with world.root_first(error=CatalogError):
            store = make() if world.is_root else None
        store = world.broadcast_object(store)
        yield store
        world.barrier()  # every rank is done reading before rank 0 removes it
    finally:
        for directory in made:
            shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def as_store(path: str | Path | None, checkpoint: str | Path, near: Path) -> Iterator[Path | None]:
    """A store for `path`: itself, or FITS cutouts prepared into a temporary one.

    Parameters
    ----------
    path : str or Path or None
        A store (yielded as is), None (yielded as is), or FITS cutouts prepared with the
        prep recipe of `checkpoint`'s training store (`fits_as_store`).
    checkpoint : str or Path
        The checkpoint whose recipe prepares FITS input.
    near : Path
        An output path the temporary store is made beside.

    Yields
    ------
    Path or None
        The store to read.

    Raises
    ------
    CatalogError
        FITS input that does not exist or cannot be prepared (naming the file).
    CheckpointError
        An unreadable checkpoint, or one without a usable prep recipe.
    """
    if path is None or is_store_path(path):
        yield None if path is None else Path(path)
        return
    from galhpc.checkpoint import checkpoint_config, inference_prep, read_checkpoint

    if not glob.glob(str(path)):
        raise CatalogError(f"input {path} not found")
    payload = read_checkpoint(checkpoint)
    with fits_as_store(path, inference_prep(payload, checkpoint_config(payload, checkpoint), checkpoint),
                       near) as store:
        yield store


def encode_from_checkpoint(checkpoint: str | Path, store: str | Path, out: str | Path,
                           encode: EncodeOptions | None = None, output: OutputOptions | None = None) -> RunResult:
    """The whole `galhpc-encode` job: set up this rank (`open_job`), then encode.

    Parameters
    ----------
    checkpoint : str or Path
        The model checkpoint.
    store : str or Path
        A training store, or FITS cutouts (file, directory or glob) that rank 0 first
        prepares into a temporary store with the prep recipe of the checkpoint's training
        store (`fits_as_store`), removed when the catalogue is written.
    out : str or Path
        The master file; shards go to ``<out>.shards/``.
    encode : EncodeOptions, optional
        What to compute (default `EncodeOptions()`).
    output : OutputOptions, optional
        How the catalogue is written and where the model runs (default `OutputOptions()`);
        its precision is part of the fingerprint, so a resume never mixes precisions.

    Returns
    -------
    RunResult
        This rank's part, logged as objects per second.

    Raises
    ------
    CatalogError
        Missing FITS input, an output of other settings, a failed rank.
    """
    from galhpc.checkpoint import inference_prep

    encode = encode or EncodeOptions()
    output = output or OutputOptions()
    job = open_job(checkpoint, output, "galhpc-encode")
    cfg = job.config

    def run(path: Path) -> RunResult:
        return encode_catalog(job.model, path, encode, out, output=output, world=job.world, device=job.device,
                              channels=cfg.model.channels, image_size=cfg.model.image_size, checkpoint=checkpoint,
                              checkpoint_sha256=job.checkpoint_sha256, config_yaml=cfg.to_yaml(), input_name=store)

    if is_store_path(store):
        result = run(Path(store))
    else:
        if not glob.glob(str(store)):
            raise CatalogError(f"input {store} not found")
        with fits_as_store(store, inference_prep(job.payload, cfg, checkpoint), Path(out), job.world) as prepared:
            try:
                result = run(prepared)
            except GalhpcError as err:  # name the user's FITS input, not the temporary store
                raise type(err)(str(err).replace(str(prepared), f"{store} (as prepared)")) from err
    log.info("rank %d: %d objects in %d shard(s), %.1f objects/s", job.world.rank, result.objects_written,
             result.shards_written, result.objects_per_second)
    return result
