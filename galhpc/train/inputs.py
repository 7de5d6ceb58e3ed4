"""Checks of the training store against the model, before the first step, and after a non-finite loss.

Each refusal is one `DataError` line naming the store: images of another shape than the
model's, a prep recipe or columns the model's likelihood does not assume, NaN/inf pixels
behind a non-finite loss or in the batches a model initialises from.  The store is read
through `galhpc.data.store` (its metadata, never the pixels).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from galhpc.models.base import GalaxyModel
from galhpc.runtime.errors import DataError, NonFiniteLossError

log = logging.getLogger(__name__)


def bad_input_error(batch: dict[str, Any], store: str | Path, err: NonFiniteLossError) -> None:
    """After a non-finite loss: raise a `DataError` naming the store and objects if the batch has NaN/inf pixels.

    Parameters
    ----------
    batch : dict
        The step's batch: ``image`` (B, C, H, W) and ``object_id`` (B,).
    store : str or Path
        The training store, for the message.
    err : NonFiniteLossError
        The error the loss raised.

    Raises
    ------
    DataError
        When some image of the batch has a NaN or inf pixel (up to 10 object ids named);
        otherwise returns and the caller re-raises `err`.
    """
    images = batch["image"]
    bad = ~torch.isfinite(images.flatten(1)).all(dim=1)
    if bool(bad.any()):
        ids = [int(i) for i in torch.as_tensor(batch["object_id"]).cpu()[bad.cpu()][:10]]
        raise DataError(f"{store}: NaN/inf pixels in object_id {', '.join(map(str, ids))} "
                        f"({int(bad.sum())} object(s) of the batch) gave a non-finite loss: {err}") from err


def check_init_batches(batches: list[dict[str, Any]], store: str | Path, wanted: int, model: str) -> None:
    """Refuse NaN/inf pixels in the batches a model initialises from; warn when they are too few.

    A model's data-driven start (a linear path's PCA, a depth prior's fit) runs before the
    first step, so the non-finite-loss check (`bad_input_error`) would come too late.

    Parameters
    ----------
    batches : list of dict
        The initialisation batches: ``image`` (B, C, H, W) and ``object_id`` (B,).
    store : str or Path
        The training store, for the messages.
    wanted : int
        Batches the model asked for (`GalaxyModel.data_init_batches`).
    model : str
        The model's name, for the messages.

    Raises
    ------
    DataError
        When some image has a NaN or inf pixel (up to 10 object ids named).
    """
    ids = []
    for batch in batches:
        bad = ~torch.isfinite(batch["image"].flatten(1)).all(dim=1)
        ids += [int(i) for i in torch.as_tensor(batch["object_id"]).cpu()[bad.cpu()]]
    if ids:
        raise DataError(f"{store}: NaN/inf pixels in object_id {', '.join(map(str, ids[:10]))} "
                        f"({len(ids)} of the stamps {model} initialises from); remake the store with galhpc-prep, "
                        "which fills and masks bad pixels")
    if len(batches) < wanted:
        log.warning("%s: %s initialises from %d batches but the training split has only %d (%d stamps): its "
                    "start is fitted to fewer stamps than the preset assumes", store, model, wanted, len(batches),
                    sum(len(b["image"]) for b in batches))


def check_store_shape(store: str | Path, channels: int, image_size: int) -> None:
    """Refuse a store whose images are not the model's (C, H, W), before torch sees them.

    Parameters
    ----------
    store : str or Path
        The training store.
    channels, image_size : int
        The model's input channels and side in pixels.

    Raises
    ------
    DataError
        One line with the store's image shape and the model's size.
    """
    from galhpc.data.store import read_store_info

    shape = tuple(read_store_info(store).image_shape)
    shape = (1, *shape) if len(shape) == 2 else shape
    if shape != (channels, image_size, image_size):
        raise DataError(f"{store}: images are {'x'.join(map(str, shape))} (C x H x W) but the model takes "
                        f"{channels}x{image_size}x{image_size} (model.channels x model.image_size^2); "
                        "use a store prepared at the model's size, or set model.image_size")


def store_pixel_datasets(store: str | Path) -> list[str]:
    """The per-pixel maps the store holds beside its images, which batches then carry for the likelihoods.

    Parameters
    ----------
    store : str or Path
        The training store.

    Returns
    -------
    list of str
        Those of `galhpc.models.pixels.PIXEL_DATASETS` (``sigma``, ``mask``) stored with the
        images' shape.
    """
    from galhpc.data.store import StoreReader
    from galhpc.models.pixels import PIXEL_DATASETS

    reader = StoreReader(store)
    try:
        return [name for name in PIXEL_DATASETS if (found := reader.layout(name)) is not None
                and found[0] == reader.images.shape]
    finally:
        reader.close()


def check_store_recipe(store: str | Path, model: GalaxyModel) -> None:
    """Refuse, in one line, a store whose prep recipe or columns the model's likelihood does not assume.

    `GalaxyModel.store_mismatch` decides, e.g. a Gaussian likelihood on a store without the
    `flux` step, or a chi-square one without a noise column.

    Parameters
    ----------
    store : str or Path
        The training store.
    model : GalaxyModel
        The model to train.

    Raises
    ------
    DataError
        Naming the store and what its recipe lacks.
    """
    from galhpc.data.store import StoreReader, read_store_info

    read_store_info(store)  # another kind of file is refused as a training store
    reader = StoreReader(store)
    try:
        try:
            prep = reader.prep
        except DataError:  # an unreadable recorded config: no recipe to check
            prep = None
        recipe = list(prep.recipe) if prep is not None else []
        columns = reader.columns
    finally:
        reader.close()
    why = model.store_mismatch(recipe, columns)
    if why is not None:
        raise DataError(f"{store}: model {model.name!r} cannot train on this store: {why}")
