#!/usr/bin/env python3
"""Download, verify and extract LibriSpeech archives (OpenSLR resource 12).

Usage::

    python local/librispeech_download.py --root downloads \\
        --parts "train-clean-100 dev-clean dev-other test-clean test-other" \\
        [--base_url https://www.openslr.org/resources/12] [--checksums FILE]

For every part, the first that applies:

1. ``<root>/LibriSpeech/<part>/.complete`` exists: extracted earlier, nothing to do.
2. ``<root>/LibriSpeech/<part>/`` holds a tree you put there yourself (speaker folders,
   no ``.extracting`` marker of an interrupted extraction): used as it is (not checksummed).
3. ``<root>/<part>.tar.gz`` exists: verified (size, md5, sha256 of the checksum table),
   then extracted. Otherwise it is downloaded from ``<base_url>/<part>.tar.gz`` (any URL
   urllib opens, ``file://`` included) into ``<part>.tar.gz.part``, verified, renamed.

A tarball that fails verification is moved to ``<part>.tar.gz.bad-checksum`` and never
extracted: a pre-existing one is then downloaded afresh, a freshly downloaded one is an
error. Without network, the error says where to put the tarballs or the extracted tree.
Extraction accepts only regular files and folders under ``LibriSpeech/`` (tarfile's
``data`` filter) and marks the part ``.complete`` at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

ALL_PARTS = (
    "dev-clean", "dev-other", "test-clean", "test-other",
    "train-clean-100", "train-clean-360", "train-other-500",
)
DEFAULT_BASE_URL = "https://www.openslr.org/resources/12"
DEFAULT_CHECKSUMS = Path(__file__).resolve().parent / "librispeech_checksums.tsv"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A part cannot be obtained or failed verification."""


def log(msg: str) -> None:
    print(f"librispeech_download.py: {msg}", file=sys.stderr, flush=True)


def read_checksums(path: Path) -> dict[str, dict[str, Optional[str]]]:
    """``part -> {bytes, md5, sha256}`` from the table (``-`` = not checked)."""
    table: dict[str, dict[str, Optional[str]]] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 4:
                raise DownloadError(f"{path}:{number}: expected '<part> <bytes> <md5> <sha256>', got {line!r}")
            part, size, md5, sha256 = (None if x == "-" else x for x in fields)
            table[part] = {"bytes": size, "md5": md5, "sha256": sha256}
    return table


def verify(archive: Path, expected: dict[str, Optional[str]]) -> Optional[str]:
    """None if ``archive`` matches ``expected``; else what differs (one line)."""
    size = archive.stat().st_size
    if expected.get("bytes") is not None and size != int(expected["bytes"]):
        return f"size {size} bytes, expected {expected['bytes']}"
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(archive, "rb") as f:
        while block := f.read(CHUNK):
            md5.update(block)
            sha256.update(block)
    for name, digest in (("md5", md5), ("sha256", sha256)):
        want = expected.get(name)
        if want is not None and digest.hexdigest() != want.lower():
            return f"{name} {digest.hexdigest()}, expected {want}"
    return None


def set_aside(archive: Path, reason: str) -> Path:
    bad = archive.with_name(archive.name + ".bad-checksum")
    os.replace(archive, bad)
    log(f"REFUSED {archive}: {reason}; moved to {bad} (never extracted; delete it when done looking)")
    return bad


def download(url: str, dest: Path) -> None:
    """Stream ``url`` into ``dest`` (via ``dest.part``); DownloadError on failure."""
    tmp = dest.with_name(dest.name + ".part")
    log(f"downloading {url} -> {dest}")
    start = time.time()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            total = response.headers.get("Content-Length")
            done, next_report = 0, 1 << 30
            while block := response.read(CHUNK):
                out.write(block)
                done += len(block)
                if done >= next_report:
                    of = f" of {int(total) / 2**30:.1f}" if total else ""
                    log(f"  {done / 2**30:.1f}{of} GiB ({done / 2**20 / (time.time() - start):.0f} MiB/s)")
                    next_report += 1 << 30
    except (urllib.error.URLError, OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"cannot download {url}: {exc}") from exc
    os.replace(tmp, dest)


def has_tree(part_dir: Path) -> bool:
    """A user-provided extracted tree: speaker folders, no interrupted extraction."""
    if not part_dir.is_dir() or (part_dir / ".extracting").exists():
        return False
    return any(child.is_dir() for child in part_dir.iterdir())


def extract(archive: Path, root: Path, part: str) -> None:
    part_dir = root / "LibriSpeech" / part
    part_dir.mkdir(parents=True, exist_ok=True)
    (part_dir / ".extracting").touch()
    log(f"extracting {archive} -> {root}/LibriSpeech/{part}")
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            name = member.name.lstrip("./")
            if not (name == "LibriSpeech" or name.startswith("LibriSpeech/")):
                raise DownloadError(f"{archive}: unexpected member {member.name!r} (not under LibriSpeech/)")
            tar.extract(member, root, filter="data")
    (part_dir / ".extracting").unlink()
    (part_dir / ".complete").touch()


def where_to_put(root: Path, part: str, base_url: str, expected: dict) -> str:
    md5 = expected.get("md5") or "?"
    return (
        f"Without network, put the archive at {root / (part + '.tar.gz')} (md5 {md5}), "
        f"or an extracted tree at {root / 'LibriSpeech' / part}/<speaker>/<chapter>/..., "
        f"and re-run; or point --base_url (now {base_url}) at a mirror, or the LIBRISPEECH "
        f"variable (db.sh) at a folder that already holds them."
    )


def fetch_part(root: Path, part: str, base_url: str, checksums: dict, table: str = "the checksum table") -> str:
    """Make ``<root>/LibriSpeech/<part>`` present; returns what was done."""
    if part not in checksums:
        raise DownloadError(f"part {part!r} is not in the checksum table (known: {', '.join(sorted(checksums))})")
    expected = checksums[part]
    part_dir = root / "LibriSpeech" / part
    if (part_dir / ".complete").exists():
        return "present"
    if has_tree(part_dir):
        log(f"{part}: using the extracted tree {part_dir} as it is (no archive to checksum)")
        return "tree"
    archive = root / f"{part}.tar.gz"
    if archive.exists():
        problem = verify(archive, expected)
        if problem is None:
            extract(archive, root, part)
            return "verified"
        set_aside(archive, problem)
    url = f"{base_url.rstrip('/')}/{part}.tar.gz"
    try:
        download(url, archive)
    except DownloadError as exc:
        raise DownloadError(f"{part}: {exc}. {where_to_put(root, part, base_url, expected)}") from exc
    problem = verify(archive, expected)
    if problem is not None:
        set_aside(archive, problem)
        raise DownloadError(
            f"{part}: the archive downloaded from {url} does not match the checksum table "
            f"({problem}); refusing to use it. Check {table} "
            f"against https://www.openslr.org/resources/12/md5sum.txt, or download it again."
        )
    extract(archive, root, part)
    return "downloaded"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="folder for <part>.tar.gz and LibriSpeech/<part>/")
    parser.add_argument("--parts", required=True, help=f"space-separated parts, of: {' '.join(ALL_PARTS)}")
    parser.add_argument("--base_url", default=DEFAULT_BASE_URL, help="where <part>.tar.gz are (http(s)://, file://)")
    parser.add_argument("--checksums", default=str(DEFAULT_CHECKSUMS), help="table <part> <bytes> <md5> <sha256>")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        checksums = read_checksums(Path(args.checksums))
        for part in args.parts.split():
            log(f"{part}: {fetch_part(root, part, args.base_url, checksums, args.checksums)}")
    except DownloadError as exc:
        log(f"ERROR: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
