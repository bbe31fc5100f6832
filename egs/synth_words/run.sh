#!/usr/bin/env bash
# Scene-text recognition on rendered word images (issue 9): CRNN-style CTC models read cropped
# word images; conventional teacher, Oracle Teacher, students no-KD / conventional-KD / Oracle-KD.
# This file only sets the recipe's options; the stages (0-10) are the generic pipeline
# ../../scripts/oracle_asr.sh (`./run.sh --help` lists its stages and options). The recipe's own
# files: local/data.sh (stage 1: render words, read real benchmarks), local/extract_features.sh
# (stage 2: image columns), conf/ (CRNN configs), db.sh (STR_BENCHMARKS, STR_FEATURE_OPTS).
# Outputs go to data/ dump/ exp/ RESULTS.md in the current dir when it is a synth_words recipe dir
# (this one, or a copy / a dir with links to local/ and conf/), else in this script's dir.
#   ./run.sh                                   all stages, default sizes
#   ./run.sh --quick                           smoke run: small data, 1 epoch, 1 seed (3.5 min on 2 cores)
#   ./run.sh --stage 4 --stop_stage 6
#   ./run.sh --local_data_opts "--num_train 2000 --seed 2"   (options of local/render_words.py)
#   STR_BENCHMARKS="/data/evaluation" ./run.sh  (real benchmarks as more test sets; see README.md)
set -euo pipefail
here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
[ -f local/render_words.py ] || cd "${here}"
root=$(cd "${here}/../.." && pwd)
[ -x "${root}/scripts/oracle_asr.sh" ] || root=${ESPNET_ORACLE_ROOT:?"set ESPNET_ORACLE_ROOT to the espnet-oracle checkout"}

quick=()
if [ "${1:-}" = --quick ]; then
    shift
    # later options (the command line's) win over these
    quick=(--local_data_opts "--num_train 600 --num_dev 60 --num_test 100 --num_test_unseen_fonts 100"
           --teacher_train_opts "--max_epoch 1" --student_train_opts "--max_epoch 1"
           --seeds 1 --decode_modes greedy)
fi

# Students are decoded from their best epoch by validation loss, not ESPnet's average of the 3 best:
# after 5 epochs they are still leaving the CTC plateau, and the average of epochs 3-5 read fewer dev
# words for every system (3 seeds, 2026-11-29: no KD 2.6 vs 8.7 %, conventional KD 20.3 vs 28.1 %,
# Oracle KD 31.8 vs 38.7 %; README "Results").
test_sets="test test_unseen_fonts"
[ -f db.sh ] && . ./db.sh
if [ -n "${STR_BENCHMARKS:-}" ]; then
    # shellcheck disable=SC1091
    . "${root}/path.sh"
    # shellcheck disable=SC2086
    benchmarks=$(python local/benchmark_reader.py --list_names ${STR_BENCHMARKS}) \
        || { echo "$0: bad STR_BENCHMARKS (see above)" >&2; exit 1; }
    test_sets+=" $(echo ${benchmarks})"
fi

exec "${root}/scripts/oracle_asr.sh" \
    --feats_type extracted \
    --train_set train --valid_set dev --test_sets "${test_sets}" \
    --token_type char \
    --teacher_conf conf/train_teacher_conventional.yaml \
    --oracle_conf conf/train_teacher_oracle.yaml \
    --student_conf conf/train_student.yaml \
    --probe_sets "dev test test_unseen_fonts" \
    --extra_metrics "word_accuracy one_minus_ned" \
    --decode_modes greedy \
    --plot_opts "--image_input --num_utts 4" \
    --results_targets "oraclekd<convkd" \
    --student_inference_model valid.loss.best.pth \
    "${quick[@]}" "$@"
