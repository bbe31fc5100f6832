#!/usr/bin/env bash
# The default recipe: noisy connected digits made from the Free Spoken Digit Dataset (FSDD).
# This file only sets the recipe's options; the stages (0-10) are the generic pipeline
# scripts/oracle_asr.sh (see README.md "Layout"; `./run.sh --help` lists stages and options).
# The recipe's own files: local/data.sh (data preparation), conf/ (ESPnet configs), db.sh
# (where FSDD lives: FSDD=/path ./run.sh). Outputs go to data/ dump/ exp/ RESULTS.md here.
#   ./run.sh --stage 4 --stop_stage 6
#   ./run.sh --local_data_opts "--num_train 600 --seed 1"   (options of local/data.sh)
set -euo pipefail
# Runs in the current dir, the recipe dir (normally this one; tests use temporary dirs with links
# to conf/ and local/).
root=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
exec "${root}/scripts/oracle_asr.sh" \
    --feats_type fbank --fs 16000 --n_mels 80 \
    --train_set train --valid_set dev --test_sets "test test_unseen" \
    --token_type char \
    --teacher_conf conf/train_teacher_conventional.yaml \
    --oracle_conf conf/train_teacher_oracle.yaml \
    --student_conf conf/train_student.yaml \
    --probe_sets "dev test test_unseen" \
    --condition_files "utt2snr utt2noise" \
    --results_targets "oraclekd<=0.8*nokd oraclekd<convkd" \
    "$@"
