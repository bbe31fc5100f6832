# Sourced by oracle_asr.sh and run_local.sh: end background jobs that each lead their own
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
