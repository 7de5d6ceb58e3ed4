# shellcheck shell=bash
# Sourced by jobs/encode.sh and generate.sh (after finding their folder): the body of a
# catalogue job, whose ranks write one catalogue shard by shard through mpi4py.

# shellcheck source=jobs/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# galhpc_catalog_job STAGE OPTION NAME CHECKPOINT VALUE OUT.h5 [options]: run
# `galhpc-STAGE --checkpoint CHECKPOINT OPTION VALUE --out OUT.h5 [options]` on every rank
# (mpirun by default inside Slurm), then end the script as galhpc_requeue_or_exit does: a
# run stopped on a signal (status 75) requeues the job.  NAME is VALUE's name in the usage
# line printed, with exit status 2, when an argument is missing.
galhpc_catalog_job() {
  local stage=$1 option=$2 name=$3; shift 3
  if (( $# < 3 )); then
    echo "usage: sbatch|bash jobs/$stage.sh CHECKPOINT $name OUT.h5 [galhpc-$stage options]" >&2
    exit 2
  fi
  local checkpoint=$1 value=$2 out=$3; shift 3
  local rc=0
  galhpc_run "$(galhpc_launcher mpirun)" "galhpc-$stage" --checkpoint "$checkpoint" "$option" "$value" --out "$out" "$@" || rc=$?
  galhpc_requeue_or_exit "$rc" "complete shards of $out"
}
