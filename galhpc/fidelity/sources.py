"""The three sets a fidelity test reads: generated, held-out real and training stamps.

Generated stamps are a checkpoint's samples or a `galhpc-generate` catalogue.

Real stamps are held out in one of two ways: the rows the trainer held out of its own
store (`galhpc.data.loader.holdout_mask` with the checkpoint's seed and fraction, the
same population the model learned), or every row of another store (a separate
simulation or survey set).  Training stamps are the trainer's training rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from galhpc.data.loader import holdout_mask
from galhpc.fidelity.sampling import ExPostSampler
from galhpc.formats import catalog as C
from galhpc.formats import store as S
from galhpc.io.catalog import open_catalog
from galhpc.io.store import open_store
from galhpc.models.base import GalaxyModel
from galhpc.runtime.errors import DataError

log = logging.getLogger("galhpc.fidelity")


@dataclass
class StampSet:
    """Stamps (N, C, H, W) float32 with where they came from."""

    images: np.ndarray
    source: str
    rows: np.ndarray | None = None  # store rows, when read from a store
    component: np.ndarray | None = None  # generated: mixture component or class (-1: none)


def _nchw(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    return images[:, None] if images.ndim == 3 else images


@torch.no_grad()
def sample_model(model: GalaxyModel, n: int, seed: int = 0, batch_size: int = 256, component: int | None = None,
                 condition_values: np.ndarray | None = None, sampler: ExPostSampler | None = None) -> StampSet:
    """N stamps from `model.sample`, in batches, reproducible from `seed`.

    Parameters
    ----------
    model : GalaxyModel
        A generative model (eval mode).
    n : int
        Stamps to draw.
    seed : int
        Seed of the torch generator of batch k (seed + k).
    batch_size : int
        Stamps per `sample` call.
    component : int, optional
        Mixture component (or class) to draw from; None: the prior's own mixture.  A
        class-conditional model without `component` gets the classes of `condition_values`,
        else classes in equal shares.
    condition_values : numpy.ndarray, optional
        (n,) values of a conditioned model's condition, one per stamp (e.g. the real stamps'
        own, so the generated set has the real set's mix); required by a float-conditioned model.
    sampler : ExPostSampler, optional
        Draw from this ex-post latent mixture instead of the model's prior (unconditioned
        models; `galhpc.fidelity.sampling`).

    Returns
    -------
    StampSet
        (n, C, H, W) float32 images and their components.

    Raises
    ------
    DataError
        If the model is not generative, float-conditioned without `condition_values`, or
        given both a `sampler` and a component or condition.
    """
    if not model.generative:
        raise DataError(f"model {model.name!r} is not generative: it has no samples to score")
    cond = model.sample_condition
    if cond is not None and cond.kind == "float" and condition_values is None:
        raise DataError(f"model {model.name!r} samples at a value of {cond.column!r}: give the real stamps' values")
    if sampler is not None and (component is not None or cond is not None):
        raise DataError(f"model {model.name!r}: ex-post sampling draws from one unconditioned latent mixture; "
                        "it takes no component or condition")
    if condition_values is not None and len(condition_values) < n:
        raise DataError(f"{len(condition_values)} condition values for {n} stamps")
    device = next(model.parameters()).device
    images, components = [], []
    for k, lo in enumerate(range(0, n, batch_size)):
        m = min(batch_size, n - lo)
        generator = torch.Generator(device=device).manual_seed(seed + k)
        if component is not None:
            out = _pair(model.sample(m, generator, component=component))
        elif sampler is not None:
            out = _pair(sampler.sample(m, generator))
        elif cond is not None and cond.kind == "class":
            classes = (np.asarray(condition_values[lo:lo + m], np.int64) if condition_values is not None
                       else np.arange(lo, lo + m) % int(cond.num_classes))
            grouped = _concat([model.sample(int((classes == c).sum()), generator, component=int(c))
                               for c in np.unique(classes)])
            # back to the stamps' order (sampled grouped by class)
            back = torch.as_tensor(np.argsort(np.argsort(classes, kind="stable"), kind="stable"))
            out = (grouped[0][back.to(grouped[0].device)], grouped[1][back.to(grouped[1].device)])
        elif cond is not None and cond.kind == "float":
            out = _concat([model.sample(1, generator, **{cond.column: float(v)})
                           for v in condition_values[lo:lo + m]])
        else:
            out = _pair(model.sample(m, generator))
        images.append(out[0].float().cpu().numpy())
        components.append(out[1].cpu().numpy().astype(np.int64).reshape(-1))
    source = f"{model.name}.sample" + ("" if component is None else f"(component={component})") \
        + ("" if sampler is None else f" ex post ({len(sampler.weights)} components, temperature "
                                      f"{sampler.temperature:g})")
    return StampSet(_nchw(np.concatenate(images)), source, component=np.concatenate(components))


def _pair(samples) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, components) of one `Samples`."""
    return samples.images, samples.component.reshape(-1)


def _concat(parts) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, components) of several `Samples`, concatenated."""
    return torch.cat([p.images for p in parts]), torch.cat([p.component.reshape(-1) for p in parts])


def read_catalogue_images(path: str | Path, n: int, rng: np.random.Generator) -> StampSet:
    """Up to n random stamps of a `galhpc-generate` catalogue, noise-free where it kept them.

    The column read is `images_clean` when the catalogue kept the noise-free stamps, else
    `images` (the fidelity test adds noise up to the real sky σ, never removes it).

    Parameters
    ----------
    path : str or pathlib.Path
        The catalogue (master file or shard folder).
    n : int
        Most stamps to read; all rows when the catalogue has fewer.
    rng : numpy.random.Generator
        Picks the random subset.

    Returns
    -------
    StampSet
        (min(n, rows), C, H, W) float32 stamps, their sorted catalogue rows, and the
        `component` column (int64) where the catalogue has one.

    Raises
    ------
    DataError
        If the catalogue has no images column.
    """
    with open_catalog(path) as cat:
        column = C.IMAGES_CLEAN if C.IMAGES_CLEAN in cat.columns else C.IMAGES
        if column not in cat.columns:
            raise DataError(f"{path}: no images column; columns: {', '.join(cat.columns)}")
        rows = np.sort(rng.choice(len(cat), min(n, len(cat)), replace=False))
        images = cat.read(column, rows)
        component = cat.read(C.COMPONENT, rows).astype(np.int64) if C.COMPONENT in cat.columns else None
    return StampSet(_nchw(images), f"{Path(path).name}:{column}", rows=rows, component=component)


def split_store(store: str | Path, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of a training store, as the trainer split it.

    Parameters
    ----------
    store : str or pathlib.Path
        The training store.
    holdout_fraction : float
        Fraction of rows held out (the checkpoint's), in [0, 1).
    seed : int
        The trainer's split seed (the checkpoint's).

    Returns
    -------
    training : numpy.ndarray
        Sorted int64 rows trained on.
    held_out : numpy.ndarray
        Sorted int64 rows held out (`galhpc.data.loader.holdout_mask`).
    """
    with open_store(store) as s:
        n = len(s)
    held = holdout_mask(n, holdout_fraction, seed)
    return np.flatnonzero(~held), np.flatnonzero(held)


def read_store_stamps(store: str | Path, rows: np.ndarray, n: int, rng: np.random.Generator,
                      what: str) -> StampSet:
    """Up to n random stamps among store `rows`, as (N, C, H, W) float32.

    Parameters
    ----------
    store : str or pathlib.Path
        The training store.
    rows : numpy.ndarray
        Candidate int64 store rows.
    n : int
        Most stamps to read; all of `rows` when there are fewer.
    rng : numpy.random.Generator
        Picks the random subset.
    what : str
        What the rows are (e.g. "held-out"), for the source label and messages.

    Returns
    -------
    StampSet
        (min(n, len(rows)), C, H, W) float32 stamps in the store's units and their sorted rows.

    Raises
    ------
    DataError
        If `rows` is empty.
    """
    rows = np.asarray(rows, np.int64)
    if len(rows) == 0:
        raise DataError(f"{store}: no {what} rows to read")
    pick = np.sort(rng.choice(rows, min(n, len(rows)), replace=False))
    with open_store(store) as s:
        images = s.read(S.IMAGES, pick)
    return StampSet(_nchw(images), f"{Path(store).name} ({what})", rows=pick)


def read_store_labels(store: str | Path, rows: np.ndarray, column: str) -> np.ndarray:
    """The label `column` of store `rows`, e.g. a conditioned model's condition at the real stamps.

    Parameters
    ----------
    store : str or pathlib.Path
        The training store.
    rows : numpy.ndarray
        Sorted int64 store rows.
    column : str
        Label column name.

    Returns
    -------
    numpy.ndarray
        (len(rows),) float64 label values.

    Raises
    ------
    DataError
        If the store has no such label column.
    """
    with open_store(store) as s:
        if column not in s.info.label_names:
            raise DataError(f"{store}: no label column {column!r} to condition the generated stamps on; "
                            f"labels: {', '.join(s.info.label_names) or 'none'}")
        return np.asarray(s.read(column, np.asarray(rows, np.int64)), np.float64)
