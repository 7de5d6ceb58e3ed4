"""Optional dependencies: import one, or say which pip extra provides it.

galhpc's core needs torch, numpy, scipy, h5py, pyyaml, tqdm, scikit-learn, astropy and
numba (pyproject.toml `dependencies`); the rest come with extras, e.g.
``pip install 'galhpc[sim]'`` for GalSim.  Code that needs an optional module imports it
with `require` where it is used, so `import galhpc` and every feature not needing it
work without it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from galhpc.runtime.errors import GalhpcError

# extra -> the distributions it installs (pyproject.toml [project.optional-dependencies])
EXTRAS = {
    "mpi": ("mpi4py",),
    "horovod": ("horovod",),
    "sim": ("galsim",),
    "fits": ("fitsio",),
    "report": ("matplotlib", "statmorph"),
    "faiss": ("faiss-cpu",),
    "submit": ("submitit",),
    "export": ("pyarrow", "pandas"),
    "hats": ("hats", "hats-import", "lsdb"),
    "hdf": ("scikit-image", "photutils"),
}


class MissingExtraError(GalhpcError, ImportError):
    """An optional dependency of the feature asked for is not installed."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import `module`, or fail with the pip command that installs it.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"galsim"`` or ``"horovod.torch"``.
    extra : str
        The galhpc extra that provides it (a key of `EXTRAS`).
    feature : str
        What needs it, for the message, e.g. ``"simulated GalSim sources (galhpc-prep)"``.

    Returns
    -------
    types.ModuleType
        The imported module.

    Raises
    ------
    MissingExtraError
        When the import fails: "galsim is needed for <feature> but is not installed
        (<reason>): pip install 'galhpc[sim]'".
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        raise MissingExtraError(
            f"{top} is needed for {feature} but cannot be imported ({err}): pip install 'galhpc[{extra}]'"
        ) from err
