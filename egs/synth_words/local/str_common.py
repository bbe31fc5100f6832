"""Shared by the synth_words recipe's local tools: alphabet, label filtering, data dirs.

The target alphabet is the 36-symbol case-insensitive alphanumeric set that the
scene-text benchmarks score: transcripts are lower-case ``a-z0-9``, one token per
character (ESPnet ``token_type char``).

A data dir written here is Kaldi-style and sorted by utterance id::

    img.scp   uttid path/to/image.png
    text      uttid word            (lower-case a-z0-9, no spaces)
    utt2spk   uttid speaker         (font family for rendered sets, the set name for benchmarks)
    spk2utt   speaker uttid uttid ...

Utterance ids start with their speaker id, so sorting by utterance also sorts by
speaker (Kaldi's requirement for ``utt2spk``/``spk2utt``).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Mapping, Optional

from espnet_oracle.utils.datadir import utt2spk_to_spk2utt, write_kaldi_map

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_OUT_OF_ALPHABET = re.compile(f"[^{ALPHABET}]")
#: Longest label the common STR toolkits keep (their ``batch_max_length``).
DEFAULT_MAX_LABEL_LENGTH = 25


def filter_label(label: str, normalize_unicode: bool = True) -> str:
    """Map a raw label to the 36-symbol alphabet, as the STR benchmark toolkits score.

    Lower-case it, optionally fold accents by Unicode NFKD decomposition
    (``Café`` -> ``cafe``), then drop every character outside ``a-z0-9``
    (spaces and punctuation included). The result may be empty.
    """
    if normalize_unicode:
        label = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode("ascii")
    return _OUT_OF_ALPHABET.sub("", label.lower())


def slug(name: str) -> str:
    """A token usable in utterance ids: ``DejaVu Sans Mono`` -> ``DejaVuSansMono``."""
    out = re.sub(r"[^A-Za-z0-9]+", "", name)
    if not out:
        raise ValueError(f"cannot make an id from {name!r}")
    return out


def write_image_data_dir(
    out_dir: Path,
    img: Mapping[str, str],
    text: Mapping[str, str],
    utt2spk: Mapping[str, str],
    extra: Optional[Mapping[str, Mapping[str, str]]] = None,
) -> None:
    """Write ``img.scp``, ``text``, ``utt2spk``, ``spk2utt`` (+ ``extra`` files), sorted.

    Every file is written atomically; all must hold the same utterance ids.
    """
    keys = set(img)
    for name, mapping in (("text", text), ("utt2spk", utt2spk), *((extra or {}).items())):
        if set(mapping) != keys:
            diff = sorted(set(mapping) ^ keys)[:5]
            raise ValueError(f"{out_dir}/{name}: utterance ids differ from img.scp (e.g. {diff})")
    for utt in keys:
        if not utt2spk[utt] or not utt.startswith(utt2spk[utt]):
            raise ValueError(f"utterance id {utt!r} does not start with its speaker {utt2spk[utt]!r}")
        if not text[utt] or _OUT_OF_ALPHABET.search(text[utt]):
            raise ValueError(f"utterance {utt}: transcript {text[utt]!r} is not in [{ALPHABET}]+")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_kaldi_map(out_dir / "img.scp", img)
    write_kaldi_map(out_dir / "text", text)
    write_kaldi_map(out_dir / "utt2spk", utt2spk)
    write_kaldi_map(out_dir / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    for name, mapping in (extra or {}).items():
        write_kaldi_map(out_dir / name, mapping)
