#!/usr/bin/env bash
# Create (or reuse) the Python environment this project runs in.
# Usage: scripts/setup_env.sh [VENV_DIR]   (default: $ESPNET_ORACLE_VENV or <repo>/.venv)
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-${ESPNET_ORACLE_VENV:-${repo_root}/.venv}}
python=${PYTHON:-python3}

stamp="${venv}/.espnet_oracle_installed"
if [ -f "${stamp}" ] && cmp -s "${stamp}" "${repo_root}/pyproject.toml"; then
    exit 0
fi

if ! "${python}" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
    echo "setup_env.sh: need Python 3.11 (espnet 202511 + torch 2.11); '${python}' is $("${python}" --version 2>&1)." >&2
    echo "  Point PYTHON at a Python 3.11 interpreter, or ESPNET_ORACLE_VENV at a ready environment." >&2
    exit 1
fi

echo "setup_env.sh: creating the environment in ${venv} (one time, ~3-5 min, ~5 GB)" >&2
[ -x "${venv}/bin/python" ] || "${python}" -m venv "${venv}"
# pip >= 25 refuses espnet's dependency ci_sdr (a direct-URL requirement behind an extra we do not use).
"${venv}/bin/python" -m pip install -q "pip==24.0"
"${venv}/bin/python" -m pip install -q -e "${repo_root}"
cp "${repo_root}/pyproject.toml" "${stamp}"
echo "setup_env.sh: environment ready" >&2
