#!/usr/bin/env bash
# Same interface as run_local.sh, but each job is an sbatch job (sbatch --wait), for clusters.
#   run_slurm.sh [--gpu G] [--mem M] [--time T] [--partition P] [JOB=a:b] LOGFILE COMMAND [ARGS...]
set -uo pipefail
gpu=0 mem=8G time=24:00:00 partition=""
while [ $# -gt 0 ]; do
    case "$1" in
        --gpu) gpu=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --time) time=$2; shift 2 ;;
        --partition) partition=$2; shift 2 ;;
        --max-jobs) shift 2 ;;  # Slurm queues the jobs itself
        *) break ;;
    esac
done
if [ $# -lt 2 ]; then
    echo "usage: run_slurm.sh [--gpu G] [--mem M] [--time T] [--partition P] [JOB=a:b] LOGFILE COMMAND [ARGS...]" >&2
    exit 2
fi
command -v sbatch > /dev/null || { echo "run_slurm.sh: sbatch not found; use CMD_BACKEND=local" >&2; exit 1; }
first=1 last=1 var=""
if [[ "$1" =~ ^([A-Za-z_]+)=([0-9]+):([0-9]+)$ ]]; then
    var=${BASH_REMATCH[1]} first=${BASH_REMATCH[2]} last=${BASH_REMATCH[3]}
    shift
fi
log_template=$1; shift
extra=()
[ "$gpu" -gt 0 ] && extra+=(--gres="gpu:${gpu}")
[ -n "$partition" ] && extra+=(--partition="$partition")
pids=() failed=0
for ((i = first; i <= last; i++)); do
    log=$log_template args=("$@")
    if [ -n "$var" ]; then log=${log//$var/$i}; args=("${args[@]//$var/$i}"); fi
    mkdir -p "$(dirname "$log")"
    script=$(printf '%q ' "${args[@]}")
    sbatch --wait --parsable --output="$log" --mem="$mem" --time="$time" "${extra[@]}" \
        --chdir="$PWD" --wrap="echo '# ${script//\'/}'; ${script}" > /dev/null &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
[ "$failed" -eq 0 ] || { echo "run_slurm.sh: ${failed} job(s) failed; see ${log_template}" >&2; exit 1; }
