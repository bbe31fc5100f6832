# Sourced by run.sh, test.sh and the recipes: activates the project's Python environment.
# ESPNET_ORACLE_VENV names an existing environment; the default is <repo>/.venv (created by stage 0 / test.sh).
ESPNET_ORACLE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export ESPNET_ORACLE_ROOT
ESPNET_ORACLE_VENV=${ESPNET_ORACLE_VENV:-${ESPNET_ORACLE_ROOT}/.venv}
export ESPNET_ORACLE_VENV
if [ -f "${ESPNET_ORACLE_VENV}/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "${ESPNET_ORACLE_VENV}/bin/activate"
fi
export PATH="${ESPNET_ORACLE_ROOT}/scripts:${PATH}"
export PYTHONPATH="${ESPNET_ORACLE_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export LC_ALL=C
export PYTHONIOENCODING=UTF-8
# ESPnet imports nltk, which tries a download and logs an error when offline; matplotlib must not need a display.
export NLTK_DATA=${NLTK_DATA:-${ESPNET_ORACLE_VENV}/nltk_data}
export MPLBACKEND=Agg
