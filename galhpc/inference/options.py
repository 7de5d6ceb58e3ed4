"""The options of the catalogue stages, each declared once: its field, its command-line flag, its fingerprint.

`OutputOptions` (how the sharded catalogue is written and where the model runs) is shared by
galhpc-encode and galhpc-generate; `EncodeOptions` and `GenerateOptions` own the fields of
one stage.  Each is a frozen
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

OptionsT = TypeVar("OptionsT")

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


def from_record(cls: type[OptionsT], text: str, **changes: Any) -> OptionsT:
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


class FromArgs:
    """`from_args` for an options dataclass whose fields are flags of the same names."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Any:
        """The options of a parsed command line: each field from the flag of its name (`_from_flags` for the rest).

        Parameters
        ----------
        args : argparse.Namespace
            Arguments parsed by a parser the class's `add_arguments` filled.

        Returns
        -------
        object
            An instance of the class.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in vars(args).items() if k in names}, **cls._from_flags(args)})

    @classmethod
    def _from_flags(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {}  # fields whose flag has another name or form


@dataclass(frozen=True)
class OutputOptions(FromArgs):
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

    @classmethod
    def _from_flags(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {"table": not args.no_table}

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


@dataclass(frozen=True)
class EncodeOptions(FromArgs):
    """What galhpc-encode computes per object (its own options; the output's are `OutputOptions`).

    Attributes
    ----------
    batch_size : int
        Objects per forward pass.
    gmm_components : int
        Post-hoc GMM: most components the stick-breaking BGM may use.
    gmm_fit_objects : int
        Post-hoc GMM: size of the evenly strided subsample it is fitted on.
    seed : int
        Seed of the post-hoc GMM fit.
    passthrough : tuple of str or None
        Store label columns to carry; None: the store's choice (`passthrough_columns`).
        The resolved list, not this request, enters the fingerprint.
    """

    batch_size: int = option(512, fingerprint=True)
    gmm_components: int = option(20, fingerprint="max_components", group="post_hoc_gmm")
    gmm_fit_objects: int = option(20000, fingerprint="fit_objects", group="post_hoc_gmm")
    seed: int = option(0, fingerprint="seed", group="post_hoc_gmm")
    passthrough: tuple[str, ...] | None = None

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Add the encode options to a parser: one flag per field, named after it.

        They stand before the output options in ``--help``.

        Parameters
        ----------
        p : argparse.ArgumentParser
            galhpc-encode's.
        """
        p.add_argument("--passthrough", type=lambda text: tuple(c for c in text.split(",") if c),
                       help="comma-separated store label columns to carry into the catalogue, e.g. ra,dec,mag_r "
                       "(default: ra and dec when the store has them, then the columns its prep declared; '' for "
                       "none)")
        p.add_argument("--batch-size", type=int, default=512, help="objects per forward pass (default 512)")
        p.add_argument("--gmm-components", type=int, default=20,
                       help="post-hoc GMM: most components the stick-breaking BGM may use (default 20)")
        p.add_argument("--gmm-fit-objects", type=int, default=20000,
                       help="post-hoc GMM: fitted on this many evenly strided objects (default 20000)")
        p.add_argument("--seed", type=int, default=0, help="seed of the post-hoc GMM fit")


def parse_condition(item: str) -> tuple[str, object]:
    """Parse ``--condition KEY=VALUE``, one keyword of ``model.sample(**conditions)``.

    Parameters
    ----------
    item : str
        ``key=value``.

    Returns
    -------
    (str, object)
        The key and the YAML-parsed value.

    Raises
    ------
    argparse.ArgumentTypeError
        Without a key or an ``=``.
    """
    key, eq, value = item.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"--condition {item!r}: expected key=value")
    from galhpc.config import load_yaml

    return key, load_yaml(value)


def parse_counts(text: str) -> tuple[int, ...]:
    """Parse ``--counts 500,0,1500``: objects per mixture component.

    Parameters
    ----------
    text : str
        Comma-separated integers.

    Returns
    -------
    tuple of int

    Raises
    ------
    argparse.ArgumentTypeError
        Text that is not comma-separated integers.
    """
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--counts {text!r}: expected comma-separated integers") from None


def parse_columns(text: str) -> tuple[str, str]:
    """Parse ``--target-columns MAG,SIZE``: the target table's two column names.

    Parameters
    ----------
    text : str
        Two comma-separated names.

    Returns
    -------
    (str, str)

    Raises
    ------
    argparse.ArgumentTypeError
        Not exactly two non-empty names.
    """
    names = tuple(c.strip() for c in text.split(","))
    if len(names) != 2 or not all(names):
        raise argparse.ArgumentTypeError(f"--target-columns {text!r}: expected MAG,SIZE")
    return names


@dataclass(frozen=True)
class GenerateOptions(FromArgs):
    """What galhpc-generate makes (its own options; the output's are `OutputOptions`).

    The fields marked ``fingerprint`` enter the catalogue's fingerprint as they are; the
    survey fields (PSF, pixel scale, noise, zero point, target table) enter it as what they
    resolve to once the checkpoint is read (`SurveySetup`), so e.g. a pixel scale counts
    only where it changes the output.

    Attributes
    ----------
    n : int
        Number of objects.
    seed : int
        Run seed (samples per block on the batch grid, survey noise per object).
    batch_size : int
        Objects per ``model.sample`` call.
    component : int or None
        Sample only this mixture component.
    counts : tuple of int or None
        Objects per mixture component, in component order.
    conditions : Mapping
        Keywords passed to ``model.sample``.
    keep_clean : bool
        Also store the clean images.
    dtype : str
        Image storage type, ``float16`` or ``float32``.
    psf : str or None
        Survey PSF: a FITS image or a GalSim profile (``moffat:fwhm=0.7,beta=3.5``).
    pixel_scale : float or None
        Arcsec per pixel for GalSim profiles and COSMOS noise (None: the checkpoint's).
    noise_sigma : float or None
        White Gaussian noise σ (or the COSMOS noise scale).
    cosmos_noise : bool
        Add correlated HST COSMOS noise.
    zero_point : float or None
        AB magnitude of one survey flux unit (None: the training store's).
    bunit : str or None
        The survey's pixel unit (None: the training store's).
    target_table : str or None
        A (magnitude, half-light radius) table to draw to by rejection sampling.
    target_columns : tuple of str
        Its magnitude and half-light radius (pixels) columns.
    target_bins : int
        Grid cells per axis of the target.
    target_pilot : int
        Pilot draws measuring the generator's own (mag, size) density.
    """

    n: int = option(fingerprint=True)
    seed: int = option(0, fingerprint=True)
    batch_size: int = option(256, fingerprint=True)
    component: int | None = option(None, fingerprint=True)
    counts: tuple[int, ...] | None = option(None, fingerprint=True)
    conditions: Mapping[str, Any] = option(fingerprint=True, default_factory=dict)
    keep_clean: bool = option(False, fingerprint=True)
    dtype: str = option("float32", fingerprint=True)
    psf: str | None = None
    pixel_scale: float | None = None
    noise_sigma: float | None = None
    cosmos_noise: bool = False
    zero_point: float | None = None
    bunit: str | None = None
    target_table: str | None = None
    target_columns: tuple[str, str] = ("mag_ab", "half_light_radius")
    target_bins: int = 8
    target_pilot: int = 2000

    @classmethod
    def _from_flags(cls, args: argparse.Namespace) -> dict[str, Any]:
        target = args.target_table
        return {"conditions": dict(args.condition), "target_table": None if target is None else str(target),
                "target_columns": tuple(args.target_columns)}

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Add the generate options (the flags of the fields above, but ``--n``) to a parser.

        Parameters
        ----------
        p : argparse.ArgumentParser
            The parser of galhpc-generate.
        """
        p.add_argument("--seed", type=int, default=0, help="run seed: samples come in blocks on the --batch-size grid "
                       "seeded by (seed, block start), survey noise per object by (seed, i); the same on any rank "
                       "count")
        p.add_argument("--batch-size", type=int, default=256, help="objects per model.sample call (default 256)")
        which = p.add_mutually_exclusive_group()
        which.add_argument("--component", type=int, help="sample only this mixture component")
        which.add_argument("--counts", type=parse_counts, help="objects per mixture component, e.g. 500,0,1500")
        p.add_argument("--condition", action="append", default=[], metavar="KEY=VALUE", type=parse_condition,
                       help="keyword passed to model.sample (repeatable), e.g. --condition label=3")
        p.add_argument("--psf", help="survey PSF: a FITS image, or a GalSim profile like moffat:fwhm=0.7,beta=3.5")
        p.add_argument("--pixel-scale", type=float,
                       help="arcsec per pixel for GalSim PSF profiles and COSMOS noise (default: the pixel scale the "
                       "model was trained at, recorded in the checkpoint (older checkpoints: read from the training "
                       "store they name), else 0.03 = COSMOS; "
                       "the value used and its origin are logged and stored in /meta)")
        p.add_argument("--noise-sigma", type=float, help="add white Gaussian noise of this σ (or scale COSMOS noise)")
        p.add_argument("--cosmos-noise", action="store_true", help="add correlated HST COSMOS noise (GalSim)")
        p.add_argument("--keep-clean", action="store_true", help="also store the clean images (images_clean)")
        p.add_argument("--dtype", choices=("float16", "float32"), default="float32", help="image storage type")
        p.add_argument("--zero-point", type=float,
                       help="AB magnitude of one survey flux unit (e.g. 31.4 for nJy); default: the training store's "
                       "zero_point attribute; without one the mag_ab column is NaN")
        p.add_argument("--bunit",
                       help="the survey's pixel unit (FITS BUNIT; default: the training store's bunit attribute)")
        p.add_argument("--target-table", type=Path,
                       help="draw the catalogue to this table's (AB magnitude, half-light radius) distribution by "
                       "rejection sampling (any astropy format: CSV, ECSV, FITS, Parquet; needs a zero point); the "
                       "pilot's acceptance is logged and stored in /meta, each object's candidates in rejection_draws")
        p.add_argument("--target-columns", type=parse_columns, default=("mag_ab", "half_light_radius"),
                       metavar="MAG,SIZE", help="the target table's magnitude and half-light radius (pixels) columns "
                       "(default mag_ab,half_light_radius)")
        p.add_argument("--target-bins", type=int, default=8, help="grid cells per axis of the target (default 8)")
        p.add_argument("--target-pilot", type=int, default=2000,
                       help="pilot draws that measure the generator's own (mag, size) density (default 2000)")


def recorded(meta: Mapping[str, Any], name: str, master: str | Path) -> str:
    """One option record of /meta, refused with a message when the catalogue predates records.

    Parameters
    ----------
    meta : Mapping
        The catalogue's /meta (`galhpc.io.catalog.read_meta`).
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
    from galhpc.runtime.errors import CatalogError

    text = meta.get(name)
    if not text:
        raise CatalogError(f"{master}: /meta records no {name} (made by an older galhpc or another command), so it "
                           "cannot be re-run from itself; run the command with its options")
    return str(text)


def recorded_run(master: str | Path, kind: str, cls: type[OptionsT],
                 record: str) -> tuple[dict[str, Any], OptionsT, OutputOptions]:
    """The options a catalogue was made with, from its /meta, to run it again (a resume: no overwrite).

    Parameters
    ----------
    master : str or Path
        The catalogue's master file.
    kind : str
        The /meta ``kind`` it must have (``encode``, ``generate``).
    cls : type
        The stage's options class (`EncodeOptions`, `GenerateOptions`).
    record : str
        The /meta attribute of its record (``encode_options``).

    Returns
    -------
    (dict, cls, OutputOptions)
        The /meta attributes (``checkpoint``, ``input``, ...), the stage's options and the
        output options with ``overwrite=False``.

    Raises
    ------
    CatalogError
        Not a catalogue of this stage, or one without option records.
    """
    from galhpc.io.catalog import read_meta
    from galhpc.runtime.errors import CatalogError

    meta = read_meta(master)
    if meta.get("kind") != kind:
        raise CatalogError(f"{master} is not a galhpc-{kind} catalogue (its /meta kind is {meta.get('kind')!r})")
    try:
        options = from_record(cls, recorded(meta, record, master))
        output = from_record(OutputOptions, recorded(meta, OUTPUT_RECORD, master), overwrite=False)
    except (ValueError, TypeError) as err:
        raise CatalogError(f"{master}: its /meta option records are unreadable: {err}") from err
    return meta, options, output


def split_keywords(settings: Mapping[str, Any], *classes: type) -> tuple[Any, ...]:
    """One options object per class from one flat mapping of settings (scripts, tests, notebooks).

    Parameters
    ----------
    settings : Mapping
        Field name -> value; each name must be a field of exactly one of `classes`.
    *classes : type
        Options classes, e.g. ``EncodeOptions, OutputOptions``.

    Returns
    -------
    tuple
        One instance per class, in order, built from its fields in `settings`.

    Raises
    ------
    TypeError
        A setting that is a field of none of `classes`.
    """
    names = [{f.name for f in dataclasses.fields(cls)} for cls in classes]
    unknown = sorted(set(settings) - set().union(*names))
    if unknown:
        raise TypeError(f"no option {', '.join(unknown)} in {', '.join(cls.__name__ for cls in classes)}")
    return tuple(cls(**{k: v for k, v in settings.items() if k in own})
                 for cls, own in zip(classes, names, strict=True))
