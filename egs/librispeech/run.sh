#!/usr/bin/env bash
# LibriSpeech 960 h recipe: train_960 = train-clean-100 + train-clean-360 + train-other-500
# (speed-perturbed 0.9/1.0/1.1), valid = dev (dev-clean + dev-other), tests dev-clean, dev-other,
# test-clean, test-other. This file only sets the recipe's options; the stages (0-10) are the
# generic pipeline scripts/oracle_asr.sh (`./run.sh --help` lists stages and options). The recipe's
# own files: local/data.sh (the 100 h recipe's, with the 960 h train parts), conf/, db.sh (LIBRISPEECH).
#   LIBRISPEECH=/data/librispeech ./run.sh --stop_stage 3     # data dirs, stats/shapes, BPE units
#   ./run.sh --stage 4 --ngpu 8
#   Without speed perturbation: ./run.sh --speed_perturb_factors ""
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")"
[ -x "${root}/scripts/oracle_asr.sh" ] || root=${ESPNET_ORACLE_ROOT:?"set ESPNET_ORACLE_ROOT to the espnet-oracle checkout"}
# --speed_perturb_factors: stage 1 trains on data/<train set>_sp (as ESPnet's LibriSpeech recipes).
# --bpemode unigram: sentencepiece model type of ESPnet's asr.sh (--nbpe 5000 as its librispeech recipe).
exec "${root}/scripts/oracle_asr.sh" \
    --feats_type raw --fs 16000 \
    --train_set train_960 --valid_set dev \
    --test_sets "dev_clean dev_other test_clean test_other" \
    --speed_perturb_factors "0.9 1.0 1.1" \
    --token_type bpe --nbpe 5000 --bpemode unigram \
    --teacher_conf conf/train_teacher_conventional.yaml \
    --oracle_conf conf/train_teacher_oracle.yaml \
    --student_conf conf/train_student.yaml \
    --probe_sets "dev test_clean test_other" \
    "$@"
