#!/usr/bin/env bash
# Data preparation for <corpus>. Runs from the recipe dir; writes data/<set>/.
# Replace the body with your corpus's preparation (see ../README.md for the files).
set -euo pipefail
[ -f db.sh ] && . ./db.sh
if [ -z "${MYCORPUS:-}" ] || [ ! -d "${MYCORPUS}" ]; then
    echo "local/data.sh: corpus not found at '${MYCORPUS:-}'; set MYCORPUS=/path/to/corpus (db.sh or environment)" >&2
    exit 1
fi
echo "local/data.sh: TEMPLATE recipe — write the data preparation for ${MYCORPUS} here" >&2
exit 1
