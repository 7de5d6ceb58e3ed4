"""The set-up both catalogue stages share: this rank, its device and the checkpoint's model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from galhpc.config import RunConfig
from galhpc.inference.options import OutputOptions
from galhpc.io.catalog_writer import parse_compression
from galhpc.models.base import GalaxyModel
from galhpc.runtime.precision import check_precision
from galhpc.runtime.world import World


@dataclass(frozen=True)
class OpenJob:
    """One rank of a catalogue job, ready to run.

    Attributes
    ----------
    world : World
        The ranks of the job (MPI, or one process).
    device : torch.device
        Where this rank's model runs.
    model : GalaxyModel
        The checkpoint's model, in eval mode on the CPU (the job moves it).
    config : RunConfig
        The checkpoint's run config.
    payload : dict
        The checkpoint as read (`galhpc.checkpoint.read_checkpoint`).
    checkpoint_sha256 : str
        SHA-256 of the checkpoint file (fingerprint and /meta).
    """

    world: World
    device: torch.device
    model: GalaxyModel
    config: RunConfig
    payload: dict[str, Any]
    checkpoint_sha256: str


def open_job(checkpoint: str | Path, output: OutputOptions, command: str) -> OpenJob:
    """Check the output options, start this rank, pick its device and load the checkpoint's model.

    Parameters
    ----------
    checkpoint : str or Path
        The model checkpoint.
    output : OutputOptions
        Its precision and compression are checked before anything is read; its threads
        and device set up the rank.
    command : str
        The command, for messages (``galhpc-encode``).

    Returns
    -------
    OpenJob
        The rank's world, device, model, config, checkpoint payload and SHA-256.

    Raises
    ------
    CatalogError
        An unknown compression.
    CheckpointError
        An unreadable checkpoint.
    """
    from galhpc.checkpoint import checkpoint_config, file_sha256, load_model, read_checkpoint
    from galhpc.runtime import pick_device, start_mpi_rank

    check_precision(output.precision, f"{command} --precision")
    parse_compression(output.compression)  # before any input is read (FITS input is prepared first)
    world = start_mpi_rank(output.threads)
    device = pick_device(output.device, world.local_rank)
    payload = read_checkpoint(checkpoint)
    config = checkpoint_config(payload, checkpoint)
    model = load_model(checkpoint, payload=payload)
    return OpenJob(world, device, model, config, payload, file_sha256(checkpoint))
