#!/usr/bin/env bash
# KD hyper-parameter sweep: students distilled from both teachers under other (alpha, tau, frames).
# Run from the recipe dir after stages 1-8 (reuses the teachers, their posteriors and the no-KD students).
#   local/kd_sweep.sh [--settings "a0.9_t2_all a0.5_t1_nonblank ..."] [--seeds "1 2"]
# A setting name is a<alpha>_t<tau>_<all|nonblank>. Results: exp/kd_sweep/<setting>/RESULTS.md
set -euo pipefail
command_line="$0 $*"
settings="a0.9_t1_all a0.5_t2_all a0.5_t1_nonblank"
seeds="1 2 3"
while [ $# -gt 0 ]; do
    case "$1" in
        --settings) settings=$2; shift 2 ;;
        --seeds) seeds=$2; shift 2 ;;
        *) echo "$0: unknown option $1" >&2; exit 2 ;;
    esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p exp
echo "$(date '+%F %T') cd $(pwd) && ${command_line}" >> exp/commands.log
for t in teacher_conventional teacher_oracle; do
    [ -f "exp/${t}/posteriors/train/post.scp" ] || { echo "$0: run stages 1-7 first (exp/${t}/posteriors)" >&2; exit 1; }
done
for setting in ${settings}; do
    if [[ ! ${setting} =~ ^a([0-9.]+)_t([0-9.]+)_(all|nonblank)$ ]]; then
        echo "$0: bad setting '${setting}' (want a<alpha>_t<tau>_<all|nonblank>)" >&2; exit 2
    fi
    alpha=${BASH_REMATCH[1]} tau=${BASH_REMATCH[2]} frames=${BASH_REMATCH[3]}
    [ "${frames}" = nonblank ] && frames=teacher_nonblank
    dir=exp/kd_sweep/${setting}
    mkdir -p "${dir}"
    for t in teacher_conventional teacher_oracle; do ln -sfn "$(pwd)/exp/${t}" "${dir}/${t}"; done
    for seed in ${seeds}; do
        [ -d "exp/student_nokd_seed${seed}" ] && ln -sfn "$(pwd)/exp/student_nokd_seed${seed}" "${dir}/student_nokd_seed${seed}"
    done
    "${root}/run.sh" --stage 8 --stop_stage 10 --exp "${dir}" --seeds "${seeds}" \
        --kd_weight "${alpha}" --kd_temperature "${tau}" --kd_frames "${frames}" \
        --decode_modes greedy --results "${dir}/RESULTS.md" > "${dir}.log" 2>&1 \
        || { echo "$0: setting ${setting} failed; see ${dir}.log" >&2; exit 1; }
    echo "$0: ${setting} done -> ${dir}/RESULTS.md"
done
