"""Stamps: what produced a trained model dir or a decode dir, so a rerun never reuses stale work.
Why it exists: a rerun must never reuse stale work, and ESPnet checks none of this.

A stamp is a JSON dict of what determines the result: for training (``<exp>/<name>/stamp.json``)
the config, ESPnet's options (minus ``--output_dir``) and a fingerprint of every input file they
name; for decoding (``<decode dir>/.done``) the model, config, features and decoding options.
A fingerprint is the file's hash, the hashes of the stamp files beside it (``.done``, ``meta.json``,
``stamp.json``) and, for ``*.scp``, the size and mtime of every archive it points into (regenerated
data with the same ids changes it). A dir whose stamp differs (or is missing) is moved aside to
``<dir>.stale-<time>``, never deleted, and made again.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from espnet_oracle.utils.datadir import atomic_write_text

STAMP_SIBLINGS = (".done", "meta.json", "stamp.json")
TRAIN_STAMP = "stamp.json"
#: Options that name where the result goes, not what it is.
IGNORED_OPTIONS = ("--output_dir",)


def sha256_file(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def ark_path(spec: str) -> str:
    """The file of a kaldi scp value ``path.ark:offset`` (or ``path.ark:offset[slice]``)."""
    head, sep, tail = spec.rpartition(":")
    return head if sep and tail.split("[", 1)[0].isdigit() else spec


def scp_targets(path, resolve: bool = False) -> List[str]:
    """The distinct files an scp file points into, in order of appearance (pipes skipped); ``resolve``:
    a relative one not found from the cwd is taken relative to the scp's dir."""
    fields = (line.split(maxsplit=1) for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines())
    files = dict.fromkeys(ark_path(f[1].strip()) for f in fields if len(f) == 2 and not f[1].rstrip().endswith("|"))
    return [f if not resolve or os.path.isabs(f) or os.path.exists(f) else str(Path(path).parent / f) for f in files]


def stat_of(path):
    """[size, mtime_ns] of a file, or "missing"."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return [st.st_size, st.st_mtime_ns]


def file_fingerprint(path) -> dict:
    path = Path(path)
    out = {"sha256": sha256_file(path)}
    for name in STAMP_SIBLINGS:
        sibling = path.parent / name
        if sibling.is_file() and sibling != path:
            out[name] = sha256_file(sibling)
    if path.suffix == ".scp":
        out["archives"] = {target: stat_of(target) for target in scp_targets(path)}
    return out


def option_files(args: Sequence[str]) -> List[str]:
    """Existing files named by option values (also inside ``a,b,c`` and ``key=value`` values)."""
    files: Dict[str, None] = {}
    for arg in args:
        if arg.startswith("--"):
            continue
        for part in arg.split(","):
            value = part.split("=", 1)[1] if "=" in part else part
            if value and os.path.isfile(value):
                files.setdefault(value, None)
    return list(files)


def strip_options(args: Sequence[str], ignored: Iterable[str] = IGNORED_OPTIONS) -> List[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ignored:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def train_stamp(config, args: Sequence[str]) -> dict:
    options = strip_options(args)
    return dict(kind="train", config=str(config), config_sha256=sha256_file(config), options=options,
                inputs={p: file_fingerprint(p) for p in option_files(options)})


def decode_stamp(model_dir, feats_dir, mode: str, beam_size: Optional[int],
                 model_name: str = "valid.loss.ave.pth") -> dict:
    model_dir = Path(model_dir)
    paths = [Path(feats_dir) / name for name in ("feats.scp", "wav.scp", "text")]
    return dict(kind="decode", model_sha256=sha256_file(model_dir / model_name),
                config_sha256=sha256_file(model_dir / "config.yaml"), mode=mode,
                beam_size=beam_size if mode == "beam" else None,
                inputs={str(path): file_fingerprint(path) for path in paths if path.is_file()})


def _same_value_spelling(arg: str) -> str:
    """``name=1`` and ``name=1.0`` configure the same model (``--model_conf kd_temperature=1``): one spelling."""
    name, eq, value = arg.partition("=")
    try:
        return f"{name}={float(value)!r}" if eq else arg
    except ValueError:
        return arg


def differences(old: Optional[dict], new: dict) -> List[str]:
    """Why ``old`` (None: no stamp) does not describe what ``new`` would make; [] if it does."""
    if old is None:
        return ["it has no stamp (made by an older version, or the stamp was removed)"]
    reasons = []
    for key in sorted(set(old) | set(new)):
        if key == "inputs" or old.get(key) == new.get(key):
            continue
        if key == "options":
            before, after = old.get(key) or [], new.get(key) or []
            same_before, same_after = ([_same_value_spelling(a) for a in d] for d in (before, after))
            if same_before == same_after:
                continue
            gone = [a for a, same in zip(before, same_before) if same not in same_after]
            added = [a for a, same in zip(after, same_after) if same not in same_before]
            detail = (f"removed {' '.join(gone) or '-'}; added {' '.join(added) or '-'}" if gone or added
                      else "same options in another order")
            reasons.append(f"options changed ({detail})")
        else:
            reasons.append(f"{key} changed ({old.get(key)!r} -> {new.get(key)!r})")
    old_inputs, new_inputs = old.get("inputs") or {}, new.get("inputs") or {}
    for path in sorted(set(old_inputs) | set(new_inputs)):
        if path not in new_inputs:
            reasons.append(f"input {path} no longer used")
        elif path not in old_inputs:
            reasons.append(f"new input {path}")
        elif old_inputs[path] != new_inputs[path]:
            reasons.append(f"input {path} changed")
    return reasons


def read_stamp(path) -> Optional[dict]:
    try:
        stamp = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def write_stamp(path, stamp: dict) -> None:
    atomic_write_text(path, json.dumps(stamp, indent=1, sort_keys=True) + "\n")


def move_aside(directory) -> Path:
    """Rename ``directory`` (or a symlink to one) to ``<directory>.stale-<time>``; returns the new path."""
    directory = Path(directory)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = directory.with_name(f"{directory.name}.stale-{stamp}")
    n = 1
    while target.exists() or target.is_symlink():
        n += 1
        target = directory.with_name(f"{directory.name}.stale-{stamp}-{n}")
    os.rename(directory, target)
    return target
