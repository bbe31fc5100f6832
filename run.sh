#!/usr/bin/env bash
# The default recipe: noisy connected digits made from the Free Spoken Digit Dataset (FSDD).
# This file only sets the recipe's options; the stages (0-10) are the generic pipeline
# scripts/oracle_asr.sh (see README.md "Layout"; `./run.sh --help` lists stages and options).
# The recipe's own files: local/data.sh (data preparation), conf/ (ESPnet configs), db.sh
# (where FSDD lives: FSDD=/path ./run.sh). Outputs go to data/ dump/ exp/ RESULTS.md here.
#   ./run.sh                       the whole recipe (measured 24-36 min on 2 idle CPU cores; README "Results")
#   ./run.sh --quick               smoke run of every stage in a few minutes: small sets, 2 epochs,
#                                  1 seed, greedy decoding; outputs in exp_quick/ dump_quick/
#                                  RESULTS_quick.md (data/ is rebuilt at the quick sizes); the
#                                  options after or before it still apply (they win over its own)
#   ./run.sh --stage 4 --stop_stage 6
#   ./run.sh --local_data_opts "--num_train 600 --seed 1"   (options of local/data.sh)
set -euo pipefail
# Runs in the current dir, the recipe dir (normally this one; tests use temporary dirs with links
# to conf/ and local/).
root=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
quick=()
args=()
for arg in "$@"; do
    if [ "${arg}" = --quick ]; then
        # the command line's other options come later, so they win over these
        quick=(--local_data_opts "--num_train 150 --num_dev 40 --num_test 60 --num_test_unseen 60"
               --teacher_train_opts "--max_epoch 2" --student_train_opts "--max_epoch 2"
               --seeds 1 --decode_modes greedy --exp exp_quick --dump dump_quick --results RESULTS_quick.md)
    else
        args+=("${arg}")
    fi
done
if [ ! -f local/data.sh ] && [[ " $* " != *" --help "* && " $* " != *" -h "* ]]; then
    echo "run.sh: no local/data.sh in $(pwd): run it from the recipe dir (cd ${root} && ./run.sh)" >&2
    exit 1
fi
# Why these defaults (README "Default recipe: design by measurement"): word units (a digit
# vocabulary; char units lose the word separators), 3-way speed perturbation + SpecAugment (voices
# other than FSDD's five), an 8 kHz front-end (FSDD is 8 kHz speech), KD on the teacher's
# non-blank frames over the non-blank tokens only (teacher_nonblank_words: the KD term cannot move the
# student's blank balance; better than teacher_nonblank in all 12 comparisons of README Results "Why KD
# does not help these students").
exec "${root}/scripts/oracle_asr.sh" \
    --feats_type fbank --fs 8000 --n_mels 40 \
    --train_set train --valid_set dev --test_sets "test test_unseen" \
    --speed_perturb_factors "0.9 1.0 1.1" \
    --token_type word \
    --teacher_conf conf/train_teacher_conventional.yaml \
    --oracle_conf conf/train_teacher_oracle.yaml \
    --student_conf conf/train_student.yaml \
    --kd_frames teacher_nonblank_words \
    --probe_sets "dev test test_unseen" \
    --condition_files "utt2snr utt2noise" \
    --results_targets "oraclekd<=0.8*nokd oraclekd<convkd" \
    "${quick[@]}" ${args[@]+"${args[@]}"}
