"""The options of the catalogue stages, each declared once: its field, its command-line flag, its fingerprint.

`OutputOptions` (how the sharded catalogue is written and where the model runs) is shared by
galhpc-encode and galhpc-generate; `galhpc.inference.encode.EncodeOptions` and
`galhpc.inference.generate.GenerateOptions` own the fields of one stage.  Each is a frozen
dataclass with `from_args` (built once from the parsed command line) and `to_record` /
`from_record` (the JSON kept in the catalogue's /meta, so ``galhpc-encode --rerun CAT.h5``
rebuilds the run from the catalogue itself).

A field marked ``fingerprint`` in its metadata (`option`) decides the catalogue's bits or
layout: `fingerprint_of` collects those fields, so a resume refuses shards made with other
values of them and keeps shards across changes of any other option (threads, overwrite,
the automatic shard-size limits).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

O = TypeVar("O")

#: /meta attribute holding the JSON record of each options object
OUTPUT_RECORD = "output_options"


def option(default: Any = dataclasses.MISSING, *, fingerprint: bool | str = False, group: str | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field of an options object, marked for `fingerprint_of` when it shapes the output.

    Parameters
    ----------
    default : object, optional
        The field's default.
    fingerprint : bool or str, optional
        True: the field enters the fingerprint under its own name; a string: under that key.
    group : str, optional
        The fingerprint entry (a dict) the field goes into instead of the top level.
    default_factory : callable, optional
        As for `dataclasses.field`.

    Returns
    -------
    dataclasses.Field
        The field, its marks in ``metadata``.
    """
    metadata = {"fingerprint": fingerprint, "group": group}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def jsonable(value: Any) -> Any:
    """`value` as JSON would give it back: tuples as lists, paths as text, mappings as dicts.

    Parameters
    ----------
    value : object
        A field value (numbers, text, None, tuples, mappings, paths).

    Returns
    -------
    object
        The JSON-normalised value.
    """
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def fingerprint_of(options: Any, *, omit_groups: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fingerprint entries of an options object: its fields marked ``fingerprint``.

    Parameters
    ----------
    options : dataclass instance
        An options object whose fields were declared with `option`.
    omit_groups : tuple of str, optional
        Groups that do not apply to this run: their entry is None (e.g. the post-hoc GMM's
        settings for a model with its own mixture).

    Returns
    -------
    dict
        JSON-normalised entries, by key (grouped fields in a dict under their group).
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(options):
        mark = f.metadata.get("fingerprint")
        if not mark:
            continue
        key = mark if isinstance(mark, str) else f.name
        group = f.metadata.get("group")
        value = jsonable(getattr(options, f.name))
        if group is None:
            out[key] = value
        elif group in omit_groups:
            out[group] = None
        else:
            out.setdefault(group, {})[key] = value
    return out


def to_record(options: Any) -> str:
    """Every field of an options object as sorted JSON text (for /meta).

    Parameters
    ----------
    options : dataclass instance
        An options object.

    Returns
    -------
    str
        JSON object of field name -> value.
    """
    return json.dumps(jsonable(dataclasses.asdict(options)), sort_keys=True)


def from_record(cls: type[O], text: str, **changes: Any) -> O:
    """Rebuild an options object from `to_record`'s text; JSON lists become tuples again.

    Parameters
    ----------
    cls : type
        The options class.
    text : str
        Its record.
    **changes
        Fields to set otherwise (e.g. ``overwrite=False`` for a resume).

    Returns
    -------
    cls
        The options object.

    Raises
    ------
    ValueError
        The record is not a JSON object or names a field `cls` does not have.
    """
    values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"not a record of {cls.__name__}: {text[:80]!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"a record of {cls.__name__} with unknown field(s) {', '.join(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**{**values, **changes})


def add_threads_option(p: argparse.ArgumentParser) -> None:
    """Add ``--threads``: torch CPU threads per rank (`galhpc.runtime.start_mpi_rank`).

    Parameters
    ----------
    p : argparse.ArgumentParser
        The parser of galhpc-encode, -generate, -search or -rarity.
    """
    p.add_argument("--threads", type=int,
                   help="torch CPU threads per rank (default: the CPUs this rank may use, from SLURM_CPUS_PER_TASK, "
                   "its CPU affinity and the cgroup quota, shared by the job's ranks on the node)")


@dataclass(frozen=True)
class OutputOptions:
    """How a sharded HDF5 catalogue is written and where the model runs (galhpc-encode, galhpc-generate).

    Attributes
    ----------
    shard_size : int or None
        Objects per shard, rounded up to whole batches; None sizes shards by work (at most
        `shard_minutes` of one rank and `shard_bytes` of output, see
        `galhpc.inference.driver.auto_shard_size`).
    compression : str
        ``none`` or ``gzip[:LEVEL]``.
    table : bool
        Also write the compound ``catalog`` table.
    overwrite : bool
        Replace an existing output of other settings.
    device : str
        ``auto``, ``cpu`` or ``cuda`` (ranks share GPUs round-robin).
    precision : str
        ``fp32``, ``bf16`` or ``fp16``: autocast of the model.
    threads : int or None
        Torch CPU threads per rank (None: the CPUs this rank may use).
    shard_minutes : float
        Most minutes of one rank per automatic shard.
    objects_per_second : float or None
        One rank's throughput for the automatic size (None: measured on the first batches).
    shard_bytes : int
        Most bytes of one automatic shard file (1 GiB).
    """

    shard_size: int | None = option(None, fingerprint=True)
    compression: str = option("none", fingerprint=True)
    table: bool = option(True, fingerprint=True)
    overwrite: bool = False
    device: str = "auto"
    precision: str = option("fp32", fingerprint=True)
    threads: int | None = None
    shard_minutes: float = 5.0
    objects_per_second: float | None = None
    shard_bytes: int = 1 << 30

    @property
    def shard_seconds(self) -> float:
        """Most seconds of one rank per automatic shard (float)."""
        return 60.0 * self.shard_minutes

    def fingerprint(self, device_type: str) -> dict[str, Any]:
        """The fingerprint entries every catalogue shares: how rows are laid out and computed.

        Parameters
        ----------
        device_type : str
            The device the model runs on (``cpu``, ``cuda``), resolved from `device`.

        Returns
        -------
        dict
            ``shard_size``, ``compression``, ``table``, ``precision`` and ``device_type``.
        """
        return {**fingerprint_of(self), "device_type": device_type}

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Add the output options (the flags of the fields above) to a parser.

        Parameters
        ----------
        p : argparse.ArgumentParser
            The parser of galhpc-encode or galhpc-generate.
        """
        p.add_argument("--shard-size", type=int,
                       help="objects per shard file, rounded up to whole batches (default: sized by work, see "
                       "--shard-minutes)")
        p.add_argument("--compression", default="none", help="none | gzip[:LEVEL] (default none); "
                       "h5py's lzf is refused: h5dump and other HDF5 readers cannot decode it")
        p.add_argument("--no-table", action="store_true", help="do not write the compound 'catalog' table")
        p.add_argument("--overwrite", action="store_true", help="replace an existing output of other settings")
        p.add_argument("--device", default="auto", help="auto | cpu | cuda (ranks share GPUs round-robin)")
        p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                       help="autocast of the model (default fp32); recorded in the output, a resume keeps it")
        add_threads_option(p)
        p.add_argument("--shard-minutes", type=float, default=5.0,
                       help="automatic shard size: at most this many minutes of one rank per shard, so a stop signal "
                       "loses at most that much work (default 5); shards are also at most 1 GiB")
        p.add_argument("--objects-per-second", type=float,
                       help="one rank's throughput for the automatic shard size (default: measured on the first "
                       "batches)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OutputOptions:
        """The output options of a parsed command line (`add_arguments`).

        Parameters
        ----------
        args : argparse.Namespace
            Parsed arguments.

        Returns
        -------
        OutputOptions
        """
        return cls(shard_size=args.shard_size, compression=args.compression, table=not args.no_table,
                   overwrite=args.overwrite, device=args.device, precision=args.precision, threads=args.threads,
                   shard_minutes=args.shard_minutes, objects_per_second=args.objects_per_second)


def read_recorded_options(master: str | Path) -> dict[str, Any]:
    """The /meta attributes of a catalogue's master file, read without opening its shards.

    Parameters
    ----------
    master : str or Path
        The master file of a galhpc-encode or galhpc-generate catalogue.

    Returns
    -------
    dict
        Attribute name -> value (text decoded).

    Raises
    ------
    CatalogError
        The file is missing, unreadable, or has no /meta.
    """
    from galhpc.inference.shards import CatalogError
    from galhpc.io.catalog import META, open_h5_readonly

    master = Path(master)
    if not master.is_file():
        raise CatalogError(f"catalogue not found: {master}")
    try:
        with open_h5_readonly(master) as f:
            attrs = dict(f[META].attrs) if META in f else None
    except OSError as err:
        raise CatalogError(f"{master} is not a readable HDF5 file: {err}") from err
    if attrs is None:
        raise CatalogError(f"{master} has no /{META}: it is not a galhpc catalogue")
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}


def recorded(meta: Mapping[str, Any], name: str, master: str | Path) -> str:
    """One option record of /meta, refused with a message when the catalogue predates records.

    Parameters
    ----------
    meta : Mapping
        The catalogue's /meta (`read_recorded_options`).
    name : str
        The attribute (e.g. ``output_options``).
    master : str or Path
        The catalogue, for the message.

    Returns
    -------
    str
        The JSON record.

    Raises
    ------
    CatalogError
        /meta has no such record.
    """
    from galhpc.inference.shards import CatalogError

    text = meta.get(name)
    if not text:
        raise CatalogError(f"{master}: /meta records no {name} (made by an older galhpc or another command), so it "
                           "cannot be re-run from itself; run the command with its options")
    return str(text)
