"""One exception hierarchy for galhpc, on GalSim's model.

Every error galhpc raises on purpose is a `GalhpcError`; each subclass also inherits the
builtin type callers would catch without knowing galhpc (a bad config is a `ValueError`,
a job that cannot go on a `RuntimeError`).  The message is one line naming the file and
the object at fault; `galhpc.runtime.cli.run_cli` prints it as such, with exit status 1.
"""

from __future__ import annotations


class GalhpcError(Exception):
    """Root of every error galhpc raises on purpose."""


class ConfigError(GalhpcError, ValueError):
    """A config file, dict or option that does not match the schema."""


class DataError(GalhpcError, ValueError):
    """Input that cannot become part of a store, or a store that cannot be read as one."""


class PSFError(GalhpcError, ValueError):
    """A PSF specification or PSF image that cannot be used."""


class EmulationError(GalhpcError, ValueError):
    """A survey emulation (PSF, noise, pixel scale) that cannot be built."""


class CheckpointError(GalhpcError, RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt, or of another model."""


class CatalogError(GalhpcError, RuntimeError):
    """A catalogue job that cannot go on: bad input, conflicting output, full disk."""


class LaunchError(GalhpcError, RuntimeError):
    """A launch environment or distributed backend that cannot start.

    A missing package, inconsistent launcher variables, an MPI that does not see the
    launcher's ranks.
    """


class TrainingError(GalhpcError, RuntimeError):
    """Training that cannot go on."""


class NonFiniteLossError(TrainingError):
    """A loss term became NaN or inf; the message names the step and the term."""
