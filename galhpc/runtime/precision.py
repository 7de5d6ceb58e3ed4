"""Numerical precision of a run: fp32, or bf16/fp16 autocast with float32 islands.

`autocast(device, precision)` wraps the forward pass (and loss) of a step; matmuls and
convolutions then run in the low precision while reductions that need the range stay in
float32: every function decorated with `float32` (KL terms, GMM log-densities,
reconstruction likelihoods) runs with autocast off on float32 copies of its inputs.
`grad_scaler(precision, device)` is the loss scaler fp16 needs (disabled otherwise).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from galhpc.runtime.errors import ConfigError

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
F = TypeVar("F", bound=Callable[..., Any])


def check_precision(name: str, where: str = "precision") -> str:
    """`name` if it is one of fp32 | bf16 | fp16; else a `ConfigError` naming `where`.

    Parameters
    ----------
    name : str
        The precision asked for.
    where : str, optional
        Where it was given (a config key or CLI flag), for the message.

    Returns
    -------
    str
        `name`, unchanged.

    Raises
    ------
    ConfigError
        If `name` is not a key of `PRECISIONS`.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"{where}: precision must be one of {' | '.join(PRECISIONS)}, got {name!r}")
    return name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for `precision` on `device` (a no-op for fp32).

    Parameters
    ----------
    device : torch.device
        Where the model runs; its type selects the autocast backend (cpu, cuda, ...).
    precision : str
        fp32 | bf16 | fp16.

    Returns
    -------
    contextlib.AbstractContextManager
        ``torch.autocast`` to bfloat16 or float16, or a null context for fp32.

    Raises
    ------
    ConfigError
        For an unknown precision.
    """
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A `torch.amp.GradScaler`, enabled for fp16 only (bf16 has float32's range).

    Parameters
    ----------
    precision : str
        fp32 | bf16 | fp16.
    device : torch.device
        Where the model runs; its type selects the scaler's backend.

    Returns
    -------
    torch.amp.GradScaler
        Enabled for fp16; disabled (its scale/step/update pass through) otherwise.

    Raises
    ------
    ConfigError
        For an unknown precision.
    """
    check_precision(precision)
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def _as_float32(value: Any) -> Any:
    if torch.is_tensor(value) and value.is_floating_point() and value.dtype != torch.float64:
        return value.float()
    return value


def float32(fn: F) -> F:
    """Decorator: run `fn` with autocast off and its floating tensor arguments in float32.

    float64 arguments are kept, so log-densities and KL terms keep at least float32's
    precision and range inside a bf16/fp16 step; outside autocast it only casts
    low-precision inputs.  Only direct positional and keyword tensor arguments are cast
    (not tensors inside containers).

    Parameters
    ----------
    fn : callable
        The function to protect.

    Returns
    -------
    callable
        A wrapper with `fn`'s name and docstring.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args = tuple(_as_float32(a) for a in args)
        kwargs = {k: _as_float32(v) for k, v in kwargs.items()}
        if not _autocast_on():
            return fn(*args, **kwargs)
        with torch.autocast("cpu", enabled=False), _cuda_autocast_off():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _autocast_on() -> bool:
    return torch.is_autocast_enabled("cpu") or (torch.cuda.is_available() and torch.is_autocast_enabled("cuda"))


def _cuda_autocast_off() -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", enabled=False) if torch.cuda.is_available() else contextlib.nullcontext()
