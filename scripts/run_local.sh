#!/usr/bin/env bash
# Run a command, or an array of jobs, on this machine.
#   run_local.sh [--max-jobs N] [JOB=1:N] LOGFILE COMMAND [ARGS...]
# With JOB=a:b, every "JOB" in LOGFILE and the arguments is replaced by the job index, the jobs run
# in parallel (at most --max-jobs at once, default: all), and the exit status is non-zero if any failed.
set -uo pipefail
max_jobs=0
gpu=0
while [ $# -gt 0 ]; do
    case "$1" in
        --max-jobs) max_jobs=$2; shift 2 ;;
        --gpu) gpu=$2; shift 2 ;;  # accepted for symmetry with run_slurm.sh; local jobs see all devices
        *) break ;;
    esac
done
if [ $# -lt 2 ]; then
    echo "usage: run_local.sh [--max-jobs N] [JOB=a:b] LOGFILE COMMAND [ARGS...]" >&2
    exit 2
fi
first=1 last=1 var=""
if [[ "$1" =~ ^([A-Za-z_]+)=([0-9]+):([0-9]+)$ ]]; then
    var=${BASH_REMATCH[1]} first=${BASH_REMATCH[2]} last=${BASH_REMATCH[3]}
    shift
fi
log_template=$1; shift

run_one() {
    local index=$1; shift
    local log=$log_template
    local args=("$@")
    if [ -n "$var" ]; then
        log=${log//$var/$index}
        args=("${args[@]//$var/$index}")
    fi
    mkdir -p "$(dirname "$log")"
    {
        echo "# ${args[*]}"
        echo "# started at $(date)"
    } > "$log"
    local start=$SECONDS
    # shellcheck disable=SC2068
    bash -c 'exec "$@"' _ "${args[@]}" >> "$log" 2>&1
    local rc=$?
    echo "# finished at $(date) after $((SECONDS - start)) s with status ${rc}" >> "$log"
    return $rc
}

pids=() failed=0
for ((i = first; i <= last; i++)); do
    run_one "$i" "$@" &
    pids+=($!)
    if [ "$max_jobs" -gt 0 ] && [ "${#pids[@]}" -ge "$max_jobs" ]; then
        wait "${pids[0]}" || failed=$((failed + 1))
        pids=("${pids[@]:1}")
    fi
done
for pid in "${pids[@]}"; do
    wait "$pid" || failed=$((failed + 1))
done
if [ "$failed" -gt 0 ]; then
    shown=${log_template//${var:-@@}/*}
    echo "run_local.sh: ${failed} of $((last - first + 1)) job(s) failed; see ${shown}" >&2
    exit 1
fi
