#!/usr/bin/env bash
# Run the test suite; creates the Python environment first if it is missing.
# Usage: ./test.sh [pytest options...]     (FSDD=/path/to/fsdd to use a corpus copy)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/setup_env.sh
# shellcheck disable=SC1091
. ./path.sh
FSDD=${FSDD:-../shared/data/fsdd}
# tests run recipes in temporary dirs: hand them an absolute corpus path
[ -d "${FSDD}" ] && FSDD=$(cd "${FSDD}" && pwd)
export FSDD
exec python -m pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" --dist loadfile tests "$@"
