#!/usr/bin/env bash
# Recipe for <corpus>: everything but data preparation and configs comes from ../../run.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
exec ../../run.sh --test_sets "test" "$@"
