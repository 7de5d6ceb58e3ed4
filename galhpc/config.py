"""Run configuration: one YAML file = one run.

Every section is a dataclass with defaults that work, so an empty YAML file is a valid
config.  Unknown keys are errors (a typo in a cluster job should fail at submission, not
silently use a default).  The config travels inside every checkpoint and output file as
YAML text, so inference stages need nothing but the checkpoint.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from galhpc.runtime.errors import ConfigError


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading floats as YAML 1.2 does: ``1e-4`` and ``3E5`` are floats.

    PyYAML follows YAML 1.1, whose floats need a dot (``1.0e-4``): ``1e-4`` would be the
    string "1e-4".  Every YAML galhpc reads goes through `load_yaml`.
    """


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str | bytes) -> Any:
    """Parse YAML text with `YamlLoader` (``1e-4`` is a float).

    Parameters
    ----------
    text : str or bytes
        One YAML document; bytes are decoded as PyYAML does (UTF-8, or UTF-16 with a BOM).

    Returns
    -------
    Any
        The parsed value: a dict for a config, None for an empty document.

    Raises
    ------
    yaml.YAMLError
        Text that is not YAML.
    """
    return yaml.load(text, Loader=YamlLoader)  # YamlLoader is a SafeLoader subclass


@dataclass
class SourceConfig:
    """One input of `galhpc-prep`: FITS cutouts, a GalSim set, or real stamps.

    Kinds are registered in galhpc.data.sources; `options` are documented by each kind's
    module (galhpc.data.fits, .synth (SimOptions), .starsim, .real); unknown options fail.
    """

    kind: str = "galsim"  # fits | survey_image | galsim | galsim_stars | real
    path: str | None = None  # file, directory or glob (fits); the large image (survey_image); datasets folder (real)
    catalog: str | None = None  # any table astropy reads (FITS, CSV, ECSV, Parquet, VOTable), joined by id
    id_column: str = "object_id"  # the catalogue's id column (fits, survey_image)
    # science HDU of every file: None finds it by convention (every SCI extension, else every
    # image HDU with data that is not an ERR/WHT/DQ-type companion); a name takes every
    # extension of that EXTNAME (fits)
    hdu: int | str | None = None
    # catalogue columns stored as labels (beside ra, dec and the prep's radius column);
    # None: every scalar column
    passthrough: list[str] | None = None
    n: int = 2000  # number of objects to simulate (galsim, galsim_stars)
    seed: int = 0  # simulated objects: randomness from (seed, object index)
    options: dict[str, Any] = field(default_factory=dict)  # source-specific knobs


@dataclass
class PrepConfig:
    """How `galhpc-prep` turns sources into the HDF5 training store."""

    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    output: str = "data/store.h5"
    image_size: int = 64
    # steps in order, geometric (grey, crop, resize) before intensity (flux, arcsinh, minmax);
    # every intensity step stores its per-object coefficients as label columns (docs/schema.md)
    # (the default keeps the BCE models' [0, 1] range; the shipped configs use flux)
    recipe: list[str] = field(default_factory=lambda: ["grey", "crop", "resize", "minmax"])
    crop_size: int | None = None  # centre crop before resizing; None: no crop
    # size-scaled cutouts: crop a box of crop_r90 x R90 (R90 in input pixels from the label
    # column r90_column) instead of crop_size, then resize; None: off
    crop_r90: float | None = None
    r90_column: str = "r90"
    flux_scale: float = 100.0  # flux step: pixels in units of flux / flux_scale (1 % of the flux)
    stretch_scale: float = 1.0  # arcsinh(x / stretch_scale), one value for the whole survey
    metrics: bool = True  # store snr, width, non_uniformity, border_noise as labels
    border: int = 8  # border patch size of the noise estimate
    filters: dict[str, float] = field(default_factory=dict)  # <metric>_min / <metric>_max, e.g. {snr_min: 5}
    on_error: str = "raise"  # raise | skip
    workers: int = 2
    chunk_rows: int = 256  # rows per HDF5 chunk and per block of work
    compression: str | None = None  # None | lzf | gzip: of images, truth and extras
    # bad pixels (mask != 0, NaN/inf, FITS BLANK): an object is rejected when more than this
    # fraction of its pixels, or its centre pixel, is bad; the others are filled with noise
    max_bad_fraction: float = 0.05
    # saturated pixels (a source's options.saturated_bits, e.g. 8 in WFPC2's DQ): "mask" keeps
    # saturated cores (bright stars, nuclei) with those pixels masked and left at their clipped
    # value; "reject" rejects every object whose centre pixel is saturated (counted by reason)
    saturated: str = "mask"
    # sky subtracted by the flux step: "border" (sigma-clipped median of the border frame of
    # width `border`), "none", or the name of a label (catalogue) column in input units
    sky: str = "border"
    # other sources in a stamp (photutils detect + deblend; the target is the segment at the
    # centre): None keeps them, "mask" masks them (and fills with noise), "noise" fills only
    neighbours: str | None = None
    neighbours_nsigma: float = 3.0  # detection threshold in units of the per-pixel σ


@dataclass
class ModelConfig:
    """Which model to build; `params` go to its constructor as keyword arguments."""

    name: str = "vae"
    image_size: int = 64
    channels: int = 1
    latent_dim: int = 64
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScheduleConfig:
    """s3VDC phases (Cao et al. 2020; Spindler et al. 2020), in epochs or in optimiser steps.

    With `unit: steps` the phases count optimiser steps (a preset that fits any catalogue size).

    `enabled: false` gives a constant KL weight `kl_weight` (plain (β-)VAE training).
    """

    enabled: bool = False
    unit: str = "epochs"  # epochs | steps: what t_alpha, t_beta and t_static count
    kl_weight: float = 1.0
    alpha: float = 5e-4
    t_alpha: int = 100
    gmm_init_batches: int = 200
    t_beta: int = 25
    t_static: int = 25
    periods: int = 5
    exponent: float = 2.0  # u in (β^u + α)·KL
    dp_max_components: int = 20  # stick-breaking BGM run at the mixture init: max K
    dp_batches: int = 5  # mini-batches of embeddings it is fitted on (K = their consensus)


@dataclass
class TrainConfig:
    """Optimiser, data loading and checkpointing of `galhpc-train`."""

    store: str = "data/store.h5"
    out_dir: str = "runs/demo"
    epochs: int = 5
    steps: int | None = None  # optimiser steps; when set, epochs = ceil(steps / batches per epoch)
    batch_size: int = 64
    lr: float = 3e-4
    lr_final: float = 1e-6
    weight_decay: float = 0.0
    holdout_fraction: float = 0.1
    augment: bool = True
    seed: int = 0
    checkpoint_every: int = 1  # epochs
    warmup_epochs: float = 0.0  # data-parallel lr scaling ramps up over these epochs
    eval_batches: int | None = None  # holdout batches evaluated per epoch (None: all)
    backend: str = "auto"  # auto | single | torch | horovod
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast of the step (fp16 with a GradScaler)
    channels_last: bool = False  # model and images in channels_last memory format
    compile: str | None = None  # torch.compile backend of the loss step (e.g. inductor); None: eager
    nan_check_every: int = 1  # steps between the (one host sync) finiteness checks of the loss terms


@dataclass
class RunConfig:
    """One run: the prep, model, schedule and train sections of a YAML config file."""

    prep: PrepConfig = field(default_factory=PrepConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as nested plain dicts and lists (`dataclasses.asdict`).

        Returns
        -------
        dict
            Section name -> mapping of its fields, every nested dataclass a dict too.
        """
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The config as YAML text, sections and keys in declaration order.

        This is the text stored in checkpoints and outputs; `config_from_yaml_text` reads it back.

        Returns
        -------
        str
            ``yaml.safe_dump`` of `to_dict`.
        """
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, recursing into nested dataclasses."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _convert(hints[key], value, f"{where}.{key}")
    return cls(**kwargs)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _convert(hint: Any, value: Any, where: str) -> Any:
    """`value` checked against the annotation `hint` (an int is accepted as a float).

    Hints it does not know (Any, classes, callables) take any value.
    """
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _build(arg, value, where)
        for arg in args:
            try:
                return _convert(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
            items = [_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=False))]
        else:
            item = args[0] if args else Any
            items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) or origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        value_hint = args[1] if len(args) == 2 else Any
        return {k: _convert(value_hint, v, f"{where}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def check_arguments(function: Any, values: dict[str, Any], where: str) -> dict[str, Any]:
    """A free-form mapping checked against the annotations of the callable it is passed to.

    The mapping (``model.params``, a source's ``options``) is passed to the callable as
    keyword arguments.

    Parameters
    ----------
    function : callable
        A class (its ``__init__`` is read) or function with annotated parameters.
    values : dict
        Keyword arguments from the config.
    where : str
        The config path of `values`, e.g. ``"model.params"``, for the message.

    Returns
    -------
    dict
        `values` with ints given for float parameters as floats; unknown keys are left
        for the call itself to refuse.

    Raises
    ------
    ConfigError
        A value of the wrong type, naming its key: ``model.params.l2: expected float, got 'x'``.
    """
    target = function.__init__ if inspect.isclass(function) else function
    try:
        hints = typing.get_type_hints(target)
    except (NameError, TypeError):  # an annotation naming a type only imported for type checkers
        hints = {k: v for k, v in getattr(target, "__annotations__", {}).items() if not isinstance(v, str)}
    return {key: _convert(hints[key], value, f"{where}.{key}") if key in hints else value
            for key, value in values.items()}


def check_options(types: dict[str, Any], options: dict[str, Any], where: str) -> dict[str, Any]:
    """A source's free-form `options` checked against the types its reader takes.

    Parameters
    ----------
    types : dict
        Option name -> annotation (``str``, ``int | str | None``, ``list[str]``, ...).
    options : dict
        The source's ``options`` from the config.
    where : str
        The source, for the message (e.g. ``"source fits cutouts/"``).

    Returns
    -------
    dict
        A copy of `options`, ints given for float options as floats.

    Raises
    ------
    ConfigError
        An unknown option (naming the allowed ones) or a value of the wrong type, naming
        the option: ``source fits cutouts/: option catalog_hdu: expected ..., got ...``.
    """
    unknown = sorted(set(options) - set(types))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown}; allowed: {sorted(types)}")
    return {key: _convert(types[key], value, f"{where}: option {key}") for key, value in options.items()}


def options_dataclass(cls: type, options: dict[str, Any], where: str) -> Any:
    """Build a source's option dataclass from its `options` mapping.

    Unknown keys are errors naming the allowed ones; every value is checked against the
    field's annotation (`ConfigError` naming the key); YAML lists become tuples (pairs
    and per-band values).

    Parameters
    ----------
    cls : type
        The option dataclass (e.g. `galhpc.data.synth.SimOptions`).
    options : dict
        The source's ``options`` from the config.
    where : str
        The config path of `options`, for the messages.

    Returns
    -------
    object
        An instance of `cls`; fields not in `options` keep their defaults.

    Raises
    ------
    ConfigError
        An unknown key (naming the allowed ones) or a value of the wrong type.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown}; allowed: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    checked = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in options.items()}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in checked.items()})


def config_from_dict(data: dict[str, Any] | None) -> RunConfig:
    """Build and check a `RunConfig` from a parsed YAML mapping.

    Parameters
    ----------
    data : dict or None
        Sections prep, model, schedule, train (each optional); None or empty: all defaults.

    Returns
    -------
    RunConfig
        Every section built, ints given for float fields as floats.

    Raises
    ------
    ConfigError
        An unknown key, a non-mapping section or a value of the wrong type, naming its
        config path (e.g. ``config.train.lr``).
    """
    return _build(RunConfig, data or {}, "config")


def apply_settings(data: dict[str, Any] | None, settings: typing.Sequence[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` command-line settings (``--set``) to a parsed YAML config.

    Parameters
    ----------
    data : dict or None
        The config as YAML parsed it (not modified).
    settings : sequence of str
        ``section.key=value``; a dotted key walks into mappings, and an integer part indexes a
        list (``prep.sources.0.n=300``).  The value is read as YAML (``1e-4`` a float,
        ``[16, 32]`` a list, ``null`` None).

    Returns
    -------
    dict
        A copy of `data` with the settings applied, in order.

    Raises
    ------
    ConfigError
        A setting without ``=``, or a key path through a missing list item or a non-mapping.
    """
    import copy

    data = copy.deepcopy(data) if data else {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {setting!r}: expected KEY=VALUE, e.g. train.epochs=2")
        try:
            value = load_yaml(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {setting!r}: value is not YAML: {err}") from None
        node: Any = data
        parts = key.split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {setting!r}: {where} is not an item of a {len(node)}-item list")
                part = int(part)
            elif not isinstance(node, dict):
                raise ConfigError(f"--set {setting!r}: {'.'.join(parts[:depth])} is not a mapping")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return data


def load_config(path: str | Path, settings: typing.Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config; an empty file gives all defaults.

    `settings` are ``--set KEY=VALUE`` overrides (`apply_settings`), applied before the
    config is checked, so a mistyped key is refused like one in the file.

    Parameters
    ----------
    path : str or pathlib.Path
        The YAML file.
    settings : sequence of str, optional
        ``section.key=value`` overrides, applied in order.

    Returns
    -------
    RunConfig
        The file's config with the settings applied, checked by `config_from_dict`.

    Raises
    ------
    ConfigError
        A missing file, text that is not YAML, a malformed setting, or a config that does
        not match the schema; the message starts with the file's path.
    """
    path = Path(path)
    try:
        data = load_yaml(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        return config_from_dict(apply_settings(data, settings))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def config_from_yaml_text(text: str) -> RunConfig:
    """Build a `RunConfig` from YAML text, e.g. the config stored in a checkpoint.

    Parameters
    ----------
    text : str
        YAML as written by `RunConfig.to_yaml` (or a config file's content).

    Returns
    -------
    RunConfig
        The text's config, checked by `config_from_dict`.

    Raises
    ------
    ConfigError
        A config that does not match the schema.
    yaml.YAMLError
        Text that is not YAML.
    """
    return config_from_dict(load_yaml(text))
