#!/usr/bin/env bash
# Stage 2 of the synth_words recipe (--feats_type extracted): word images -> pixel-column features.
# Usage: local/extract_features.sh <data_dir> <out_dir> [extract_image_features.py options]
# Writes <out_dir>/feats.scp (+ data/feats.ark), feats_shape ("uttid W,32"), utt2num_frames,
# copies of text/utt2spk/spk2utt (see local/extract_image_features.py). The options of the
# extractor (e.g. --channels 3, --max_width 320) can also come from STR_FEATURE_OPTS in db.sh or
# the environment; --channels 3 needs input_size 96 in conf/.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 <data_dir> <out_dir> [options]" >&2; exit 2; }
[ -f db.sh ] && . ./db.sh
data_dir=$1 out_dir=$2; shift 2
# shellcheck disable=SC2086
exec "${PYTHON:-python}" local/extract_image_features.py --data_dir "${data_dir}" --out_dir "${out_dir}" \
    ${STR_FEATURE_OPTS:-} "$@"
