#!/usr/bin/env bash
# Installs what local/synth_sentences.py needs, if missing: the espeak-ng speech synthesiser and
# the WordNet 3.0 database (its example sentences are the corpus text), both Debian packages.
# Licences: see ../README.md ("Corpus").
#
# Usage: local/install_espeak.sh [--check]
#   --check   only report what is missing (exit 1 if anything is), install nothing.
#
# Needs apt-get and root (or sudo) when something is missing. Elsewhere install espeak-ng yourself
# (or pass --synth_cmd to local/data.sh) and give the text with --text_file.
set -euo pipefail
here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
exec "${here}/../../../scripts/apt_install.sh" install_espeak.sh "$@" \
    --hint "or pass --synth_cmd / --text_file to local/data.sh" \
    espeak-ng=command:espeak-ng wordnet-base=/usr/share/wordnet/data.noun
