# Sourced by oracle_asr.sh, run_local.sh and the sweep scripts: end background jobs that each lead their own
# process group (started under `set -m`), so their children (ESPnet trainers) end with them.
# end_process_groups PID...: TERM every group, wait up to 10 s, KILL what is left.
end_process_groups() {
    local pid tries
    for pid in "$@"; do kill -TERM -- "-${pid}" 2> /dev/null || true; done
    for pid in "$@"; do
        wait "${pid}" 2> /dev/null || true
        for ((tries = 0; tries < 100; tries++)); do
            kill -0 -- "-${pid}" 2> /dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-${pid}" 2> /dev/null || true
    done
}

# group_start WHAT COMMAND...: COMMAND in the background in its own process group; its pid joins
# group_pids (WHAT: group_what[pid]). group_wait_one: wait for any of them; group_done is its pid,
# the status its status.
group_pids=()
declare -A group_what=()
group_start() { local what=$1; shift; set -m; "$@" & set +m; group_pids+=($!); group_what[$!]=${what}; }
group_wait_one() {
    local rc=0 i
    wait -n -p group_done "${group_pids[@]}" || rc=$?
    for i in "${!group_pids[@]}"; do [ "${group_pids[$i]}" != "${group_done}" ] || unset 'group_pids[i]'; done
    group_pids=("${group_pids[@]}")
    return "${rc}"
}

# For the sweep scripts: one run at a time in its own process group, ended with the caller.
#   . scripts/process_groups.sh; trap 'end_group_child; exit 130' INT; trap 'end_group_child; exit 143' TERM
# run_group_child LOG COMMAND ARGS...: run COMMAND (output to LOG) and return its exit status.
group_child=""
run_group_child() {
    local log=$1 rc
    shift
    set -m
    "$@" > "${log}" 2>&1 &
    set +m
    group_child=$!
    wait "${group_child}"
    rc=$?
    group_child=""
    return "${rc}"
}
end_group_child() { [ -z "${group_child}" ] || { kill -TERM -- "-${group_child}" 2> /dev/null; wait "${group_child}"; }; }
