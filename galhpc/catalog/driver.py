"""Run a catalogue job over shards on every rank, resumably, and write the master file.

The steps, identical for encode and generate:
1. rank 0 checks the output (same run: resume; other run: refuse or --overwrite),
   lists the complete shards and runs the job's one-off `prepare` (e.g. fit a GMM);
2. every rank takes its share of the pending shards and writes each one atomically,
   streaming batches from the job while a background thread writes the previous one;
3. ranks report success to each other (no rank waits forever on a failed one) and
   rank 0 writes the master file of virtual datasets.
An error on any rank ends every rank with a message naming the rank and the cause.
"""

from __future__ import annotations

import errno
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from galhpc.catalog.h5out import ShardWriter, WriteBehind, read_master_fingerprint, write_master
from galhpc.catalog.shards import (
    CatalogError, Shard, assign_shards, complete_shards, plan_shards, prepare_output, shard_in_flight,
)
from galhpc.runtime import progress
from galhpc.runtime.files import OutputLock
from galhpc.runtime.world import World

log = logging.getLogger("galhpc.catalog.driver")
T = TypeVar("T")


class CatalogJob(Protocol):
    """What the driver needs from encode or generate."""

    n_objects: int
    batch_size: int

    def prepare(self, shard_dir: Path) -> None:
        """Rank 0, once, before any shard is written (e.g. fit and save a post-hoc GMM)."""

    def start(self, shard_dir: Path) -> None:
        """Every rank, after `prepare` (e.g. load what `prepare` saved)."""

    def batches(self, shard: Shard) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(row offset within the shard, columns) for consecutive batches covering the shard."""

    def master_groups(self, shard_dir: Path) -> Mapping[str, Mapping[str, np.ndarray]]:
        """Small real datasets to store in the master file, by group name."""


@dataclass(frozen=True)
class WriteOptions:
    """How the catalogue is laid out and whether an old one may be replaced."""

    shard_size: int | None = None  # None: auto_shard_size
    compression: str = "none"
    table: bool = True
    overwrite: bool = False


@dataclass(frozen=True)
class RunResult:
    out: Path
    n_objects: int
    n_shards: int
    shards_written: int  # by this rank
    objects_written: int  # by this rank
    seconds: float  # this rank's shard writing (after set-up, before the master file)

    @property
    def objects_per_second(self) -> float:
        return self.objects_written / self.seconds if self.seconds > 0 else float("nan")


AUTO_SHARDS = 256  # auto shard size aims at this many shards ...
AUTO_MAX_SHARD = 65536  # ... of at most this many objects


def effective_shard_size(shard_size: int | None, batch_size: int, n_objects: int) -> int:
    """Shard size rounded up to whole batches, so batches never straddle shards.

    None picks ceil(N / AUTO_SHARDS) capped at AUTO_MAX_SHARD: enough shards to keep many
    ranks busy on small catalogues, and a function of N only, never of the rank count.
    """
    if batch_size < 1:
        raise CatalogError(f"batch size must be positive, got {batch_size}")
    if shard_size is None:
        shard_size = min(AUTO_MAX_SHARD, math.ceil(n_objects / AUTO_SHARDS))
    return max(1, math.ceil(shard_size / batch_size)) * batch_size


def run_catalog(job: CatalogJob, out: str | Path, fingerprint: dict[str, Any], meta: Mapping[str, Any],
                options: WriteOptions, world: World) -> RunResult:
    """Write the catalogue of `job` to `out` (+ `out.shards/`) on all ranks of `world`.

    Rank 0 holds ``<out>.lock`` (`galhpc.runtime.files.OutputLock`) from before it looks
    at the output until the master is written: a second run on the same output is refused
    ("in use by host:pid") before it deletes anything.
    """
    lock = OutputLock(out)
    try:
        return _run_catalog(job, Path(out), fingerprint, meta, options, world, lock)
    finally:
        lock.release()


def _run_catalog(job: CatalogJob, out: Path, fingerprint: dict[str, Any], meta: Mapping[str, Any],
                 options: WriteOptions, world: World, lock: OutputLock) -> RunResult:
    shards = plan_shards(job.n_objects, effective_shard_size(options.shard_size, job.batch_size, job.n_objects))

    def begin() -> tuple[Path, list[int]]:
        lock.acquire()
        shard_dir = prepare_output(out, fingerprint, options.overwrite, _master_fingerprint(out))
        done = complete_shards(shard_dir, shards)
        log.info("%s: %d objects in %d shards, %d already complete, %d rank(s)",
                 out, job.n_objects, len(shards), len(done), world.size)
        job.prepare(shard_dir)
        return shard_dir, sorted(done)

    shard_dir, done = root_then_all(world, begin)
    pending = [s for s in shards if s.index not in set(done)]
    mine = assign_shards(pending, world.rank, world.size)

    error: BaseException | None = None
    written = 0
    began = time.perf_counter()
    try:
        job.start(shard_dir)
        with progress(None, world.rank, total=sum(s.size for s in mine), unit="obj", mininterval=1.0,
                      desc=f"{out.name} rank 0 of {world.size}") as bar:
            for n in _write_shards(job, shard_dir, mine, options, out):
                bar.update(n)  # one update per batch, counted in objects (and objects/s)
        written = sum(s.size for s in mine)
    except Exception as err:
        error = err
    seconds = time.perf_counter() - began
    failures = [(r, msg) for r, msg in enumerate(world.allgather(None if error is None else str(error))) if msg]
    if error is not None:
        raise error
    if failures:
        rank, msg = failures[0]
        raise CatalogError(f"rank {rank} failed, so {out} is incomplete: {msg}")

    def finish() -> None:
        full_meta = {**meta, "n_shards": len(shards), "ranks": world.size}
        try:
            write_master(out, shard_dir, shards, full_meta, job.master_groups(shard_dir))
        except (OSError, RuntimeError) as err:
            raise CatalogError(
                f"writing the master file {out} failed: {err}\nall {len(shards)} shards in {shard_dir} are complete; "
                "run the same command again to write it"
            ) from err

    root_then_all(world, finish)
    return RunResult(out, job.n_objects, len(shards), len(mine), written, seconds)


def _master_fingerprint(out: Path) -> dict[str, Any] | None:
    return read_master_fingerprint(out) if out.exists() else None


def _write_shards(job: CatalogJob, shard_dir: Path, mine: list[Shard], options: WriteOptions,
                  out: Path) -> Iterator[int]:
    """Write this rank's shards; yields after each batch (for the progress bar)."""
    for shard in mine:
        try:
            with shard_in_flight(shard_dir, shard) as tmp:
                writer = ShardWriter(tmp, shard, options.compression, options.table)
                behind = WriteBehind(writer.write)
                try:
                    for offset, columns in job.batches(shard):
                        behind.submit(offset, columns)
                        yield len(next(iter(columns.values())))
                    behind.finish()
                    writer.close()
                except BaseException:
                    _drain(behind)
                    writer.abort()
                    raise
        except (OSError, RuntimeError) as err:  # h5py reports failed flushes as RuntimeError
            if not isinstance(err, OSError) and not _is_disk_full(err):
                raise
            why = "the disk is full" if _is_disk_full(err) else "of an I/O error"
            raise CatalogError(
                f"writing shard {shard.index} (objects {shard.start}..{shard.stop - 1}) of {out} failed because "
                f"{why}: {err}\nthe {_count_complete(shard_dir)} complete shard(s) in {shard_dir} stay valid; "
                "free space and run the same command again to resume"
            ) from err
        log.debug("shard %d (objects %d..%d) complete", shard.index, shard.start, shard.stop - 1)


def _count_complete(shard_dir: Path) -> int:
    return sum(1 for p in shard_dir.glob("[0-9]*.h5"))


def _drain(behind: WriteBehind) -> None:
    try:
        behind.finish()
    except BaseException:  # the original error is the one to report
        pass


def _is_disk_full(err: BaseException) -> bool:
    text = str(err)
    full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
    return full or "No space left" in text or "errno = 28" in text


def root_then_all(world: World, fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 and hand its result (or its error) to every rank."""
    if world.is_root:
        try:
            value: Any = ("ok", fn())
        except Exception as err:
            world.bcast(("error", f"rank 0: {err}"))
            raise
    else:
        value = None
    status, payload = world.bcast(value)
    if status == "error":
        raise CatalogError(payload)
    return payload
