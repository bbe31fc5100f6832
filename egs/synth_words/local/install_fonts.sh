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
here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
exec "${here}/../../../scripts/apt_install.sh" install_fonts.sh "$@" \
    --hint "or install the same font families by hand and pass --word_list to local/render_words.py" \
    fonts-dejavu-core=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf \
    fonts-dejavu-extra=/usr/share/fonts/truetype/dejavu/DejaVuSerif-Italic.ttf \
    fonts-liberation2=/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf \
    fonts-freefont-ttf=/usr/share/fonts/truetype/freefont/FreeSans.ttf \
    fonts-urw-base35=/usr/share/fonts/opentype/urw-base35/URWGothic-Book.otf \
    wamerican=/usr/share/dict/american-english
