#!/usr/bin/env bash
# Stage 1 of the synth_words recipe: render the word-image sets and convert the optional
# real benchmarks. Runs from the recipe dir; writes data/{train,dev,test,test_unseen_fonts}/
# (+ data/<benchmark>/) with img.scp, text, utt2spk, spk2utt. Idempotent (per-set .done stamps).
# Usage: local/data.sh [render_words.py options, e.g. --seed 2 --num_train 2000]
set -euo pipefail
[ -f db.sh ] && . ./db.sh
# The packaged fonts and word list are installed when missing, unless the options name both
# --font_dirs and --word_list (then everything comes from the user; the tests do this).
case " $* " in
    *" --font_dirs "*" --word_list "*|*" --word_list "*" --font_dirs "*) ;;
    *) local/install_fonts.sh --check > /dev/null 2>&1 || local/install_fonts.sh ;;
esac
"${PYTHON:-python}" local/render_words.py --data_dir data --image_dir data/images "$@"
if [ -n "${STR_BENCHMARKS:-}" ]; then
    # shellcheck disable=SC2086
    "${PYTHON:-python}" local/benchmark_reader.py --data_dir data --image_dir data/images ${STR_BENCHMARKS}
fi
