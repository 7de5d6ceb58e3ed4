"""Shards: fixed object ranges, their files, and resuming a killed job.

A catalogue of N objects is cut into shards of `shard_size` consecutive object indices,
whatever the rank count; ranks take pending shards round-robin.  So the same command
gives the same shard files on 1, 2 or 64 ranks.  A shard is written under a temporary
name in `<out>.shards/` and renamed to `NNNNNN.h5` when complete, so a file under its
final name is always whole and a re-run skips it.

Which run a shard directory belongs to is recorded in `<out>.shards/manifest.json`
(the run's fingerprint: everything that decides the catalogue's content).  A re-run with
another fingerprint is refused unless the caller asks to overwrite.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from galhpc.formats.catalog import SHARD_GLOB, Shard, manifest_path, shard_dir_for, shard_file_name, shard_path
from galhpc.runtime.errors import CatalogError
from galhpc.runtime.files import atomic_path, remove_stale_temps, write_text_atomic

log = logging.getLogger("galhpc.io.shards")


def plan_shards(n_objects: int, shard_size: int) -> list[Shard]:
    """Cut objects 0..n-1 into consecutive shards of `shard_size` (the last may be short).

    Parameters
    ----------
    n_objects : int
        Objects in the catalogue, >= 1.
    shard_size : int
        Objects per shard, >= 1.

    Returns
    -------
    list of Shard
        Shard i holds objects [i * shard_size, min((i + 1) * shard_size, n_objects)).

    Raises
    ------
    CatalogError
        If either number is below 1.
    """
    if n_objects < 1:
        raise CatalogError(f"a catalogue needs at least one object, got n={n_objects}")
    if shard_size < 1:
        raise CatalogError(f"shard size must be positive, got {shard_size}")
    return [
        Shard(i, start, min(start + shard_size, n_objects))
        for i, start in enumerate(range(0, n_objects, shard_size))
    ]


def assign_shards(pending: list[Shard], rank: int, size: int) -> list[Shard]:
    """The share of the pending shards one rank writes: every `size`-th, starting at `rank`.

    Parameters
    ----------
    pending : list of Shard
        The shards still to write, in order.
    rank, size : int
        This rank and the number of ranks.

    Returns
    -------
    list of Shard
    """
    return pending[rank::size]


def complete_shards(shard_dir: Path, shards: list[Shard]) -> set[int]:
    """Indices of the shards whose final file exists (complete by construction).

    Parameters
    ----------
    shard_dir : Path
        The shard directory (may not exist yet).
    shards : list of Shard
        The run's shards.

    Returns
    -------
    set of int
    """
    present = {p.name for p in shard_dir.glob(SHARD_GLOB)} if shard_dir.is_dir() else set()
    return {s.index for s in shards if shard_file_name(s.index) in present}


def remove_stale_temporaries(shard_dir: Path) -> int:
    """Delete shards in flight of killed writers, on any host (`galhpc.runtime.files.remove_stale_temps`).

    Called under the output's lock before this run's ranks write: no other run writes
    here, so the temporaries of other hosts (a node that died) are abandoned too.

    Parameters
    ----------
    shard_dir : Path
        Where the run's shards are written.

    Returns
    -------
    int
        How many temporaries were removed.
    """
    stale = remove_stale_temps(shard_dir, max_age_s=0.0)
    if stale:
        log.info("removed %d partial shard(s) of an interrupted run in %s", len(stale), shard_dir)
    return len(stale)


@contextlib.contextmanager
def shard_in_flight(shard_dir: Path, shard: Shard) -> Iterator[Path]:
    """Yield a temporary path to write `shard` to; rename it into place on success.

    On any exception the temporary file is removed, so only whole shards are ever
    visible under their final names.

    Parameters
    ----------
    shard_dir : Path
        The shard directory.
    shard : Shard
        The shard to write.

    Yields
    ------
    Path
        The temporary file (``.NNNNNN.h5.tmp.<host>.<pid>``) beside the shard's final name.
    """
    with atomic_path(shard_path(shard_dir, shard.index)) as tmp:
        yield tmp


def fingerprint_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two fingerprints, as 'key: old -> new' lines.

    Parameters
    ----------
    old, new : dict of str to Any
        The recorded and this run's fingerprints.

    Returns
    -------
    list of str
        Sorted by key.
    """
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def read_manifest(shard_dir: Path) -> dict[str, Any] | None:
    """The fingerprint a shard directory's manifest records.

    Parameters
    ----------
    shard_dir : Path
        `<out>.shards` (its ``manifest.json`` is read).

    Returns
    -------
    dict of str to Any or None
        None when there is no manifest.

    Raises
    ------
    CatalogError
        If the manifest exists but cannot be read as JSON.
    """
    path = manifest_path(shard_dir)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CatalogError(f"{path}: unreadable shard manifest ({err}); pass --overwrite to start afresh") from err


def same_run(recorded: dict[str, Any] | None, fingerprint: dict[str, Any], ignore: tuple[str, ...] = ()) -> bool:
    """Whether a recorded fingerprint is this run's, keys in `ignore` aside.

    Parameters
    ----------
    recorded : dict of str to Any or None
        The manifest's (or master's) fingerprint; None is never this run's.
    fingerprint : dict of str to Any
        This run's.
    ignore : tuple of str
        Keys not compared.

    Returns
    -------
    bool
    """
    if recorded is None:
        return False
    return ({k: v for k, v in recorded.items() if k not in ignore}
            == {k: v for k, v in fingerprint.items() if k not in ignore})


def record_manifest(shard_dir: Path, fingerprint: dict[str, Any]) -> None:
    """Write `<shard_dir>/manifest.json` unless a run already recorded one (atomic).

    Parameters
    ----------
    shard_dir : Path
        The shard directory (existing).
    fingerprint : dict of str to Any
        This run's fingerprint (JSON-serialisable).
    """
    if read_manifest(shard_dir) is None:
        write_text_atomic(manifest_path(shard_dir), json.dumps(fingerprint, indent=1, sort_keys=True))


def prepare_output(
    out: Path, fingerprint: dict[str, Any], overwrite: bool, master_fingerprint: dict[str, Any] | None,
    *, ignore: tuple[str, ...] = (), record: bool = True,
) -> Path:
    """Make `<out>.shards/` ready for this run and return it (rank 0 only, before any writing).

    An existing output of another run (another fingerprint, or a file that is no galhpc
    catalogue: `master_fingerprint` is its /meta fingerprint or None) is refused unless
    `overwrite`, in which case the master and all shards are deleted.  A shard directory
    without a single complete shard (a run that failed early) is simply replaced.  An output of the
    same run is resumed: its complete shards are kept, partial ones removed.  Keys in
    `ignore` are not compared (an automatic shard size, resolved later from the record);
    `record=False` leaves writing the manifest to the caller (`record_manifest`).

    Parameters
    ----------
    out : Path
        The master file.
    fingerprint : dict of str to Any
        This run's fingerprint.
    overwrite : bool
        Delete an output of another run instead of refusing it.
    master_fingerprint : dict of str to Any or None
        The existing master's /meta fingerprint, if any.
    ignore : tuple of str
        Fingerprint keys not compared.
    record : bool
        Write the manifest now.

    Returns
    -------
    Path
        The shard directory, ``<out>.shards``.

    Raises
    ------
    CatalogError
        If an output of another run (or not a galhpc catalogue) exists and not `overwrite`,
        or the manifest is unreadable.
    """
    shard_dir = shard_dir_for(out)
    if not out.exists() and shard_dir.is_dir() and not any(shard_dir.glob(SHARD_GLOB)):
        shutil.rmtree(shard_dir)  # a run that failed before completing any shard: nothing to lose
    manifest = read_manifest(shard_dir)
    recorded = manifest if manifest is not None else master_fingerprint
    exists = out.exists() or shard_dir.exists()
    if exists and not same_run(recorded, fingerprint, ignore):
        if not overwrite:
            if recorded is None:
                why = "it is not a galhpc catalogue of this command"
            else:
                why = "it was made with different settings:\n  " + "\n  ".join(
                    fingerprint_differences(recorded, fingerprint)
                )
            raise CatalogError(
                f"an output exists at {out} and {why}\nrefusing to touch it; pass --overwrite to replace it"
            )
        log.warning("--overwrite: deleting %s and %s", out, shard_dir)
        out.unlink(missing_ok=True)
        if shard_dir.exists():
            shutil.rmtree(shard_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    shard_dir.mkdir(exist_ok=True)
    if record:
        record_manifest(shard_dir, fingerprint)
    remove_stale_temporaries(shard_dir)
    remove_stale_temps(out.parent, out.name, max_age_s=0.0)  # a master write that was killed
    return shard_dir
