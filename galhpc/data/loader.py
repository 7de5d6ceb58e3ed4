"""Batches from a training store: block reads, rank sharding, deterministic order.

The order of rows and the flips of every batch are pure functions of
(seed, epoch, rank, size, batch index), so a trainer that resumes at batch k of
epoch e with `set_epoch(e)` + `iter_from(k)` sees exactly the batches it would have seen.

Reading: the store's rows are grouped in blocks of its HDF5 chunk height.  An epoch
permutes the blocks, then shuffles rows within windows of `window_blocks` consecutive
blocks; each rank takes one contiguous, equal-size run of that order.  A batch is
gathered from whole blocks read with one HDF5 call each and cached, so every block is
read about once per epoch and no image is read with its own HDF5 call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import torch

from galhpc.data.preprocess import random_flips
from galhpc.data.sources import PIXEL_MAPS, DataError
from galhpc.data.store import locate_column, read_store_info
from galhpc.formats import store as fmt
from galhpc.formats.hdf5 import open_h5_readonly

SPLITS = ("train", "holdout", "all")
_HOLDOUT_KEY = 0x401D  # separates the holdout stream from epoch streams
_FLIP_KEY = 0xF11B


def holdout_mask(n: int, holdout_fraction: float, seed: int) -> np.ndarray:
    """Boolean (n,): which rows are held out; a pure function of (seed, fraction, n).

    Parameters
    ----------
    n : int
        Rows of the store.
    holdout_fraction : float
        In [0, 1).
    seed : int
        The run's seed.

    Returns
    -------
    numpy.ndarray
        Shape (n,) bool, round(n * holdout_fraction) True.

    Raises
    ------
    ValueError
        A fraction outside [0, 1).
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    n_hold = int(round(n * holdout_fraction))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _HOLDOUT_KEY, int(n)]))
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[:n_hold]] = True
    return mask


def epoch_order(rows: np.ndarray, block_rows: int, epoch: int, seed: int, window_blocks: int) -> np.ndarray:
    """The epoch's order of `rows` (sorted row numbers).

    Blocks permuted, rows shuffled within windows of `window_blocks` consecutive blocks.

    Parameters
    ----------
    rows : numpy.ndarray
        Shape (m,) int64, sorted store rows (a split).
    block_rows : int
        Rows per block (the store's chunk height).
    epoch, seed : int
        Key the order.
    window_blocks : int
        Blocks whose rows are shuffled together.

    Returns
    -------
    numpy.ndarray
        Shape (m,) int64, a permutation of `rows`.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
    block_of = rows // block_rows
    starts = np.flatnonzero(np.r_[True, block_of[1:] != block_of[:-1]])
    groups = np.split(rows, starts[1:])
    order = rng.permutation(len(groups))
    parts = []
    for w in range(0, len(order), window_blocks):
        window = np.concatenate([groups[g] for g in order[w : w + window_blocks]])
        parts.append(rng.permutation(window))
    return np.concatenate(parts) if parts else rows[:0]


class StoreLoader:
    """Iterable of batch dicts ("image" (B, C, H, W) float32, "object_id", "index", labels).

    `label_columns` names label columns and, beyond the contract's labels, per-object
    datasets of the store (`truth`, `masks`, per-object `psf`) or a shared `psf`; numeric
    ones arrive as tensors, strings as lists of str.  Flips apply to `image` and, the
    same flips, to every per-object array of 2-D planes (truth, masks, PSFs); a shared
    PSF is not flipped (flip-symmetric PSFs such as Moffat or Kolmogorov need none).
    A store with per-pixel `sigma` and `mask` datasets (galhpc-prep from FITS with σ and
    mask maps) gives every batch "sigma" (float32) and "mask" (uint8, non-zero = bad)
    shaped like "image", flipped with it.
    """

    def __init__(
        self,
        path: str | Path,
        batch_size: int,
        *,
        split: str = "train",
        holdout_fraction: float = 0.1,
        rank: int = 0,
        size: int = 1,
        augment: bool = False,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        label_columns: list[str] | None = None,
        window_blocks: int = 4,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} outside world of size {size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.info = read_store_info(path)
        self.path = Path(path)
        names = list(label_columns or [])
        with open_h5_readonly(path) as f:
            names += [m for m in PIXEL_MAPS if m in f and m not in names]
        self.columns, self.shared = _resolve_columns(Path(path), names, self.info.n)
        self.batch_size, self.rank, self.size = batch_size, rank, size
        self.augment, self.seed, self.shuffle, self.drop_last = augment, seed, shuffle, drop_last
        self.window_blocks = max(1, window_blocks)
        self.block_rows = self.info.chunk_rows
        n = self.info.n
        if split == "all":
            self.rows = np.arange(n, dtype=np.int64)
        else:
            held = holdout_mask(n, holdout_fraction, seed)
            self.rows = np.flatnonzero(held if split == "holdout" else ~held).astype(np.int64)
        self.per_rank = len(self.rows) // size
        if self.per_rank == 0:
            raise DataError(f"{path}: split {split!r} has {len(self.rows)} rows, too few for {size} ranks")
        if drop_last and self.per_rank < batch_size:
            raise DataError(f"{path}: split {split!r} gives {self.per_rank} rows per rank, fewer than one batch "
                            f"of {batch_size} (drop_last leaves nothing); use a smaller batch or drop_last=False")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows.

        Parameters
        ----------
        epoch : int
            Epoch number (the order is a pure function of it, the seed and the rank).
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        full, rest = divmod(self.per_rank, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def rank_rows(self) -> np.ndarray:
        """The rows of the current epoch this rank reads, in order (equal count on every rank).

        Returns
        -------
        numpy.ndarray
            Shape (per_rank,) int64 store rows.
        """
        if self.shuffle:
            order = epoch_order(self.rows, self.block_rows, self.epoch, self.seed, self.window_blocks)
        else:
            order = self.rows
        return order[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, batch_index: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches batch_index, batch_index + 1, ... of the current epoch.

        Parameters
        ----------
        batch_index : int
            The first batch to yield (0: the whole epoch).

        Yields
        ------
        dict
            "image" (B, C, H, W) float32 tensor, "object_id" and "index" (B,) int64, and the label columns.
        """
        rows = self.rank_rows()
        n_batches = len(self)
        with open_h5_readonly(self.path) as f:
            cache = _BlockCache(f, self.block_rows, self.columns, capacity=self.window_blocks + 2)
            for b in range(batch_index, n_batches):
                batch = rows[b * self.batch_size : (b + 1) * self.batch_size]
                yield self._make_batch(cache.gather(batch), batch, b)

    def _make_batch(self, data: dict[str, np.ndarray], rows: np.ndarray, batch_index: int) -> dict:
        images = data.pop(fmt.IMAGES)
        if images.ndim == 3:
            images = images[:, None]
        if self.augment:  # the same flips for the image and every per-object spatial array
            key = [self.seed, self.epoch, self.rank, self.size, batch_index, _FLIP_KEY]
            images = random_flips(images, np.random.default_rng(np.random.SeedSequence(key)))
            for name, values in data.items():
                if values.ndim >= 3:
                    data[name] = random_flips(values, np.random.default_rng(np.random.SeedSequence(key)))
        batch = {
            "image": torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
            "object_id": torch.from_numpy(data.pop(fmt.OBJECT_ID).astype(np.int64)),
            "index": torch.from_numpy(rows.astype(np.int64)),
        }
        for name in PIXEL_MAPS:
            if name in data and data[name].ndim == 3:  # (B, H, W) -> (B, 1, H, W) like "image"
                data[name] = data[name][:, None]
        for name, values in data.items():
            if values.dtype.kind == "S":
                batch[name] = [v.decode("utf-8") for v in values]
            else:
                batch[name] = torch.from_numpy(np.ascontiguousarray(values))
        batch.update({name: torch.from_numpy(value) for name, value in self.shared.items()})
        return batch


def _resolve_columns(path: Path, names: list[str], n: int) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Where each requested column lives (`locate_column`).

    ({batch key: per-object dataset path}, {key: shared array}); a shared column, e.g. one `psf` (h, w), rides
    unchanged in every batch.
    """
    per_object, shared, missing = {}, {}, []
    with open_h5_readonly(path) as f:
        for name in names:
            found = locate_column(f, name, n)
            if found is None:
                missing.append(name)
            elif found[1]:
                per_object[name] = found[0]
            else:
                shared[name] = f[found[0]][()]
        if missing:
            have = sorted(f[fmt.LABELS]) if fmt.LABELS in f else []
            raise DataError(f"{path}: no label column or dataset {missing}; labels: {have}")
    return per_object, shared


class _BlockCache:
    """Whole row blocks of a store, read with one HDF5 call per dataset, LRU-cached."""

    def __init__(self, f: h5py.File, block_rows: int, columns: dict[str, str], capacity: int):
        self.f, self.block_rows, self.capacity = f, block_rows, capacity
        self.datasets = {name: f[name] for name in fmt.CORE}
        self.datasets.update({key: f[where] for key, where in columns.items()})
        self.blocks: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    def block(self, b: int) -> dict[str, np.ndarray]:
        if b in self.blocks:
            self.blocks.move_to_end(b)
            return self.blocks[b]
        sl = slice(b * self.block_rows, (b + 1) * self.block_rows)
        data = {name: ds[sl] for name, ds in self.datasets.items()}
        self.blocks[b] = data
        if len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)
        return data

    def gather(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Arrays for `rows` in the given order."""
        out = {name: np.empty((len(rows), *ds.shape[1:]), dtype=ds.dtype) for name, ds in self.datasets.items()}
        block_of = rows // self.block_rows
        for b in np.unique(block_of):
            at = np.flatnonzero(block_of == b)
            data = self.block(int(b))
            local = rows[at] - b * self.block_rows
            for name in out:
                out[name][at] = data[name][local]
        return out
