#!/usr/bin/env bash
# espnet-oracle: Oracle Teacher knowledge distillation for CTC models.
# The staged pipeline; the top level is the default recipe (noisy connected digits
# made from FSDD). Corpus recipes in egs/<corpus>/ call this script with their own
# local/data.sh and conf/ (see egs/README.md).
#
# Stages:
#   0  environment check / creation (.venv, or $ESPNET_ORACLE_VENV)
#   1  data preparation (local/data.sh) -> data/<set>/
#   2  features: 80-dim log-mel fbank -> dump/fbank/<set>/feats.scp + global CMVN stats
#   3  token list (char | word | bpe) -> data/token_list/<type>/tokens.txt
#   4  train the conventional (source-only) teacher -> exp/teacher_conventional
#   5  train the Oracle Teacher -> exp/teacher_oracle
#   6  teacher evaluation + copy probe -> exp/teacher_eval/summary.tsv
#   7  dump teacher posteriors (train, dev) -> exp/teacher_*/posteriors/<set>/post.scp
#   8  train students: no KD, conventional-teacher KD, Oracle-Teacher KD (x seeds)
#   9  decode all systems (greedy CTC + CTC prefix beam search)
#  10  score (WER/CER, per condition), spike timing, plots, RESULTS.md
set -euo pipefail

command_line="$0 $*"
recipe_dir=$(pwd)
project_root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ---- options (override with --name value) ----
stage=0
stop_stage=10
nj=2                    # parallel jobs for feature extraction, dumping, decoding, student training
ngpu=0                  # GPUs per training job (0: CPU)
fsdd=""                 # corpus path (else db.sh / $FSDD / download)
data_opts=""            # extra options for local/data.sh, e.g. "--num_train 600 --seed 1"
data_seed=0
train_set=train
valid_set=dev
test_sets="test test_unseen"
token_type=char         # char | word | bpe
nbpe=30
teacher_conf=conf/train_teacher_conventional.yaml
oracle_conf=conf/train_teacher_oracle.yaml
student_conf=conf/train_student.yaml
train_opts=""           # extra options for every ESPnet training run
teacher_train_opts=""   # extra options for the two teachers (e.g. "--max_epoch 2" in smoke tests)
student_train_opts=""   # extra options for the students
parallel_teachers=true  # train stages 4 and 5 side by side (one core each) when both run
seeds="1 2 3"           # student seeds
student_systems="nokd convkd oraclekd"
kd_weight=0.5
kd_temperature=1.0
kd_frames=all           # all | teacher_nonblank | teacher_nonblank_renorm
post_format=topk        # topk | dense
post_topk=8
beam_size=4
decode_modes="greedy beam"
probe_sets="dev test test_unseen"
exp=exp
dump=dump
results=RESULTS.md      # where stage 10 writes the results table (relative to the recipe dir)

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    cat <<EOF

Usage: $0 [--stage N] [--stop_stage M] [--option value ...]
Options (defaults):
EOF
    sed -n '/^# ---- options/,/^# ---- end of options/p' "$0" | grep -E '^[a-z_]+=' |
        sed -E 's/^([a-z_]+)=("[^"]*"|[^ ]*) *(# *)?(.*)$/  --\1 \2  \4/'
}
# ---- end of options ----

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --*=*) name=${1%%=*}; name=${name#--}; value=${1#*=}; shift ;;
        --*)
            name=${1#--}
            [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 2; }
            value=$2; shift 2 ;;
        *) echo "$0: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    if ! declare -p "${name}" > /dev/null 2>&1 || [[ ! ${name} =~ ^[a-z_]+$ ]]; then
        echo "$0: unknown option --${name} (see --help)" >&2; exit 2
    fi
    printf -v "${name}" '%s' "${value}"
done

# shellcheck disable=SC1091
. "${project_root}/path.sh"
[ -f ./cmd.sh ] && . ./cmd.sh || . "${project_root}/cmd.sh"
[ -f ./db.sh ] && . ./db.sh || . "${project_root}/db.sh"
[ -n "${fsdd}" ] && export FSDD=${fsdd}

log() { echo "$(date '+%H:%M:%S') $*"; }
die() { echo "$0: ERROR: $*" >&2; exit 1; }

# ---- background jobs (parallel teachers, students) ----
# Each runs in its own process group, so it can be ended with everything it started. When a job
# fails, or this script dies (die, a failing command, INT, TERM), the other jobs are ended.
bg_pids=()
declare -A bg_what=()
bg_start() {  # bg_start WHAT THREADS COMMAND...: run COMMAND in the background with OMP_NUM_THREADS=THREADS
    local what=$1 threads=$2; shift 2
    set -m
    (export OMP_NUM_THREADS=${threads}; "$@") &
    set +m
    bg_pids+=($!)
    bg_what[$!]=${what}
}
bg_forget() {  # bg_forget PID
    local i
    for i in "${!bg_pids[@]}"; do [ "${bg_pids[$i]}" != "$1" ] || unset 'bg_pids[i]'; done
    bg_pids=("${bg_pids[@]}")
}
bg_wait_one() {  # wait for any background job; die (which ends the others) if it failed
    local done_pid="" rc=0
    wait -n -p done_pid "${bg_pids[@]}" || rc=$?
    bg_forget "${done_pid}"
    [ "${rc}" -eq 0 ] || die "${bg_what[${done_pid}]} failed (status ${rc})"
}
bg_wait_all() { while [ "${#bg_pids[@]}" -gt 0 ]; do bg_wait_one; done; }
bg_end_all() {  # TERM every job's process group; KILL what is left after 10 s
    local pid tries
    for pid in "${bg_pids[@]}"; do kill -TERM -- "-${pid}" 2> /dev/null || true; done
    for pid in "${bg_pids[@]}"; do
        wait "${pid}" 2> /dev/null || true
        for ((tries = 0; tries < 100; tries++)); do
            kill -0 -- "-${pid}" 2> /dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-${pid}" 2> /dev/null || true
    done
    bg_pids=()
}
on_exit() {
    local rc=$?
    if [ "${BASHPID}" = "$$" ] && [ "${#bg_pids[@]}" -gt 0 ]; then
        echo "$0: ending ${#bg_pids[@]} background job(s): $(for p in "${bg_pids[@]}"; do printf '%s; ' "${bg_what[$p]}"; done)" >&2
        bg_end_all
    fi
    exit "${rc}"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
need() {  # need FILE "what produces it"
    [ -e "$1" ] || die "missing $1 — run $2 first"
}
run_stage() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }
stage_timer_start() { stage_started=${SECONDS}; }
stage_done() {
    local seconds=$((SECONDS - stage_started))
    mkdir -p "${exp}"
    echo -e "$1\t$2\t${seconds}" >> "${exp}/stage_times.tsv"
    log "stage $1 ($2) took ${seconds} s"
}

mkdir -p "${exp}"
echo "$(date '+%F %T') cd ${recipe_dir} && ${FSDD:+FSDD=${FSDD} }${command_line}" >> "${exp}/commands.log"

token_list=data/token_list/${token_type}/tokens.txt
bpe_prefix=data/token_list/bpe/bpe
stats_file=${dump}/fbank/${train_set}/feats_stats.npz
all_sets="${train_set} ${valid_set} ${test_sets}"
python=python3
[ -n "${VIRTUAL_ENV:-}" ] && python=${VIRTUAL_ENV}/bin/python

# student_dirs [SYSTEMS [SEEDS]]: experiment dir names of the students (default: all of this run),
# e.g. student_nokd_seed1, student_oraclekd_a0.5_t1_all_seed1 (KD settings in the name).
# The one definition of these names is espnet_oracle/utils/systems.py (make_results uses it too).
student_dirs() {
    ${python} -m espnet_oracle.utils.systems --systems "${1:-${student_systems}}" --seeds "${2:-${seeds}}" \
        --kd_weight "${kd_weight}" --kd_temperature "${kd_temperature}" --kd_frames "${kd_frames}"
}
student_dirs > /dev/null || die "bad student settings (see above)"

# Options every ESPnet training run shares: features, token list, normalization.
common_train_args() {
    local token_args=(--token_type "${token_type}" --token_list "${token_list}")
    [ "${token_type}" = bpe ] && token_args+=(--bpemodel "${bpe_prefix}.model")
    echo "${token_args[@]}" \
        --normalize_conf "stats_file=${stats_file}" \
        --ngpu "${ngpu}" \
        --train_data_path_and_name_and_type "${dump}/fbank/${train_set}/feats.scp,speech,kaldi_ark" \
        --train_data_path_and_name_and_type "${dump}/fbank/${train_set}/text,text,text" \
        --valid_data_path_and_name_and_type "${dump}/fbank/${valid_set}/feats.scp,speech,kaldi_ark" \
        --valid_data_path_and_name_and_type "${dump}/fbank/${valid_set}/text,text,text" \
        --train_shape_file "${dump}/fbank/${train_set}/feats_shape" \
        --valid_shape_file "${dump}/fbank/${valid_set}/feats_shape" \
        --resume true ${train_opts}
}

# train_model NAME CONFIG EXTRA_ARGS...: ESPnet training into exp/NAME.
# exp/NAME/stamp.json records the config, options and input fingerprints it is trained with
# (espnet_oracle.bin.train_dir): a finished dir with the same stamp is skipped, an unfinished one
# is resumed from its checkpoint.pth, and a dir made any other way is moved aside to
# exp/NAME.stale-<time> (never deleted) and trained anew.
train_model() {
    local name=$1 config=$2; shift 2
    local dir=${exp}/${name} state
    # shellcheck disable=SC2207
    local args=($(common_train_args) "$@")
    state=$(${python} -m espnet_oracle.bin.train_dir --dir "${dir}" --config "${config}" -- "${args[@]}") \
        || die "could not check ${dir} (see above)"
    case "${state}" in
        done)
            log "${dir} already trained; skipping (same config, options and inputs; to retrain anyway, move ${dir} aside or remove it)"
            return 0 ;;
        resume) log "resuming the unfinished training of ${name} from ${dir}/checkpoint.pth (log: ${dir}/train.log)" ;;
        train) log "training ${name} (log: ${dir}/train.log)" ;;
        *) die "unexpected answer '${state}' from espnet_oracle.bin.train_dir" ;;
    esac
    ${train_cmd} "${dir}/train.log" \
        ${python} -m espnet_oracle.bin.asr_train --config "${config}" --output_dir "${dir}" "${args[@]}" \
        || die "training ${name} failed; see ${dir}/train.log (rerun the stage to resume it)"
    ${python} -m espnet_oracle.bin.training_curve --exp_dir "${dir}" \
        || die "could not read the training curve of ${name} from ${dir}/checkpoint.pth"
    touch "${dir}/.done"
}

if run_stage 0; then
    log "stage 0: environment check / creation"
    stage_timer_start
    "${project_root}/scripts/setup_env.sh"
    . "${project_root}/path.sh"
    python=${VIRTUAL_ENV:-${ESPNET_ORACLE_VENV}}/bin/python
    ${python} -c 'import torch, torchaudio, espnet, espnet_oracle, kaldiio, sentencepiece; print("torch", torch.__version__, "espnet", espnet.__version__)' \
        || die "the environment in ${ESPNET_ORACLE_VENV} is broken; remove it and re-run stage 0"
    stage_done 0 environment
fi

if run_stage 1; then
    log "stage 1: data preparation"
    stage_timer_start
    # shellcheck disable=SC2086
    PYTHON=${python} local/data.sh --seed "${data_seed}" --data_dir data ${data_opts}
    stage_done 1 data
fi

if run_stage 2; then
    log "stage 2: feature extraction (log-mel fbank) and global CMVN stats"
    stage_timer_start
    for x in ${all_sets}; do
        need data/${x}/wav.scp "stage 1 (data preparation)"
        ${python} -m espnet_oracle.bin.compute_fbank --data_dir "data/${x}" \
            --out_dir "${dump}/fbank/${x}" --nj "${nj}"
    done
    ${python} -m espnet_oracle.bin.compute_cmvn_stats \
        --feats_scp "${dump}/fbank/${train_set}/feats.scp" --out "${stats_file}"
    stage_done 2 features
fi

if run_stage 3; then
    log "stage 3: token list (${token_type})"
    stage_timer_start
    need data/${train_set}/text "stage 1 (data preparation)"
    shape_data=() shape_out=()
    for x in ${train_set} ${valid_set}; do
        need ${dump}/fbank/${x}/feats.scp "stage 2 (features)"
        shape_data+=("data/${x}") shape_out+=("${dump}/fbank/${x}")
    done
    ${python} -m espnet_oracle.bin.make_token_list --text "data/${train_set}/text" \
        --token_type "${token_type}" --out "${token_list}" --nbpe "${nbpe}" \
        --bpe_model_prefix "${bpe_prefix}" \
        --shape_data_dirs "${shape_data[@]}" --shape_out_dirs "${shape_out[@]}"
    stage_done 3 tokens
fi

teachers_in_background=false
if run_stage 4; then
    log "stage 4: train the conventional (source-only) teacher"
    stage_timer_start
    need "${token_list}" "stage 3 (token list)"
    need "${stats_file}" "stage 2 (features)"
    if [ "${parallel_teachers}" = true ] && run_stage 5 && [ "${ngpu}" -eq 0 ]; then
        # Two CPU trainings side by side use the two cores better than one after the other.
        # shellcheck disable=SC2086
        bg_start "stage 4 (conventional teacher; see ${exp}/teacher_conventional/train.log)" 1 \
            train_model teacher_conventional "${teacher_conf}" ${teacher_train_opts}
        teachers_in_background=true
        log "stage 4 runs in the background beside stage 5; if either fails, the other is ended"
    else
        # shellcheck disable=SC2086
        OMP_NUM_THREADS=${nj} train_model teacher_conventional "${teacher_conf}" ${teacher_train_opts}
        stage_done 4 teacher_conventional
    fi
fi

if run_stage 5; then
    log "stage 5: train the Oracle Teacher"
    [ "${teachers_in_background}" = true ] || stage_timer_start
    need "${token_list}" "stage 3 (token list)"
    need "${stats_file}" "stage 2 (features)"
    if [ "${teachers_in_background}" = true ]; then
        # shellcheck disable=SC2086
        bg_start "stage 5 (Oracle Teacher; see ${exp}/teacher_oracle/train.log)" 1 \
            train_model teacher_oracle "${oracle_conf}" ${teacher_train_opts}
        bg_wait_all
        stage_done 4+5 teachers_in_parallel
    else
        # shellcheck disable=SC2086
        OMP_NUM_THREADS=${nj} train_model teacher_oracle "${oracle_conf}" ${teacher_train_opts}
        stage_done 5 teacher_oracle
    fi
fi

teacher_model() { echo "${exp}/$1/valid.loss.ave.pth"; }

if run_stage 6; then
    log "stage 6: teacher evaluation and copy probe"
    stage_timer_start
    for t in teacher_conventional teacher_oracle; do
        need "$(teacher_model ${t})" "stage 4/5 (teacher training)"
    done
    ${python} -m espnet_oracle.bin.teacher_eval \
        --conventional_dir "${exp}/teacher_conventional" --oracle_dir "${exp}/teacher_oracle" \
        --dump_dir "${dump}/fbank" --data_dir data --sets "${valid_set} ${test_sets}" \
        --probe_sets "${probe_sets}" --out_dir "${exp}/teacher_eval"
    stage_done 6 teacher_eval
fi

if run_stage 7; then
    log "stage 7: dump teacher posteriors (${post_format}, k=${post_topk})"
    stage_timer_start
    for t in teacher_conventional teacher_oracle; do
        need "$(teacher_model ${t})" "stage 4/5 (teacher training)"
        for x in ${train_set} ${valid_set}; do
            ${python} -m espnet_oracle.bin.dump_posteriors --exp_dir "${exp}/${t}" \
                --feats_dir "${dump}/fbank/${x}" --out_dir "${exp}/${t}/posteriors/${x}" \
                --format "${post_format}" --topk "${post_topk}" --nj "${nj}"
        done
    done
    stage_done 7 dump_posteriors
fi

# student_teacher SYSTEM: which teacher's posteriors a student learns from ("" for no KD).
student_teacher() {
    case "$1" in
        nokd) echo "" ;;
        convkd) echo teacher_conventional ;;
        oraclekd) echo teacher_oracle ;;
        *) die "unknown student system '$1' (nokd, convkd, oraclekd)" ;;
    esac
}

# student_args SYSTEM: the options that make a student a no-KD / KD run.
student_args() {
    local teacher
    teacher=$(student_teacher "$1")
    [ -n "${teacher}" ] || return 0
    local post=${exp}/${teacher}/posteriors
    echo --model kd_student \
        --model_conf "kd_weight=${kd_weight}" --model_conf "kd_temperature=${kd_temperature}" \
        --model_conf "kd_frames=${kd_frames}" \
        --train_data_path_and_name_and_type "${post}/${train_set}/post.scp,teacher_post,teacher_posterior" \
        --valid_data_path_and_name_and_type "${post}/${valid_set}/post.scp,teacher_post,teacher_posterior"
}


if run_stage 8; then
    log "stage 8: train students (${student_systems}; seeds ${seeds})"
    stage_timer_start
    need "${token_list}" "stage 3 (token list)"
    for s in ${student_systems}; do
        teacher=$(student_teacher "${s}")
        [ -n "${teacher}" ] || continue
        for x in ${train_set} ${valid_set}; do
            need "${exp}/${teacher}/posteriors/${x}/post.scp" "stage 7 (dump teacher posteriors)"
            ${python} -m espnet_oracle.bin.check_posteriors \
                --post_scp "${exp}/${teacher}/posteriors/${x}/post.scp" \
                --feats_scp "${dump}/fbank/${x}/feats.scp" --token_list "${token_list}" \
                || die "teacher posteriors do not fit the ${x} set (see above)"
        done
    done
    for s in ${student_systems}; do
        args=$(student_args "${s}")
        for seed in ${seeds}; do
            name=$(student_dirs "${s}" "${seed}")
            # shellcheck disable=SC2086
            bg_start "student ${name} (see ${exp}/${name}/train.log)" 1 \
                train_model "${name}" "${student_conf}" --seed "${seed}" ${args} ${student_train_opts}
            while [ "${#bg_pids[@]}" -ge "${nj}" ]; do bg_wait_one; done
        done
    done
    bg_wait_all
    for name in $(student_dirs); do
        ${python} -m espnet_oracle.bin.export_student --exp_dir "${exp}/${name}"
    done
    stage_done 8 students
fi

if run_stage 9; then
    log "stage 9: decode (${decode_modes})"
    stage_timer_start
    systems="teacher_conventional teacher_oracle $(student_dirs)"
    for sys in ${systems}; do
        need "$(teacher_model ${sys})" "the training stage of ${sys}"
    done
    # shellcheck disable=SC2086
    ${python} -m espnet_oracle.bin.decode --exp "${exp}" --systems ${systems} \
        --dump_dir "${dump}/fbank" --sets "${valid_set} ${test_sets}" \
        --modes "${decode_modes}" --beam_size "${beam_size}" --nj "${nj}"
    stage_done 9 decode
fi

if run_stage 10; then
    log "stage 10: scoring, spike timing, plots, RESULTS.md"
    stage_timer_start
    for sys in teacher_conventional teacher_oracle $(student_dirs); do
        for x in ${valid_set} ${test_sets}; do
            for mode in ${decode_modes}; do
                d=${exp}/${sys}/decode_${x}_${mode}
                need "${d}/text" "stage 9 (decode)"
                ${python} -m espnet_oracle.bin.score --data_dir "data/${x}" --decode_dir "${d}" > /dev/null
            done
        done
    done
    # shellcheck disable=SC2086
    ${python} -m espnet_oracle.bin.plot_posteriorgram --exp "${exp}" --dump_dir "${dump}/fbank" \
        --data_dir data --set "$(echo ${test_sets} | cut -d' ' -f1)" --out_dir "${exp}/plots" \
        --systems teacher_conventional teacher_oracle $(student_dirs "${student_systems}" "${seeds%% *}")
    stage_done 10 score
    ${python} -m espnet_oracle.bin.make_results --exp "${exp}" --recipe_dir "${recipe_dir}" \
        --sets "${valid_set} ${test_sets}" --seeds "${seeds}" --out "${results}" \
        --kd_weight "${kd_weight}" --kd_temperature "${kd_temperature}" --kd_frames "${kd_frames}"
    log "wrote ${results}"
fi
log "done (stages ${stage}..${stop_stage})"
