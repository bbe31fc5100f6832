#!/usr/bin/env bash
# Installs what the synthetic word renderer needs, if missing: the font families
# (Debian packages) and an English word list (wamerican -> /usr/share/dict/words).
# Licences: see ../README.md ("Fonts and word list").
#
# Usage: local/install_fonts.sh [--check]
#   --check   only report what is missing (exit 1 if anything is), install nothing.
#
# Needs apt-get and root (or sudo) when something is missing. On a system without
# apt-get, install the same fonts yourself (any directory under /usr/share/fonts,
# ~/.local/share/fonts or this recipe's fonts/ is searched) and pass a word list
# with --word_list to local/render_words.py.
set -euo pipefail

check_only=false
[ "${1:-}" = "--check" ] && check_only=true

# Debian package -> one file it ships (presence test without dpkg, works in containers
# where the files were copied in by other means too).
declare -A probe=(
    [fonts-dejavu-core]=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
    [fonts-dejavu-extra]=/usr/share/fonts/truetype/dejavu/DejaVuSerif-Italic.ttf
    [fonts-liberation2]=/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf
    [fonts-freefont-ttf]=/usr/share/fonts/truetype/freefont/FreeSans.ttf
    [fonts-urw-base35]=/usr/share/fonts/opentype/urw-base35/URWGothic-Book.otf
    [wamerican]=/usr/share/dict/american-english
)

missing=()
for pkg in fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-freefont-ttf fonts-urw-base35 wamerican; do
    [ -e "${probe[$pkg]}" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install_fonts.sh: all fonts and the word list are installed"
    exit 0
fi
echo "install_fonts.sh: missing: ${missing[*]}" >&2
if $check_only; then
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_fonts.sh: no apt-get here; install the packages above (or the same font families) by hand" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        echo "install_fonts.sh: need root or sudo to run apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
for pkg in "${missing[@]}"; do
    if [ ! -e "${probe[$pkg]}" ]; then
        echo "install_fonts.sh: $pkg installed but ${probe[$pkg]} is missing" >&2
        exit 1
    fi
done
echo "install_fonts.sh: installed ${missing[*]}"
