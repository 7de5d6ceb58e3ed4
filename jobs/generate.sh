#!/usr/bin/env bash
# Generate a synthetic catalogue: shards are fixed object ranges that the ranks take
# round-robin; re-runs skip complete shards, and the same N gives the same catalogue on
# any number of ranks.
#
#   sbatch jobs/generate.sh CHECKPOINT N OUT.h5 [galhpc-generate options]
#   bash   jobs/generate.sh CHECKPOINT N OUT.h5 [...]        (GALHPC_NPROC ranks, mpirun)
#
# Launcher: as jobs/encode.sh (mpirun by default inside Slurm).
#SBATCH --job-name=galhpc-generate
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --gpus-per-node=0
#SBATCH --cpus-per-task=1
#SBATCH --time=12:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=galhpc-generate-%j.out
set -euo pipefail

jobs_dir=${GALHPC_JOBS_DIR:-$(dirname "$(readlink -f "$0")")}
if [[ ! -f $jobs_dir/common.sh && -n ${SLURM_JOB_ID:-} ]]; then
  jobs_dir=$(dirname "$(scontrol show job "$SLURM_JOB_ID" -o | grep -o 'Command=[^ ]*' | cut -d= -f2)")
fi
# shellcheck source=jobs/common.sh
source "$jobs_dir/common.sh"

if (( $# < 3 )); then
  echo "usage: sbatch|bash jobs/generate.sh CHECKPOINT N OUT.h5 [galhpc-generate options]" >&2
  exit 2
fi
checkpoint=$1 n=$2 out=$3; shift 3
rc=0
galhpc_run "$(galhpc_launcher mpirun)" galhpc-generate --checkpoint "$checkpoint" --n "$n" --out "$out" "$@" || rc=$?
galhpc_requeue_or_exit "$rc" "complete shards of $out"
