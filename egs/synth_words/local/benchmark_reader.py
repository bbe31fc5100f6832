#!/usr/bin/env python3
"""Read scene-text recognition benchmarks as Kaldi-style test sets.

Usage (from the recipe dir)::

    # one benchmark; the set is named after the directory (IIIT5k_3000)
    python local/benchmark_reader.py --data_dir data --image_dir data/images \\
        /data/evaluation/IIIT5k_3000
    # a parent dir: every sub-dir that is a benchmark becomes one set
    python local/benchmark_reader.py --data_dir data /data/evaluation
    # explicit set names
    python local/benchmark_reader.py --data_dir data svt=/data/SVT cute=/data/CUTE80

Layouts (detected per directory):

LMDB (as written by the common STR toolkits' ``create_lmdb_dataset`` scripts, and
as the usual evaluation sets IIIT5k_3000, SVT, IC13_857/1015, IC15_1811/2077, SVTP,
CUTE80 are distributed): a directory with ``data.mdb``; ``num-samples`` holds the
count N as ASCII digits, and for i = 1..N ``image-%09d`` the encoded image
(JPEG/PNG bytes) and ``label-%09d`` its UTF-8 label.

Folder + ``gt.txt``: one sample per line, the image path relative to the
directory of ``gt.txt`` (absolute paths also work), then the label, either

- ``<image path><TAB><label>`` (the toolkits' input to ``create_lmdb_dataset``), or
- ``<image path>, "<label>"`` (the ICDAR word-recognition ground truth, e.g.
  ``word_1.png, "Tiredness"``; ``\\"`` inside the quotes is a quote).

Labels are mapped to the 36-symbol alphabet the benchmarks are scored on, as
the toolkits do: Unicode accents folded (NFKD, ``--no_normalize_unicode`` to
keep them out), lower-cased, every character outside ``a-z0-9`` dropped. A
sample whose label is then empty or longer than ``--max_label_length`` (25,
the toolkits' ``batch_max_length``) is skipped and counted.

An image that cannot be decoded, or a missing key / line, stops the conversion
with an error naming the record; ``--on_error skip`` skips such records instead
and counts them.

Output per set ``<name>`` (same layout as local/render_words.py)::

    <data_dir>/<name>/img.scp   uttid image file (LMDB images are extracted, unchanged, to
                                <image_dir>/<name>/<uttid>.<ext>; folder images are used in place)
    <data_dir>/<name>/text      uttid label (filtered)
    <data_dir>/<name>/utt2spk   uttid <name>       spk2utt
    <data_dir>/<name>/utt2label_raw   uttid the label as stored
    <data_dir>/<name>/.done     JSON: source, options and the counts
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from PIL import Image, UnidentifiedImageError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from str_common import DEFAULT_MAX_LABEL_LENGTH, filter_label, write_image_data_dir  # noqa: E402

FORMAT_VERSION = 1
GT_FILE = "gt.txt"
LMDB_FILE = "data.mdb"
_ICDAR_LINE = re.compile(r'^(?P<path>[^\t]+?),\s*"(?P<label>(?:[^"\\]|\\.)*)"\s*$')


class BenchmarkError(RuntimeError):
    """A benchmark that cannot be read: bad layout, missing key, undecodable image."""


@dataclass
class Record:
    """One sample as stored: where it came from (for messages), its image, its raw label."""

    index: int  # 1-based
    where: str  # e.g. "lmdb /x/SVT key image-000000012" or "/x/gt.txt:12"
    label: str
    image_bytes: Optional[bytes] = None  # LMDB
    image_path: Optional[str] = None  # folder layout


@dataclass
class Counts:
    records: int = 0
    kept: int = 0
    label_changed: int = 0  # kept, but the filter changed the label (case aside)
    skipped_empty: int = 0
    skipped_too_long: int = 0
    skipped_bad: int = 0
    bad_records: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------- #
# Layouts                                                                      #
# --------------------------------------------------------------------------- #
def layout_of(path: Path) -> Optional[str]:
    if (path / LMDB_FILE).is_file():
        return "lmdb"
    if (path / GT_FILE).is_file():
        return "folder"
    return None


def iter_lmdb(path: Path) -> Iterator[Record]:
    """Records of an STR-toolkit LMDB (``num-samples``, ``image-%09d``, ``label-%09d``, 1-based)."""
    import lmdb

    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False,
                        max_readers=1, subdir=True)
    except lmdb.Error as exc:
        raise BenchmarkError(f"lmdb {path}: cannot open: {exc}") from exc
    try:
        with env.begin(write=False) as txn:
            raw = txn.get(b"num-samples")
            if raw is None:
                raise BenchmarkError(f"lmdb {path}: key 'num-samples' is missing (not an STR benchmark LMDB?)")
            try:
                n = int(raw.decode("ascii").strip())
            except (UnicodeDecodeError, ValueError) as exc:
                raise BenchmarkError(f"lmdb {path}: 'num-samples' is not a number: {raw[:40]!r}") from exc
            for i in range(1, n + 1):
                image_key, label_key = f"image-{i:09d}", f"label-{i:09d}"
                label = txn.get(label_key.encode())
                image = txn.get(image_key.encode())
                where = f"lmdb {path} sample {i}"
                if label is None:
                    yield Record(i, f"{where}: key '{label_key}' is missing", "", None)
                    continue
                if image is None:
                    yield Record(i, f"{where}: key '{image_key}' is missing", "", None)
                    continue
                try:
                    text = label.decode("utf-8")
                except UnicodeDecodeError:
                    yield Record(i, f"{where}: key '{label_key}' is not UTF-8: {label[:40]!r}", "", None)
                    continue
                yield Record(i, f"{where} (key '{image_key}')", text, image_bytes=bytes(image))
    finally:
        env.close()


def parse_gt_line(line: str) -> Optional[Tuple[str, str]]:
    """(image path, label) of one gt.txt line in either layout, or None if neither."""
    if "\t" in line:
        image, label = line.split("\t", 1)
        return image.strip(), label
    m = _ICDAR_LINE.match(line)
    if m:
        return m.group("path").strip(), re.sub(r"\\(.)", r"\1", m.group("label"))
    return None


def iter_folder(path: Path) -> Iterator[Record]:
    """Records of a folder with ``gt.txt`` (tab-separated or ICDAR ``path, "label"``)."""
    gt = path / GT_FILE
    with gt.open(encoding="utf-8-sig") as f:  # ICDAR files often start with a BOM
        index = 0
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            index += 1
            parsed = parse_gt_line(line)
            where = f"{gt}:{lineno}"
            if parsed is None or not parsed[0]:
                yield Record(index, f"{where}: neither '<path>\\t<label>' nor '<path>, \"<label>\"': {line!r}",
                             "", None)
                continue
            image, label = parsed
            image_path = image if os.path.isabs(image) else str(path / image)
            yield Record(index, f"{where} (image {image})", label, image_path=image_path)


# --------------------------------------------------------------------------- #
# Conversion                                                                   #
# --------------------------------------------------------------------------- #
def check_image(record: Record) -> str:
    """Decode the record's image fully; returns the image format's file extension."""
    try:
        if record.image_bytes is not None:
            img = Image.open(io.BytesIO(record.image_bytes))
        elif record.image_path is not None:
            img = Image.open(record.image_path)
        else:
            raise BenchmarkError(record.where)  # a record that already describes its problem
        fmt = (img.format or "png").lower()
        img.load()
    except BenchmarkError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise BenchmarkError(f"{record.where}: cannot decode the image: {exc}") from exc
    if img.width < 1 or img.height < 1:
        raise BenchmarkError(f"{record.where}: empty image ({img.width}x{img.height})")
    return {"jpeg": "jpg", "mpo": "jpg"}.get(fmt, fmt)


def set_name(path: Path, name: Optional[str] = None) -> str:
    out = re.sub(r"[^A-Za-z0-9_]+", "_", name or path.resolve().name).strip("_")
    if not out:
        raise BenchmarkError(f"cannot name a set after {path}; pass NAME=PATH")
    return out


def source_signature(path: Path, layout: str) -> dict:
    f = path / (LMDB_FILE if layout == "lmdb" else GT_FILE)
    st = f.stat()
    return {"path": str(path.resolve()), "layout": layout, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def convert(
    src: Path,
    data_dir: Path,
    image_dir: Path,
    name: Optional[str] = None,
    max_label_length: int = DEFAULT_MAX_LABEL_LENGTH,
    normalize_unicode: bool = True,
    on_error: str = "fail",
) -> Tuple[str, Counts]:
    """Convert one benchmark directory to ``data_dir/<name>``; returns (name, counts)."""
    src = Path(src)
    layout = layout_of(src)
    if layout is None:
        raise BenchmarkError(f"{src}: neither an LMDB ({LMDB_FILE}) nor a folder with {GT_FILE}")
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    name = set_name(src, name)
    out_dir = Path(data_dir) / name
    options = {
        "format_version": FORMAT_VERSION,
        "source": source_signature(src, layout),
        "image_dir": str(image_dir),
        "max_label_length": max_label_length,
        "normalize_unicode": normalize_unicode,
        "on_error": on_error,
    }
    stamp = out_dir / ".done"
    if stamp.is_file():
        try:
            done = json.loads(stamp.read_text())
            if done.get("options") == options:
                return name, Counts(**{k: v for k, v in done["counts"].items()})
        except (ValueError, KeyError, TypeError):
            pass
        stamp.unlink()

    counts = Counts()
    img: Dict[str, str] = {}
    text: Dict[str, str] = {}
    raw_labels: Dict[str, str] = {}
    records = iter_lmdb(src) if layout == "lmdb" else iter_folder(src)
    width = 9  # utterance ids sort in record order
    for record in records:
        counts.records += 1
        try:
            ext = check_image(record)
        except BenchmarkError as exc:
            if on_error == "fail":
                raise
            counts.skipped_bad += 1
            counts.bad_records.append(str(exc))
            continue
        label = filter_label(record.label, normalize_unicode)
        if not label:
            counts.skipped_empty += 1
            continue
        if len(label) > max_label_length:
            counts.skipped_too_long += 1
            continue
        if label != record.label.lower():
            counts.label_changed += 1
        utt = f"{name}-{record.index:0{width}d}"
        if record.image_bytes is not None:
            path = Path(image_dir) / name / f"{utt}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(record.image_bytes)
            img[utt] = str(path)
        else:
            img[utt] = str(record.image_path)
        text[utt] = label
        # one line per utterance: a raw label's line breaks/tabs become spaces
        raw_labels[utt] = " ".join(record.label.split()) or "<empty>"
        counts.kept += 1
    if not img:
        raise BenchmarkError(f"{src}: no usable sample ({counts.records} records)")
    write_image_data_dir(out_dir, img, text, {u: name for u in img},
                         extra={"utt2label_raw": raw_labels})
    stamp.write_text(json.dumps({"options": options, "counts": counts.__dict__}, indent=1) + "\n")
    return name, counts


def expand_sources(specs: Sequence[str]) -> List[Tuple[Optional[str], Path]]:
    """``[NAME=]PATH`` arguments -> (name, benchmark dir); a parent dir expands to its benchmarks."""
    out: List[Tuple[Optional[str], Path]] = []
    for spec in specs:
        name, _, path_str = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = Path(path_str)
        if not path.is_dir():
            raise BenchmarkError(f"{path}: no such directory")
        if layout_of(path) is not None:
            out.append((name or None, path))
            continue
        subs = sorted(p for p in path.iterdir() if p.is_dir() and layout_of(p) is not None)
        if not subs:
            raise BenchmarkError(
                f"{path}: not a benchmark (no {LMDB_FILE} or {GT_FILE}) and no sub-directory is one"
            )
        if name:
            raise BenchmarkError(f"{spec}: NAME= needs a single benchmark dir, {path} holds {len(subs)}")
        out.extend((None, p) for p in subs)
    return out


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Convert STR benchmarks (LMDB or folder + gt.txt) to Kaldi-style test sets.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("sources", nargs="+", metavar="[NAME=]DIR",
                   help="benchmark dir (LMDB or folder with gt.txt), or a dir of such dirs")
    p.add_argument("--data_dir", default="data", help="writes <data_dir>/<name>/")
    p.add_argument("--image_dir", default=None, help="LMDB images go to <image_dir>/<name>/ (default <data_dir>/images)")
    p.add_argument("--max_label_length", type=int, default=DEFAULT_MAX_LABEL_LENGTH)
    p.add_argument("--no_normalize_unicode", action="store_true",
                   help="do not fold accents (e.g. é) to ASCII before filtering")
    p.add_argument("--on_error", choices=("fail", "skip"), default="fail",
                   help="undecodable images / missing keys: stop, or skip and count them")
    p.add_argument("--list_names", action="store_true",
                   help="only print the set names the sources would get, one per line (run.sh: test sets)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    image_dir = Path(args.image_dir or Path(args.data_dir) / "images")
    names: Dict[str, Path] = {}
    for name, src in expand_sources(args.sources):
        set_ = set_name(src, name)
        if set_ in names:
            raise BenchmarkError(f"two benchmarks named {set_}: {names[set_]} and {src}; use NAME=DIR")
        names[set_] = src
        if args.list_names:
            print(set_)
            continue
        set_, c = convert(src, Path(args.data_dir), image_dir, name, args.max_label_length,
                          not args.no_normalize_unicode, args.on_error)
        print(
            f"benchmark_reader.py: {args.data_dir}/{set_}: {c.kept} of {c.records} samples "
            f"(labels changed by the filter: {c.label_changed}; skipped: {c.skipped_empty} empty, "
            f"{c.skipped_too_long} longer than {args.max_label_length}, {c.skipped_bad} unreadable)",
            file=sys.stderr,
        )
        for msg in c.bad_records[:5]:
            print(f"  skipped: {msg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as exc:
        print(f"benchmark_reader.py: error: {exc}", file=sys.stderr)
        sys.exit(1)
