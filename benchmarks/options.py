"""Command-line options of the benchmark scripts beside this file, declared as keyword defaults."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def option_parser(description: str, **options: Any) -> argparse.ArgumentParser:
    """Build a parser with one ``--name`` option per keyword, typed by its default.

    Parameters
    ----------
    description : str
        The script's docstring (kept as written in ``--help``).
    **options
        ``name=default`` or ``name=(default, help)``; underscores become dashes.  A default
        of False is a flag (``store_true``), a list takes one or more values of its items'
        type, None a string, a `Path` a path; any other default gives its own type.

    Returns
    -------
    argparse.ArgumentParser
        The parser, to which a script may add options of other kinds before parsing.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, spec in options.items():
        default, help_ = spec if isinstance(spec, tuple) else (spec, None)
        flag = "--" + name.replace("_", "-")
        if default is False:
            parser.add_argument(flag, action="store_true", help=help_)
        elif isinstance(default, list):
            parser.add_argument(flag, type=type(default[0]), nargs="+", default=default, help=help_)
        else:
            kind = str if default is None else Path if isinstance(default, Path) else type(default)
            parser.add_argument(flag, type=kind, default=default, help=help_)
    return parser
