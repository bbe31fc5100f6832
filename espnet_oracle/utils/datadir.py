"""Kaldi-style data dir files (``<key> <value>`` lines), written atomically; exists for the recipes' data prep
and for the tools' bookkeeping (no torch or ESPnet import here: short-lived processes stay cheap)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional


class DataDirError(ValueError):
    """A data directory (or one of its files) is missing, malformed or inconsistent."""


def read_kaldi_map(path, allow_empty_value: bool = True) -> dict[str, str]:
    """``{key: rest of the line}`` in file order; a repeated key or a missing value raises DataDirError."""
    out: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if key in out or line[0].isspace() or not (value.strip() or allow_empty_value):
            raise DataDirError(f"{path}:{lineno}: malformed line or repeated key {key!r}")
        out[key] = value.strip()
    return out


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(src, dst) -> None:
    atomic_write_bytes(dst, Path(src).read_bytes())


def write_kaldi_map(path, mapping) -> None:
    keys = sorted(mapping)  # C-locale order, as Kaldi's data dirs
    if any(not k or any(c.isspace() for c in k) for k in keys):
        raise ValueError(f"{path}: empty key or key with whitespace")
    atomic_write_text(path, "".join(f"{k} {mapping[k]}".rstrip() + "\n" for k in keys))


def utt2spk_to_spk2utt(utt2spk) -> dict[str, str]:
    spk2utts: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utts.setdefault(utt2spk[utt], []).append(utt)
    return {spk: " ".join(utts) for spk, utts in sorted(spk2utts.items())}


def validate_data_dir(data_dir, required=("wav.scp", "text", "utt2spk"), optional=()) -> list[str]:
    """Every required (and present optional) file is sorted and has the same utterance ids; returns them."""
    data_dir = Path(data_dir)
    names = list(required) + [n for n in optional if (data_dir / n).is_file()]
    missing = [n for n in required if not (data_dir / n).is_file()]
    if missing:
        raise DataDirError(f"data dir {data_dir}: missing required file(s): {', '.join(missing)}")
    ids = None
    for name in names:
        keys = list(read_kaldi_map(data_dir / name))
        if keys != sorted(keys):
            raise DataDirError(f"{data_dir / name}: not sorted by key (use LC_ALL=C sort)")
        if ids is not None and keys != ids:
            raise DataDirError(f"data dir {data_dir}: utterance ids of {names[0]} and {name} differ")
        ids = keys
    return ids


# The model and input files every tool finds in an experiment / dump dir; here, not in
# utils/inference.py, so that finding them does not import torch and ESPnet (dump bookkeeping).
def model_file(exp_dir: Path, name: Optional[str] = None) -> Path:
    """The averaged checkpoint ESPnet leaves after training (valid.loss.ave.pth), or the one named."""
    if name is not None:
        if not (Path(exp_dir) / name).exists():
            raise FileNotFoundError(f"{exp_dir}: no {name} — train it first (or name another checkpoint)")
        return Path(exp_dir) / name
    for name in ("valid.loss.ave.pth", "valid.loss.best.pth", "latest.pth"):
        path = Path(exp_dir) / name
        if path.exists():
            return path
    raise FileNotFoundError(f"{exp_dir}: no trained model (valid.loss.ave.pth) — train it first")


def speech_scp(feats_dir) -> Path:
    """The input list of a dump dir: feats.scp, or wav.scp for --feats_type raw."""
    feats_dir = Path(feats_dir)
    return feats_dir / "feats.scp" if (feats_dir / "feats.scp").exists() or not (feats_dir / "wav.scp").exists() \
        else feats_dir / "wav.scp"


def set_transcripts(feats_dir) -> dict[str, str]:
    """``{utt: transcript}`` of a dump dir, in the sorted order of its feats.scp / wav.scp; refuses a
    text that lacks some of the scp's utterances."""
    scp = speech_scp(feats_dir)
    if not scp.exists():
        raise FileNotFoundError(f"{scp} not found — run stage 2 (features) first")
    texts = read_kaldi_map(Path(feats_dir) / "text")
    ids = sorted(read_kaldi_map(scp))
    missing = [u for u in ids if u not in texts]
    if missing:
        raise DataDirError(f"{feats_dir}/text lacks utterances of {scp.name}: {missing[:5]}")
    return {u: texts[u] for u in ids}
