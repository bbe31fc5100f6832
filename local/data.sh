#!/usr/bin/env bash
# Data preparation of the default corpus: noisy connected digits built from the
# Free Spoken Digit Dataset (FSDD, CC BY-SA 4.0). Run from the recipe root.
#
# Usage: local/data.sh [--fsdd DIR] [--seed N] [--num_train N] [--num_dev N]
#                      [--num_test N] [--num_test_unseen N] [--unseen_speaker NAME]
#                      [--snrs "20 15 10 5 0"] [--babble_speakers other|any] [--data_dir data]
#
# Corpus location, first found wins: --fsdd; $FSDD (environment, or db.sh in the
# current folder); downloads/free-spoken-digit-dataset*/ already downloaded; else
# the pinned FSDD commit is downloaded into downloads/ (set FSDD_URL to use a
# mirror of the archive). See local/prepare_fsdd_digits.py for what is built.
set -euo pipefail

log() { echo "$(basename "$0"): $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

fsdd=
seed=0
num_train=1200
num_dev=200
num_test=300
num_test_unseen=300
unseen_speaker=yweweler
snrs="20 15 10 5 0"     # SNRs (dB) of the noisy utterances
babble_speakers=other   # babble talkers: other speakers than the utterance's | any
data_dir=data

usage() {
    sed -n '5,8p' "$0" | sed 's/^# \{0,1\}//' >&2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --fsdd|--seed|--num_train|--num_dev|--num_test|--num_test_unseen|--unseen_speaker|--snrs|--babble_speakers|--data_dir)
            [ $# -ge 2 ] || { usage; die "option $1 needs a value"; }
            name=${1#--}
            printf -v "${name}" '%s' "$2"
            shift 2
            ;;
        --fsdd=*|--seed=*|--num_train=*|--num_dev=*|--num_test=*|--num_test_unseen=*|--unseen_speaker=*|--snrs=*|--babble_speakers=*|--data_dir=*)
            name=${1%%=*}
            name=${name#--}
            printf -v "${name}" '%s' "${1#*=}"
            shift
            ;;
        -h|--help)
            usage
            exit 0
            ;;
        *)
            usage
            die "unknown argument: $1"
            ;;
    esac
done

for v in seed num_train num_dev num_test num_test_unseen; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "--${v} must be a non-negative integer, got '${!v}'"
done

# Pinned FSDD version (the commit the project was developed with).
fsdd_commit=26eb9aaf76e81b692f806f9140c2d2777410d7a1
fsdd_url=${FSDD_URL:-https://github.com/Jakobovski/free-spoken-digit-dataset/archive/${fsdd_commit}.tar.gz}

has_recordings() {
    compgen -G "$1/recordings/*.wav" > /dev/null
}

download_fsdd() {
    local archive="downloads/fsdd-${fsdd_commit}.tar.gz"
    mkdir -p downloads
    if [ ! -s "${archive}" ]; then
        log "downloading FSDD (commit ${fsdd_commit}) from ${fsdd_url}"
        local ok=false
        if command -v curl > /dev/null; then
            curl -fL --retry 2 --connect-timeout 20 -o "${archive}.part" "${fsdd_url}" && ok=true
        elif command -v wget > /dev/null; then
            wget -q --tries=2 --timeout=20 -O "${archive}.part" "${fsdd_url}" && ok=true
        else
            log "neither curl nor wget is installed"
        fi
        if ! ${ok}; then
            rm -f "${archive}.part"
            log "ERROR: could not download the Free Spoken Digit Dataset from ${fsdd_url}"
            log "  If you have a local copy (a folder with recordings/*.wav), point FSDD at it:"
            log "    FSDD=/path/to/fsdd ./run.sh     (or set FSDD=/path/to/fsdd in db.sh)"
            exit 1
        fi
        mv "${archive}.part" "${archive}"
    fi
    local tmp=downloads/.fsdd_extract.tmp
    rm -rf "${tmp}"
    mkdir -p "${tmp}"
    tar -xzf "${archive}" -C "${tmp}" || die "cannot unpack ${archive}; delete it and rerun"
    local top
    for top in "${tmp}"/*/; do
        top=${top%/}
        if has_recordings "${top}"; then
            rm -rf "downloads/$(basename "${top}")"
            mv "${top}" downloads/
            rm -rf "${tmp}"
            fsdd="downloads/$(basename "${top}")"
            log "FSDD unpacked into ${fsdd}"
            log "  FSDD is CC BY-SA 4.0: attribute 'Free Spoken Digit Dataset (FSDD), Zohar Jackson et al.'"
            return 0
        fi
    done
    die "${archive} does not contain a folder with recordings/*.wav"
}

if [ -z "${fsdd}" ]; then
    if [ -z "${FSDD:-}" ] && [ -f db.sh ]; then
        # shellcheck disable=SC1091
        . ./db.sh
    fi
    fsdd=${FSDD:-}
fi
if [ -z "${fsdd}" ]; then
    for d in downloads/free-spoken-digit-dataset*/; do
        d=${d%/}
        if [ -d "${d}" ] && has_recordings "${d}"; then
            fsdd=${d}
            break
        fi
    done
fi
[ -n "${fsdd}" ] || download_fsdd

[ -d "${fsdd}" ] || die "FSDD corpus directory not found: ${fsdd} (set FSDD=/path/to/fsdd or edit db.sh)"
has_recordings "${fsdd}" || die "no recordings/*.wav in FSDD corpus directory ${fsdd}"
log "FSDD corpus: ${fsdd}"

if [ -n "${PYTHON:-}" ]; then
    python=${PYTHON}
elif command -v python > /dev/null; then
    python=python
else
    python=python3
fi

"${python}" "$(dirname "$0")/prepare_fsdd_digits.py" \
    --fsdd "${fsdd}" \
    --data_dir "${data_dir}" \
    --seed "${seed}" \
    --num_train "${num_train}" \
    --num_dev "${num_dev}" \
    --num_test "${num_test}" \
    --num_test_unseen "${num_test_unseen}" \
    --unseen_speaker "${unseen_speaker}" \
    --snrs "${snrs}" \
    --babble_speakers "${babble_speakers}"
