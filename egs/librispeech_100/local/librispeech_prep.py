#!/usr/bin/env python3
"""Kaldi data dirs from the LibriSpeech layout, and their combination.

Usage::

    python local/librispeech_prep.py prepare --part_dir <root>/LibriSpeech/dev-clean --out data/dev_clean
    python local/librispeech_prep.py combine --out data/dev data/dev_clean data/dev_other

``prepare`` reads ``<part_dir>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` and
``<spk>-<chapter>.trans.txt`` and writes, sorted by utterance id (C locale):

* ``wav.scp``: ``<utt> /abs/path/<utt>.flac`` -- the flac itself, no decoding pipe
  (soundfile, ESPnet's ``sound`` reader and the project's fbank stage read flac);
* ``text``: ``<utt> TRANSCRIPT`` as LibriSpeech gives it (upper case, apostrophes);
* ``utt2spk`` / ``spk2utt``: speaker = ``<spk>-<chapter>``, as Kaldi's and ESPnet's
  LibriSpeech recipes do; it is a prefix of the utterance id, so sorting by utterance
  keeps each speaker's utterances together;
* ``utt2dur``: seconds, from the flac header (with ``--utt2dur true``, the default;
  it also checks that every file opens and is 16 kHz mono).

Every flac must have a transcript line and every transcript line a flac; ids must be
``<spk>-<chapter>-...`` of their folder and unique; errors name the file. The result is
checked with ``espnet_oracle.utils.datadir.validate_data_dir``. A finished dir (stamp
``.done`` holding the source path) is not rebuilt.

``combine`` merges data dirs (utterance ids must not repeat) into one, sorted and
validated, as Kaldi's ``utils/combine_data.sh`` would.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from espnet_oracle.utils.datadir import (
    DataDirError,
    atomic_write_text,
    read_kaldi_map,
    utt2spk_to_spk2utt,
    validate_data_dir,
    write_kaldi_map,
)

SAMPLE_RATE = 16000
FILES = ("wav.scp", "text", "utt2spk")
OPTIONAL = ("utt2dur",)


class LayoutError(ValueError):
    """The LibriSpeech tree is not as expected (the message names the file)."""


def log(msg: str) -> None:
    print(f"librispeech_prep.py: {msg}", file=sys.stderr, flush=True)


def read_transcripts(trans: Path, prefix: str) -> dict[str, str]:
    """``utt -> transcript`` of one ``<spk>-<chapter>.trans.txt``."""
    out: dict[str, str] = {}
    with open(trans, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.split(maxsplit=1)
            utt = fields[0]
            if len(fields) < 2 or not fields[1].strip():
                raise LayoutError(f"{trans}:{number}: utterance {utt} has an empty transcript")
            if not utt.startswith(prefix + "-"):
                raise LayoutError(f"{trans}:{number}: utterance id {utt!r} does not start with {prefix}-")
            if utt in out:
                raise LayoutError(f"{trans}:{number}: utterance {utt} appears twice")
            out[utt] = " ".join(fields[1].split())
    return out


def scan_part(part_dir: Path) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """``(wav, text, utt2spk)`` of one LibriSpeech part, checked utterance by utterance."""
    if not part_dir.is_dir():
        raise LayoutError(f"{part_dir}: no such folder (expected <root>/LibriSpeech/<part>/)")
    wav: dict[str, str] = {}
    text: dict[str, str] = {}
    utt2spk: dict[str, str] = {}
    chapters = sorted(p for p in part_dir.glob("*/*") if p.is_dir())
    if not chapters:
        raise LayoutError(f"{part_dir}: no <speaker>/<chapter>/ folders")
    for chapter_dir in chapters:
        spk, chapter = chapter_dir.parent.name, chapter_dir.name
        prefix = f"{spk}-{chapter}"
        trans = chapter_dir / f"{prefix}.trans.txt"
        flacs = {p.stem: p for p in chapter_dir.glob("*.flac")}
        if not trans.is_file():
            raise LayoutError(f"{trans}: missing (the transcripts of the {len(flacs)} flac files in {chapter_dir})")
        transcripts = read_transcripts(trans, prefix)
        no_text = sorted(set(flacs) - set(transcripts))
        if no_text:
            raise LayoutError(
                f"{flacs[no_text[0]]}: no transcript line in {trans} "
                f"({len(no_text)} flac file(s) of this chapter without one)"
            )
        no_audio = sorted(set(transcripts) - set(flacs))
        if no_audio:
            raise LayoutError(
                f"{trans}: utterance {no_audio[0]} has no audio file {chapter_dir / (no_audio[0] + '.flac')} "
                f"({len(no_audio)} transcript line(s) of this chapter without audio)"
            )
        for utt, words in transcripts.items():
            if utt in wav:
                raise LayoutError(f"{trans}: utterance {utt} appears in two chapters")
            wav[utt] = str(flacs[utt].resolve())
            text[utt] = words
            utt2spk[utt] = prefix
    return wav, text, utt2spk


def durations(wav: dict[str, str]) -> dict[str, str]:
    import soundfile

    out = {}
    for utt, path in wav.items():
        try:
            info = soundfile.info(path)
        except Exception as exc:  # soundfile raises several types
            raise LayoutError(f"{path}: cannot read audio of utterance {utt}: {exc}") from exc
        if info.samplerate != SAMPLE_RATE or info.channels != 1:
            raise LayoutError(
                f"{path}: {info.samplerate} Hz, {info.channels} channel(s); LibriSpeech is {SAMPLE_RATE} Hz mono"
            )
        out[utt] = f"{info.frames / info.samplerate:.4f}"
    return out


def write_dir(out: Path, maps: dict[str, dict[str, str]], source: str) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / ".done").unlink(missing_ok=True)
    for name, mapping in maps.items():
        write_kaldi_map(out / name, mapping)
    write_kaldi_map(out / "spk2utt", utt2spk_to_spk2utt(maps["utt2spk"]))
    utts = validate_data_dir(out, required=FILES, optional=OPTIONAL)
    atomic_write_text(out / ".done", source + "\n")
    return len(utts)


def is_done(out: Path, source: str) -> bool:
    stamp = out / ".done"
    if not stamp.is_file() or stamp.read_text(encoding="utf-8").strip() != source:
        return False
    try:
        validate_data_dir(out, required=FILES, optional=OPTIONAL)
    except DataDirError:
        return False
    return True


def prepare(part_dir: Path, out: Path, utt2dur: bool = True) -> int:
    source = json.dumps({"prepare": str(part_dir.resolve()), "utt2dur": utt2dur})
    if is_done(out, source):
        log(f"{out}: up to date")
        return len(read_kaldi_map(out / "utt2spk"))
    wav, text, utt2spk = scan_part(part_dir)
    maps = {"wav.scp": wav, "text": text, "utt2spk": utt2spk}
    if utt2dur:
        maps["utt2dur"] = durations(wav)
    elif (out / "utt2dur").exists():
        (out / "utt2dur").unlink()
    n = write_dir(out, maps, source)
    log(f"{out}: {n} utterances, {len(set(utt2spk.values()))} speakers (speaker-chapter) from {part_dir}")
    return n


def combine(out: Path, inputs: list[Path]) -> int:
    source = json.dumps({"combine": [str(p.resolve()) for p in inputs]})
    if is_done(out, source):
        log(f"{out}: up to date")
        return len(read_kaldi_map(out / "utt2spk"))
    names = list(FILES) + [n for n in OPTIONAL if all((d / n).is_file() for d in inputs)]
    maps: dict[str, dict[str, str]] = {name: {} for name in names}
    for d in inputs:
        validate_data_dir(d, required=FILES, optional=OPTIONAL)
        for name in names:
            part = read_kaldi_map(d / name)
            clash = set(part) & set(maps[name])
            if clash:
                raise DataDirError(f"{d / name}: utterance {sorted(clash)[0]} is also in another input of {out}")
            maps[name].update(part)
    for stale in OPTIONAL:
        if stale not in names and (out / stale).exists():
            (out / stale).unlink()
    n = write_dir(out, maps, source)
    log(f"{out}: {n} utterances from {', '.join(map(str, inputs))}")
    return n


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="one LibriSpeech part -> one data dir")
    p.add_argument("--part_dir", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--utt2dur", default="true", choices=("true", "false"))
    c = sub.add_parser("combine", help="several data dirs -> one")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("inputs", nargs="+", type=Path)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        if args.command == "prepare":
            prepare(args.part_dir, args.out, args.utt2dur == "true")
        else:
            combine(args.out, args.inputs)
    except (LayoutError, DataDirError) as exc:
        log(f"ERROR: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
