"""Backend selection and the pieces of galhpc.train.distributed that run in one process.

The multi-process equivalence checks (2 ranks == 1 rank) are in
test_distributed_multiprocess.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from galhpc.runtime.errors import LaunchError
from galhpc.train import distributed
from galhpc.train.distributed import (
    DDPModel,
    SingleProcess,
    TorchDistributedBackend,
    World,
    auto_backend_name,
    detect_world,
    first_host,
    make_backend,
    warmup_lr_scale,
)

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, World(0, 1, 0, "none")),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, World(3, 4, 1, "torchrun")),
        ({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1"}, World(1, 2, 1, "horovodrun")),
        (
            {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1"},
            World(5, 8, 1, "openmpi"),
        ),
        ({"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0"}, World(2, 4, 0, "pmi")),
        (
            {"SLURM_PROCID": "6", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "2", "SLURM_NTASKS": "8"},
            World(6, 8, 2, "slurm"),
        ),
        # mpirun inside an sbatch script: the batch step's SLURM_PROCID=0 must not win
        (
            {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"},
            World(1, 2, 0, "openmpi"),
        ),
        # plain python in a batch script asking for 4 tasks: srun was not used, one rank
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "12"}, World(0, 1, 0, "none")),
    ],
)
def test_detect_world_reads_each_launcher(env, expected):
    assert detect_world(env) == expected


@pytest.mark.parametrize("env", [{"RANK": "x", "WORLD_SIZE": "2"}, {"RANK": "2", "WORLD_SIZE": "2"}])
def test_detect_world_rejects_bad_values(env):
    with pytest.raises(LaunchError, match="RANK|rank"):
        detect_world(env)


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [("node7", "node7"), ("gpu[007-010,12],login1", "gpu007"), ("c[3,5]", "c3"), ("a-b-1,a-b-2", "a-b-1")],
)
def test_first_host(nodelist, host):
    assert first_host(nodelist) == host


def test_first_host_rejects_empty():
    with pytest.raises(LaunchError, match="node list"):
        first_host("")


def test_warmup_lr_scale_ramps_linearly_to_world_size():
    assert [warmup_lr_scale(4, s, 3) for s in range(5)] == [1.0, 2.0, 3.0, 4.0, 4.0]
    assert warmup_lr_scale(4, 0, 0) == 4.0
    assert warmup_lr_scale(1, 0, 10) == 1.0


def test_single_process_never_scales():
    backend = make_backend("single", device="cpu")
    assert isinstance(backend, SingleProcess) and backend.is_root
    assert backend.lr_scale(0, 10) == 1.0
    assert backend.average({"a": 2.0}) == {"a": 2.0}


@pytest.mark.parametrize(
    ("env", "horovod", "name"),
    [
        ({}, True, "single"),
        ({"RANK": "0", "WORLD_SIZE": "2"}, True, "torch"),
        ({"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2"}, True, "horovod"),
        ({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}, True, "horovod"),
        ({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}, False, "torch"),
        ({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2"}, True, "torch"),
    ],
)
def test_auto_backend_rule(monkeypatch, env, horovod, name):
    monkeypatch.setattr(distributed, "horovod_available", lambda: horovod)
    assert auto_backend_name(env) == name


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown distributed backend 'nccl'"):
        make_backend("nccl")


def test_horovod_backend_without_horovod_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "horovod.torch", None)  # import fails as if not installed
    with pytest.raises(LaunchError, match="scripts/setup.sh"):
        make_backend("horovod", device="cpu")


def test_rendezvous_from_slurm_variables():
    world = World(1, 4, 1, "slurm")
    env = {"SLURM_JOB_NODELIST": "gpu[12-13]", "SLURM_NNODES": "2", "SLURM_JOB_ID": "4242"}
    assert distributed._rendezvous(world, env) == ("gpu12", 24242)
    env = {"SLURM_JOB_NODELIST": "gpu12", "SLURM_STEP_NUM_NODES": "1", "SLURM_JOB_ID": "7"}
    assert distributed._rendezvous(world, env) == ("127.0.0.1", 20007)
    env = {"MASTER_ADDR": "head", "MASTER_PORT": "999", "SLURM_JOB_ID": "4242"}
    assert distributed._rendezvous(world, env) == ("head", 999)


def test_rendezvous_without_address_is_a_clear_error():
    with pytest.raises(LaunchError, match="MASTER_ADDR"):
        distributed._rendezvous(World(0, 2, 0, "torchrun"), {})


def test_importing_galhpc_loads_no_optional_parallel_package():
    """Every library module imports without horovod, mpi4py or the compiled extension (CONTRIBUTING.md, the floors)."""
    code = (
        "import importlib, pkgutil, sys, galhpc, galhpc.train.distributed as d; d.auto_backend_name({}); "
        "mods = [m.name for m in pkgutil.walk_packages(galhpc.__path__, 'galhpc.') if m.name != 'galhpc._ext']; "
        "[importlib.import_module(m) for m in mods]; "
        "bad = [m for m in ('horovod', 'horovod.torch', 'mpi4py', 'galhpc._ext') if m in sys.modules]; "
        "assert len(mods) > 40 and not bad, (len(mods), bad)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


class _Quadratic(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))

    def loss(self, batch, state):
        return ((self.w * batch) ** 2).sum()

    def encode(self, x):
        return x * self.w


def test_torch_backend_one_rank_wraps_loss_through_ddp():
    """A real gloo process group of one rank: loss goes through DDP, the rest is the model's."""
    env = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(distributed._free_port())}
    backend = TorchDistributedBackend(device="cpu", env=env)
    try:
        model = _Quadratic()
        wrapped = backend.wrap_model(model)
        assert isinstance(wrapped, DDPModel) and backend.process_group_backend == "gloo"
        wrapped.loss(torch.tensor([1.0, 1.0]), None).backward()
        assert torch.allclose(model.w.grad, torch.tensor([2.0, -4.0]))
        assert list(wrapped.state_dict()) == ["w"]
        assert torch.equal(wrapped.encode(torch.ones(2)), model.w.detach() * 1)
        assert [p is model.w for p in wrapped.parameters()] == [True]
        assert backend.average({"b": 3.0, "a": 1.0}) == {"a": 1.0, "b": 3.0}
        opt = torch.optim.Adam(model.parameters())
        backend.broadcast_state(model, opt)
        backend.barrier()
    finally:
        backend.shutdown()
    assert not torch.distributed.is_initialized()


TRAIN_SH = Path(__file__).resolve().parents[1] / "jobs" / "train.sh"


@pytest.mark.parametrize(("args", "message"), [([], "usage:"), (["/nonexistent/cfg.yaml"], "config file not found")])
def test_train_sh_refuses_bad_arguments(args, message):
    proc = subprocess.run(["bash", str(TRAIN_SH), *args], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")})
    assert proc.returncode == 2 and message in proc.stderr


def test_job_scripts_reject_unknown_launcher(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("")
    env = {**os.environ, "GALHPC_LAUNCHER": "qsub"}
    proc = subprocess.run(["bash", str(TRAIN_SH), str(config)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode != 0 and "GALHPC_LAUNCHER=qsub" in proc.stderr
