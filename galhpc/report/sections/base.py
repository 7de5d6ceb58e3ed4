"""What a report section is: a name, a title, the inputs it requires and a `run`.

A section declares its needs as `Requirement` objects; the builder
(`galhpc.report.build`) asks each of them before running the section and, when one is
missing, records ``{"skipped": reason}`` in one place instead of the section checking its
inputs.  A requirement reads only the loaded inputs and the options, and draws no random
numbers, so skipping a section never shifts the random stream of the sections after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from galhpc.report.options import ReportOptions

if TYPE_CHECKING:
    from galhpc.report.inputs import ReportInputs

Run = Callable[["ReportInputs", ReportOptions, "Figures", np.random.Generator], dict[str, Any]]


@dataclass
class Figures:
    """Registry of the figures written so far: section name -> [(caption, file name)]."""

    out: Path
    items: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def path(self, section: str, name: str, caption: str) -> Path:
        """Register a figure of `section` and return the path to draw it to.

        Parameters
        ----------
        section : str
            The section's `name`; index.html shows the figure under its title.
        name : str
            File name of the PNG inside the report folder.
        caption : str
            Caption shown under the figure.

        Returns
        -------
        Path
            ``out / name``.
        """
        self.items.setdefault(section, []).append((caption, name))
        return self.out / name


@dataclass(frozen=True)
class Requirement:
    """An input a section needs: `present` says whether the loaded inputs have it.

    `reason` is the text recorded when it is missing: a string, or a function of the
    inputs and options (for a reason that names the model or counts objects).
    """

    name: str
    present: Callable[[ReportInputs, ReportOptions], bool]
    reason: str | Callable[[ReportInputs, ReportOptions], str]

    def because(self, reason: str) -> Requirement:
        """The same requirement with the section's own wording of why it is missing.

        Parameters
        ----------
        reason : str
            The text recorded as ``skipped``.

        Returns
        -------
        Requirement
        """
        return replace(self, reason=reason)

    def missing(self, inputs: ReportInputs, options: ReportOptions) -> str | None:
        """Why the inputs lack this requirement, or None when they have it.

        Parameters
        ----------
        inputs : ReportInputs
        options : ReportOptions

        Returns
        -------
        str or None
        """
        if self.present(inputs, options):
            return None
        return self.reason if isinstance(self.reason, str) else self.reason(inputs, options)


@dataclass(frozen=True)
class Section:
    """One part of the report.

    Attributes
    ----------
    name : str
        Key of its metrics in metrics.json and of its figures (`Figures.path`).
    title : str or None
        Heading in index.html; None keeps the section in metrics.json only.
    requires : tuple of Requirement
        Checked in order by the builder; the first missing one skips `run`.
    run : callable
        ``run(inputs, options, figures, rng) -> dict`` of JSON-ready metrics.
    always : callable, optional
        Same signature; runs whether or not the requirements hold, its metrics first (the
        loss curves need only the checkpoint, the reconstructions a store).
    """

    name: str
    title: str | None
    requires: tuple[Requirement, ...]
    run: Run
    always: Run | None = None

    def missing(self, inputs: ReportInputs, options: ReportOptions) -> str | None:
        """The reason of the first requirement the inputs lack, or None when all hold.

        Parameters
        ----------
        inputs : ReportInputs
            The loaded inputs.
        options : ReportOptions
            Some requirements read sizes (e.g. ``n_morph``).

        Returns
        -------
        str or None
            What the builder records as ``skipped``.
        """
        for requirement in self.requires:
            reason = requirement.missing(inputs, options)
            if reason is not None:
                return reason
        return None


SECTIONS: dict[str, Section] = {}  # name -> Section, in registration order (the page's order)


def register(section: Section) -> Section:
    """Add a section to the report (GalSim's registered builders): `SECTIONS` keeps the order.

    Parameters
    ----------
    section : Section

    Returns
    -------
    Section
        `section` itself, so a module can write ``SECTION = register(Section(...))``.

    Raises
    ------
    ValueError
        If a section of that name is registered already.
    """
    if section.name in SECTIONS:
        raise ValueError(f"a report section named {section.name!r} is registered already")
    SECTIONS[section.name] = section
    return section


# the requirements several sections share
HELDOUT = Requirement("held-out objects", lambda inp, opt: inp.holdout is not None,
                      "no --store or --holdout-store: no held-out objects")
STORE = Requirement("store", lambda inp, opt: inp.store is not None, "no --store")
GENERATOR = Requirement(
    "generated stamps", lambda inp, opt: inp.synth is not None or inp.model.generative,
    lambda inp, opt: f"model {inp.model.name!r} is not generative and no --synth was given")


def pick(n_total: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted random indices without replacement: min(n, n_total) of range(n_total).

    Unlike `galhpc.report.sampling.sample_rows`, it draws even when n >= n_total (the
    sections' random stream depends on it).

    Parameters
    ----------
    n_total : int
        Size of the range.
    n : int
        How many.
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray
        Increasing indices.
    """
    return np.sort(rng.choice(n_total, size=min(n, n_total), replace=False))
