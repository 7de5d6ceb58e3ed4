"""Backend choice for the kernels: an explicit `backend=` wins, then GALHPC_KERNEL_BACKEND, then auto.

Backends: "torch" (the reference, any device), "cpp" (galhpc._ext, CPU/OpenMP), "cuda"
(galhpc._ext built with CUDA, cuda tensors), "numba" (parallel CPU, or numba.cuda on cuda
tensors).  The compiled extension and numba are imported only when a kernel asks for them.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

import torch

ENV_VAR = "GALHPC_KERNEL_BACKEND"
BACKENDS = ("torch", "cpp", "cuda", "numba")


@functools.cache
def _try_load_extension() -> tuple[ModuleType | None, str]:
    try:
        from galhpc import _ext  # compiled from cpp_ext/ by setup.py
    except ImportError as err:
        return None, str(err)
    return _ext, ""


def extension() -> ModuleType:
    """The compiled extension ``galhpc._ext`` (built from cpp_ext/ by setup.py).

    Returns
    -------
    types.ModuleType
        The loaded extension module (imported once per process, then cached).

    Raises
    ------
    RuntimeError
        If the extension cannot be imported; the message says how to build it.
    """
    ext, why = _try_load_extension()
    if ext is None:
        raise RuntimeError(
            "the compiled kernels galhpc._ext are not available "
            f"({why}); build them with `pip install --no-build-isolation -e .` in the repository root"
        )
    return ext


def extension_available() -> bool:
    """Whether the compiled extension ``galhpc._ext`` imports.

    Returns
    -------
    bool
        True when ``galhpc._ext`` can be imported (the import is attempted once per process).
    """
    return _try_load_extension()[0] is not None


def extension_has_cuda() -> bool:
    """Whether the compiled extension is present and was built with its CUDA kernels.

    Returns
    -------
    bool
        True when ``galhpc._ext`` imports and its ``with_cuda()`` reports CUDA kernels.
    """
    ext = _try_load_extension()[0]
    return ext is not None and bool(ext.with_cuda())


@functools.cache
def numba_available() -> bool:
    """Whether the optional numba package imports.

    Returns
    -------
    bool
        True when ``import numba`` succeeds (tried once per process, then cached).
    """
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def requested_backend(backend: str) -> str:
    """The backend a kernel call asks for: `backend`, or GALHPC_KERNEL_BACKEND when it is "auto".

    Parameters
    ----------
    backend : {"auto", "torch", "cpp", "cuda", "numba"}
        The kernel's ``backend=`` argument; an explicit name wins over the environment.

    Returns
    -------
    str
        `backend` unless it is "auto"; then the lower-cased, stripped value of
        GALHPC_KERNEL_BACKEND, or "auto" where it is unset or empty.

    Raises
    ------
    ValueError
        If the name (from the argument or the environment variable) is not "auto" or one
        of BACKENDS; the message says which source gave it.
    """
    name = backend if backend != "auto" else os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if name != "auto" and name not in BACKENDS:
        source = "backend=" if backend != "auto" else ENV_VAR
        raise ValueError(f"unknown kernel backend {name!r} (from {source}); choose one of auto, {', '.join(BACKENDS)}")
    return name


def check_backend_fits(name: str, device: torch.device, supported: tuple[str, ...], kernel: str) -> None:
    """Raise a clear error when backend `name` cannot run `kernel` on tensors on `device`.

    Parameters
    ----------
    name : str
        A concrete backend name (not "auto"), as from `requested_backend`.
    device : torch.device
        The device of the kernel's input tensors.
    supported : tuple of str
        The backends the kernel implements.
    kernel : str
        The kernel's name, used in the messages (e.g. "nearest_code").

    Raises
    ------
    ValueError
        If the kernel does not implement `name`, or `name` cannot run on `device`
        ("cuda" needs cuda tensors, "cpp" CPU tensors, "numba" CPU or cuda tensors).
    RuntimeError
        If the backend's library is missing: the compiled extension for "cpp"/"cuda"
        (or its CUDA kernels for "cuda"), numba for "numba".
    """
    if name not in supported:
        raise ValueError(f"{kernel}: backend {name!r} is not implemented; choose one of {', '.join(supported)}")
    if name == "cuda" and device.type != "cuda":
        raise ValueError(f"{kernel}: backend 'cuda' needs cuda tensors, got tensors on {device}")
    if name == "cpp" and device.type != "cpu":
        raise ValueError(f"{kernel}: backend 'cpp' runs on CPU tensors only, got tensors on {device}")
    if name == "numba" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"{kernel}: backend 'numba' runs on CPU or cuda tensors, got tensors on {device}")
    if name in ("cpp", "cuda"):
        extension()
        if name == "cuda" and not extension_has_cuda():
            raise RuntimeError(f"{kernel}: galhpc._ext was built without CUDA kernels (torch or nvcc lacked CUDA)")
    if name == "numba" and not numba_available():
        raise RuntimeError(f"{kernel}: backend 'numba' needs the numba package (pip install numba)")
