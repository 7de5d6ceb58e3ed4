#!/usr/bin/env bash
# Embed and cluster a store with a trained model: shards are fixed object ranges that the
# ranks take round-robin; re-runs skip complete shards.
#
#   sbatch jobs/encode.sh CHECKPOINT STORE OUT.h5 [galhpc-encode options]
#   bash   jobs/encode.sh CHECKPOINT STORE OUT.h5 [...]      (GALHPC_NPROC ranks, mpirun)
#
# Ranks talk through mpi4py, so inside Slurm the default launcher is mpirun (OpenMPI reads
# the allocation); GALHPC_LAUNCHER=srun GALHPC_SRUN_ARGS=--mpi=pmix works where Slurm has PMIx.
#SBATCH --job-name=galhpc-encode
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --gpus-per-node=0
#SBATCH --cpus-per-task=1
#SBATCH --time=12:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=galhpc-encode-%j.out
set -euo pipefail

# common.sh lies beside this script, or beside the submitted one where sbatch runs a spool copy
# (read from scontrol: see "Finding this file" in jobs/common.sh)
jobs_dir=${GALHPC_JOBS_DIR:-$(dirname "$(readlink -f "$0")")}
[[ -f $jobs_dir/common.sh || -z ${SLURM_JOB_ID:-} ]] || jobs_dir=$(dirname "$(scontrol show job "$SLURM_JOB_ID" | awk 'sub(/^ *Command=/, "") { while (/ / && (getline l < $0) < 0) sub(/ [^ ]*$/, ""); print }')")
# shellcheck source=jobs/common.sh
source "$jobs_dir/common.sh"
galhpc_catalog_job encode --store STORE "$@"
