#!/usr/bin/env bash
# Download the wheels a GPU machine with only Python 3.12 + torch/torchaudio 2.11 lacks to train
# this project's ESPnet configs (local/gpu_check.sh installs them there, offline).
#
# Usage: local/build_wheelhouse.sh [--out wheelhouse] [--python_version 3.12] [--preinstalled "numpy scipy ..."]
#
# Explicit list, --no-deps, pinned to the versions this project is tested with (.venv): the
# import closure of espnet_oracle.tasks.oracle_asr + espnet2.bin.asr_train + the training
# step (found by tracing the modules loaded by `local/gpu_check.py --dry_run`). Binary wheels
# for manylinux x86_64 / CPython 3.12; pure-Python packages that publish only an sdist are
# built into py3-none-any wheels here. The project itself is not packaged: gpu_check.sh runs
# from a copy of the repository (PYTHONPATH). Needs network (PyPI); run it here, copy the
# folder along. It is git-ignored.
#
# Size (measured): 136 MB in 50 wheels, over the 60 MB aim: ESPnet's ASR task imports librosa
# (-> numba 4 MB, llvmlite 60 MB) and scipy (35 MB) at import time, numpy is 17 MB, h5py 5 MB; the
# script prints the total. --preinstalled drops the packages the GPU machine's image already has
# (names as in the lists below, case-insensitive; gpu_check.sh checks they import there): with
# the list in README "GPU check" for the image of the H200 machines used here, 32 wheels, 13 MB.
set -euo pipefail

out=wheelhouse
python_version=3.12
preinstalled=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --python_version) python_version=$2; shift 2 ;;
        --preinstalled) preinstalled=$2; shift 2 ;;
        -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build_wheelhouse.sh: unknown argument $1" >&2; exit 1 ;;
    esac
done
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
pip=${PIP:-pip}
abi=cp${python_version/./}

# compiled: need the target's platform/ABI
binary=(
    numpy==2.4.6 scipy==1.17.1 numba==0.68.1 llvmlite==0.50.0 h5py==3.16.0
    sentencepiece==0.2.0 PyYAML==6.0.4 regex==2026.11.19 cffi==2.1.1 msgpack==1.2.4
    editdistance==0.8.1 soundfile==0.14.0 charset-normalizer==3.5.3
)
# pure Python
pure=(
    espnet==202511 librosa==0.11.0 lazy-loader==0.6 joblib==1.6.0 decorator==5.3.1 pooch==1.9.0
    platformdirs==4.14.8 nltk==3.10.4 espnet-g2p-en==2.1.0.post1 inflect==7.6.0
    more-itertools==11.2.1 jaraco.functools==4.6.0 hydra-core==1.3.8 omegaconf==2.3.1
    antlr4-python3-runtime==4.9.3 attrs==26.1.0 cloudpickle==3.1.3 defusedxml==0.7.1
    einops==0.8.2 humanfriendly==10.0 jaconv==0.5.0 jamo==0.4.1 espnet_tts_frontend==0.0.4
    Unidecode==1.4.0 kaldiio==2.18.1 opt_einsum==3.4.0 packaging==26.4 pycparser==3.12
    tqdm==4.70.1 typeguard==4.6.1 ConfigArgParse==1.9.0 torch-complex==0.4.4 click==8.5.1
    requests==2.34.2 urllib3==2.8.0 idna==3.20 certifi==2026.10.19.post1
)

# keep a requirement unless its name is in --preinstalled
drop_preinstalled() {
    local req name
    for req in "$@"; do
        name=${req%%==*}
        if echo " ${preinstalled,,} " | grep -q -- " ${name,,} "; then
            echo "build_wheelhouse.sh: skipping ${req} (preinstalled)" >&2
        else
            echo "${req}"
        fi
    done
}
mapfile -t binary < <(drop_preinstalled "${binary[@]}")
mapfile -t pure < <(drop_preinstalled "${pure[@]}")

mkdir -p "${out}"
echo "build_wheelhouse.sh: ${#binary[@]} binary wheels (${abi}, manylinux x86_64) -> ${out}" >&2
"${pip}" download --no-deps --only-binary=:all: --python-version "${python_version}" \
    --implementation cp --abi "${abi}" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "${out}" "${binary[@]}"
echo "build_wheelhouse.sh: ${#pure[@]} pure-Python packages -> ${out}" >&2
# pip wheel takes a published wheel as it is and builds one from an sdist otherwise
"${pip}" wheel --no-deps -w "${out}" "${pure[@]}"
rm -f "${out}"/*.tar.gz "${out}"/*.zip
( cd "${out}" && ls -1 *.whl > MANIFEST && sha256sum *.whl > SHA256SUMS )
total=$(du -cb "${out}"/*.whl | tail -1 | cut -f1)
echo "build_wheelhouse.sh: $(ls "${out}"/*.whl | wc -l) wheels, $((total / 1000000)) MB in ${out} (aim: <= 60 MB)" >&2
echo "build_wheelhouse.sh: copy ${out}/ and the repository (${repo_root}) to the GPU machine, then run local/gpu_check.sh" >&2
