"""Helpers for Kaldi-style data directories.

A data directory holds one file per kind of per-utterance information
(``wav.scp``, ``text``, ``utt2spk``, ...).  Each line is ``<key> <value>``:
the first whitespace-separated field is the key, the rest of the line (which
may contain spaces) is the value.  Files are sorted by key in byte order
(``LC_ALL=C sort``), which for ``str`` keys is Python's default ordering.

Every writer here is atomic: the data goes to a temporary file in the target
directory which is then ``os.replace``-d onto the final name, so a reader (or
a crashed run) never sees a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Union

PathLike = Union[str, os.PathLike]

#: How many offending ids an error message lists.
MAX_IDS_IN_ERROR = 5


class DataDirError(ValueError):
    """A data directory (or one of its files) is missing, malformed or inconsistent."""


def _format_ids(ids: Iterable[str], limit: int = MAX_IDS_IN_ERROR) -> str:
    ids = sorted(ids)
    shown = ", ".join(ids[:limit])
    if len(ids) > limit:
        shown += f", ... ({len(ids) - limit} more)"
    return shown


# --------------------------------------------------------------------------- #
# Reading / writing                                                            #
# --------------------------------------------------------------------------- #
def read_kaldi_map(path: PathLike, allow_empty_value: bool = True) -> dict[str, str]:
    """Read a ``<key> <value>`` file into an insertion-ordered dict.

    Blank lines are ignored.  A line that starts with whitespace (no key), a
    key without a value (unless ``allow_empty_value``) and a key seen twice
    raise :class:`DataDirError` naming the file and the line number.
    """
    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"{path}: no such file")
    mapping: dict[str, str] = {}
    first_line: dict[str, int] = {}
    with path.open("r", encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            if line[0].isspace():
                raise DataDirError(
                    f"{path}:{lineno}: malformed line (starts with whitespace, "
                    f"no key): {line!r}"
                )
            parts = line.split(maxsplit=1)
            key = parts[0]
            value = parts[1].strip() if len(parts) > 1 else ""
            if not value and not allow_empty_value:
                raise DataDirError(f"{path}:{lineno}: malformed line (key {key!r} has no value)")
            if key in mapping:
                raise DataDirError(
                    f"{path}:{lineno}: duplicate key {key!r} (first seen on line "
                    f"{first_line[key]})"
                )
            mapping[key] = value
            first_line[key] = lineno
    return mapping


def _tmp_path_for(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def _finish_atomic(tmp: str, path: Path) -> None:
    # mkstemp creates 0600 files; give the result the usual umask-based mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (tmp file in the same dir + rename)."""
    path = Path(path)
    fd, tmp = _tmp_path_for(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _finish_atomic(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(src: PathLike, dst: PathLike) -> None:
    """Copy the file ``src`` onto ``dst`` atomically."""
    dst = Path(dst)
    fd, tmp = _tmp_path_for(dst)
    try:
        with os.fdopen(fd, "wb") as fout, open(src, "rb") as fin:
            shutil.copyfileobj(fin, fout)
        _finish_atomic(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class atomic_output:
    """Context manager yielding a temporary path that is renamed onto ``path`` on success.

    Useful for writers that want a file name rather than a file object
    (``np.savez``, sentencepiece, ...).  On an exception the temporary file is
    removed and ``path`` is left untouched.
    """

    def __init__(self, path: PathLike, suffix: str = ".tmp"):
        self.path = Path(path)
        self.suffix = suffix
        self.tmp: str | None = None

    def __enter__(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=self.suffix
        )
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is None:
            _finish_atomic(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.unlink(self.tmp)


def write_kaldi_map(path: PathLike, mapping: Mapping[str, object], sort: bool = True) -> None:
    """Atomically write ``mapping`` as ``<key> <value>`` lines (sorted by key by default)."""
    keys = sorted(mapping) if sort else list(mapping)
    lines = []
    for key in keys:
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"{path}: invalid key {key!r} (empty or contains whitespace)")
        value = str(mapping[key])
        lines.append(f"{key} {value}\n" if value else f"{key}\n")
    atomic_write_text(path, "".join(lines))


def file_sha256(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's contents."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def utt2spk_to_spk2utt(utt2spk: Mapping[str, str]) -> dict[str, str]:
    """Invert ``utt2spk`` into ``spk2utt`` (utterances of a speaker in sorted order)."""
    spk2utts: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utts.setdefault(utt2spk[utt], []).append(utt)
    return {spk: " ".join(utts) for spk, utts in sorted(spk2utts.items())}


# --------------------------------------------------------------------------- #
# Validation                                                                   #
# --------------------------------------------------------------------------- #
def check_sorted(path: PathLike, keys: Sequence[str]) -> None:
    """Raise :class:`DataDirError` unless ``keys`` are strictly increasing (C-locale order)."""
    for i in range(1, len(keys)):
        if keys[i - 1] >= keys[i]:
            raise DataDirError(
                f"{path}: not sorted by key: {keys[i - 1]!r} comes before {keys[i]!r} "
                f"(entries {i} and {i + 1}); sort it with `LC_ALL=C sort`"
            )


def validate_data_dir(
    data_dir: PathLike,
    required: Sequence[str] = ("wav.scp", "text", "utt2spk"),
    optional: Sequence[str] = (),
    check_spk2utt: bool = True,
) -> list[str]:
    """Check a Kaldi-style data directory and return its sorted utterance ids.

    * every file in ``required`` exists and is well formed;
    * every file in ``required`` and every existing file in ``optional`` is
      sorted and has exactly the same set of utterance ids;
    * if ``spk2utt`` exists (and ``check_spk2utt``), it is the inverse of ``utt2spk``.

    Problems raise :class:`DataDirError` naming the directory, the file(s) and
    up to :data:`MAX_IDS_IN_ERROR` offending ids.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataDirError(f"data dir {data_dir}: no such directory")
    missing = [name for name in required if not (data_dir / name).is_file()]
    if missing:
        raise DataDirError(f"data dir {data_dir}: missing required file(s): {', '.join(missing)}")
    if (data_dir / "segments").exists():
        # Per-utterance files would then be keyed by segment while wav.scp is keyed by recording.
        raise DataDirError(f"data dir {data_dir}: has a 'segments' file, which is not supported")

    names = list(required) + [n for n in optional if n not in required and (data_dir / n).is_file()]
    maps: dict[str, dict[str, str]] = {}
    for name in names:
        mapping = read_kaldi_map(data_dir / name)
        if not mapping:
            raise DataDirError(f"data dir {data_dir}: {name} is empty")
        check_sorted(data_dir / name, list(mapping))
        maps[name] = mapping

    ref_name = names[0]
    ref = set(maps[ref_name])
    for name in names[1:]:
        other = set(maps[name])
        if other == ref:
            continue
        only_ref = ref - other
        only_other = other - ref
        parts = []
        if only_ref:
            parts.append(f"{len(only_ref)} id(s) in {ref_name} but not in {name}: {_format_ids(only_ref)}")
        if only_other:
            parts.append(f"{len(only_other)} id(s) in {name} but not in {ref_name}: {_format_ids(only_other)}")
        raise DataDirError(
            f"data dir {data_dir}: utterance ids of {ref_name} and {name} differ; " + "; ".join(parts)
        )

    if check_spk2utt and "utt2spk" in maps and (data_dir / "spk2utt").is_file():
        spk2utt = read_kaldi_map(data_dir / "spk2utt")
        utt2spk = maps["utt2spk"]
        seen: dict[str, str] = {}
        bad: set[str] = set()
        for spk, utts in spk2utt.items():
            for utt in utts.split():
                if utt in seen or utt2spk.get(utt) != spk:
                    bad.add(utt)
                seen[utt] = spk
        bad |= set(utt2spk) - set(seen)
        if bad:
            raise DataDirError(
                f"data dir {data_dir}: spk2utt does not match utt2spk for {len(bad)} "
                f"id(s): {_format_ids(bad)} (regenerate spk2utt from utt2spk)"
            )

    return sorted(ref)


# --------------------------------------------------------------------------- #
# Parallel jobs                                                                #
# --------------------------------------------------------------------------- #
def split_keys(keys: Sequence[str], nj: int) -> list[list[str]]:
    """Split ``keys`` into ``nj`` contiguous, order-preserving chunks.

    Chunk sizes differ by at most one (the first ``len(keys) % nj`` chunks get
    the extra key).  Always returns exactly ``nj`` lists; when ``nj`` exceeds
    ``len(keys)`` the trailing ones are empty.
    """
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    keys = list(keys)
    base, extra = divmod(len(keys), nj)
    chunks = []
    start = 0
    for j in range(nj):
        size = base + (1 if j < extra else 0)
        chunks.append(keys[start : start + size])
        start += size
    return chunks
