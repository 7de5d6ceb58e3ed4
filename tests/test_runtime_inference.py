"""galhpc.runtime.batching.run_batched: one batched, gradient-free loop."""

from __future__ import annotations

import numpy as np
import torch

from galhpc.runtime.batching import evaluating, run_batched


class Probe(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))
        self.seen: list[tuple[bool, bool, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, torch.is_grad_enabled(), len(x)))
        return x * self.scale


def test_batches_in_order_eval_mode_no_grad_and_mode_restored():
    model = Probe().train()
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    ids = np.arange(10) * 100
    out = run_batched(model, lambda b, cols: (model(b), cols["ids"]), x, batch_size=4, columns={"ids": ids})
    assert [len(o[0]) for o in out] == [4, 4, 2]
    assert model.seen == [(False, False, 4), (False, False, 4), (False, False, 2)]
    assert np.array_equal(torch.cat([o[0] for o in out]).numpy()[:, 0], 2 * x[:, 0])
    assert np.array_equal(torch.cat([o[1] for o in out]).numpy(), ids)  # columns stay row-aligned
    assert model.training and torch.is_grad_enabled()  # restored


def test_loader_source_max_batches_and_callback():
    model = Probe().eval()
    loader = [{"image": torch.ones(3, 1), "object_id": torch.arange(3)} for _ in range(5)]
    total = []
    assert run_batched(model, lambda b, batch: float(model(b).sum()) + 0 * batch["object_id"].sum().item(), loader,
                       max_batches=2, callback=total.append) == []
    assert total == [6.0, 6.0] and not model.training


def test_evaluating_restores_mode_after_an_error():
    model = Probe().train()
    try:
        with evaluating(model):
            raise RuntimeError
    except RuntimeError:
        pass
    assert model.training
