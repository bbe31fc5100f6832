#!/usr/bin/env bash
# Run a command, or an array of jobs, on this machine.
#   run_local.sh [--max-jobs N] [JOB=1:N] LOGFILE COMMAND [ARGS...]
# With JOB=a:b, every "JOB" in LOGFILE and the arguments is replaced by the job index, the jobs run
# in parallel (at most --max-jobs at once, default: all), and the exit status is non-zero if any failed.
# Logs are appended to (a header line starts every attempt), so a resumed job keeps its history.
# Fail-fast: when one job fails, or this script gets INT/TERM, the other jobs (each in its own
# process group, with everything they started) are ended.
set -uo pipefail
# shellcheck disable=SC1091
. "$(dirname "${BASH_SOURCE[0]}")/process_groups.sh"
max_jobs=0
while [ $# -gt 0 ]; do
    case "$1" in
        --max-jobs) max_jobs=$2; shift 2 ;;
        --gpu) : "${2?--gpu needs a value}"; shift 2 ;;  # as run_slurm.sh's; local jobs see all devices
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

run_one() {  # run_one LOG COMMAND...: append a header, the command's output and its status to LOG
    local log=$1 start=$SECONDS rc; shift
    mkdir -p "$(dirname "$log")"
    {
        echo "# ==== attempt started at $(date '+%F %T') (run_local.sh, pid $BASHPID) ===="
        echo "# $*"
    } >> "$log"
    bash -c 'exec "$@"' _ "$@" >> "$log" 2>&1
    rc=$?
    echo "# finished at $(date '+%F %T') after $((SECONDS - start)) s with status ${rc}" >> "$log"
    return $rc
}

failed=0
end_jobs() { end_process_groups "${group_pids[@]}"; group_pids=(); }  # TERM every job's group; KILL what is left after 10 s
trap 'echo "run_local.sh: interrupted; ending ${#group_pids[@]} job(s)" >&2; end_jobs; exit 130' INT
trap 'echo "run_local.sh: terminated; ending ${#group_pids[@]} job(s)" >&2; end_jobs; exit 143' TERM

wait_one() {  # wait for any job; on failure end the others
    local rc=0
    group_wait_one || rc=$?
    [ "${rc}" -eq 0 ] && return
    failed=$((failed + 1))
    echo "run_local.sh: job failed with status ${rc}; see ${group_what[${group_done}]}" >&2
    if [ "${#group_pids[@]}" -gt 0 ]; then
        echo "run_local.sh: ending the ${#group_pids[@]} other running job(s)" >&2
        end_jobs
    fi
}

# (without JOB=a:b, var is empty and the ${...//${var}/...} substitutions change nothing)
for ((i = first; i <= last; i++)); do
    [ "${failed}" -eq 0 ] || break
    log=${log_template//${var}/$i}
    group_start "$log" run_one "$log" "${@//${var}/$i}"  # its own process group: ended with all it started
    if [ "$max_jobs" -gt 0 ] && [ "${#group_pids[@]}" -ge "$max_jobs" ]; then wait_one; fi
done
while [ "${#group_pids[@]}" -gt 0 ]; do wait_one; done
if [ "$failed" -gt 0 ]; then
    shown=${log_template//${var:-@@}/*}
    echo "run_local.sh: ${failed} job(s) failed (of $((last - first + 1))); the rest were ended or not started; see ${shown}" >&2
    exit 1
fi
