#!/usr/bin/env bash
# Recipe: English sentences spoken by espeak-ng (many voices, speeds, pitches; white/pink/brown
# noise), BPE units: the BPE-scale de-risk of the Oracle Teacher (issue 10; README.md here).
# This file only sets the recipe's options; stages 0-10 are the generic pipeline
# ../../scripts/oracle_asr.sh (`./run.sh --help`). Outputs: data/ dump/ exp/ RESULTS.md here.
#   ./run.sh --stop_stage 6            the de-risk: data, features, BPE, both teachers, copy probe
#   local/anticopy_variants.sh         Oracle Teacher anti-copy variants + their probes (README.md)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
root=$(cd ../.. && pwd)
[ -x "${root}/scripts/oracle_asr.sh" ] || root=${ESPNET_ORACLE_ROOT:?"set ESPNET_ORACLE_ROOT to the espnet-oracle checkout"}
# 16 kHz (espeak-ng's fricatives reach 8 kHz; LibriSpeech is 16 kHz), 40 mel bins (CPU cost).
# No speed perturbation: every utterance already has its own random speaking rate.
# BPE: 300 unigram pieces (README.md "Units").
exec "${root}/scripts/oracle_asr.sh" \
    --feats_type fbank --fs 16000 --n_mels 40 \
    --train_set train --valid_set dev --test_sets "test test_unseen" \
    --token_type bpe --nbpe 300 --bpemode unigram \
    --teacher_conf conf/train_teacher_conventional.yaml \
    --oracle_conf conf/train_teacher_oracle.yaml \
    --student_conf conf/train_student.yaml \
    --probe_sets "dev test test_unseen" \
    --condition_files "utt2snr utt2noise" \
    --local_data_opts "--num_train 2400 --num_dev 200 --num_test 300 --num_test_unseen 300 --seed 1 --nj 2" \
    "$@"
