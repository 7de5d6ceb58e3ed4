"""The lowest floor of galhpc, used by every stage.

process.py    logging, progress bars, devices, threads, the start of an MPI rank
errors.py     the GalhpcError hierarchy (subclasses also inherit the builtin type)
cli.py        run_cli: any GalhpcError/OSError -> one line on stderr, exit status 1
outputs.py    check_output: refuse an unwritable or locked output before any work
world.py      World: rank, size, local rank, node, collectives; one table per launcher
files.py      atomic writes (temp name, fsync, rename), cleanup of dead writers' temps,
              the one disk-full check
signals.py    SIGTERM/SIGUSR1 from batch schedulers -> a stop flag checked between batches
transfer.py   background reads, pinned buffers, double-buffered host->device copies
precision.py  fp32 or bf16/fp16 autocast with float32 islands, the gradient scaler
batching.py   batched, gradient-free evaluation of a model over a source of inputs

Nothing here imports another galhpc module; mpi4py and horovod are imported where used.
"""

from galhpc.runtime.process import pick_device, progress, set_threads, setup_logging, start_mpi_rank

__all__ = ["pick_device", "progress", "set_threads", "setup_logging", "start_mpi_rank"]
