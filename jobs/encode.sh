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

jobs_dir=${GALHPC_JOBS_DIR:-$(dirname "$(readlink -f "$0")")}
if [[ ! -f $jobs_dir/common.sh && -n ${SLURM_JOB_ID:-} ]]; then
  jobs_dir=$(dirname "$(scontrol show job "$SLURM_JOB_ID" -o | grep -o 'Command=[^ ]*' | cut -d= -f2)")
fi
# shellcheck source=jobs/common.sh
source "$jobs_dir/common.sh"

if (( $# < 3 )); then
  echo "usage: sbatch|bash jobs/encode.sh CHECKPOINT STORE OUT.h5 [galhpc-encode options]" >&2
  exit 2
fi
checkpoint=$1 store=$2 out=$3; shift 3
rc=0
galhpc_run "$(galhpc_launcher mpirun)" galhpc-encode --checkpoint "$checkpoint" --store "$store" --out "$out" "$@" || rc=$?
galhpc_requeue_or_exit "$rc" "complete shards of $out"
