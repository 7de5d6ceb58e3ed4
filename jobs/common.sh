# shellcheck shell=bash
# Sourced by jobs/train.sh, encode.sh and generate.sh: pick a launcher, run the ranks of
# one command under it, and forward preemption signals to them.
#
# Settings (environment variables):
#   GALHPC_LAUNCHER  auto | srun | mpirun | torchrun | none   (default auto: inside a Slurm
#                    job the script's own default, else mpirun when GALHPC_NPROC > 1, else none)
#   GALHPC_NPROC     ranks to start outside Slurm (default 1); inside Slurm the job's tasks
#   GALHPC_SRUN_ARGS, GALHPC_MPIRUN_ARGS, GALHPC_TORCHRUN_ARGS  extra launcher options
#
# Exit status 75 (EX_TEMPFAIL) from a command means "stopped early, state saved: run me again".
# Launchers do not all pass it on (torchrun reports a failed rank as 1): galhpc_stopped
# below also reads the marker file galhpc-train writes after its stop-signal checkpoint.
#
# Finding this file: a job script sources the common.sh beside it, but sbatch runs a copy of
# the script from Slurm's spool folder.  There the script reads the path it was submitted as
# from `scontrol show job` with a one-line awk step that each script carries (it has to run
# before this file is found).  The multi-line form gives Command= a line of its
# own, so a path with spaces stays whole; words after the script's path (its arguments, in
# some Slurm versions) are dropped until the path names a readable file.

GALHPC_PREEMPTED=75

galhpc_log() { echo "[galhpc-job $(date -u +%H:%M:%S)] $*" >&2; }

galhpc_launcher() {  # $1: the launcher to use inside a Slurm job when GALHPC_LAUNCHER=auto
  local want=${GALHPC_LAUNCHER:-auto}
  case $want in
    auto)
      if [[ -n ${SLURM_JOB_ID:-} ]]; then echo "$1"
      elif (( ${GALHPC_NPROC:-1} > 1 )); then echo mpirun
      else echo none; fi ;;
    srun | mpirun | torchrun | none) echo "$want" ;;
    *) galhpc_log "GALHPC_LAUNCHER=$want: choose auto, srun, mpirun, torchrun or none"; return 2 ;;
  esac
}

galhpc_nproc() {
  if [[ -n ${SLURM_JOB_ID:-} ]]; then echo "${SLURM_NTASKS:-${SLURM_NNODES:-1}}"; else echo "${GALHPC_NPROC:-1}"; fi
}

# galhpc_run LAUNCHER CMD...: run CMD on every rank; USR1/USR2/TERM/INT sent to this shell
# are passed on to the launcher (srun and mpirun pass them to the ranks).  Returns CMD's status.
galhpc_run() {
  local launcher=$1; shift
  local n; n=$(galhpc_nproc)
  local -a prefix extra
  case $launcher in
    none) prefix=() ;;
    srun) read -r -a extra <<< "${GALHPC_SRUN_ARGS:-}"; prefix=(srun --kill-on-bad-exit=1 "${extra[@]}") ;;
    mpirun) read -r -a extra <<< "${GALHPC_MPIRUN_ARGS:-}"; prefix=(mpirun -np "$n" --bind-to none "${extra[@]}") ;;
    torchrun) read -r -a extra <<< "${GALHPC_TORCHRUN_ARGS:-}"
              prefix=(torchrun --no-python --standalone --nproc_per_node="$n" "${extra[@]}") ;;
  esac
  if [[ -n ${SLURM_CPUS_PER_TASK:-} && -z ${OMP_NUM_THREADS:-} ]]; then export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK; fi
  galhpc_log "launch ($launcher, $n rank(s)): ${prefix[*]} $*"
  if [[ $launcher == torchrun ]]; then
    # torchrun has no USR1 handler: a USR1 sent to every process of the job (scancel --full,
    # a step-wide --signal) would kill it and leave its ranks saving behind this script's
    # back.  Started with USR1 ignored it lives on; the ranks catch USR1 with their own
    # handler (galhpc-train), and the trap below passes this shell's USR1 on to them.
    ( trap '' USR1; exec "${prefix[@]}" "$@" ) &
  else
    "${prefix[@]}" "$@" &
  fi
  local pid=$! sig rc send
  for sig in USR1 USR2 TERM INT; do
    # torchrun does not pass USR1 on: signal its workers (its children) instead
    if [[ $launcher == torchrun ]]; then send="pkill -$sig -P $pid"; else send="kill -$sig $pid"; fi
    # shellcheck disable=SC2064  # expand sig and send now
    trap "galhpc_log 'got SIG$sig, passing it on'; $send 2>/dev/null" "$sig"
  done
  while :; do
    rc=0; wait "$pid" || rc=$?
    kill -0 "$pid" 2>/dev/null || break   # a trapped signal interrupted wait: keep waiting
  done
  if (( rc > 128 )); then   # the child may have ended just after an interrupted wait
    local again=0; wait "$pid" 2>/dev/null || again=$?
    if (( again != 127 )); then rc=$again; fi
  fi
  trap - USR1 USR2 TERM INT
  return "$rc"
}

# galhpc_stop_marker: export GALHPC_STOP_MARKER, the path of a marker file (not created) in
# a fresh folder that is removed when the script exits.  galhpc-train's rank 0 writes it
# once the checkpoint of a stop signal is saved (galhpc/train/preemption.py).  Rank 0 may
# run on another node than this script, so the folder must be on a file system that both
# see: GALHPC_SHARED_DIR if set, else inside a Slurm job the job's working directory
# (sbatch --chdir: on a cluster, the shared project or scratch file system), else $TMPDIR.
galhpc_stop_marker() {
  local base=${GALHPC_SHARED_DIR:-}
  if [[ -z $base ]]; then
    if [[ -n ${SLURM_JOB_ID:-} ]]; then base=$PWD; else base=${TMPDIR:-/tmp}; fi
  fi
  galhpc_stop_dir=$(mktemp -d "$base/.galhpc-stop-${SLURM_JOB_ID:-$$}.XXXXXX")
  # shellcheck disable=SC2064  # expand the folder now
  trap "rm -rf '$galhpc_stop_dir'" EXIT
  export GALHPC_STOP_MARKER=$galhpc_stop_dir/stopped
}

# galhpc_stopped STATUS MARKER: print the job's status: 75 when the command stopped on a
# signal with its state saved (STATUS 75, or any non-zero STATUS when MARKER was written,
# e.g. torchrun's 1 or a launcher killed by the signal), else STATUS.
galhpc_stopped() {
  local rc=$1 marker=$2
  if [[ -s $marker ]]; then galhpc_log "stop marker $marker: $(tr '\n' ' ' < "$marker")"; fi
  if (( rc != 0 && rc != GALHPC_PREEMPTED )) && [[ -s $marker ]]; then
    galhpc_log "the ranks stopped on a signal with the checkpoint saved ($(tr '\n' ' ' < "$marker")); launcher status $rc -> $GALHPC_PREEMPTED"
    rc=$GALHPC_PREEMPTED
  fi
  echo "$rc"
}

# galhpc_requeue_or_exit STATUS WHAT: end a job script.  STATUS 75 (the command stopped on a
# signal with its work saved) requeues the Slurm job (exit 0), or outside Slurm says to run
# the same command again; any other STATUS is the script's exit status.
galhpc_requeue_or_exit() {
  local rc=$1 what=$2
  if (( rc == GALHPC_PREEMPTED )); then
    if [[ -n ${SLURM_JOB_ID:-} ]]; then
      galhpc_log "$what saved; requeueing job $SLURM_JOB_ID to resume"
      # Slurm may end this script as it requeues the job, before the EXIT trap runs: the
      # marker has been read, so its folder goes first
      if [[ -n ${galhpc_stop_dir:-} ]]; then rm -rf "$galhpc_stop_dir"; fi
      scontrol requeue "$SLURM_JOB_ID"
      exit 0
    fi
    galhpc_log "$what saved; run the same command again to resume"
  fi
  exit "$rc"
}


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
