"""Batched, gradient-free evaluation of a model over a source of inputs.

`run_batched(model, fn, source)` is the one loop behind the trainer's evaluation, the
report's encode/decode/reconstruct, the catalogue's post-hoc GMM sample and star/galaxy
embeddings: the model in eval mode (its previous mode restored afterwards), no autograd,
each batch moved to the model's device, `fn(x, columns)` called per batch, and the results
collected or handed to a callback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

Columns = Mapping[str, torch.Tensor]


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`model` in eval mode under `torch.no_grad()`; its training mode is restored on exit.

    Parameters
    ----------
    model : torch.nn.Module
        The model to evaluate.

    Yields
    ------
    torch.nn.Module
        `model` itself, in eval mode.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters).

    Parameters
    ----------
    model : torch.nn.Module
        Any module.

    Returns
    -------
    torch.device
        Where its first parameter lives.
    """
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _to_tensor(values: Any, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    if isinstance(values, np.ndarray):
        values = np.ascontiguousarray(values)
    return torch.as_tensor(values, dtype=dtype, device=device)


def iter_batches(source: Any, batch_size: int, device: torch.device, *,
                 columns: Mapping[str, Any] | None = None, dtype: torch.dtype | None = None,
                 key: str = "image") -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
    """(x on `device`, the rest of the batch) for each batch of `source`.

    Parameters
    ----------
    source : numpy array, torch tensor, or iterable of batches
        An array (N, ...) is cut into `batch_size` rows (with the row-aligned `columns`
        cut alike); an iterable (e.g. a `StoreLoader`) yields dict batches holding `key`
        (the rest of each dict is passed on as is) or arrays.
    batch_size : int
        Rows per batch for array sources.
    device : torch.device
        Where x (and the cut `columns`) are put.
    columns : mapping of name -> array (N, ...), optional
        Per-row inputs beside an array source (e.g. per-object PSFs).
    dtype : torch.dtype, optional
        Cast x to it (default: keep the source's dtype).
    key : str
        The input's key in dict batches.

    Yields
    ------
    x : torch.Tensor
        (B, ...) inputs on `device`.
    rest : dict
        For an array source, the `columns` rows of the batch as tensors on `device`; for a
        dict batch, the whole dict as read (x included, not moved); else empty.
    """
    if isinstance(source, (np.ndarray, torch.Tensor)):
        for lo in range(0, len(source), batch_size):
            rest = {k: _to_tensor(v[lo: lo + batch_size], device, None) for k, v in (columns or {}).items()}
            yield _to_tensor(source[lo: lo + batch_size], device, dtype), rest
        return
    for batch in source:
        if isinstance(batch, Mapping):
            yield _to_tensor(batch[key], device, dtype), dict(batch)
        else:
            yield _to_tensor(batch, device, dtype), {}


def run_batched(model: torch.nn.Module, fn: Callable[[torch.Tensor, dict[str, Any]], Any], source: Any, *,
                batch_size: int = 256, columns: Mapping[str, Any] | None = None, dtype: torch.dtype | None = None,
                max_batches: int | None = None, callback: Callable[[Any], None] | None = None) -> list[Any]:
    """Call `fn(x, columns)` on every batch of `source` with `model` in eval mode and no autograd.

    Parameters
    ----------
    model : torch.nn.Module
        Put in eval mode for the loop (its mode is restored after); its device receives x.
    fn : callable
        ``fn(x, batch_columns)`` for x (B, ...) on the model's device; returns anything.
    source, batch_size, columns, dtype
        As for `iter_batches`.
    max_batches : int, optional
        Stop after this many batches.
    callback : callable, optional
        Receives each result instead of collecting it (e.g. a running sum or a writer).

    Returns
    -------
    list
        The results in batch order (empty when `callback` is given).
    """
    device = model_device(model)
    out: list[Any] = []
    with evaluating(model):
        for i, (x, rest) in enumerate(iter_batches(source, batch_size, device, columns=columns, dtype=dtype)):
            if max_batches is not None and i >= max_batches:
                break
            result = fn(x, rest)
            if callback is None:
                out.append(result)
            else:
                callback(result)
    return out


def to_numpy(t: torch.Tensor, dtype: Any = None) -> np.ndarray:
    """A tensor on the CPU as numpy (cast to `dtype` when given).

    Parameters
    ----------
    t : torch.Tensor
        Any tensor (detached from autograd, copied to the CPU).
    dtype : numpy dtype, optional
        Cast to it (no copy when it already has it).

    Returns
    -------
    numpy.ndarray
        t's shape; its dtype or `dtype`.
    """
    array = t.detach().cpu().numpy()
    return array if dtype is None else array.astype(dtype, copy=False)
