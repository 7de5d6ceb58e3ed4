"""Command-line options shared by the catalogue commands: the output options of galhpc-encode and
galhpc-generate, and the thread count of those two and of galhpc-search and galhpc-rarity.
"""

from __future__ import annotations

import argparse


def add_output_options(p: argparse.ArgumentParser) -> None:
    """How the sharded HDF5 catalogue is written and where the model runs."""
    p.add_argument("--compression", default="none", help="none | gzip[:LEVEL] (default none); "
                   "h5py's lzf is refused: h5dump and other HDF5 readers cannot decode it")
    p.add_argument("--no-table", action="store_true", help="do not write the compound 'catalog' table")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output of other settings")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (ranks share GPUs round-robin)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="autocast of the model (default fp32); recorded in the output, a resume keeps it")
    add_threads_option(p)
    p.add_argument("--shard-minutes", type=float, default=5.0,
                   help="automatic shard size: at most this many minutes of one rank per shard, so a stop signal "
                   "loses at most that much work (default 5); shards are also at most 1 GiB")
    p.add_argument("--objects-per-second", type=float,
                   help="one rank's throughput for the automatic shard size (default: measured on the first batches)")


def add_threads_option(p: argparse.ArgumentParser) -> None:
    """``--threads``: torch CPU threads per rank (`galhpc.runtime.start_mpi_rank`)."""
    p.add_argument("--threads", type=int,
                   help="torch CPU threads per rank (default: the CPUs this rank may use, from SLURM_CPUS_PER_TASK, "
                   "its CPU affinity and the cgroup quota, shared by the job's ranks on the node)")
