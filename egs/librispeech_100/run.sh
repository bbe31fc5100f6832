#!/usr/bin/env bash
# LibriSpeech 100 h recipe (train-clean-100; dev = dev-clean + dev-other; tests: dev/test clean/other).
# Everything but data preparation (local/data.sh) and configs (conf/) comes from ../../run.sh.
#
# WIRING PENDING (issue 8, corpus-agnostic pipeline): the configs read raw 16 kHz audio
# (frontend: default, i.e. feats_type=raw) and ESPnet trains its BPE with sentencepiece
# --model_type unigram; the pipeline of this commit extracts fbank features and trains
# sentencepiece "bpe". Stages 1-3 (data, features/stats, BPE units) run today; training
# stages need feats_type/bpemode passed through (the two variables below).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

train_set=train_clean_100
valid_set=dev
test_sets="dev_clean dev_other test_clean test_other"
speed_perturb_factors=0.9,1.0,1.1   # as ESPnet's LibriSpeech recipes; "" for none
nbpe=5000                           # ESPnet egs2/librispeech_100/asr1/run.sh: --nbpe 5000
bpemode=unigram                     # ESPnet asr.sh's default sentencepiece model type (to wire)
feats_type=raw                      # conf/*.yaml: frontend: default (to wire)

sp_suffix=${speed_perturb_factors:+_sp}
data_opts="--nj 4"
[ -n "${speed_perturb_factors}" ] && data_opts+=" --speed_perturb_factors ${speed_perturb_factors}"

exec ../../run.sh --train_set "${train_set}${sp_suffix}" --valid_set "${valid_set}" \
    --test_sets "${test_sets}" --probe_sets "${valid_set} test_clean test_other" \
    --token_type bpe --nbpe "${nbpe}" --data_opts "${data_opts}" "$@"
