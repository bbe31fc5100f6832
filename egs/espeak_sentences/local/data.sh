#!/usr/bin/env bash
# Data preparation of the espeak-ng sentence corpus (stage 1 of the pipeline; run from the recipe dir).
# Every option goes to local/synth_sentences.py (see its --help), e.g.
#   local/data.sh --num_train 2400 --num_dev 200 --num_test 300 --num_test_unseen 300 --seed 1 --nj 2
# Unless --synth_cmd is given (tests: a fake synthesiser), espeak-ng is installed first if missing
# (local/install_espeak.sh); unless --text_file is given, so is WordNet (the sentences).
set -euo pipefail
log() { echo "$(basename "$0"): $*" >&2; }

own_synth=false own_text=false
for a in "$@"; do
    case "${a}" in
        --synth_cmd|--synth_cmd=*) own_synth=true ;;
        --text_file|--text_file=*) own_text=true ;;
    esac
done
if ! ${own_synth} || ! ${own_text}; then
    if ! "$(dirname "$0")/install_espeak.sh" --check > /dev/null 2>&1; then
        # only what this run needs: with both --synth_cmd and --text_file nothing is installed
        if { ! ${own_synth} && ! command -v espeak-ng > /dev/null 2>&1; } || \
           { ! ${own_text} && [ ! -f /usr/share/wordnet/data.noun ]; }; then
            "$(dirname "$0")/install_espeak.sh" || {
                log "ERROR: espeak-ng / WordNet could not be installed (see above)"; exit 1; }
        fi
    fi
fi
python=${PYTHON:-$(command -v python || command -v python3)}
exec "${python}" "$(dirname "$0")/synth_sentences.py" "$@"
