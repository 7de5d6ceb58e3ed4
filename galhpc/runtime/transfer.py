"""Feeding a device: background reads, pinned host buffers, double-buffered host->device copies.

`background(items)` runs an iterator in a thread (reads overlap the caller's compute).
`to_device(batch, device)` moves the tensors of a batch (a tensor, or a dict / tuple /
list holding tensors and other values).  `device_prefetch(batches, device)` yields the
batches of an iterable already on `device`, read in a background thread: on CUDA the
host tensors are pinned there and copied on a side stream one batch ahead of the
consumer (double buffering); on CPU `to_device` is a pass-through.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def background(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate `items`, produced by a background thread at most `depth` items ahead.

    Parameters
    ----------
    items : iterable
        Any iterable (e.g. a generator of HDF5 reads); its exceptions are re-raised in the caller.
    depth : int
        Items buffered ahead of the consumer.

    Returns
    -------
    iterator
        The same items in the same order.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(("item", item))
            buffer.put(("end", None))
        except BaseException as err:  # re-raised in the consumer
            buffer.put(("error", err))

    thread = threading.Thread(target=produce, name="galhpc-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = buffer.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                buffer.get(timeout=0.1)


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`batch` with `fn` applied to every tensor in it; other values pass unchanged.

    Dicts, tuples and lists are walked recursively and rebuilt with the same type; numpy
    arrays and other values are returned as they are (see `as_tensors` to convert arrays).

    Parameters
    ----------
    batch : Any
        A tensor, or a dict / tuple / list holding tensors and other values (walked recursively).
    fn : callable
        Applied to each torch.Tensor; its result replaces the tensor.

    Returns
    -------
    Any
        The same structure with every tensor replaced by ``fn(tensor)``.
    """
    if torch.is_tensor(batch):
        return fn(batch)
    if isinstance(batch, dict):
        return {k: map_tensors(v, fn) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(map_tensors(v, fn) for v in batch)
    return batch


def to_device(batch: Any, device: torch.device, non_blocking: bool = True) -> Any:
    """The tensors of `batch` moved to `device` (other values unchanged).

    Parameters
    ----------
    batch : Any
        A tensor, or a dict / tuple / list holding tensors and other values (walked recursively).
    device : torch.device
        Target device.
    non_blocking : bool, optional
        Passed to ``Tensor.to``: asynchronous copies from pinned host memory to CUDA.

    Returns
    -------
    Any
        The same structure with every tensor on `device`.
    """
    return map_tensors(batch, lambda t: t.to(device, non_blocking=non_blocking))


def pin(batch: Any) -> Any:
    """The tensors of `batch` in page-locked host memory (only when CUDA is available).

    Parameters
    ----------
    batch : Any
        A tensor, or a dict / tuple / list holding tensors and other values (walked recursively).

    Returns
    -------
    Any
        `batch` itself without CUDA; else the same structure with every host tensor pinned
        (cuda and already pinned tensors unchanged).
    """
    if not torch.cuda.is_available():
        return batch
    return map_tensors(batch, lambda t: t if t.is_cuda or t.is_pinned() else t.pin_memory())


def as_tensors(batch: Any) -> Any:
    """Numpy arrays of numeric dtype in `batch` as tensors sharing their memory.

    Parameters
    ----------
    batch : Any
        A numpy array, or a dict / tuple / list holding arrays and other values (walked
        recursively).

    Returns
    -------
    Any
        The same structure with every bool, integer or float array replaced by
        ``torch.from_numpy`` of it (a contiguous copy only where it was not contiguous);
        other values unchanged.
    """
    if isinstance(batch, np.ndarray) and batch.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(batch))
    if isinstance(batch, dict):
        return {k: as_tensors(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(as_tensors(v) for v in batch)
    return batch


def device_prefetch(batches: Iterable[Any], device: torch.device, depth: int = 2) -> Iterator[Any]:
    """The batches of `batches` with their tensors on `device`, prepared ahead of use.

    Parameters
    ----------
    batches : iterable
        Batches: tensors, or dicts / tuples / lists holding tensors and other values.
    device : torch.device
        Target device.  CUDA: batches are read and pinned in a background thread, and the
        copy of batch i+1 runs on a side stream while the caller computes on batch i.
        Other devices: batches are read in the background thread and moved when requested
        (on CPU a pass-through).
    depth : int
        Host batches buffered ahead by the background thread.

    Returns
    -------
    iterator
        The batches, same order, tensors on `device`.
    """
    device = torch.device(device)
    if device.type != "cuda":
        for batch in background(batches, depth):
            yield to_device(batch, device)
        return
    stream = torch.cuda.Stream(device=device)
    host = background((pin(b) for b in batches), depth)

    def issue(batch: Any) -> Any:
        with torch.cuda.stream(stream):
            return to_device(batch, device, non_blocking=True)

    pending = None
    for batch in host:
        ready, pending = pending, issue(batch)
        if ready is not None:
            yield _handover(ready, stream, device)
    if pending is not None:
        yield _handover(pending, stream, device)


def _handover(batch: Any, stream: torch.cuda.Stream, device: torch.device) -> Any:
    """Make the caller's stream wait for `batch`'s copy and own its memory."""
    current = torch.cuda.current_stream(device)
    current.wait_stream(stream)
    map_tensors(batch, lambda t: (t.record_stream(current), t)[1])
    return batch
