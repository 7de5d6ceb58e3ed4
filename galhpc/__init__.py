"""galhpc: HPC batch toolkit for unsupervised galaxy morphology and synthetic galaxy images.

The public API (imported lazily, so `import galhpc` stays light):

- `load_model(path)`: a checkpoint -> the model, in eval mode;
- `open_catalog(path)`: a catalogue of galhpc-encode/galhpc-generate, verified and read
  from its shards (astropy tables, numpy arrays);
- `open_store(path)`: a training store of galhpc-prep, read-only;
- `convolve_psf(images, psf)`, `nearest_code(x, codebook)`: the two kernels.

Importing galhpc never imports torch, mpi4py, horovod or the compiled extension: they are
loaded where used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "galhpc.api",
    "open_catalog": "galhpc.io.catalog",
    "open_store": "galhpc.io.store",
    "convolve_psf": "galhpc.kernels",
    "nearest_code": "galhpc.kernels",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'galhpc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
