"""One rank of the data-parallel equivalence check, launched by tests/test_distributed_multiprocess.py.

Usage: python tests/distributed_worker.py BACKEND OUT_DIR

Every rank builds the tiny model from a *different* seed (so only `broadcast_state` can
make them agree), rank 0 alone loads a "resumed" model + optimizer state, then each rank
trains on its half of every batch.  It writes OUT_DIR/rank{r}.pt with the parameters,
the averaged gradients of the first step and the averaged metrics; the test compares
them with one process on whole batches (`reference_run`).  It also runs every collective
of the backend's process group (`group_vocabulary`) over the backend's own communication.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
from torch import nn

from galhpc.models.base import LossOutput

STEPS = 3
BATCH = 8


class TinyModel(nn.Module):
    """Conv encoder + linear head with a `loss(batch, state)` like every galhpc model,
    and one parameter the loss never touches (as GMM parameters in early s3VDC phases)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 3)
        self.unused = nn.Parameter(torch.ones(2))

    def loss(self, batch: dict, state: object) -> LossOutput:
        x = batch["image"]
        pred = self.head(torch.relu(self.conv(x)).flatten(1))
        mse = ((pred - batch["target"]) ** 2).mean()
        return LossOutput(total=mse, terms={"mse": mse.detach()})


def make_model(seed: int) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel()


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def batches() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(7)
    return [
        {"image": torch.randn(BATCH, 1, 8, 8, generator=gen), "target": torch.randn(BATCH, 3, generator=gen)}
        for _ in range(STEPS + 1)
    ]


def resumed_state() -> dict:
    """A model and optimizer that already took one step: what rank 0 would read from ckpt.pt."""
    model = make_model(100)
    opt = make_optimizer(model)
    model.loss(batches()[-1], None).total.backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict()}


def shard(batch: dict[str, torch.Tensor], rank: int, world_size: int) -> dict[str, torch.Tensor]:
    size = BATCH // world_size
    return {k: v[rank * size : (rank + 1) * size] for k, v in batch.items()}


def flat_grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()])


def train_steps(model: nn.Module, wrapped: nn.Module, opt: torch.optim.Optimizer, rank: int, world_size: int):
    """STEPS optimizer steps on this rank's shard; returns first-step gradients and last loss."""
    first_grads, last = None, 0.0
    for batch in batches()[:STEPS]:
        opt.zero_grad(set_to_none=True)
        out = wrapped.loss(shard(batch, rank, world_size), None)
        out.total.backward()
        opt.step()
        if first_grads is None:
            first_grads = flat_grads(model).clone()
        last = float(out.total.detach())
    return first_grads, last


def reference_run() -> dict:
    """One process, whole batches: what every rank of a correct backend must reproduce."""
    model = make_model(100)
    opt = make_optimizer(model)
    state = resumed_state()
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    grads, _ = train_steps(model, model, opt, 0, 1)
    return {"params": {k: v.clone() for k, v in model.state_dict().items()}, "grads": grads}


def group_vocabulary(group, out_dir: str) -> dict:
    """Every collective of a process group on this rank, as plain values the test compares."""
    import numpy as np

    marker = Path(out_dir) / "root_first.txt"
    with group.root_first():  # rank 0 writes the file before any other rank looks for it
        if group.is_root:
            marker.write_text("rank 0 was first")
        seen = marker.exists()
    try:
        with group.root_first():
            if group.is_root:
                raise ValueError("boom")
        failed = None
    except Exception as err:  # rank 0: its own error; the others: one naming rank 0
        failed = f"{type(err).__name__}: {err}"
    group.barrier()
    return {
        "allgather_object": group.allgather_object({"rank": group.rank}),
        "broadcast_object": group.broadcast_object(f"from rank {group.rank}"),
        "broadcast_object_root1": group.broadcast_object(group.rank, root=1),
        "allreduce_int": group.allreduce_sum(group.rank + 1),
        "allreduce_float": group.allreduce_sum(0.5),
        "allreduce_array": group.allreduce_sum(np.array([1.0, group.rank])).tolist(),
        "allreduce_tensor": group.allreduce_sum(torch.tensor([2.0, group.rank])).tolist(),
        "root_first_seen": seen,
        "root_first_failed": failed,
    }


def main(backend_name: str, out_dir: str) -> None:
    from galhpc.train.distributed import make_backend
    from galhpc.train.losses import mean_over_ranks

    torch.set_num_threads(1)
    before = dict(os.environ)
    backend = make_backend(backend_name, device="cpu")
    rank, world = backend.world.rank, backend.world.size
    model = make_model(100 + rank)
    opt = make_optimizer(model)
    if rank == 0:  # as the trainer does: restore first, then wrap and broadcast
        state = resumed_state()
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    wrapped = backend.wrap_model(model)
    opt = backend.wrap_optimizer(opt, model)
    backend.broadcast_state(model, opt)
    grads, last_loss = train_steps(model, wrapped, opt, rank, world)
    metrics = mean_over_ranks(backend.world, {"loss": last_loss, "rank": float(rank)})
    vocabulary = group_vocabulary(backend.world, out_dir)
    backend.world.barrier()
    result = {
        "backend": backend.name,
        "rank": rank,
        "world_size": world,
        "host": socket.gethostname(),
        "interface": backend.network.get("GLOO_SOCKET_IFNAME") or backend.network.get("HOROVOD_GLOO_IFACE"),
        "controller": getattr(backend, "controller", None),  # Horovod: "mpi" or "gloo"
        # what the backend exported for its library's start, as it is in the environment afterwards
        "left_behind": {k: os.environ[k] for k in backend.network if os.environ.get(k) != before.get(k)},
        "params": model.state_dict(),
        "wrapped_keys": sorted(wrapped.state_dict()),
        "grads": grads,
        "metrics": metrics,
        "last_loss": last_loss,
        "lr_scale": [backend.lr_scale(s, 4) for s in range(6)],
        "vocabulary": vocabulary,
    }
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    del wrapped  # the DDP wrapper holds the process group; shutdown must be able to stop it
    backend.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
