"""The parser pieces the galhpc commands share: one home for each flag that more than one command takes.

Each command module builds its parser with `command_parser`, adds its own flags and the
shared ones below, and runs its body through `run_command` (errors become one line and an
exit status, `galhpc.runtime.cli.run_cli`).  The catalogue stages' own options are declared
with their option objects (`galhpc.inference.options.OutputOptions.add_arguments`,
`EncodeOptions.add_arguments`, `GenerateOptions.add_arguments`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from galhpc.runtime.cli import run_cli


@dataclass(frozen=True)
class Command:
    """One galhpc command: its parser and its work, so a command module declares only what is its own.

    A module sets ``build_parser, main = COMMAND.build_parser, COMMAND.main`` (``main`` is
    the console-script entry point).

    Attributes
    ----------
    prog, description : str
        As for `command_parser`.
    add_arguments : callable
        Adds the command's flags to its parser.
    body : callable
        The command's work, given the parsed arguments; returns None or an exit status.
    before : callable, optional
        Run on (parser, arguments) after parsing, outside the error handling: checks of the
        command line beyond argparse's (``parser.error``), logging set-up.
    """

    prog: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    body: Callable[[argparse.Namespace], int | None]
    before: Callable[[argparse.ArgumentParser, argparse.Namespace], None] | None = None

    def build_parser(self) -> argparse.ArgumentParser:
        """The command's parser.

        Returns
        -------
        argparse.ArgumentParser
        """
        parser = command_parser(self.prog, self.description)
        self.add_arguments(parser)
        return parser

    def main(self, argv: list[str] | None = None) -> int:
        """Run the command.

        Parameters
        ----------
        argv : list of str, optional
            The arguments (default ``sys.argv[1:]``).

        Returns
        -------
        int
            Exit status: 0 done, 1 an error, 2 a bad command line, 75 stopped by a signal
            (the catalogue stages and galhpc-train; the same command resumes).
        """
        return run_command(self.build_parser(), argv, self.body, self.before)


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The parser of one galhpc command.

    Parameters
    ----------
    prog : str
        The command (``galhpc-encode``).
    description : str
        What ``--help`` says it does.

    Returns
    -------
    argparse.ArgumentParser
    """
    return argparse.ArgumentParser(prog=prog, description=description)


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None,
                body: Callable[[argparse.Namespace], int | None],
                check: Callable[[argparse.ArgumentParser, argparse.Namespace], None] | None = None) -> int:
    """Parse `argv`, `check` the arguments, and run `body` on them under `galhpc.runtime.cli.run_cli`.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The command's parser (`command_parser`); its ``prog`` names the command in messages.
    argv : list of str or None
        The arguments (None: ``sys.argv[1:]``).
    body : callable
        The command's work, given the parsed arguments.
    check : callable, optional
        Checks of the command line beyond argparse's (``parser.error`` on a bad one).

    Returns
    -------
    int
        The exit status (0 done, 1 an error, 75 preempted).
    """
    args = parser.parse_args(argv)
    if check is not None:
        check(parser, args)
    return run_cli(parser.prog, lambda: body(args))


def add_stage_arguments(p: argparse.ArgumentParser, add_input: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the flags of a catalogue stage around its own input: ``--checkpoint``, the input, ``--out``, ``--rerun``.

    ``--checkpoint`` and ``--out`` are required unless ``--rerun`` names a catalogue whose
    /meta gives them (`check_stage`).

    Parameters
    ----------
    p : argparse.ArgumentParser
        The parser of galhpc-encode or galhpc-generate.
    add_input : callable
        Adds the stage's input flags (``--store``; ``--n``).
    """
    p.add_argument("--checkpoint", type=Path, help="model checkpoint (ckpt.pt)")
    add_input(p)
    p.add_argument("--out", type=Path, help="master HDF5 file to write (shards go to OUT.shards/)")
    p.add_argument("--rerun", type=Path, metavar="CATALOGUE",
                   help="run again with the options recorded in this catalogue's /meta (into the same file): "
                   "resumes it, redoing missing or damaged shards; give no other option")


def add_catalog_input(p: argparse.ArgumentParser) -> None:
    """Add ``--catalog``: the encoded catalogue a search or rarity run reads.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The parser of galhpc-search or galhpc-rarity.
    """
    p.add_argument("--catalog", required=True, type=Path, help="encoded catalogue (galhpc-encode master file)")


def add_table_output(p: argparse.ArgumentParser, what: str) -> None:
    """Add ``--out``: a table written as HDF5, FITS or CSV by its suffix.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The parser of galhpc-search or galhpc-rarity.
    what : str
        What the table holds (``score table``).
    """
    p.add_argument("--out", required=True, type=Path, help=f"{what}: .h5/.hdf5, .fits or .csv")


def check_stage(parser: argparse.ArgumentParser, args: argparse.Namespace, *flags: str) -> None:
    """Check the command line of a catalogue stage: `flags` are required, unless ``--rerun`` stands in for them.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The command's parser.
    args : argparse.Namespace
        The parsed arguments.
    *flags : str
        Flags whose value the catalogue's /meta gives on a rerun (``--checkpoint``, ``--out``).

    Raises
    ------
    SystemExit
        Status 2: a flag missing, or given with ``--rerun``.
    """
    given = {flag: getattr(args, flag.lstrip("-").replace("-", "_")) is not None for flag in flags}
    if args.rerun is None and not all(given.values()):  # the message of argparse's own required flags
        parser.error(f"the following arguments are required: {', '.join(f for f, g in given.items() if not g)}")
    if args.rerun is not None and any(given.values()):
        parser.error(f"--rerun takes the options recorded in the catalogue: give no "
                     f"{', '.join(f for f, g in given.items() if g)}")
