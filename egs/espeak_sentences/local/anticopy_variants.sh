#!/usr/bin/env bash
# Oracle Teacher anti-copy variants of this recipe: each is conf/train_teacher_oracle.yaml plus the
# options below, trained into exp/anticopy/<variant>/teacher_oracle (pipeline stage 5) and probed
# like the default (stage 6, against the shared exp/teacher_conventional).
#   local/anticopy_variants.sh [--variants "nodropout posenc"] [--stage 5] [--stop_stage 6] [--parallel 2]
#       [--exp exp] [--run_opts "--oracle_conf conf/other.yaml"]
# --exp: the experiment dir holding teacher_conventional (variants go to <exp>/anticopy/<variant>);
# --run_opts: more options of every ./run.sh call (e.g. other configs).
# Stage 5 trains the variants, --parallel at a time (one core each); stage 6 needs
# exp/teacher_conventional (./run.sh --stop_stage 4). Then local/summarize.py tabulates everything.
set -euo pipefail
variants="nodropout"
stage=5
stop_stage=6
parallel=2
exp=exp
run_opts=""
while [ $# -gt 0 ]; do
    case "$1" in
        --variants|--stage|--stop_stage|--parallel|--exp|--run_opts) printf -v "${1#--}" '%s' "$2"; shift 2 ;;
        *) echo "$0: unknown option $1" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
options_of() {
    case "$1" in
        nodropout) echo "--encoder_conf target_token_dropout=0.0" ;;  # the 2026-11-28 default
        dropout50) echo "--encoder_conf target_token_dropout=0.5" ;;
        posenc) echo "--encoder_conf target_positional_encoding=true" ;;  # with the default 30 % dropout
        aux_ctc) echo "--model_conf aux_source_ctc_weight=0.3" ;;  # with the default 30 % dropout
        *) echo "$0: unknown variant $1" >&2; return 1 ;;
    esac
}
for v in ${variants}; do options_of "${v}" > /dev/null || exit 2; done
mkdir -p "${exp}/anticopy"
echo "$(date '+%F %T') cd $(pwd) && $0 --variants \"${variants}\" --stage ${stage} --stop_stage ${stop_stage} --parallel ${parallel} --exp ${exp} --run_opts \"${run_opts}\"" >> "${exp}/commands.log"

pids=()
end_all() { local p; for p in "${pids[@]}"; do kill -TERM -- "-${p}" 2> /dev/null || true; done; wait; }
trap 'end_all; exit 130' INT
trap 'end_all; exit 143' TERM
failed=0
wait_one() { local rc=0; wait -n "${pids[@]}" || rc=$?; [ "${rc}" -eq 0 ] || failed=1
    local alive=() p; for p in "${pids[@]}"; do kill -0 "${p}" 2> /dev/null && alive+=("${p}"); done; pids=("${alive[@]}"); }
if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    for v in ${variants}; do
        set -m
        # shellcheck disable=SC2086
        ./run.sh --stage 5 --stop_stage 5 --exp "${exp}/anticopy/${v}" --nj 1 ${run_opts} \
            --teacher_train_opts "$(options_of "${v}")" > "${exp}/anticopy/${v}.train.log" 2>&1 &
        set +m
        pids+=($!)
        echo "$(date '+%T') training variant ${v} (log ${exp}/anticopy/${v}.train.log)"
        while [ "${#pids[@]}" -ge "${parallel}" ]; do wait_one; done
    done
    while [ "${#pids[@]}" -gt 0 ]; do wait_one; done
    [ "${failed}" -eq 0 ] || { echo "$0: a variant failed to train; see ${exp}/anticopy/*.train.log" >&2; exit 1; }
fi
if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
    [ -f "${exp}/teacher_conventional/.done" ] || { echo "$0: train the conventional teacher first (./run.sh --stop_stage 4)" >&2; exit 1; }
    for v in ${variants}; do
        ln -sfn "$(pwd)/${exp}/teacher_conventional" "${exp}/anticopy/${v}/teacher_conventional"
        # shellcheck disable=SC2086
        ./run.sh --stage 6 --stop_stage 6 --exp "${exp}/anticopy/${v}" ${run_opts} > "${exp}/anticopy/${v}.eval.log" 2>&1 \
            || { echo "$0: stage 6 of ${v} failed; see ${exp}/anticopy/${v}.eval.log" >&2; exit 1; }
        echo "$(date '+%T') probed variant ${v}: ${exp}/anticopy/${v}/teacher_eval/summary.tsv"
    done
fi
