#!/usr/bin/env bash
# Same interface as run_local.sh, but each job is an sbatch job (sbatch --wait), for clusters.
#   run_slurm.sh [--gpu G] [--mem M] [--time T] [--partition P] [JOB=a:b] LOGFILE COMMAND [ARGS...]
# Logs are appended to (--open-mode=append; a header line starts every attempt), so a resumed job
# keeps its history. When a job fails, or this script gets INT/TERM, the other jobs are scancel-ed.
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
ids_dir=$(mktemp -d "${TMPDIR:-/tmp}/run_slurm.XXXXXX")

cancel_all() {  # scancel every submitted job that may still run
    local ids
    ids=$(sed 's/;.*//' "${ids_dir}"/*.id 2> /dev/null | tr -s ' \n' ' ')
    if [ -n "${ids// /}" ]; then
        echo "run_slurm.sh: cancelling job(s) ${ids}" >&2
        # shellcheck disable=SC2086
        scancel ${ids} 2> /dev/null || true
    fi
    local pid
    for pid in "${pids[@]}"; do kill -TERM "${pid}" 2> /dev/null || true; done
    pids=()
}
trap 'cancel_all; rm -rf "${ids_dir}"; exit 130' INT
trap 'cancel_all; rm -rf "${ids_dir}"; exit 143' TERM
trap 'rm -rf "${ids_dir}"' EXIT

declare -A log_of=()
pids=() failed=0
for ((i = first; i <= last; i++)); do
    # (without JOB=a:b, var is empty and the ${...//${var}/...} substitutions change nothing)
    log=${log_template//${var}/$i} args=("${@//${var}/$i}")
    mkdir -p "$(dirname "$log")"
    script=$(printf '%q ' "${args[@]}")
    header="# ==== attempt started at \$(date '+%F %T') (run_slurm.sh, job \${SLURM_JOB_ID:-?} on \$(hostname)) ===="
    sbatch --wait --parsable --open-mode=append --output="$log" --mem="$mem" --time="$time" "${extra[@]}" \
        --chdir="$PWD" --wrap="echo \"${header}\"; echo '# ${script//\'/}'; ${script}" > "${ids_dir}/${i}.id" &
    pids+=($!)
    log_of[$!]=$log
done
while [ "${#pids[@]}" -gt 0 ]; do
    done_pid="" rc=0
    wait -n -p done_pid "${pids[@]}" || rc=$?
    for j in "${!pids[@]}"; do [ "${pids[$j]}" != "${done_pid}" ] || unset 'pids[j]'; done
    pids=("${pids[@]}")
    if [ "${rc}" -ne 0 ]; then
        failed=$((failed + 1))
        echo "run_slurm.sh: job failed (sbatch status ${rc}); see ${log_of[${done_pid}]}" >&2
        [ "${#pids[@]}" -eq 0 ] || cancel_all
    fi
done
[ "$failed" -eq 0 ] || { echo "run_slurm.sh: a job failed, the others were cancelled; see ${log_template}" >&2; exit 1; }
