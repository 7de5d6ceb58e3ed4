"""Training throughput on 2 ranks against 1 rank, per data-parallel backend (weak scaling).

    python benchmarks/train_scaling.py [--steps 20] [--batch 32] [--image-size 64] [--threads 1]

Every run trains the ConvVAE on random images with the same per-rank batch: 1 rank
(SingleProcess), then 2 ranks with torch.distributed (torchrun, gloo) and, when Horovod
is installed, 2 ranks with Horovod under mpirun (MPI controller, yielding when idle) and
under horovodrun --gloo.  It prints samples/s of each and the ratio
to the 1-rank run (2.0 would be perfect scaling).  The ranks share this machine's cores,
so the ratio is bounded by the free cores, not by the backend alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(backend_name: str, out: str, steps: int, batch: int, image_size: int, threads: int) -> None:
    """One rank: a few warm-up steps, then `steps` timed steps between barriers."""
    import torch

    from galhpc.config import ModelConfig
    from galhpc.models import build_model
    from galhpc.models.base import StepState
    from galhpc.train.distributed import make_backend

    torch.set_num_threads(threads)
    backend = make_backend(backend_name, device="cpu")
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="vae", image_size=image_size, latent_dim=16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    step_model = backend.wrap_model(model)
    optimizer = backend.wrap_optimizer(optimizer, model)
    backend.broadcast_state(model, optimizer)
    images = torch.rand(batch, 1, image_size, image_size, generator=torch.Generator().manual_seed(backend.world.rank))
    state = StepState()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        step_model.loss({"image": images}, state).total.backward()
        optimizer.step()

    for _ in range(3):
        step()
    backend.world.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    backend.world.barrier()
    seconds = time.perf_counter() - start
    if backend.world.is_root:
        samples = steps * batch * backend.world.size
        Path(out).write_text(json.dumps({"backend": backend.name, "ranks": backend.world.size,
                                         "seconds": seconds, "samples_per_s": samples / seconds}))
    backend.shutdown()


def launch(kind: str, args: argparse.Namespace, out: Path) -> dict:
    me = [sys.executable, __file__]
    opts = ["--steps", str(args.steps), "--batch", str(args.batch), "--image-size", str(args.image_size),
            "--threads", str(args.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMPI_ALLOW_RUN_AS_ROOT": "1",
           "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_btl_vader_single_copy_mechanism": "none"}
    if kind == "single":
        cmd = [*me, "--worker", "single", str(out), *opts]
    elif kind == "torch":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               __file__, "--worker", "torch", str(out), *opts]
    elif kind == "horovod-mpi":  # yield instead of busy-polling: the ranks share cores with others
        cmd = ["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none", "--mca", "mpi_yield_when_idle", "1",
               *me, "--worker", "horovod", str(out), *opts]
    else:
        cmd = ["horovodrun", "-np", "2", "--gloo", *me, "--worker", "horovod", str(out), *opts]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=32, help="images per rank and step")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--worker", nargs=2, metavar=("BACKEND", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.steps, args.batch, args.image_size, args.threads)
        return
    kinds = ["single", "torch"] + (["horovod-mpi", "horovod-gloo"] if importlib.util.find_spec("horovod") else [])
    print(f"ConvVAE {args.image_size}x{args.image_size}, batch {args.batch}/rank, {args.steps} steps, "
          f"{args.threads} thread(s)/rank, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        results = {kind: launch(kind, args, Path(tmp) / f"{kind}.json") for kind in kinds}
    base = results["single"]["samples_per_s"]
    for kind, r in results.items():
        print(f"{kind:12s} {r['ranks']} rank(s): {r['samples_per_s']:8.1f} samples/s  "
              f"ratio to 1 rank {r['samples_per_s'] / base:5.2f}")


if __name__ == "__main__":
    main()
