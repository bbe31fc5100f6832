#!/usr/bin/env bash
# LibriSpeech data preparation (shared by egs/librispeech_100 and egs/librispeech). Run from the recipe dir.
#
# Usage: local/data.sh [--stage 1] [--stop_stage 2] [--librispeech DIR] [--base_url URL]
#                      [--train_set NAME] [--train_parts "..."] [--dev_parts "..."] [--test_parts "..."]
#                      [--checksums FILE] [--data_dir data]
#
# Stages:
#   1  download + verify (md5/sha256, local/librispeech_checksums.tsv) + extract every needed part
#      into DIR (= --librispeech, else $LIBRISPEECH from db.sh/environment, else downloads/);
#      parts already extracted, or an extracted LibriSpeech/<part>/ tree you put there, are used as they are
#   2  Kaldi data dirs: data/<part with _> for every part, data/<train_set> (the train parts combined),
#      data/dev (= dev_clean + dev_other, the validation set, as in ESPnet's recipes)
# Speed perturbation is the pipeline's (run.sh: --speed_perturb_factors, data/<train_set>_sp).
# Defaults are the 100 h recipe's; the 960 h recipe passes its train parts and train set.
set -euo pipefail

log() { echo "$(basename "$0"): $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

local_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}

# shellcheck disable=SC1091
[ -f db.sh ] && . ./db.sh   # LIBRISPEECH, LIBRISPEECH_URL (the environment wins there)
stage=1
stop_stage=2
librispeech=${LIBRISPEECH:-downloads}
base_url=${LIBRISPEECH_URL:-https://www.openslr.org/resources/12}
checksums=${local_dir}/librispeech_checksums.tsv
train_set=train_clean_100
train_parts="train-clean-100"
dev_parts="dev-clean dev-other"
test_parts="test-clean test-other"
data_dir=data
seed=0   # accepted for the pipeline's interface; nothing here is random

usage() { sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//' >&2; }

options=" stage stop_stage librispeech base_url checksums train_set train_parts dev_parts test_parts data_dir seed "
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --*=*) name=${1%%=*}; name=${name#--}; value=${1#*=}; shift ;;
        --*) name=${1#--}; [ $# -ge 2 ] || { usage; die "option $1 needs a value"; }; value=$2; shift 2 ;;
        *) usage; die "unknown argument: $1" ;;
    esac
    [[ ${options} == *" ${name} "* ]] || { usage; die "unknown option --${name}"; }
    printf -v "${name}" '%s' "${value}"
done
for v in stage stop_stage; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "--${v} must be a non-negative integer, got '${!v}'"
done

run_stage() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }
parts="${train_parts} ${dev_parts} ${test_parts}"

if run_stage 1; then
    log "stage 1: LibriSpeech parts (${parts}) in ${librispeech}"
    "${python}" "${local_dir}/librispeech_download.py" --root "${librispeech}" --parts "${parts}" \
        --base_url "${base_url}" --checksums "${checksums}" || die "download/verification failed (see above)"
fi

if run_stage 2; then
    log "stage 2: Kaldi data dirs in ${data_dir}/"
    for part in ${parts}; do
        [ -d "${librispeech}/LibriSpeech/${part}" ] \
            || die "${librispeech}/LibriSpeech/${part} is missing: run stage 1, or set LIBRISPEECH (db.sh) to the folder holding LibriSpeech/"
        "${python}" "${local_dir}/librispeech_prep.py" prepare \
            --part_dir "${librispeech}/LibriSpeech/${part}" --out "${data_dir}/${part//-/_}"
    done
    combine() {  # out part...
        local out=$1; shift
        local dirs=()
        for p in "$@"; do dirs+=("${data_dir}/${p//-/_}"); done
        "${python}" "${local_dir}/librispeech_prep.py" combine --out "${data_dir}/${out}" "${dirs[@]}"
    }
    # shellcheck disable=SC2086
    [ "${train_set}" = "${train_parts//-/_}" ] || combine "${train_set}" ${train_parts}
    # shellcheck disable=SC2086
    combine dev ${dev_parts}
fi
log "done"
