#!/usr/bin/env bash
# espnet-oracle: the generic staged pipeline of Oracle Teacher knowledge distillation for CTC
# models. It knows no corpus: a recipe dir (./run.sh at the top level, egs/<corpus>/run.sh)
# holds local/data.sh, conf/ and db.sh and calls this script from that dir with its options.
# Outputs (data/, dump/, exp/, RESULTS.md) are written into the recipe dir.
#
# Stages:
#   0  environment check / creation (.venv, or $ESPNET_ORACLE_VENV)
#   1  data preparation (the recipe's local/data.sh <local_data_opts>) -> data/<set>/; with
#      --speed_perturb_factors, data/<train_set>_sp (ESPnet's sp<f>- copies), trained on from then on
#   2  features by --feats_type -> dump/<feats_type>/<set>/: fbank (log-mel, feats.scp),
#      raw (wav.scp; the model's frontend computes features), extracted (local/extract_features.sh)
#   3  token list (char | word | bpe) -> data/token_list/<type>/tokens.txt, then ESPnet's
#      --collect_stats run: global CMVN stats + shape files
#   4  train the conventional (source-only) teacher -> exp/teacher_conventional
#   5  train the Oracle Teacher -> exp/teacher_oracle
#   6  teacher evaluation + copy probe -> exp/teacher_eval/summary.tsv
#   7  dump teacher posteriors (train, dev) -> exp/teacher_*/posteriors/<set>/post.scp (not with
#      --online_teacher true); only for the KD variants that need them: both teachers' averaged
#      posteriors (avgkd) -> exp/teacher_average/posteriors/<set>/, the teachers' N-best hypotheses
#      (seq-KD) -> exp/teacher_*/seqkd_nbest<N>_<set>_beam/teacher_hyp.txt
#   8  train the students of --student_systems (below), one per seed of --seeds
#   9  decode all systems (greedy CTC + CTC prefix beam search)
#  10  score (WER/CER, per condition; optionally word accuracy, 1 - NED), spike timing (with
#      data/<set>/word_align), posteriorgram plots, RESULTS.md
#
# Student systems (--student_systems; directory names: espnet_oracle/utils/systems.py):
#   nokd convkd oraclekd    the paper's comparison (default): no KD, frame-level KD from the
#                           conventional / Oracle Teacher (--kd_weight, --kd_temperature, --kd_frames)
#   avgkd                   frame-level KD from both teachers' averaged posteriors
#   convguided oracleguided Guided CTC (Kurata & Audhkhasi 2019) from the teacher's spikes
#                           (CTC + --guided_ctc_weight x GuidedCTC; no frame KD)
#   convkdguided oraclekdguided   frame-level KD + Guided CTC
#   convseqkd oracleseqkd   sequence-level KD: CTC + --seq_kd_weight x CTC towards the teacher's
#                           --seq_kd_nbest best beam hypotheses (weighted by their scores; the
#                           Oracle Teacher is decoded with the true transcript fed)
#   selfdistill             one-stage oracle self-distillation (--self_distill_conf; KD weight
#                           --self_distill_kd_weight, temperature and frames as the students'),
#                           exported as a plain ESPnet model
# --conv_kd_shift_frames / --oracle_kd_shift_frames N move that teacher's posteriors N frames later
# (< 0: earlier) inside each utterance for the systems that learn from them (not avgkd), at load time
# in the student: the dump stays as it is; their dirs gain _shift<N>. --oracle_kd_shift_frames auto
# takes N from the teachers' word onsets on the validation set (needs its word_align; README "KD variants").
#
# Online teacher (--online_teacher true; only with nokd, convkd, oraclekd): the KD students run the
# frozen teacher (exp/teacher_*/config.yaml + valid.loss.ave.pth) on each batch inside their training
# and validation steps, so stage 7 dumps nothing: no dump storage or I/O and exact dense posteriors
# instead of the top-k float16 dump, for a teacher forward in every student step. Their dirs end in
# _online (student_oraclekd_a0.5_t1_nonblank_online_seed1); the teacher checkpoint is an input of
# their stamp, so a retrained teacher retrains them.
set -euo pipefail

command_line="$0 $*"
recipe_dir=$(pwd)
project_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ---- options (override with --name value) ----
stage=0
stop_stage=10
nj=2                    # parallel jobs for feature extraction, dumping, decoding, student training
ngpu=0                  # GPUs per training job (0: CPU)
local_data_opts=""      # options for the recipe's local/data.sh (only what it takes)
feats_type=fbank        # fbank | raw | extracted (local/extract_features.sh <data_dir> <out_dir>)
fs=16000                # sample rate of fbank/raw features (other wavs are resampled)
n_mels=80               # fbank bins
train_set=train
speed_perturb_factors=""  # e.g. "0.9 1.0 1.1": train on data/<train_set>_sp (as ESPnet's asr.sh)
valid_set=dev
test_sets="test test_unseen"
token_type=char         # char | word | bpe
nbpe=30
bpemode=unigram         # sentencepiece model type for --token_type bpe: unigram (ESPnet's default) | bpe
teacher_conf=conf/train_teacher_conventional.yaml
oracle_conf=conf/train_teacher_oracle.yaml
student_conf=conf/train_student.yaml
train_opts=""           # extra options for every ESPnet training run
teacher_train_opts=""   # extra options for the two teachers (e.g. "--max_epoch 2" in smoke tests)
student_train_opts=""   # extra options for the students
parallel_teachers=true  # train stages 4 and 5 side by side (one core each) when both run
seeds="1 2 3"           # student seeds
student_systems="nokd convkd oraclekd"  # also: avgkd convguided oracleguided convkdguided oraclekdguided convseqkd oracleseqkd selfdistill
kd_weight=0.5
kd_temperature=1.0
kd_frames=all           # all | teacher_nonblank | teacher_nonblank_renorm | teacher_nonblank_words
guided_ctc_weight=1.0   # Guided CTC weight of the *guided / *kdguided students
seq_kd_weight=1.0       # weight of the CTC towards the teacher's hypotheses (*seqkd students)
seq_kd_nbest=1          # *seqkd: the teacher's N best beam hypotheses (1: its 1-best)
self_distill_conf=conf/train_oracle_self_distill.yaml  # selfdistill: its training config
self_distill_kd_weight=1.0  # selfdistill: weight of its KL (oracle path -> source path)
online_teacher=false    # true: convkd/oraclekd run the teacher inside each training step (no stage-7 dump)
conv_kd_shift_frames=0  # move the conventional teacher's posteriors N frames later (< 0: earlier) for its KD students
oracle_kd_shift_frames=0  # the same for the Oracle Teacher's (student dirs gain _shift<N>); auto: by the teachers' dev onsets
post_format=topk        # topk | dense
post_topk=8
beam_size=4
decode_modes="greedy beam"
student_inference_model=valid.loss.ave.pth  # stage 9: the students' checkpoint (valid.loss.best.pth: ESPnet's best epoch by validation loss)
probe_sets=""           # copy-probe sets of stage 6 (default: valid + test sets)
condition_files=""      # per-condition WER tables from these data/<set>/ files, e.g. "utt2snr utt2noise"
results_targets=""      # checks in RESULTS.md, e.g. "oraclekd<=0.8*nokd oraclekd<convkd" (WER, means)
extra_metrics=""        # more stage-10 metrics per set (text recognition): "word_accuracy one_minus_ned"
plot_opts=""            # extra options of stage 10's espnet_oracle.bin.plot_posteriorgram, e.g. "--image_input --num_utts 4"
exp=exp
dump=dump
results=RESULTS.md      # where stage 10 writes the results table (relative to the recipe dir)

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    cat <<EOF

Usage: $0 [--stage N] [--stop_stage M] [--option value ...]
Options, with the values in effect: the pipeline's defaults and what the recipe's run.sh (and the
command line before --help) passed:
EOF
    local name comment value
    while IFS=$'\t' read -r name comment; do
        value=${!name}
        [[ -n ${value} && ${value} != *" "* ]] || value="\"${value}\""
        printf '  --%s %s  %s\n' "${name}" "${value}" "${comment}"
    done < <(sed -n '/^# ---- options/,/^# ---- end of options/p' "$0" | grep -E '^[a-z_]+=' |
        sed -E 's/^([a-z_]+)=("[^"]*"|[^ ]*) *(# *)?(.*)$/\1\t\4/')
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
# shellcheck disable=SC1091
. "${project_root}/scripts/process_groups.sh"
[ -f ./cmd.sh ] && . ./cmd.sh || . "${project_root}/cmd.sh"
[ -f ./db.sh ] && . ./db.sh

log() { echo "$(date '+%H:%M:%S') $*"; }
die() { echo "$0: ERROR: $*" >&2; exit 1; }

# ---- background jobs (parallel teachers, students) ----
# Each runs in its own process group, so it can be ended with everything it started. When a job
# fails, or this script dies (die, a failing command, INT, TERM), the other jobs are ended.
bg_start() { local what=$1; shift; OMP_NUM_THREADS=1 group_start "${what}" "$@"; }  # bg_start WHAT COMMAND...: on one core
bg_wait_one() { group_wait_one || die "${group_what[${group_done}]} failed (status $?)"; }  # die ends the others
bg_wait_all() { while [ "${#group_pids[@]}" -gt 0 ]; do bg_wait_one; done; }
on_exit() {  # TERM every job's process group; KILL what is left after 10 s
    local rc=$?
    if [ "${BASHPID}" = "$$" ] && [ "${#group_pids[@]}" -gt 0 ]; then
        echo "$0: ending ${#group_pids[@]} background job(s): $(for p in "${group_pids[@]}"; do printf '%s; ' "${group_what[$p]}"; done)" >&2
        end_process_groups "${group_pids[@]}"
    fi
    exit "${rc}"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
need() { [ -e "$1" ] || die "missing $1 — run $2 first"; }  # need FILE "what produces it"
run_stage() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }
stage_start() { log "stage $1: $2"; stage_started=${SECONDS}; }  # stage_start N "what it does"
stage_done() {
    local seconds=$((SECONDS - stage_started))
    mkdir -p "${exp}"
    echo -e "$1\t$2\t${seconds}" >> "${exp}/stage_times.tsv"
    log "stage $1 ($2) took ${seconds} s"
}

mkdir -p "${exp}"
echo "$(date '+%F %T') cd ${recipe_dir} && ${command_line}" >> "${exp}/commands.log"

source_train_set=${train_set}
[ -z "${speed_perturb_factors}" ] || train_set=${train_set}_sp
token_list=data/token_list/${token_type}/tokens.txt
bpe_prefix=data/token_list/bpe/bpe
feats_dir=${dump}/${feats_type}
stats_file=${feats_dir}/${train_set}/feats_stats.npz
speech_file=feats.scp speech_type=kaldi_ark
[ "${feats_type}" != raw ] || speech_file=wav.scp speech_type=sound
all_sets="${train_set} ${valid_set} ${test_sets}"
python=python3
[ -n "${VIRTUAL_ENV:-}" ] && python=${VIRTUAL_ENV}/bin/python

# --oracle_kd_shift_frames auto: the move is the teachers' word onset difference on the validation
# set (README "KD variants"), known once they are trained: resolved before stages 8-10 (0 until then).
oracle_shift_option=${oracle_kd_shift_frames}
results_opts=()
[ "${oracle_shift_option}" != auto ] || oracle_kd_shift_frames=0
# The settings in the students' dir names (espnet_oracle/utils/systems.py; make_results reads them too).
set_system_opts() {
    system_opts=(--kd_weight "${kd_weight}" --kd_temperature "${kd_temperature}" --kd_frames "${kd_frames}"
        --guided_ctc_weight "${guided_ctc_weight}" --seq_kd_weight "${seq_kd_weight}"
        --seq_kd_nbest "${seq_kd_nbest}" --self_distill_kd_weight "${self_distill_kd_weight}"
        --online_teacher "${online_teacher}" --conv_kd_shift_frames "${conv_kd_shift_frames}"
        --oracle_kd_shift_frames "${oracle_kd_shift_frames}")
}
set_system_opts
# student_dirs [SYSTEMS [SEEDS]]: experiment dir names of the students (default: all of this run),
# e.g. student_nokd_seed1, student_oraclekd_a0.5_t1_all_seed1 (KD settings in the name).
student_dirs() {
    ${python} -m espnet_oracle.utils.systems --systems "${1:-${student_systems}}" --seeds "${2:-${seeds}}" \
        "${system_opts[@]}"
}
# Which system learns from which teacher (the one definition: espnet_oracle/utils/systems.py):
# system_teacher posterior_teacher|hyps_teacher SYSTEM: the teacher whose posteriors / hypotheses
# SYSTEM learns from ("" for none); system_teachers WHAT: those of this run's systems, one a line.
system_teacher() {
    local t
    t=$(${python} -m espnet_oracle.utils.systems --systems "$2" --what "$1") || die "bad student system '$2'"
    [ "${t}" = - ] || echo "${t}"
}
system_teachers() {
    ${python} -m espnet_oracle.utils.systems --systems "${student_systems}" --what "$1" | grep -vx -- - | sort -u
    return 0
}
teacher_model() { echo "${exp}/$1/valid.loss.ave.pth"; }
need_teacher() { need "$(teacher_model "$1")" "stage 4/5 (teacher training)"; }
# teacher_hyps_dir TEACHER SET: where stage 7 decodes TEACHER's N-best of SET (teacher_hyp.txt inside).
teacher_hyps_dir() { echo "${exp}/$1/seqkd_nbest${seq_kd_nbest}_$2_beam"; }
case "${online_teacher}" in true|false) ;; *) die "--online_teacher must be true or false, got '${online_teacher}'" ;; esac
student_dirs > /dev/null || die "bad student settings (see above)"

# Options every ESPnet run shares: token list, data; SHAPE_OR_KEY files (default: shape files).
data_args() {
    local token_args=(--token_type "${token_type}" --token_list "${token_list}")
    [ "${token_type}" = bpe ] && token_args+=(--bpemodel "${bpe_prefix}.model")
    echo "${token_args[@]}" --ngpu "${ngpu}" \
        --train_data_path_and_name_and_type "${feats_dir}/${train_set}/${speech_file},speech,${speech_type}" \
        --train_data_path_and_name_and_type "${feats_dir}/${train_set}/text,text,text" \
        --valid_data_path_and_name_and_type "${feats_dir}/${valid_set}/${speech_file},speech,${speech_type}" \
        --valid_data_path_and_name_and_type "${feats_dir}/${valid_set}/text,text,text" \
        --train_shape_file "${1:-${feats_dir}/${train_set}/feats_shape}" \
        --valid_shape_file "${2:-${feats_dir}/${valid_set}/feats_shape}"
}
# Options every ESPnet training run shares: data + normalization.
common_train_args() {
    echo $(data_args) --normalize_conf "stats_file=${stats_file}" --resume true ${train_opts}
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
    stage_start 0 "environment check / creation"
    "${project_root}/scripts/setup_env.sh"
    . "${project_root}/path.sh"
    python=${VIRTUAL_ENV:-${ESPNET_ORACLE_VENV}}/bin/python
    ${python} -c 'import torch, torchaudio, espnet, espnet_oracle, kaldiio, sentencepiece; print("torch", torch.__version__, "espnet", espnet.__version__)' \
        || die "the environment in ${ESPNET_ORACLE_VENV} is broken; remove it and re-run stage 0"
    stage_done 0 environment
fi

if run_stage 1; then
    stage_start 1 "data preparation"
    # shellcheck disable=SC2086
    PYTHON=${python} local/data.sh ${local_data_opts}
    if [ -n "${speed_perturb_factors}" ]; then
        log "speed perturbation (${speed_perturb_factors}) -> data/${train_set}"
        ${python} -m espnet_oracle.bin.speed_perturb --in_dir "data/${source_train_set}" --out_dir "data/${train_set}" \
            --factors "${speed_perturb_factors}" --audio_dir "data/${train_set}/audio" --nj "${nj}" \
            || die "speed perturbation of data/${source_train_set} failed (see above)"
    fi
    stage_done 1 data
fi

# done_sig OUT INPUT_FILES... -- OPTIONS: a signature of the inputs' content and the options;
# up_to_date OUT SIG: OUT/.done holds SIG (then the step is skipped).
done_sig() {
    local files=() opts
    while [ $# -gt 0 ] && [ "$1" != -- ]; do files+=("$1"); shift; done
    shift; opts="$*"
    { echo "${opts}"; cat "${files[@]}"; } | sha256sum | cut -c1-32
}
up_to_date() { [ -f "$1/.done" ] && [ "$(cat "$1/.done")" = "$2" ]; }
# merge_jobs FILE PIECE: the --nj jobs' pieces (PIECE with JOB = 1..nj) sorted into FILE, then removed
merge_jobs() {
    local j pieces=()
    for j in $(seq "${nj}"); do pieces+=("${2//JOB/${j}}"); done
    sort "${pieces[@]}" > "$1"
    rm -f "${pieces[@]}"
}

if run_stage 2; then
    stage_start 2 "features (${feats_type})"
    for x in ${all_sets}; do
        out=${feats_dir}/${x}
        need data/${x}/text "stage 1 (data preparation)"
        case ${feats_type} in
            fbank|raw) need data/${x}/wav.scp "stage 1 (data preparation)"
                sig=$(done_sig data/${x}/wav.scp data/${x}/text -- ${feats_type} ${fs} ${n_mels}) ;;
            extracted) [ -x local/extract_features.sh ] || die "--feats_type extracted needs an executable local/extract_features.sh"
                # every file of the data dir (e.g. img.scp and the .done stamp of its maker)
                sig=$(done_sig $(find data/${x} -maxdepth 1 -type f | LC_ALL=C sort) -- extracted) ;;
            *) die "unknown --feats_type ${feats_type} (fbank, raw, extracted)" ;;
        esac
        if up_to_date "${out}" "${sig}"; then log "${out}: up to date"; continue; fi
        rm -rf "${out}"; mkdir -p "${out}"
        case ${feats_type} in
            fbank|raw)
                ${decode_cmd} JOB=1:${nj} "${out}/logs/features.JOB.log" \
                    ${python} -m espnet_oracle.bin.make_features --feats_type "${feats_type}" \
                    --wav_scp data/${x}/wav.scp --out_dir "${out}" --fs "${fs}" --n_mels "${n_mels}" \
                    --job JOB --nj "${nj}" || die "feature extraction of ${x} failed; see ${out}/logs/"
                if [ "${feats_type}" = fbank ]; then
                    merge_jobs "${out}/feats.scp" "${out}/feats.JOB.scp"
                    merge_jobs "${out}/feats_shape" "${out}/feats_shape.JOB"
                else
                    merge_jobs "${out}/wav.scp" "${out}/wav.JOB.scp"
                fi ;;
            extracted)
                local/extract_features.sh "data/${x}" "${out}" || die "local/extract_features.sh data/${x} ${out} failed"
                need "${out}/feats.scp" "local/extract_features.sh" ;;
        esac
        for f in text utt2spk spk2utt; do [ ! -f data/${x}/${f} ] || cp data/${x}/${f} "${out}/${f}"; done
        echo "${sig}" > "${out}/.done"
    done
    stage_done 2 features
fi

if run_stage 3; then
    stage_start 3 "token list (${token_type}), CMVN stats and shapes (ESPnet --collect_stats)"
    need data/${train_set}/text "stage 1 (data preparation)"
    tdir=$(dirname "${token_list}")
    sig=$(done_sig data/${train_set}/text -- ${token_type} ${nbpe} $([ "${token_type}" != bpe ] || echo "${bpemode}"))
    if ! up_to_date "${tdir}" "${sig}"; then
        rm -rf "${tdir}"; mkdir -p "${tdir}"
        tok_opts=(--token_type "${token_type}")
        if [ "${token_type}" = bpe ]; then
            cut -d' ' -f2- data/${train_set}/text > "${tdir}/train.txt"
            ${python} -c 'import sys, sentencepiece as spm; spm.SentencePieceTrainer.train(input=sys.argv[1],
                vocab_size=int(sys.argv[2]), model_prefix=sys.argv[3], model_type=sys.argv[4],
                character_coverage=1.0, hard_vocab_limit=False)' "${tdir}/train.txt" "${nbpe}" "${bpe_prefix}" "${bpemode}" \
                > "${tdir}/spm_train.log" 2>&1 || die "sentencepiece failed; see ${tdir}/spm_train.log"
            tok_opts=(--token_type bpe --bpemodel "${bpe_prefix}.model")
        fi
        # (offline, importing ESPnet makes nltk print a failed download: not an error, filtered out)
        ${python} -m espnet2.bin.tokenize_text "${tok_opts[@]}" -f 2- --input data/${train_set}/text \
            --output "${token_list}.tmp" --write_vocabulary true --cutoff 0 \
            --add_symbol '<blank>:0' --add_symbol '<unk>:1' --add_symbol '<sos/eos>:-1' \
            2> >(grep -v '^\[nltk_data\]' >&2) || die "tokenize_text failed"
        mv "${token_list}.tmp" "${token_list}"
        echo "${sig}" > "${tdir}/.done"
    fi
    sig=$(done_sig "${token_list}" ${feats_dir}/${train_set}/.done ${feats_dir}/${valid_set}/.done -- ${teacher_conf})
    if ! up_to_date "${feats_dir}/stats" "${sig}"; then
        for x in ${train_set} ${valid_set}; do need ${feats_dir}/${x}/.done "stage 2 (features)"; done
        rm -rf "${feats_dir}/stats"
        # shellcheck disable=SC2046
        ${train_cmd} "${feats_dir}/stats/collect_stats.log" \
            ${python} -m espnet_oracle.bin.asr_train --collect_stats true --config "${teacher_conf}" \
            --normalize none --use_preprocessor true --output_dir "${feats_dir}/stats" \
            $(data_args "${feats_dir}/${train_set}/${speech_file}" "${feats_dir}/${valid_set}/${speech_file}") \
            || die "ESPnet --collect_stats failed; see ${feats_dir}/stats/collect_stats.log"
        cp "${feats_dir}/stats/train/feats_stats.npz" "${stats_file}"
        cp "${feats_dir}/stats/train/speech_shape" "${feats_dir}/${train_set}/feats_shape"
        cp "${feats_dir}/stats/valid/speech_shape" "${feats_dir}/${valid_set}/feats_shape"
        echo "${sig}" > "${feats_dir}/stats/.done"
    fi
    stage_done 3 tokens
fi

# train_teacher N NAME CONFIG WHAT: stage 4 or 5, teacher NAME into exp/NAME. Two CPU trainings side
# by side use two cores better than one after the other: with --parallel_teachers true, --ngpu 0 and
# both stages to run, stage 4 goes to the background (one core each) and stage 5 waits for both.
teachers_in_background=false
train_teacher() {
    local n=$1 name=$2 config=$3 what=$4
    log "stage ${n}: train the ${what}"
    [ "${teachers_in_background}" = true ] || stage_started=${SECONDS}
    need "${token_list}" "stage 3 (token list)"
    need "${stats_file}" "stage 3 (CMVN stats)"
    # shellcheck disable=SC2086
    if [ "${n}" = 4 ] && [ "${parallel_teachers}" = true ] && run_stage 5 && [ "${ngpu}" -eq 0 ]; then
        bg_start "stage 4 (${what}; see ${exp}/${name}/train.log)" \
            train_model "${name}" "${config}" ${teacher_train_opts}
        teachers_in_background=true
        log "stage 4 runs in the background beside stage 5; if either fails, the other is ended"
    elif [ "${teachers_in_background}" = true ]; then
        bg_start "stage 5 (${what}; see ${exp}/${name}/train.log)" \
            train_model "${name}" "${config}" ${teacher_train_opts}
        bg_wait_all
        stage_done 4+5 teachers_in_parallel
    else
        OMP_NUM_THREADS=${nj} train_model "${name}" "${config}" ${teacher_train_opts}
        stage_done "${n}" "${name}"
    fi
}
run_stage 4 && train_teacher 4 teacher_conventional "${teacher_conf}" "conventional teacher"
run_stage 5 && train_teacher 5 teacher_oracle "${oracle_conf}" "Oracle Teacher"

if run_stage 6; then
    stage_start 6 "teacher evaluation and copy probe"
    need_teacher teacher_conventional
    need_teacher teacher_oracle
    ${python} -m espnet_oracle.bin.teacher_eval \
        --conventional_dir "${exp}/teacher_conventional" --oracle_dir "${exp}/teacher_oracle" \
        --dump_dir "${feats_dir}" --data_dir data --sets "${valid_set} ${test_sets}" \
        --probe_sets "${probe_sets}" --out_dir "${exp}/teacher_eval"
    stage_done 6 teacher_eval
fi

if run_stage 7; then
    stage_start 7 "dump teacher posteriors (${post_format}, k=${post_topk})"
    dump_teachers="teacher_conventional teacher_oracle"
    if [ "${online_teacher}" = true ]; then  # only nokd/convkd/oraclekd (student_dirs refused the rest)
        log "--online_teacher true: no posterior dump, the students run their teacher in each training step"
        dump_teachers=""
    fi
    # sharded over --nj parallel jobs (GPU jobs with --ngpu > 0, e.g. one Slurm job with a GPU
    # each); finished shards of the same stamp are reused
    dump_cmd=${decode_cmd} dump_ngpu=0
    [ "${ngpu}" -eq 0 ] || dump_cmd=${cuda_cmd:-${train_cmd}} dump_ngpu=1
    # one set of jobs per teacher covers both sets: each job imports ESPnet and loads the model once
    for t in ${dump_teachers}; do
        need_teacher "${t}"
        post_root=${exp}/${t}/posteriors
        sets=(${train_set} ${valid_set})
        set_args=(--feats_dir "${sets[@]/#/${feats_dir}/}" --out_dir "${sets[@]/#/${post_root}/}")
        options=(--exp_dir "${exp}/${t}" --format "${post_format}" --topk "${post_topk}" --num_jobs "${nj}")
        states=$(${python} -m espnet_oracle.bin.dump_posteriors "${options[@]}" "${set_args[@]}" --prepare) \
            || die "could not check ${post_root}/{${sets[*]}} (see above)"
        mapfile -t states < <(tail -n "${#sets[@]}" <<< "${states}")  # one answer per set, last lines
        todo=()
        for i in "${!sets[@]}"; do
            [ "${states[i]}" = done ] || todo+=("${sets[i]}")
        done
        [ "${#todo[@]}" -gt 0 ] || continue  # (it said so)
        set_args=(--feats_dir "${todo[@]/#/${feats_dir}/}" --out_dir "${todo[@]/#/${post_root}/}")
        ${dump_cmd} JOB=1:${nj} "${post_root}/logs/dump.JOB.log" \
            ${python} -m espnet_oracle.bin.dump_posteriors "${options[@]}" "${set_args[@]}" --job JOB \
            --ngpu "${dump_ngpu}" \
            || die "dumping ${post_root}/{${todo[*]}} failed; see ${post_root}/logs/ (rerun the stage to resume it)"
        ${python} -m espnet_oracle.bin.dump_posteriors "${options[@]}" "${set_args[@]}" --merge \
            || die "could not merge ${post_root}/{${todo[*]}} (see above)"
    done
    # KD variants: only what --student_systems needs (nothing for the default systems)
    if system_teachers posterior_teacher | grep -qx teacher_average; then
        log "averaging both teachers' posteriors (avgkd) -> ${exp}/teacher_average/posteriors"
        for x in ${train_set} ${valid_set}; do
            ${python} -m espnet_oracle.bin.average_posteriors \
                --post_scp "${exp}/teacher_conventional/posteriors/${x}/post.scp" \
                --post_scp "${exp}/teacher_oracle/posteriors/${x}/post.scp" \
                --out_dir "${exp}/teacher_average/posteriors/${x}" --format "${post_format}" --topk "${post_topk}" \
                || die "averaging the teachers' posteriors of ${x} failed (see above)"
        done
    fi
    for t in $(system_teachers hyps_teacher); do
        # sequence-level KD targets: the teacher's N best beam hypotheses (the Oracle Teacher is
        # decoded as always, with the true transcript fed), weighted by softmax of their scores
        log "${t}: ${seq_kd_nbest}-best hypotheses of ${train_set} ${valid_set} (seq-KD) -> $(teacher_hyps_dir "${t}" "<set>")"
        ${python} -m espnet_oracle.bin.decode --exp "${exp}" --systems "${t}" --dump_dir "${feats_dir}" \
            --sets "${train_set} ${valid_set}" --modes beam --nbest "${seq_kd_nbest}" \
            --beam_size "$((beam_size > seq_kd_nbest ? beam_size : seq_kd_nbest))" \
            --prefix "seqkd_nbest${seq_kd_nbest}" --nj "${nj}" \
            || die "decoding the hypotheses of ${t} failed (see above)"
        for x in ${train_set} ${valid_set}; do
            d=$(teacher_hyps_dir "${t}" "${x}")
            hyp_args=(--hyp "${d}/token")
            if [ "${seq_kd_nbest}" -gt 1 ]; then
                hyp_args=()
                for r in $(seq "${seq_kd_nbest}"); do
                    hyp_args+=(--hyp "${d}/nbest/token.${r}" --score "${d}/nbest/score.${r}")
                done
            fi
            ${python} -m espnet_oracle.bin.write_teacher_hyps --token_list "${token_list}" "${hyp_args[@]}" \
                --out "${d}/teacher_hyp.txt" || die "writing the hypotheses of ${t} on ${x} failed (see above)"
        done
    done
    stage_done 7 dump_posteriors
fi

if [ "${oracle_shift_option}" = auto ] && [ "${stage}" -le 10 ] && [ "${stop_stage}" -ge 8 ] \
    && system_teachers posterior_teacher | grep -qx teacher_oracle; then
    # Before any student trains: decode both teachers on the validation set (stage 9 reuses these
    # dirs), score their spike timing and move the Oracle Teacher's posteriors by the onset difference.
    [ -f "data/${valid_set}/word_align" ] || die "--oracle_kd_shift_frames auto needs data/${valid_set}/word_align" \
        "(the validation set's word timings); without them give a number of frames"
    for t in teacher_conventional teacher_oracle; do need_teacher "${t}"; done
    ${python} -m espnet_oracle.bin.decode --exp "${exp}" --systems teacher_conventional teacher_oracle \
        --dump_dir "${feats_dir}" --sets "${valid_set}" --modes greedy --nj "${nj}" \
        || die "decoding the teachers on ${valid_set} for --oracle_kd_shift_frames auto failed (see above)"
    for t in teacher_conventional teacher_oracle; do
        ${python} -m espnet_oracle.bin.score --data_dir "data/${valid_set}" \
            --decode_dir "${exp}/${t}/decode_${valid_set}_greedy" > /dev/null || die "scoring ${t} on ${valid_set} failed"
    done
    oracle_kd_shift_frames=$(${python} -m espnet_oracle.bin.onset_move \
        --conventional_decode_dir "${exp}/teacher_conventional/decode_${valid_set}_greedy" \
        --oracle_decode_dir "${exp}/teacher_oracle/decode_${valid_set}_greedy" --out "${exp}/oracle_kd_shift_frames.json") \
        || die "--oracle_kd_shift_frames auto: no move (see above)"
    log "--oracle_kd_shift_frames auto: ${oracle_kd_shift_frames} (the teachers' ${valid_set} onsets: ${exp}/oracle_kd_shift_frames.json)"
    set_system_opts
    student_dirs > /dev/null || die "bad student settings with the move ${oracle_kd_shift_frames} (see above)"
    results_opts=(--oracle_kd_shift_file "${exp}/oracle_kd_shift_frames.json")
fi

# student_args SYSTEM: the options that make a student a no-KD / KD run: the teacher's stored
# posteriors as data, or with --online_teacher true the teacher's config and checkpoint (model_conf).
student_args() {
    local teacher
    teacher=$(system_teacher posterior_teacher "$1")
    [ -n "${teacher}" ] || return 0
    local post=${exp}/${teacher}/posteriors shift
    shift=$(${python} -m espnet_oracle.utils.systems --systems "$1" --what kd_shift_frames "${system_opts[@]}") \
        || die "bad --conv_kd_shift_frames / --oracle_kd_shift_frames for $1"
    echo --model kd_student \
        --model_conf "kd_weight=${kd_weight}" --model_conf "kd_temperature=${kd_temperature}" \
        --model_conf "kd_frames=${kd_frames}"
    [ "${shift}" = 0 ] || echo --model_conf "kd_shift_frames=${shift}"
    if [ "${online_teacher}" = true ]; then
        echo --model_conf "online_teacher_config=${exp}/${teacher}/config.yaml" \
            --model_conf "online_teacher_model_file=$(teacher_model "${teacher}")"
    else
        # top-k dumps reach the loss as top-k (kd_loss.frame_kd_loss_topk), never expanded to V a frame;
        # the dump's own format decides (meta.json), not --post_format, so a dense dump stays readable
        local entry=teacher_post,teacher_posterior fmt=${post_format} meta=${post}/${train_set}/meta.json
        [ -f "${meta}" ] && fmt=$(${python} -c 'import json, sys; print(json.load(open(sys.argv[1]))["format"])' "${meta}")
        [ "${fmt}" = topk ] && entry=teacher_topk_post,teacher_topk_posterior
        echo --train_data_path_and_name_and_type "${post}/${train_set}/post.scp,${entry}" \
            --valid_data_path_and_name_and_type "${post}/${valid_set}/post.scp,${entry}"
    fi
}

# system_args SYSTEM: all training options of a student system: student_args (frame-level KD from
# stored posteriors) and what the KD variants add to it.
system_args() {
    local teacher
    case "$1" in
        convguided|oracleguided)  # Guided CTC without frame KD (then τ and the frames play no part)
            kd_weight=0.0 kd_temperature=1.0 kd_frames=all student_args "$1"
            echo --model_conf "guided_ctc_weight=${guided_ctc_weight}" ;;
        convkdguided|oraclekdguided)
            student_args "$1"
            echo --model_conf "guided_ctc_weight=${guided_ctc_weight}" ;;
        convseqkd|oracleseqkd)
            teacher=$(system_teacher hyps_teacher "$1")
            echo --model kd_student --model_conf kd_weight=0.0 --model_conf "seq_kd_weight=${seq_kd_weight}" \
                --train_data_path_and_name_and_type "$(teacher_hyps_dir "${teacher}" "${train_set}")/teacher_hyp.txt,teacher_hyp,teacher_hyps" \
                --valid_data_path_and_name_and_type "$(teacher_hyps_dir "${teacher}" "${valid_set}")/teacher_hyp.txt,teacher_hyp,teacher_hyps" ;;
        selfdistill)  # its own model (--self_distill_conf); temperature and frames as the students'
            echo --model_conf "kd_weight=${self_distill_kd_weight}" --model_conf "kd_temperature=${kd_temperature}" \
                --model_conf "kd_frames=${kd_frames}" ;;
        *) student_args "$1" ;;
    esac
}
# system_conf SYSTEM: the training config of a student system.
system_conf() { if [ "$1" = selfdistill ]; then echo "${self_distill_conf}"; else echo "${student_conf}"; fi; }

if run_stage 8; then
    stage_start 8 "train students (${student_systems}; seeds ${seeds})"
    need "${token_list}" "stage 3 (token list)"
    for teacher in $(system_teachers posterior_teacher); do
        if [ "${online_teacher}" = true ]; then  # the student loads the teacher itself
            need_teacher "${teacher}"
            need "${exp}/${teacher}/config.yaml" "stage 4/5 (teacher training)"
            continue
        fi
        for x in ${train_set} ${valid_set}; do
            need "${exp}/${teacher}/posteriors/${x}/post.scp" "stage 7 (dump teacher posteriors)"
            ${python} -m espnet_oracle.bin.check_posteriors \
                --post_scp "${exp}/${teacher}/posteriors/${x}/post.scp" \
                --feats_scp "${feats_dir}/${x}/${speech_file}" --token_list "${token_list}" \
                || die "teacher posteriors do not fit the ${x} set (see above)"
        done
    done
    for teacher in $(system_teachers hyps_teacher); do
        for x in ${train_set} ${valid_set}; do
            need "$(teacher_hyps_dir "${teacher}" "${x}")/teacher_hyp.txt" \
                "stage 7 (the hypotheses of ${teacher} for seq-KD, --seq_kd_nbest ${seq_kd_nbest})"
        done
    done
    for s in ${student_systems}; do
        conf=$(system_conf "${s}")
        [ -f "${conf}" ] || die "${s}: config ${conf} not found"
        args=$(system_args "${s}")
        for seed in ${seeds}; do
            name=$(student_dirs "${s}" "${seed}")
            # shellcheck disable=SC2086
            bg_start "student ${name} (see ${exp}/${name}/train.log)" \
                train_model "${name}" "${conf}" --seed "${seed}" ${args} ${student_train_opts}
            while [ "${#group_pids[@]}" -ge "${nj}" ]; do bg_wait_one; done
        done
    done
    bg_wait_all
    for s in ${student_systems}; do
        for name in $(student_dirs "${s}"); do
            if [ "${s}" = selfdistill ]; then  # its source-only path as a plain ESPnet model
                ${python} -m espnet_oracle.bin.export_self_distill --exp_dir "${exp}/${name}" \
                    || die "exporting ${name} failed (see above)"
            else
                ${python} -m espnet_oracle.bin.export_student --exp_dir "${exp}/${name}"
            fi
        done
    done
    stage_done 8 students
fi

if run_stage 9; then
    stage_start 9 "decode (${decode_modes})"
    systems="teacher_conventional teacher_oracle $(student_dirs)"
    for sys in ${systems}; do
        need "$(teacher_model ${sys})" "the training stage of ${sys}"
    done
    # shellcheck disable=SC2086
    ${python} -m espnet_oracle.bin.decode --exp "${exp}" --systems ${systems} \
        --dump_dir "${feats_dir}" --sets "${valid_set} ${test_sets}" \
        --modes "${decode_modes}" --beam_size "${beam_size}" --nj "${nj}" --student_model "${student_inference_model}"
    stage_done 9 decode
fi

if run_stage 10; then
    stage_start 10 "scoring, spike timing, plots, RESULTS.md"
    for sys in teacher_conventional teacher_oracle $(student_dirs); do
        for x in ${valid_set} ${test_sets}; do
            for mode in ${decode_modes}; do
                d=${exp}/${sys}/decode_${x}_${mode}
                need "${d}/text" "stage 9 (decode)"
                # shellcheck disable=SC2086
                ${python} -m espnet_oracle.bin.score --data_dir "data/${x}" --decode_dir "${d}" \
                    --condition_files ${condition_files} --extra_metrics ${extra_metrics} > /dev/null \
                    || die "scoring ${d} failed (see above)"
            done
        done
    done
    # shellcheck disable=SC2086
    ${python} -m espnet_oracle.bin.plot_posteriorgram --exp "${exp}" --dump_dir "${feats_dir}" \
        --data_dir data --set "$(echo ${test_sets} | cut -d' ' -f1)" --out_dir "${exp}/plots" \
        --systems teacher_conventional teacher_oracle $(student_dirs "${student_systems}" "${seeds%% *}") \
        ${plot_opts}
    stage_done 10 score
    ${python} -m espnet_oracle.bin.make_results --exp "${exp}" --recipe_dir "${recipe_dir}" \
        --sets "${valid_set} ${test_sets}" --train_set "${train_set}" --seeds "${seeds}" --out "${results}" \
        --condition_files "${condition_files}" --targets "${results_targets}" --extra_metrics "${extra_metrics}" \
        "${system_opts[@]}" --student_inference_model "${student_inference_model}" ${results_opts[@]+"${results_opts[@]}"}
    log "wrote ${results}"
fi
log "done (stages ${stage}..${stop_stage})"
