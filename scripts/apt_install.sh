#!/usr/bin/env bash
# Installs the Debian packages a recipe's data preparation needs, when missing (used by the
# recipes' local/install_*.sh). Each package is given with a file it ships (or a command it
# provides, "command:NAME"), so presence is tested without dpkg: files copied in by other means count.
#
# Usage: scripts/apt_install.sh NAME [--check] [--hint TEXT] PACKAGE=FILE|PACKAGE=command:CMD ...
#   NAME     the caller's name, for messages
#   --check  only report what is missing (exit 1 if anything is), install nothing
#   --hint   what to do instead when apt-get cannot install (added to the error messages)
# Needs apt-get and root (or sudo) when something is missing.
set -euo pipefail
name=$1; shift
check_only=false hint=""
while [ $# -gt 0 ]; do
    case "$1" in
        --check) check_only=true; shift ;;
        --hint) hint=" ($2)"; shift 2 ;;
        *) break ;;
    esac
done
present() {  # present PROBE: the file exists, or command:CMD is on PATH
    case "$1" in
        command:*) command -v "${1#command:}" > /dev/null 2>&1 ;;
        *) [ -e "$1" ] ;;
    esac
}
missing=()
for spec in "$@"; do present "${spec#*=}" || missing+=("${spec%%=*}"); done
if [ ${#missing[@]} -eq 0 ]; then
    echo "${name}: installed: ${*%%=*}"
    exit 0
fi
echo "${name}: missing: ${missing[*]}" >&2
${check_only} && exit 1
fail() { echo "${name}: ERROR: $*${hint}" >&2; exit 1; }
command -v apt-get > /dev/null 2>&1 || fail "no apt-get here; install ${missing[*]} by hand"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo > /dev/null 2>&1 || fail "need root or sudo to run apt-get install ${missing[*]}"
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
{ $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    || fail "apt-get could not install ${missing[*]} (no package index or network?)"
for spec in "$@"; do
    present "${spec#*=}" || fail "installed ${missing[*]}, but ${spec%%=*}'s ${spec#*=} is still missing"
done
echo "${name}: installed ${missing[*]}"
