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

check_only=false
[ "${1:-}" = "--check" ] && check_only=true

# Debian package -> what shows it is installed
missing=()
command -v espeak-ng > /dev/null 2>&1 || missing+=(espeak-ng)
[ -f /usr/share/wordnet/data.noun ] || missing+=(wordnet-base)

if [ ${#missing[@]} -eq 0 ]; then
    echo "install_espeak.sh: espeak-ng ($(espeak-ng --version | head -n1)) and WordNet are installed"
    exit 0
fi
echo "install_espeak.sh: missing: ${missing[*]}" >&2
${check_only} && exit 1
if ! command -v apt-get > /dev/null 2>&1; then
    echo "install_espeak.sh: ERROR: no apt-get here; install ${missing[*]} by hand (or use --synth_cmd / --text_file)" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo > /dev/null 2>&1; then
        sudo="sudo"
    else
        echo "install_espeak.sh: ERROR: need root or sudo to run apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; }; then
    echo "install_espeak.sh: ERROR: apt-get could not install ${missing[*]} (no package index or network?);" \
         "install them by hand, or pass --synth_cmd / --text_file to local/data.sh" >&2
    exit 1
fi
if ! command -v espeak-ng > /dev/null 2>&1 || [ ! -f /usr/share/wordnet/data.noun ]; then
    echo "install_espeak.sh: ERROR: installed ${missing[*]}, but espeak-ng or /usr/share/wordnet/data.noun is still missing" >&2
    exit 1
fi
echo "install_espeak.sh: installed ${missing[*]}"
