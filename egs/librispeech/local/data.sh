#!/usr/bin/env bash
# LibriSpeech 960 h data preparation: the 100 h recipe's local/data.sh (shared, not copied) with
# all three training parts combined into data/train_960. Options as there; later options win.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/../../librispeech_100/local/data.sh" \
    --train_set train_960 --train_parts "train-clean-100 train-clean-360 train-other-500" "$@"
