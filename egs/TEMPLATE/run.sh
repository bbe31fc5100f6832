#!/usr/bin/env bash
# Recipe for <corpus>. Copy egs/TEMPLATE to egs/<corpus>, then change the options below, db.sh,
# local/data.sh and conf/. Everything else (stages 0-10) is the generic pipeline
# scripts/oracle_asr.sh; `./run.sh --help` lists its options. Outputs go to data/ dump/ exp/ here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
root=$(cd ../.. && pwd)
[ -x "${root}/scripts/oracle_asr.sh" ] || root=${ESPNET_ORACLE_ROOT:?"set ESPNET_ORACLE_ROOT to the espnet-oracle checkout"}
# --feats_type: fbank (log-mel from wav.scp, resampled to --fs), raw (the config's frontend computes
#   features), or extracted (your local/extract_features.sh <data_dir> <out_dir> writes feats.scp + feats_shape).
# --test_sets: the sets local/data.sh writes besides --train_set and --valid_set.
# --token_type char | word | bpe (--nbpe N, --bpemode unigram|bpe: the sentencepiece model type).
# Optional: --local_data_opts "..." (options of your local/data.sh), --condition_files "utt2snr ..."
#   (per-condition WER tables from data/<set>/ files), --results_targets "oraclekd<=0.8*nokd".
exec "${root}/scripts/oracle_asr.sh" \
    --feats_type fbank --fs 16000 --n_mels 80 \
    --train_set train --valid_set dev --test_sets "test" \
    --token_type char \
    --teacher_conf conf/train_teacher_conventional.yaml \
    --oracle_conf conf/train_teacher_oracle.yaml \
    --student_conf conf/train_student.yaml \
    "$@"
