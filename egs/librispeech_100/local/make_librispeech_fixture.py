#!/usr/bin/env python3
"""A tiny corpus in the LibriSpeech layout, made from FSDD digit recordings (tests, dry runs).

Usage::

    python local/make_librispeech_fixture.py --fsdd /path/to/fsdd --out fixture [--tarballs true]

Writes ``<out>/LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` (16 kHz,
16-bit flac: 1-3 FSDD recordings of one FSDD speaker, resampled from 8 kHz and joined by
short pauses) and ``<spk>-<chapter>.trans.txt`` (``ONE SEVEN``-style upper-case words),
for every part of LibriSpeech, a few speakers/chapters each. Speaker ids are numeric, as
in LibriSpeech, chosen so that numeric and C-locale order differ (19 < 103 numerically,
"103" < "19" as strings). With ``--tarballs true`` also ``<out>/tarballs/<part>.tar.gz``
(members ``LibriSpeech/<part>/...``, like OpenSLR's) and ``<out>/tarballs/checksums.tsv``
(their sizes, md5, sha256 in the format of ``local/librispeech_checksums.tsv``).
Deterministic for a given ``--seed``. FSDD: CC BY-SA 4.0, Zohar Jackson et al.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tarfile
from pathlib import Path
from typing import Optional

WORDS = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"]
# part -> [(librispeech speaker, fsdd speaker, [chapters]), ...]; utterances per chapter below
LAYOUT = {
    "train-clean-100": [("19", "george", ["198", "227"]), ("103", "jackson", ["1240"]),
                        ("1034", "lucas", ["121119"])],
    "train-clean-360": [("100", "nicolas", ["121669"])],
    "train-other-500": [("20", "theo", ["205"])],
    "dev-clean": [("84", "nicolas", ["121123"]), ("174", "theo", ["50561"])],
    "dev-other": [("116", "yweweler", ["288045"])],
    "test-clean": [("61", "yweweler", ["70968"])],
    "test-other": [("367", "george", ["130732"])],
}
UTTS_PER_CHAPTER = {"train-clean-100": 4}
DEFAULT_UTTS = 2


def make_utterance(fsdd: Path, speaker: str, rng: random.Random):
    import numpy as np
    import soundfile
    from scipy.signal import resample_poly

    digits = [rng.randrange(10) for _ in range(rng.randint(1, 3))]
    pieces = []
    for d in digits:
        wave, rate = soundfile.read(fsdd / f"{d}_{speaker}_{rng.randrange(50)}.wav", dtype="float64")
        if wave.ndim > 1:
            wave = wave.mean(axis=1)
        wave = resample_poly(wave, 16000, rate)
        wave = 0.5 * wave / max(1e-3, float(np.abs(wave).max()))
        pieces += [np.zeros(int(16000 * rng.uniform(0.05, 0.2))), wave]
    pieces.append(np.zeros(1600))
    return np.concatenate(pieces).astype("float32"), " ".join(WORDS[d] for d in digits)


def build(fsdd: Path, out: Path, tarballs: bool = False, seed: int = 0,
          parts: Optional[list[str]] = None) -> dict[str, int]:
    """Write the tree (and tarballs); returns utterances per part."""
    import soundfile

    recordings = fsdd / "recordings" if (fsdd / "recordings").is_dir() else fsdd
    rng = random.Random(seed)
    counts = {}
    rows = []
    for part in parts or list(LAYOUT):
        n = 0
        for spk, fsdd_spk, chapters in LAYOUT[part]:
            for chapter in chapters:
                folder = out / "LibriSpeech" / part / spk / chapter
                folder.mkdir(parents=True, exist_ok=True)
                lines = []
                for i in range(UTTS_PER_CHAPTER.get(part, DEFAULT_UTTS)):
                    utt = f"{spk}-{chapter}-{i:04d}"
                    wave, words = make_utterance(recordings, fsdd_spk, rng)
                    soundfile.write(folder / f"{utt}.flac", wave, 16000, subtype="PCM_16", format="FLAC")
                    lines.append(f"{utt} {words}\n")
                    n += 1
                (folder / f"{spk}-{chapter}.trans.txt").write_text("".join(lines), encoding="utf-8")
        counts[part] = n
        if tarballs:
            tar_dir = out / "tarballs"
            tar_dir.mkdir(parents=True, exist_ok=True)
            archive = tar_dir / f"{part}.tar.gz"
            with tarfile.open(archive, "w:gz") as tar:
                tar.add(out / "LibriSpeech" / part, arcname=f"LibriSpeech/{part}")
            data = archive.read_bytes()
            rows.append(f"{part}\t{len(data)}\t{hashlib.md5(data).hexdigest()}\t"
                        f"{hashlib.sha256(data).hexdigest()}\n")
    if tarballs:
        (out / "tarballs" / "checksums.tsv").write_text("".join(rows), encoding="utf-8")
    return counts


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fsdd", required=True, type=Path, help="FSDD folder (with recordings/)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tarballs", default="false", choices=("true", "false"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = build(args.fsdd, args.out, args.tarballs == "true", args.seed)
    print(f"make_librispeech_fixture.py: {sum(counts.values())} utterances in {args.out}/LibriSpeech "
          f"({', '.join(f'{p}: {n}' for p, n in counts.items())})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
