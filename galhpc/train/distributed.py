"""Data-parallel backends behind one small interface.

The trainer talks to a `Backend`: who am I (rank, world size, device), wrap the model
and optimizer for gradient averaging, broadcast the initial state, average metrics.
`SingleProcess` is the no-op backend; Horovod and torch.distributed implement the same
methods.  Horovod is imported only when its backend is built.
"""

from __future__ import annotations

import torch
from torch import nn

from galhpc.runtime import pick_device


class Backend:
    """One process's view of data-parallel training."""

    name = "base"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return self._device

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """The module to call in the training step (gradients averaged across ranks)."""
        return model

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        return optimizer

    def broadcast_state(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Make every rank start from rank 0's parameters and optimizer state."""

    def average(self, values: dict[str, float]) -> dict[str, float]:
        """Mean of scalar metrics over ranks."""
        return dict(values)

    def barrier(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


class SingleProcess(Backend):
    name = "single"

    def __init__(self, device: str = "auto") -> None:
        self._device = pick_device(device)


def make_backend(name: str = "auto", device: str = "auto") -> Backend:
    """The backend a config or flag names ('auto' picks from the environment)."""
    if name in ("auto", "single"):
        return SingleProcess(device)
    raise ValueError(f"unknown distributed backend {name!r}")
