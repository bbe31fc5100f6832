#!/usr/bin/env bash
# KD variants beyond the paper (issue 12): train every variant with the same seeds as the recipe's
# students, decode and score them, and put them in one table of RESULTS.md ("KD variants": WER/CER
# mean ± std, paired bootstrap against conventional frame-level KD, wall times).
# Run from the recipe dir after stages 1-7 of a default run (./run.sh --stop_stage 7, or a whole run):
#   local/variant_sweep.sh [--variants "renorm guided ..."] [--seeds "1 2 3"] [--nbest 4]
#                          [--train_set train_sp] [-- more run.sh options, given to every run]
# Other recipes: the sweep runs the current dir's ./run.sh when there is one (else the default
# recipe's), e.g. cd egs/synth_words && ../../local/variant_sweep.sh --train_set train
# Variants (each one run.sh call, stages 7-10, into exp/variants/<variant>/ with the teachers linked
# from exp/; student dir names carry their settings, see espnet_oracle/utils/systems.py):
#   renorm       KD from either teacher on its non-blank frames, renormalised per utterance
#                (convkd oraclekd, --kd_frames teacher_nonblank_renorm; the default recipe's own is teacher_nonblank_words)
#   guided       Guided CTC from either teacher (convguided oracleguided)
#   kd_guided    frame-level KD + Guided CTC (convkdguided oraclekdguided)
#   seqkd        sequence-level KD to either teacher's 1-best (convseqkd oracleseqkd; the Oracle
#                Teacher's 1-best is its decoding with the true transcript fed)
#   seqkd_nbest  ... to the N-best weighted by the hypotheses' scores (--seq_kd_nbest N, N = --nbest)
#   avgkd        frame-level KD from both teachers' averaged posteriors
#   selfdistill  one-stage oracle self-distillation (conf/train_oracle_self_distill.yaml)
# First the reference students (no KD, conventional KD, Oracle KD: run.sh stages 8-9 in exp/, nothing
# to do after a whole default run), then the variants one after another (each trains two students at a
# time), then run.sh stage 10 in exp/: RESULTS.md with the "KD variants" table.
# Results: exp/variants/<variant>/ (students, RESULTS.md, stage times), exp/variants/<variant>.log,
# exp/variants/summary (variant, status, wall seconds, systems, log), RESULTS.md.
#
# A failing variant does not stop the sweep: the summary lists it (status FAILED), and the exit status
# is 1. On INT/TERM the running run.sh (and what it started) is ended.
set -uo pipefail
command_line="$0 $*"
all_variants="renorm guided kd_guided seqkd seqkd_nbest avgkd selfdistill"
variants=${all_variants}
seeds="1 2 3"
nbest=4
train_set=train_sp  # run.sh: --train_set train --speed_perturb_factors "0.9 1.0 1.1" -> students train on train_sp
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --variants) variants=$2; shift 2 ;;
        --seeds) seeds=$2; shift 2 ;;
        --nbest) nbest=$2; shift 2 ;;
        --train_set) train_set=$2; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "$0: unknown option $1 (run.sh options go after --)" >&2; exit 2 ;;
    esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
recipe_run_sh=${root}/run.sh
[ -x ./run.sh ] && recipe_run_sh=$(pwd)/run.sh
# shellcheck disable=SC1091
. "${root}/path.sh"

# options_of VARIANT: the run.sh options that make the variant
options_of() {
    case "$1" in
        renorm) echo "--student_systems|convkd oraclekd|--kd_frames|teacher_nonblank_renorm" ;;
        guided) echo "--student_systems|convguided oracleguided" ;;
        kd_guided) echo "--student_systems|convkdguided oraclekdguided" ;;
        seqkd) echo "--student_systems|convseqkd oracleseqkd|--seq_kd_nbest|1" ;;
        seqkd_nbest) echo "--student_systems|convseqkd oracleseqkd|--seq_kd_nbest|${nbest}" ;;
        avgkd) echo "--student_systems|avgkd" ;;
        selfdistill) echo "--student_systems|selfdistill" ;;
        *) echo "$0: unknown variant '$1' (one of: ${all_variants})" >&2; return 1 ;;
    esac
}
for v in ${variants}; do options_of "${v}" > /dev/null || exit 2; done
[[ ${nbest} =~ ^[0-9]+$ ]] && [ "${nbest}" -ge 2 ] || { echo "$0: --nbest must be a whole number >= 2" >&2; exit 2; }
for t in teacher_conventional teacher_oracle; do
    [ -f "exp/${t}/valid.loss.ave.pth" ] && [ -f "exp/${t}/posteriors/${train_set}/post.scp" ] \
        || { echo "$0: run stages 1-7 first (exp/${t}, exp/${t}/posteriors/${train_set}; --train_set: the students' training set)" >&2; exit 1; }
done
mkdir -p exp/variants
echo "$(date '+%F %T') cd $(pwd) && ${command_line}" >> exp/commands.log

# run.sh runs in its own process group; on INT/TERM that group is ended (and run.sh ends its jobs)
# shellcheck disable=SC1091
. "${root}/scripts/process_groups.sh"
trap 'end_group_child; exit 130' INT
trap 'end_group_child; exit 143' TERM
run_sh() {  # run_sh LOG ARGS...: run.sh with ARGS (then the pass-through options), output to LOG
    local log=$1; shift
    echo "$(date '+%T') ${recipe_run_sh} $*${extra[*]:+ ${extra[*]}} > ${log}"
    run_group_child "${log}" "${recipe_run_sh}" "$@" "${extra[@]}"
}

summary=exp/variants/summary
echo -e "variant\tstatus\tseconds\tstudent_systems\tlog" > "${summary}"
failed=() done_variants=()
record() {  # record VARIANT STATUS SECONDS SYSTEMS LOG
    echo -e "$1\t$2\t$3\t$4\t$5" >> "${summary}"
    if [ "$2" = done ]; then done_variants+=("$1"); else failed+=("$1"); fi
}

# the reference students (conventional KD is what every variant is compared with)
started=${SECONDS}
if run_sh exp/variants/reference.log --stage 8 --stop_stage 9 --seeds "${seeds}"; then
    record reference done $((SECONDS - started)) "nokd convkd oraclekd" exp/variants/reference.log
else
    echo "$0: the reference students failed; see exp/variants/reference.log (the variants still run)" >&2
    record reference FAILED $((SECONDS - started)) "nokd convkd oraclekd" exp/variants/reference.log
fi

for v in ${variants}; do
    dir=exp/variants/${v}
    mkdir -p "${dir}"
    for t in teacher_conventional teacher_oracle; do ln -sfn "$(pwd)/exp/${t}" "${dir}/${t}"; done
    IFS='|' read -r -a opts <<< "$(options_of "${v}")"
    started=${SECONDS}
    if run_sh "${dir}.log" --stage 7 --stop_stage 10 --exp "${dir}" --seeds "${seeds}" \
            --decode_modes greedy --results "${dir}/RESULTS.md" "${opts[@]}"; then
        record "${v}" done $((SECONDS - started)) "${opts[1]}" "${dir}.log"
        echo "$0: ${v} done -> ${dir}/RESULTS.md"
    else
        record "${v}" FAILED $((SECONDS - started)) "${opts[1]}" "${dir}.log"
        echo "$0: variant ${v} failed; see ${dir}.log" >&2
    fi
done

# RESULTS.md of the recipe, with the "KD variants" table
started=${SECONDS}
if run_sh exp/variants/results.log --stage 10 --stop_stage 10 --seeds "${seeds}"; then
    record results done $((SECONDS - started)) - exp/variants/results.log
else
    echo "$0: stage 10 (RESULTS.md) failed; see exp/variants/results.log" >&2
    record results FAILED $((SECONDS - started)) - exp/variants/results.log
fi
echo "$0: wrote ${summary}"
echo "$0: summary: ${#done_variants[@]} done: ${done_variants[*]:-none}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "$0: summary: ${#failed[@]} FAILED: ${failed[*]} (logs: exp/variants/<variant>.log)" >&2
    exit 1
fi
