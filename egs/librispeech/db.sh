# Where LibriSpeech lives: the folder that holds (or will hold) LibriSpeech/<part>/ and/or
# <part>.tar.gz (OpenSLR resource 12). The environment variable of the same name wins.
# local/data.sh downloads into it what is missing (default: downloads/ of the recipe).
LIBRISPEECH=${LIBRISPEECH:-downloads}
# A mirror of https://www.openslr.org/resources/12 (also file:///path), if you have one.
LIBRISPEECH_URL=${LIBRISPEECH_URL:-https://www.openslr.org/resources/12}
