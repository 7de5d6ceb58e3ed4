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

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from galhpc.formats.catalog import FINGERPRINT_ATTR, IMAGE_COLUMNS, SHARD_GLOB, Shard, shard_path
from galhpc.inference.options import OutputOptions
from galhpc.io.catalog_writer import (
    ShardWriter,
    WriteBehind,
    catalogue_attrs,
    parse_compression,
    read_master_fingerprint,
    shard_problem,
    write_master,
)
from galhpc.io.shards import (
    assign_shards,
    complete_shards,
    plan_shards,
    prepare_output,
    read_manifest,
    record_manifest,
    shard_in_flight,
)
from galhpc.runtime import progress
from galhpc.runtime.errors import CatalogError
from galhpc.runtime.files import OutputLock, is_disk_full
from galhpc.runtime.signals import EXIT_PREEMPTED, Preempted, StopFlag, stop_signals
from galhpc.runtime.world import World

log = logging.getLogger("galhpc.inference.driver")


class CatalogJob(Protocol):
    """What the driver needs from encode or generate."""

    n_objects: int
    batch_size: int

    def prepare(self, shard_dir: Path) -> None:
        """Rank 0, once, before any shard is written (e.g. fit and save a post-hoc GMM).

        Parameters
        ----------
        shard_dir : Path
            The output's shard folder, where one-off results are saved.
        """

    def start(self, shard_dir: Path) -> None:
        """Every rank, after `prepare` (e.g. load what `prepare` saved).

        Parameters
        ----------
        shard_dir : Path
            The output's shard folder.
        """

    def batches(self, shard: Shard) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Consecutive batches covering one shard.

        Parameters
        ----------
        shard : Shard
            The object range to produce.

        Yields
        ------
        (int, dict of str to numpy.ndarray)
            Row offset within the shard, and the batch's columns (first axis: objects).
        """

    def master_groups(self, shard_dir: Path) -> Mapping[str, Mapping[str, np.ndarray]]:
        """Small real datasets to store in the master file, by group name.

        Parameters
        ----------
        shard_dir : Path
            The output's shard folder.

        Returns
        -------
        Mapping
            Group name -> dataset name -> array.
        """


@dataclass(frozen=True)
class RunResult:
    """What one rank did in a catalogue run.

    Attributes
    ----------
    out : Path
        The master file.
    n_objects, n_shards : int
        Objects and shards of the whole catalogue.
    shards_written, objects_written : int
        By this rank.
    seconds : float
        This rank's shard writing (after set-up, before the master file).
    """

    out: Path
    n_objects: int
    n_shards: int
    shards_written: int  # by this rank
    objects_written: int  # by this rank
    seconds: float  # this rank's shard writing (after set-up, before the master file)

    @property
    def objects_per_second(self) -> float:
        """Objects per second of this rank (NaN when it wrote nothing timed)."""
        return self.objects_written / self.seconds if self.seconds > 0 else float("nan")


SHARDS_PER_RANK = 4  # an automatic size leaves every rank at least this many shards (when N allows)
# the size rule of a manifest that records no size (shard_size None): by count, not by work
COUNT_SHARDS, COUNT_MAX_SHARD = 256, 65536


def effective_shard_size(shard_size: int, batch_size: int) -> int:
    """A requested shard size rounded up to whole batches, so batches never straddle shards.

    Parameters
    ----------
    shard_size : int
        Requested objects per shard, > 0.
    batch_size : int
        Objects per batch, > 0.

    Returns
    -------
    int
        A positive multiple of `batch_size`.

    Raises
    ------
    CatalogError
        A size that is not positive.
    """
    if batch_size < 1:
        raise CatalogError(f"batch size must be positive, got {batch_size}")
    if shard_size < 1:
        raise CatalogError(f"shard size must be positive, got {shard_size}")
    return max(1, math.ceil(shard_size / batch_size)) * batch_size


def auto_shard_size(n_objects: int, batch_size: int, bytes_per_object: float, objects_per_second: float,
                    ranks: int, *, max_bytes: int = 1 << 30, seconds: float = 300.0,
                    shards_per_rank: int = SHARDS_PER_RANK) -> int:
    """Objects per shard chosen by work: the smallest of three limits, in whole batches.

    - bytes: ``max_bytes / bytes_per_object`` (a shard file of at most `max_bytes`);
    - time: ``seconds * objects_per_second`` (a stop signal loses at most `seconds` of one rank);
    - ranks: ``ceil(n_objects / (ranks * shards_per_rank))`` (every rank gets shards to do,
      so ranks beyond the shard count are never idle while a catalogue could be cut finer).

    The result is rounded down to whole batches, but never below one batch.  The shard
    count ``ceil(n_objects / size)`` is unbounded.  The size depends on the rank count, so
    the driver records it in the fingerprint and a resumed run reuses it on any rank count;
    the catalogue's rows do not depend on it.

    Parameters
    ----------
    n_objects : int
        Objects in the catalogue.
    batch_size : int
        Objects per batch of the job.
    bytes_per_object : float
        Bytes one object adds to a shard file (every column, the table included), > 0.
    objects_per_second : float
        Throughput of one rank, > 0.
    ranks : int
        Ranks of the run.
    max_bytes : int, optional
        Most bytes of one shard file (default 1 GiB).
    seconds : float, optional
        Most seconds of one rank per shard (default 300).
    shards_per_rank : int, optional
        Fewest shards per rank wanted.

    Returns
    -------
    int
        Objects per shard, a positive multiple of `batch_size`.
    """
    if bytes_per_object <= 0 or objects_per_second <= 0:
        raise CatalogError(f"cannot size shards from {bytes_per_object} bytes/object at {objects_per_second} objects/s")
    limits = (max_bytes / bytes_per_object, seconds * objects_per_second,
              math.ceil(n_objects / (max(1, ranks) * shards_per_rank)))
    return max(1, int(min(limits)) // batch_size) * batch_size


def count_auto_shard_size(n_objects: int, batch_size: int) -> int:
    """The automatic size of a run whose manifest records shard_size None: sized by count, not by work.

    Parameters
    ----------
    n_objects, batch_size : int
        Objects in the catalogue; objects per batch.

    Returns
    -------
    int
        Objects per shard: ``ceil(n / 256)``, at most 65536, in whole batches.
    """
    return effective_shard_size(min(COUNT_MAX_SHARD, math.ceil(n_objects / COUNT_SHARDS)), batch_size)


def measure_job(job: CatalogJob, shard_dir: Path, table: bool) -> tuple[float, float]:
    """Bytes per object and objects per second of `job`, from its first (up to) two batches.

    The second batch is timed when there is one (the first carries warm-up costs); the
    job is started (`job.start`) first.

    Parameters
    ----------
    job : CatalogJob
        The job to measure.
    shard_dir : Path
        Its shard folder (for `job.start`).
    table : bool
        Whether the compound table doubles the non-image columns.

    Returns
    -------
    (float, float)
        Bytes one object adds to a shard file (non-image columns twice with the table),
        and objects per second of this process.
    """
    job.start(shard_dir)
    n = min(job.n_objects, 2 * job.batch_size)
    rate, row_bytes = float("nan"), 0.0
    began = time.perf_counter()
    for _, columns in job.batches(Shard(0, 0, n)):
        now = time.perf_counter()
        rows = len(next(iter(columns.values())))
        rate = rows / max(now - began, 1e-9)
        scalar = sum(a.nbytes for k, a in columns.items() if k not in IMAGE_COLUMNS) / rows
        row_bytes = sum(a.nbytes for a in columns.values()) / rows + (scalar if table else 0.0)
        began = time.perf_counter()
    return row_bytes, rate


def _resolve_shard_size(job: CatalogJob, shard_dir: Path, recorded: dict[str, Any] | None, options: OutputOptions,
                        ranks: int) -> int:
    """The shard size of this run (rank 0, after `prepare`).

    The one a resumed run recorded, the requested one, or `auto_shard_size` from a measurement.
    """
    if options.shard_size is not None:
        return effective_shard_size(options.shard_size, job.batch_size)
    if recorded is not None and "shard_size" in recorded:
        size = recorded["shard_size"]
        size = count_auto_shard_size(job.n_objects, job.batch_size) if size is None else int(size)
        log.info("resuming with the recorded shard size of %d objects", size)
        return size
    row_bytes, measured = measure_job(job, shard_dir, options.table)
    rate = options.objects_per_second or measured
    size = auto_shard_size(job.n_objects, job.batch_size, row_bytes, rate, ranks, max_bytes=options.shard_bytes,
                           seconds=options.shard_seconds)
    log.info("shard size %d objects (%.1f MB, ~%.0f s of one rank): %.0f bytes/object, %.1f objects/s (%s), "
             "%d rank(s); limits %.0f s and %.0f MB per shard", size, size * row_bytes / 1e6, size / rate, row_bytes,
             rate, "configured" if options.objects_per_second else "measured", ranks, options.shard_seconds,
             options.shard_bytes / 1e6)
    return size


class _Stopped(Exception):
    """A stop signal arrived: the shard in flight was abandoned."""


def run_catalog(job: CatalogJob, out: str | Path, fingerprint: dict[str, Any], meta: Mapping[str, Any],
                options: OutputOptions, world: World) -> RunResult:
    """Write the catalogue of `job` to `out` (+ `out.shards/`) on all ranks of `world`.

    SIGTERM/SIGUSR1 stop every rank after its batch in flight: the shard in flight is
    dropped (a shard is at most `options.shard_seconds` of work), complete shards stay,
    and every rank leaves with `Preempted` (exit status 75); the same command resumes.
    Rank 0 holds ``<out>.lock`` (`galhpc.runtime.files.OutputLock`) from before it looks
    at the output until the master is written: a second run on the same output is refused
    ("in use by host:pid") before it deletes anything.

    Parameters
    ----------
    job : CatalogJob
        What produces the rows.
    out : str or Path
        The master file.
    fingerprint : dict
        What decides the rows and layout; a resume must match it.
    meta : Mapping
        /meta attributes of the master.
    options : OutputOptions
        How the catalogue is written.
    world : World
        The ranks sharing the work.

    Returns
    -------
    RunResult
        What this rank wrote (shards, objects) and in how many seconds.

    Raises
    ------
    CatalogError
        An output of other settings, a failed rank, a full disk, a master that cannot be written.
    Preempted
        A stop signal arrived (exit status 75; the same command resumes).
    """
    out = Path(out)
    lock = OutputLock(out)
    try:
        with stop_signals("the batch in flight (the shard in flight is redone on resume)") as flag:
            return _run(job, out, fingerprint, meta, options, world, flag, lock)
    finally:
        lock.release()


def _run(job: CatalogJob, out: Path, fingerprint: dict[str, Any], meta: Mapping[str, Any], options: OutputOptions,
         world: World, flag: StopFlag, lock: OutputLock) -> RunResult:
    auto = options.shard_size is None
    if not auto:
        fingerprint = {**fingerprint, "shard_size": effective_shard_size(options.shard_size, job.batch_size)}

    def begin() -> tuple[Path, int, dict[str, Any], list[int]]:
        lock.acquire()
        shard_dir = prepare_output(out, fingerprint, options.overwrite, _master_fingerprint(out),
                                   ignore=("shard_size",) if auto else (), record=False)
        recorded = read_manifest(shard_dir) or _master_fingerprint(out)  # None after --overwrite
        job.prepare(shard_dir)
        size = _resolve_shard_size(job, shard_dir, recorded, options, world.size)
        resolved = {**fingerprint, "shard_size": size}
        record_manifest(shard_dir, recorded if recorded is not None else resolved)
        planned = plan_shards(job.n_objects, size)
        done = verified_shards(shard_dir, planned, json.dumps(resolved, sort_keys=True))
        log.info("%s: %d objects in %d shards of %d, %d already complete, %d rank(s)",
                 out, job.n_objects, len(planned), size, len(done), world.size)
        return shard_dir, size, resolved, sorted(done)

    parse_compression(options.compression)  # a bad --compression before any work
    with world.root_first(error=CatalogError):
        prepared = begin() if world.is_root else None
    shard_dir, size, resolved, done = world.broadcast_object(prepared)
    shards = plan_shards(job.n_objects, size)
    pending = [s for s in shards if s.index not in set(done)]
    mine = assign_shards(pending, world.rank, world.size)

    error: BaseException | None = None
    stopped = False
    written = 0
    began = time.perf_counter()
    try:
        job.start(shard_dir)
        with progress(None, world.rank, total=sum(s.size for s in mine), unit="obj", mininterval=1.0,
                      desc=f"{out.name} rank 0 of {world.size}") as bar:
            attrs = {**catalogue_attrs(meta.get("kind")), FINGERPRINT_ATTR: json.dumps(resolved, sort_keys=True)}
            for n in _write_shards(job, shard_dir, mine, options, out, flag, attrs):
                bar.update(n)  # one update per batch, counted in objects (and objects/s)
                written += n
    except _Stopped:
        stopped = True
    except Exception as err:
        error = err
    seconds = time.perf_counter() - began
    status = ("error", str(error)) if error is not None else ("stopped", flag.signal_name) if stopped else None
    reports = [(r, s) for r, s in enumerate(world.allgather_object(status)) if s]
    if error is not None:
        raise error
    failures = [(r, msg) for r, (kind, msg) in reports if kind == "error"]
    if failures:
        rank, msg = failures[0]
        raise CatalogError(f"rank {rank} failed, so {out} is incomplete: {msg}")
    if reports or flag.requested:
        why = flag.signal_name or f"{reports[0][1][1]} on rank {reports[0][0]}"
        message = (f"stopped by {why}: {_count_complete(shard_dir)} of {len(shards)} shards of {out} are complete; "
                   f"run the same command again to resume (exit status {EXIT_PREEMPTED})")
        log.warning("%s", message)
        raise Preempted(message)

    def finish() -> None:
        check_all_shards(shard_dir, shards, json.dumps(resolved, sort_keys=True), out)
        full_meta = {**meta, "n_shards": len(shards), "ranks": world.size,
                     FINGERPRINT_ATTR: json.dumps(resolved, sort_keys=True)}
        try:
            write_master(out, shard_dir, shards, full_meta, job.master_groups(shard_dir))
        except (OSError, RuntimeError) as err:
            raise CatalogError(
                f"writing the master file {out} failed: {err}\nall {len(shards)} shards in {shard_dir} are complete; "
                "run the same command again to write it"
            ) from err

    with world.root_first(error=CatalogError):
        if world.is_root:
            finish()
    return RunResult(out, job.n_objects, len(shards), len(mine), written, seconds)


def verified_shards(shard_dir: Path, planned: list[Shard], fingerprint: str) -> set[int]:
    """The planned shards whose file is complete and valid (`shard_problem`).

    Every other file under a planned shard's name is deleted, with one warning line each,
    so this run redoes it (rank 0, under the output's lock).

    Parameters
    ----------
    shard_dir : Path
        The shard folder.
    planned : list of Shard
        This run's shards.
    fingerprint : str
        The run's fingerprint (JSON) each shard must carry.

    Returns
    -------
    set of int
        Indices of the valid shards.
    """
    done = set()
    for index in sorted(complete_shards(shard_dir, planned)):
        shard = planned[index]
        path = shard_path(shard_dir, index)
        why = shard_problem(path, shard, fingerprint)
        if why is None:
            done.add(index)
            continue
        log.warning("shard %s (objects %d..%d) is damaged (%s): redoing it", path, shard.start, shard.stop - 1, why)
        path.unlink(missing_ok=True)
    return done


def check_all_shards(shard_dir: Path, shards: list[Shard], fingerprint: str, out: Path) -> None:
    """Refuse to publish the master of `out` unless every planned shard is there and valid.

    Parameters
    ----------
    shard_dir : Path
        The shard folder.
    shards : list of Shard
        Every shard of the catalogue.
    fingerprint : str
        The run's fingerprint (JSON).
    out : Path
        The master file, for the message.

    Raises
    ------
    CatalogError
        Naming the missing or invalid shards (at most ten) and how to redo them.
    """
    problems = []
    for shard in shards:
        path = shard_path(shard_dir, shard.index)
        why = "missing" if not path.is_file() else shard_problem(path, shard, fingerprint)
        if why is not None:
            problems.append(f"{path.name} ({why})")
    if problems:
        more = f" and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise CatalogError(f"{out}: {len(problems)} of {len(shards)} planned shard(s) are not complete after every "
                           f"rank finished, so the master is not written: {', '.join(problems[:10])}{more}; run the "
                           "same command again to redo them")


def _master_fingerprint(out: Path) -> dict[str, Any] | None:
    return read_master_fingerprint(out) if out.exists() else None


def _write_shards(job: CatalogJob, shard_dir: Path, mine: list[Shard], options: OutputOptions,
                  out: Path, flag: StopFlag, attrs: Mapping[str, Any]) -> Iterator[int]:
    """Write this rank's shards; yields after each batch (for the progress bar).

    Raises `_Stopped` when `flag` is set: between shards, or after the batch in flight
    (whose shard is then dropped like any failed one).
    """
    for shard in mine:
        if flag.requested:
            raise _Stopped()
        try:
            with shard_in_flight(shard_dir, shard) as tmp:
                writer = ShardWriter(tmp, shard, options.compression, options.table, attrs)
                behind = WriteBehind(writer.write)
                try:
                    for offset, columns in job.batches(shard):
                        behind.submit(offset, columns)
                        if flag.requested:
                            raise _Stopped()
                        yield len(next(iter(columns.values())))
                    behind.finish()
                    writer.close()
                except BaseException:
                    _drain(behind)
                    writer.abort()
                    raise
        except (OSError, RuntimeError) as err:  # h5py reports failed flushes as RuntimeError
            if not isinstance(err, OSError) and not is_disk_full(err):
                raise
            why = "the disk is full" if is_disk_full(err) else "of an I/O error"
            raise CatalogError(
                f"writing shard {shard.index} (objects {shard.start}..{shard.stop - 1}) of {out} failed because "
                f"{why}: {err}\nthe {_count_complete(shard_dir)} complete shard(s) in {shard_dir} stay valid; "
                "free space and run the same command again to resume"
            ) from err
        log.debug("shard %d (objects %d..%d) complete", shard.index, shard.start, shard.stop - 1)


def _count_complete(shard_dir: Path) -> int:
    return sum(1 for p in shard_dir.glob(SHARD_GLOB))


def _drain(behind: WriteBehind) -> None:
    with contextlib.suppress(BaseException):  # the original error is the one to report
        behind.finish()


