"""The report's sections, one module each, registered in the order the report runs them.

Each module builds one `Section` (a name, an index.html title, the inputs it `requires`,
a `run`) and registers it (`register`, after GalSim's registered builders); the builder
(`galhpc.report.build`) runs `SECTIONS` in order and skips, in one place, a section whose
requirement is missing.  The order matters: sections draw from one random generator.

To add a section: write a module here with ``SECTION = register(Section(...))`` and add
its name to `MODULES` at the place it should run.
"""

from __future__ import annotations

from importlib import import_module

from galhpc.report.sections.base import SECTIONS, Figures, Requirement, Section, register

# the modules, in report order: importing one registers its section
MODULES = ("reconstruction", "clusters", "generation", "latents", "regier", "fidelity",
           "generated_vs_real", "truth", "rarity", "search")
for _module in MODULES:
    import_module(f"{__name__}.{_module}")

__all__ = ["MODULES", "SECTIONS", "Figures", "Requirement", "Section", "register"]
