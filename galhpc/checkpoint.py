"""Checkpoint files: atomic to write, self-describing to read.

A checkpoint is a `torch.save` dict holding at least `model_name`, `model_state`,
`config` (the run's YAML text) and `galhpc_version`; the trainer adds optimizer,
schedule and RNG state, and the training store's pixel scale (`pixel_scale`, arcsec per
pixel or None, and `pixel_scale_source`: where it came from or why it is unknown), so
that `galhpc-generate` needs no access to the store, and the prep config the store was
made with (`store_prep`, the store's `config` attribute), so that inference on FITS
cutouts prepares them the way the training images were (`inference_prep`).  It is
written to a temporary name, fsynced and renamed, so a job killed mid-save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

import galhpc
from galhpc.config import ConfigError, ModelConfig, PrepConfig, RunConfig, config_from_yaml_text
from galhpc.models.base import GalaxyModel
from galhpc.runtime.errors import CheckpointError
from galhpc.runtime.files import atomic_open, is_disk_full


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a checkpoint dict atomically (`galhpc.runtime.files.atomic_open`).

    Parameters
    ----------
    path : str or Path
        Where to write it (parent folders are made).
    payload : dict
        ``model_name``, ``model_state``, ``config`` and whatever the trainer adds; the
        galhpc version is added.

    Returns
    -------
    Path
        The checkpoint written, `path` as a Path.

    Raises
    ------
    CheckpointError
        The file could not be written (full disk, no permission); no temporary is left.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"galhpc_version": galhpc.__version__, **payload}
    buffer = io.BytesIO()  # serialised first: torch's writer turns a full disk into a bare RuntimeError
    torch.save(payload, buffer)
    try:
        with atomic_open(path, "wb") as fh:
            fh.write(buffer.getbuffer())
    except OSError as err:
        why = "no space left on device" if is_disk_full(err) else (err.strerror or str(err))
        raise CheckpointError(f"could not write checkpoint {path}: {why}") from err
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a galhpc checkpoint file.

    Parameters
    ----------
    path : str or Path
        The checkpoint.
    map_location : str or torch.device, optional
        Where tensors are loaded (default ``"cpu"``).

    Returns
    -------
    dict
        The payload: at least ``model_state`` and ``config`` (the run's YAML text).

    Raises
    ------
    CheckpointError
        Missing, unreadable (truncated, corrupt) or not a galhpc checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for truncated/corrupt files
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not a galhpc checkpoint): {err}") from err
    if not isinstance(payload, dict) or "model_state" not in payload or "config" not in payload:
        raise CheckpointError(f"{path} is not a galhpc checkpoint (no model_state/config)")
    return payload


def checkpoint_config(payload: dict[str, Any], path: str | Path = "<checkpoint>") -> RunConfig:
    """The run config a checkpoint carries.

    Parameters
    ----------
    payload : dict
        A checkpoint (`read_checkpoint`).
    path : str or Path, optional
        The checkpoint, for messages.

    Returns
    -------
    RunConfig
        The parsed and validated config.

    Raises
    ------
    CheckpointError
        The embedded config is invalid.
    """
    try:
        return config_from_yaml_text(payload["config"])
    except ConfigError as err:
        raise CheckpointError(f"{path}: its embedded config is invalid: {err}") from err


def assemble_model(cfg: ModelConfig) -> GalaxyModel:
    """`galhpc.models.build_model` with the collaborators the config names on disk.

    A ``vqvae_prior`` whose `params.vqvae_checkpoint` exists is handed that VQ-VAE, built
    and loaded here (models read no files); otherwise the prior waits for a state dict
    that embeds its VQ-VAE.  A ``vqvae`` whose `params.psf` names a file is handed the PSF
    image (`galhpc.data.psf.read_psf`).

    Parameters
    ----------
    cfg : ModelConfig
        The model section of a run config.

    Returns
    -------
    GalaxyModel
        The model with freshly initialised weights (and loaded collaborators).

    Raises
    ------
    CheckpointError
        The named VQ-VAE checkpoint is unreadable or holds another model.
    PSFError
        The named PSF file is missing or unusable.
    """
    from galhpc.data.psf import read_psf
    from galhpc.models import build_model

    collaborators: dict[str, Any] = {}
    vqvae_path = cfg.params.get("vqvae_checkpoint") if cfg.name == "vqvae_prior" else None
    if vqvae_path is not None and Path(vqvae_path).is_file():
        collaborators["vqvae"] = load_model(vqvae_path, expect="vqvae")
    if cfg.name == "vqvae" and (psf_image := read_psf(cfg.params.get("psf"))) is not None:
        collaborators["psf_image"] = psf_image
    return build_model(cfg, **collaborators)


def load_model(path: str | Path, device: str | torch.device = "cpu", *, expect: str | None = None,
               payload: dict[str, Any] | None = None) -> GalaxyModel:
    """Rebuild the model a galhpc checkpoint holds, in eval mode.

    Parameters
    ----------
    path : str or Path
        A checkpoint written by `galhpc-train` (``run/ckpt.pt``).  It carries the run's
        config, so nothing else is needed.
    device : str or torch.device, optional
        Where to put the weights (default ``"cpu"``).
    expect : str, optional
        The registry name of the model the caller needs; a checkpoint of another model is
        refused with a message naming both.
    payload : dict, optional
        The checkpoint already read (`read_checkpoint`), so a caller that also needs its
        config (`checkpoint_config`) reads the file once.

    Returns
    -------
    galhpc.models.base.GalaxyModel
        A `torch.nn.Module` in eval mode with ``encode(x)`` (x: (B, C, H, W) float32 in
        the training store's pixel units; returns an encoding with ``mu`` (B, L)),
        ``decode(z)`` -> (B, C, H, W), ``reconstruct(x)`` and, for generative models,
        ``sample(n, generator, **conditions)`` -> an object with ``images`` (n, C, H, W)
        float32, ``z`` and ``component`` (int, -1 without a mixture).  ``model.name``
        is the registry name (``"astrovader"``, ``"vae"``, ``"vqvae"``, ...).

    Raises
    ------
    CheckpointError
        If the file is missing, truncated, not a galhpc checkpoint, holds another model
        than `expect`, or its weights do not fit its config.

    See Also
    --------
    read_checkpoint, checkpoint_config : the raw payload and the run config.

    References
    ----------
    The models and their papers are listed in docs/models.md, among them [1]_ and [2]_.

    .. [1] Spindler, A., Geach, J. E., & Smith, M. J. (2021), "AstroVaDEr: astronomical
       variational deep embedder for unsupervised morphological classification of
       galaxies and synthetic image generation", MNRAS 502, 985.
    .. [2] van den Oord, A., Vinyals, O., & Kavukcuoglu, K. (2017), "Neural discrete
       representation learning", NeurIPS 30.

    Examples
    --------
    >>> model = load_model("run/ckpt.pt")                            # doctest: +SKIP
    >>> out = model.sample(16, torch.Generator().manual_seed(0))     # doctest: +SKIP
    >>> out.images.shape                                             # doctest: +SKIP
    torch.Size([16, 1, 64, 64])
    """
    if payload is None:
        payload = read_checkpoint(path, device)
    cfg = checkpoint_config(payload, path)
    name = payload.get("model_name", cfg.model.name)
    if expect is not None and name != expect:
        raise CheckpointError(f"{path} holds a {name!r} model, but {expect!r} is needed")
    model = assemble_model(cfg.model)
    try:
        model.load_state_dict(payload["model_state"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit model {name!r} of its config: {err}") from err
    return model.to(device).eval()


def recorded_pixel_scale(payload: dict[str, Any]) -> tuple[float | None, str] | None:
    """The training images' pixel scale as the trainer recorded it in a checkpoint.

    Parameters
    ----------
    payload : dict
        A checkpoint (`read_checkpoint`).

    Returns
    -------
    (float or None, str) or None
        Arcsec per pixel (None when unknown) and where it came from or why it is unknown;
        None for a checkpoint that records nothing (written before checkpoints carried it,
        or not by the trainer).
    """
    if "pixel_scale" not in payload:
        return None
    value = payload["pixel_scale"]
    return (None if value is None else float(value)), str(payload.get("pixel_scale_source", ""))


def inference_prep(payload: dict[str, Any], cfg: RunConfig, path: str | Path = "<checkpoint>") -> PrepConfig:
    """The prep recipe inference applies to FITS cutouts: that of the training store.

    Parameters
    ----------
    payload : dict
        A checkpoint (`read_checkpoint`).
    cfg : RunConfig
        Its config (`checkpoint_config`).
    path : str or Path
        The checkpoint, for messages.

    Returns
    -------
    PrepConfig
        The prep config recorded from the training store (`store_prep`), else, for a
        checkpoint that records none, the prep section of the run's own config.

    Raises
    ------
    CheckpointError
        The recorded prep config is unreadable, or a fallback whose image size is not the
        model's (one line naming the checkpoint).
    """
    text = payload.get("store_prep")
    if text:
        try:
            return config_from_yaml_text(text).prep
        except ConfigError as err:
            raise CheckpointError(f"{path}: the recorded prep config of its training store is invalid: {err}") from err
    prep = cfg.prep
    final = (prep.image_size if "resize" in prep.recipe
             else prep.crop_size if "crop" in prep.recipe else None)  # else: the cutouts' own size
    if final is not None and final != cfg.model.image_size:
        raise CheckpointError(f"{path} records no prep config of its training store, and its config's prep section "
                              f"makes {final}-pixel images where the model takes {cfg.model.image_size}; prepare the "
                              "FITS cutouts with galhpc-prep and the training store's config, then pass the store")
    return prep


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks.

    Parameters
    ----------
    path : str or Path
        The file.
    chunk : int, optional
        Bytes read at a time (default 1 MiB).

    Returns
    -------
    str
        The hex digest (64 characters).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_catalogue_checkpoint(checkpoint: str | Path, meta: dict[str, Any], catalogue: str | Path) -> None:
    """Refuse a checkpoint other than the one a catalogue was made with.

    The one check of every command that reads a catalogue together with a checkpoint
    (galhpc-report, galhpc-search image queries, galhpc-rarity): the file's SHA-256 must
    equal the catalogue's /meta ``checkpoint_sha256`` (catalogues without one pass).

    Parameters
    ----------
    checkpoint : str or Path
        The checkpoint the command was given.
    meta : dict
        The catalogue's /meta attributes (`galhpc.io.catalog.Catalog.meta`).
    catalogue : str or Path
        The catalogue's master file, for the message.

    Raises
    ------
    CheckpointError
        One line naming both files and the checkpoint the catalogue records.
    """
    want = meta.get("checkpoint_sha256")
    if not want:
        return
    have = file_sha256(checkpoint)
    if have != want:
        raise CheckpointError(
            f"{checkpoint} is not the checkpoint {catalogue} was made with (SHA-256 {have[:12]}..., the catalogue "
            f"records {str(want)[:12]}... of {meta.get('checkpoint', '?')}): its latents and components belong to "
            "another model; pass that model's checkpoint or re-encode the catalogue")
