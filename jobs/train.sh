#!/usr/bin/env bash
# Data-parallel training of a galhpc model.
#
#   sbatch jobs/train.sh cfg.yaml [galhpc-train options]     on a Slurm cluster
#   bash   jobs/train.sh cfg.yaml [galhpc-train options]     on one machine (GALHPC_NPROC ranks)
#
# Preemption-safe: galhpc-train saves {out_dir}/ckpt.pt and exits 75 on SIGUSR1/SIGTERM
# (Slurm sends USR1 120 s before the time limit); the job then requeues itself and the
# next run resumes from that checkpoint.  Outside Slurm, re-run the same command.  Under
# any launcher (torchrun included, which exits 1 when its ranks exit 75) the job's status
# is 75 once the checkpoint is saved: rank 0 writes the file $GALHPC_STOP_MARKER.
# Launcher and rank count: see jobs/common.sh.  GPUs: sbatch --gpus-per-node=4 --ntasks-per-node=4.
#SBATCH --job-name=galhpc-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=0
#SBATCH --cpus-per-task=1
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=USR1@120
#SBATCH --open-mode=append
#SBATCH --output=galhpc-train-%j.out
set -euo pipefail

# common.sh lies beside this script, or beside the submitted one where sbatch runs a spool copy
# (read from scontrol: see "Finding this file" in jobs/common.sh)
jobs_dir=${GALHPC_JOBS_DIR:-$(dirname "$(readlink -f "$0")")}
[[ -f $jobs_dir/common.sh || -z ${SLURM_JOB_ID:-} ]] || jobs_dir=$(dirname "$(scontrol show job "$SLURM_JOB_ID" | awk 'sub(/^ *Command=/, "") { while (/ / && (getline l < $0) < 0) sub(/ [^ ]*$/, ""); print }')")
# shellcheck source=jobs/common.sh
source "$jobs_dir/common.sh"

if (( $# < 1 )); then
  echo "usage: sbatch|bash jobs/train.sh CONFIG.yaml [galhpc-train options]" >&2
  exit 2
fi
config=$1; shift
if [[ ! -f $config ]]; then galhpc_log "config file not found: $config"; exit 2; fi

launcher=$(galhpc_launcher srun)
galhpc_log "train $config (job ${SLURM_JOB_ID:-none}, restart ${SLURM_RESTART_COUNT:-0})"
galhpc_stop_marker   # $GALHPC_STOP_MARKER: written by rank 0 with the checkpoint of a stop signal
rc=0
galhpc_run "$launcher" galhpc-train --config "$config" --backend "${GALHPC_BACKEND:-auto}" "$@" || rc=$?
rc=$(galhpc_stopped "$rc" "$GALHPC_STOP_MARKER")   # torchrun exits 1 when its ranks exit 75

galhpc_requeue_or_exit "$rc" "checkpoint"
