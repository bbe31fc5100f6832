#!/usr/bin/env bash
# Data preparation for <corpus> (TEMPLATE: replace the body). Runs from the recipe dir with the
# options of run.sh's --local_data_opts. For every set (train, dev, test sets) write data/<set>/,
# sorted by utterance id (LC_ALL=C sort), the same ids in every file:
#   wav.scp  <utt> <path to audio>  (fbank/raw; any rate, resampled to --fs)
#   text     <utt> <transcript>     utt2spk <utt> <speaker>     spk2utt <speaker> <utt> <utt> ...
# Optional: utt2<condition> files (--condition_files), word_align (<utt> <index> <word> <start s> <end s>:
# spike timing). Skip finished sets; fail with a message naming what is missing.
set -euo pipefail
[ -f db.sh ] && . ./db.sh
if [ -z "${MYCORPUS:-}" ] || [ ! -d "${MYCORPUS}" ]; then
    echo "local/data.sh: corpus not found at '${MYCORPUS:-}'; set MYCORPUS=/path/to/corpus (db.sh or environment)" >&2
    exit 1
fi
echo "local/data.sh: TEMPLATE recipe — write the data preparation for ${MYCORPUS} here" >&2
exit 1
