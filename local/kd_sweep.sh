#!/usr/bin/env bash
# KD hyper-parameter sweep: students distilled from both teachers under other (alpha, tau, frames).
# Run from the recipe dir after stages 1-7 (reuses the teachers and their posteriors; links the no-KD students of stage 8 when present).
# Other recipes: the sweep runs the current dir's ./run.sh when there is one (else the default
# recipe's), e.g. cd egs/synth_words && ../../local/kd_sweep.sh --train_set train --settings a0.5_t1_words
#   local/kd_sweep.sh [--settings "a0.9_t2_all a0.5_t1_nonblank a0.5_t1_matched ..."] [--seeds "1 2"]
#                     [--train_set train_sp (the set the students train on: run.sh's train set + speed perturbation)]
# A setting name is a<alpha>_t<tau>_<all|nonblank|renorm|words|matched>. Results: exp/kd_sweep/<setting>/RESULTS.md;
# student dir names carry the KD settings they were trained with (see espnet_oracle/utils/systems.py).
#
# "matched" is the control for "nonblank": teacher_nonblank drops the frames whose teacher argmax is
# blank without renormalising, which also lowers the effective KD weight by that share. The matched
# setting uses all frames with alpha' = alpha*s / (1 - alpha + alpha*s), s = share of training frames
# whose teacher argmax is non-blank (measured per teacher from its train posteriors), so that its
# KD:CTC weight ratio equals the nonblank run's effective one. s and alpha' are logged and written to
# exp/kd_sweep/<setting>/matched_weight.tsv.
#
# A failing setting does not stop the sweep: the summary lists it, and the exit status is 1.
set -uo pipefail
command_line="$0 $*"
settings="a0.9_t1_all a0.5_t2_all a0.5_t1_nonblank a0.5_t1_matched"
seeds="1 2 3"
train_set=train_sp  # run.sh: --train_set train --speed_perturb_factors "0.9 1.0 1.1" -> students train on train_sp
while [ $# -gt 0 ]; do
    case "$1" in
        --settings) settings=$2; shift 2 ;;
        --seeds) seeds=$2; shift 2 ;;
        --train_set) train_set=$2; shift 2 ;;
        *) echo "$0: unknown option $1" >&2; exit 2 ;;
    esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
recipe_run_sh=${root}/run.sh
[ -x ./run.sh ] && recipe_run_sh=$(pwd)/run.sh
# shellcheck disable=SC1091
. "${root}/path.sh"
mkdir -p exp
echo "$(date '+%F %T') cd $(pwd) && ${command_line}" >> exp/commands.log
for t in teacher_conventional teacher_oracle; do
    [ -f "exp/${t}/posteriors/${train_set}/post.scp" ] \
        || { echo "$0: run stages 1-7 first (exp/${t}/posteriors/${train_set}; --train_set: the students' training set)" >&2; exit 1; }
done
# the frame names of student dirs (espnet_oracle.utils.systems.KD_FRAMES) -> run.sh --kd_frames values
declare -A kd_frames_of=()
while IFS='=' read -r name value; do kd_frames_of[${name}]=${value}; done < <(python -c \
    'from espnet_oracle.utils.systems import KD_FRAMES; print("\n".join(f"{v}={k}" for k, v in KD_FRAMES.items()))')
frame_names=$(IFS='|'; echo "${!kd_frames_of[*]}|matched")
setting_pattern="^a([0-9.]+)_t([0-9.]+)_(${frame_names})$"
for setting in ${settings}; do
    if [[ ! ${setting} =~ ${setting_pattern} ]]; then
        echo "$0: bad setting '${setting}' (want a<alpha>_t<tau>_<${frame_names}>)" >&2; exit 2
    fi
done

# run.sh runs in its own process group; on INT/TERM that group is ended (and run.sh ends its jobs)
# shellcheck disable=SC1091
. "${root}/scripts/process_groups.sh"
trap 'end_group_child; exit 130' INT
trap 'end_group_child; exit 143' TERM
run_sh() {  # run_sh LOG ARGS...: run.sh with ARGS, output to LOG
    local log=$1; shift
    run_group_child "${log}" "${recipe_run_sh}" "$@"
}

failed=() done_settings=()
for setting in ${settings}; do
    [[ ${setting} =~ ${setting_pattern} ]]
    alpha=${BASH_REMATCH[1]} tau=${BASH_REMATCH[2]} frames=${BASH_REMATCH[3]}
    dir=exp/kd_sweep/${setting}
    mkdir -p "${dir}"
    for t in teacher_conventional teacher_oracle; do ln -sfn "$(pwd)/exp/${t}" "${dir}/${t}"; done
    for seed in ${seeds}; do
        [ -d "exp/student_nokd_seed${seed}" ] && ln -sfn "$(pwd)/exp/student_nokd_seed${seed}" "${dir}/student_nokd_seed${seed}"
    done
    common=(--stage 8 --stop_stage 10 --exp "${dir}" --seeds "${seeds}" --kd_temperature "${tau}"
            --decode_modes greedy --results "${dir}/RESULTS.md")
    ok=true
    case "${frames}" in
        matched)
            # one run.sh call per teacher: alpha' differs with the teacher's non-blank share s
            echo -e "teacher\tnonblank_share\tframes\tkd_weight_nonblank\tkd_weight_matched" > "${dir}/matched_weight.tsv"
            for pair in teacher_conventional:convkd teacher_oracle:oraclekd; do
                t=${pair%%:*} system=${pair#*:}
                if ! answer=$(python -m espnet_oracle.bin.kd_matched_weight \
                        --post_scp "exp/${t}/posteriors/${train_set}/post.scp" --kd_weight "${alpha}"); then
                    ok=false; echo "$0: setting ${setting}: could not measure the non-blank share of ${t}" >&2
                    continue
                fi
                IFS=$'\t' read -r share weight nframes <<< "${answer}"
                echo -e "${t}\t${share}\t${nframes}\t${alpha}\t${weight}" >> "${dir}/matched_weight.tsv"
                echo "$0: ${setting}: ${t}: non-blank share s = ${share} of ${nframes} train frames;" \
                    "alpha' = ${alpha}*s / (1 - ${alpha} + ${alpha}*s) = ${weight} (all frames)"
                run_sh "${dir}.${system}.log" "${common[@]}" --student_systems "nokd ${system}" \
                    --kd_weight "${weight}" --kd_frames all \
                    || { ok=false; echo "$0: setting ${setting} (${system}, alpha' ${weight}) failed; see ${dir}.${system}.log" >&2; }
            done
            ;;
        *)
            run_sh "${dir}.log" "${common[@]}" --kd_weight "${alpha}" --kd_frames "${kd_frames_of[${frames}]}" \
                || { ok=false; echo "$0: setting ${setting} failed; see ${dir}.log" >&2; }
            ;;
    esac
    if [ "${ok}" = true ]; then
        done_settings+=("${setting}")
        echo "$0: ${setting} done -> ${dir}/RESULTS.md"
    else
        failed+=("${setting}")
    fi
done
echo "$0: summary: ${#done_settings[@]} setting(s) done: ${done_settings[*]:-none}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "$0: summary: ${#failed[@]} setting(s) FAILED: ${failed[*]} (logs: exp/kd_sweep/<setting>*.log)" >&2
    exit 1
fi
