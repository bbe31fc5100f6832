#!/usr/bin/env bash
# GPU check of the LibriSpeech-100 configs (one prepared script, <= 10 min, no network needed).
#
# Usage: local/gpu_check.sh [--wheelhouse wheelhouse] [--out_dir exp/gpu_check] [--steps 200]
#                             [--max_seconds 60] [--dry_run]
#
# On a machine with Python 3.12 + torch/torchaudio 2.11 and a GPU: installs the wheels made by
# local/build_wheelhouse.sh offline into <out_dir>/site (pip install --no-index --no-deps
# --target; nothing outside that folder changes), then runs
# egs/librispeech_100/local/gpu_check.py from this repository (PYTHONPATH): the 100 h teacher,
# Oracle Teacher and student (plain CTC and KD) plus the teacher built by stock ESPnet, each
# trained --steps steps with AMP on synthetic LibriSpeech-shaped batches. Prints and writes
# <out_dir>/gpu_check.md / .json: utterances/s, frames/s, peak GPU memory, KD step / CTC step,
# project / stock teacher step. Paste gpu_check.md into egs/librispeech_100/README.md.
#
# --dry_run: no install, no CUDA; the current environment (. ./path.sh), tiny models, 2 steps
# on the CPU -- checks the logic only (tests/test_librispeech_configs.py runs it).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
wheelhouse=${repo_root}/wheelhouse
out_dir=exp/gpu_check
steps=200
max_seconds=60
dry_run=false
while [ $# -gt 0 ]; do
    case "$1" in
        --wheelhouse) wheelhouse=$2; shift 2 ;;
        --out_dir) out_dir=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --max_seconds) max_seconds=$2; shift 2 ;;
        --dry_run) dry_run=true; shift ;;
        -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1" >&2; exit 1 ;;
    esac
done
log() { echo "gpu_check.sh: $*" >&2; }
mkdir -p "${out_dir}"
check=${repo_root}/egs/librispeech_100/local/gpu_check.py

if [ "${dry_run}" = true ]; then
    log "dry run (CPU, tiny models): ${out_dir}"
    exec python3 "${check}" --out_dir "${out_dir}" --dry_run
fi

python=${PYTHON:-python3}
"${python}" -c 'import torch, torchaudio; assert torch.cuda.is_available(), "no CUDA device"; print("torch", torch.__version__, torch.cuda.get_device_name(0))' \
    || { log "need torch/torchaudio with a CUDA device"; exit 1; }
site=${out_dir}/site
if [ ! -f "${site}/.installed" ]; then
    ls "${wheelhouse}"/*.whl > /dev/null 2>&1 || { log "no wheels in ${wheelhouse}: run local/build_wheelhouse.sh where there is network, copy it here"; exit 1; }
    log "installing $(ls "${wheelhouse}"/*.whl | wc -l) wheels offline into ${site}"
    "${python}" -m pip install -q --no-index --no-deps --target "${site}" "${wheelhouse}"/*.whl
    touch "${site}/.installed"
fi
export PYTHONPATH="${repo_root}:${site}${PYTHONPATH:+:${PYTHONPATH}}"
export NLTK_DATA=${site}/nltk_data MPLBACKEND=Agg PYTHONIOENCODING=UTF-8
log "training teacher / oracle / student / student_kd / student_kd_topk / teacher_stock, ${steps} steps each (<= ${max_seconds} s each)"
"${python}" "${check}" --out_dir "${out_dir}" --steps "${steps}" --max_seconds "${max_seconds}"
cat "${out_dir}/gpu_check.md"
