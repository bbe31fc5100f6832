#!/usr/bin/env bash
# Anti-copy strategy sweep: train Oracle Teacher variants and run the stage-6 probe on each.
# Run from the recipe dir after stages 1-4 (it reuses data/, dump/ and exp/teacher_conventional).
#   local/anticopy_sweep.sh [--variants "posenc expansion ..."] [--max_epoch N]
# Results: exp/anticopy/<variant>/teacher_eval/summary.tsv and exp/anticopy/summary.tsv
# A failing variant does not stop the sweep: the summary lists it (also in exp/anticopy/failed_variants),
# and the exit status is 1. On INT/TERM the running variants are ended.
set -euo pipefail
command_line="$0 $*"
variants="posenc posenc_expansion posenc_dropout aux_ctc"
max_epoch=""
while [ $# -gt 0 ]; do
    case "$1" in
        --variants) variants=$2; shift 2 ;;
        --max_epoch) max_epoch=$2; shift 2 ;;
        *) echo "$0: unknown option $1" >&2; exit 2 ;;
    esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p exp
echo "$(date '+%F %T') cd $(pwd) && ${command_line}" >> exp/commands.log
[ -f exp/teacher_conventional/.done ] || { echo "$0: run stages 1-4 first (exp/teacher_conventional)" >&2; exit 1; }

# Each variant = the default Oracle Teacher config (conf/train_teacher_oracle.yaml: no target
# positions, 30 % target token dropout) plus these encoder/model options.
options_of() {
    case "$1" in
        default) echo "" ;;
        posenc) echo "--encoder_conf target_positional_encoding=true" ;;
        posenc_expansion) echo "--encoder_conf target_positional_encoding=true --encoder_conf target_ctc_expansion=true" ;;
        posenc_dropout) echo "--encoder_conf target_positional_encoding=true --encoder_conf target_token_dropout=0.3" ;;
        dropout) echo "--encoder_conf target_token_dropout=0.3" ;;
        nodropout) echo "--encoder_conf target_token_dropout=0.0" ;;  # the default before 2026-11-28
        aux_ctc) echo "--model_conf aux_source_ctc_weight=0.3" ;;
        expansion) echo "--encoder_conf target_ctc_expansion=true" ;;
        post_fusion) echo "--encoder_conf target_positional_encoding=true --encoder_conf num_post_fusion_layers=2" ;;
        small_source) echo "--encoder_conf source_encoder_conf.num_blocks=2" ;;
        *) echo "unknown variant $1" >&2; return 1 ;;
    esac
}

for v in ${variants}; do options_of "${v}" > /dev/null || exit 2; done

# Two variants side by side, one core each. Each run.sh runs in its own process group, so it can be
# ended with everything it started.
pids=() failed=()
declare -A variant_of=()
end_all() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM -- "-${pid}" 2> /dev/null || true; done
    for pid in "${pids[@]}"; do wait "${pid}" 2> /dev/null || true; done
    pids=()
}
trap 'end_all; exit 130' INT
trap 'end_all; exit 143' TERM
wait_one() {
    local done_pid="" rc=0 i
    wait -n -p done_pid "${pids[@]}" || rc=$?
    for i in "${!pids[@]}"; do [ "${pids[$i]}" != "${done_pid}" ] || unset 'pids[i]'; done
    pids=("${pids[@]}")
    if [ "${rc}" -ne 0 ]; then
        failed+=("${variant_of[${done_pid}]}")
        echo "$0: variant ${variant_of[${done_pid}]} failed (status ${rc}); see exp/anticopy/${variant_of[${done_pid}]}.log" >&2
    else
        echo "$0: variant ${variant_of[${done_pid}]} done"
    fi
}
for v in ${variants}; do
    opts=$(options_of "${v}")
    [ -n "${max_epoch}" ] && opts="${opts} --max_epoch ${max_epoch}"
    mkdir -p "exp/anticopy/${v}"
    ln -sfn "$(pwd)/exp/teacher_conventional" "exp/anticopy/${v}/teacher_conventional"
    set -m
    "${root}/run.sh" --stage 5 --stop_stage 6 --exp "exp/anticopy/${v}" --parallel_teachers false --nj 1 \
        --teacher_train_opts "${opts}" --probe_sets "dev test test_unseen" \
        > "exp/anticopy/${v}.log" 2>&1 &
    set +m
    pids+=($!)
    variant_of[$!]=${v}
    while [ "${#pids[@]}" -ge 2 ]; do wait_one; done
done
while [ "${#pids[@]}" -gt 0 ]; do wait_one; done

# One table: every variant's probe results on every set, plus the default from exp/teacher_eval.
{
    echo -e "variant\tset\tprobe\tmetric\tvalue"
    [ -f exp/teacher_eval/summary.tsv ] && tail -n +2 exp/teacher_eval/summary.tsv | grep teacher_oracle | cut -f2- | sed 's/^/default\t/'
    for v in ${variants}; do
        # a variant that failed this time may still hold an earlier run's results: leave them out
        [[ " ${failed[*]} " == *" ${v} "* ]] && continue
        f=exp/anticopy/${v}/teacher_eval/summary.tsv
        [ -f "${f}" ] && tail -n +2 "${f}" | grep teacher_oracle | cut -f2- | sed "s/^/${v}\t/"
    done
} > exp/anticopy/summary.tsv
echo "$0: wrote exp/anticopy/summary.tsv"
rm -f exp/anticopy/failed_variants
if [ "${#failed[@]}" -gt 0 ]; then
    printf '%s\n' "${failed[@]}" > exp/anticopy/failed_variants
    echo "$0: summary: ${#failed[@]} variant(s) FAILED (not in the table): ${failed[*]}; see exp/anticopy/<variant>.log" >&2
    exit 1
fi
echo "$0: summary: all ${variants// /, } done"
