"""Compact storage of teacher CTC posteriors, and their loader for ESPnet's data pipeline.
Why it exists: KD posteriors must be stored compactly with an exact KL bound; no library has such a format.

On disk, per utterance, one uint16 array of shape (T', 2k + 2) in a kaldiio ark
(numpy format): columns [0, k) are the ids of the k most likely tokens of the
frame, columns [k, 2k) their log-probabilities as float16 bit patterns, and the
last two columns the float32 bit pattern of the frame's leftover log-mass
``log(1 - sum(top-k probs))``. That is 4k + 4 bytes a frame (36 bytes for k = 8)
plus a ~130-byte header per utterance.

The leftover log-mass is computed at dump time, in float64, as the logsumexp of
the (unrounded) log-probs outside the top k, so it is exact even on peaky frames
whose top-1 probability is 1 - 1e-9; rebuilding it as ``1 - sum(exp(top-k))``
from the float16-rounded values (storage layout 1) was wrong by orders of
magnitude there, which inflated the softened tail at temperature tau > 1.
When a frame is expanded (``topk_to_dense``), the top-k probabilities are
renormalised to total ``1 - leftover`` and the leftover is spread evenly over the
other ``V - k`` tokens, so the leftover mass is preserved exactly and the KL
divergence to the expanded frame is finite.
With ``--format dense`` the whole (T', V) float16 log-probability matrix is
stored instead (2V bytes a frame), for checking what top-k truncation costs.

``meta.json`` beside ``post.scp`` records the storage ``layout`` (see
``LAYOUT``), the format, k, the vocabulary size, and the ``stamp`` of what the
posteriors were made from: the teacher model's sha256, the options, and
fingerprints of the features and transcripts (``dump_stamp``). Every shard
carries the same stamp (``data/post.<n>.json``); a dump whose stamp differs
re-dumps, and ``check_posteriors`` refuses posteriors whose features changed.
"""

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

import kaldiio
import numpy as np

from espnet_oracle.utils.stamps import sha256_file

META_NAME = "meta.json"
# Storage layout version, bumped whenever old dumps can no longer be read right.
# 1: top-k ids + float16 log-probs, leftover rebuilt from the rounded values.
# 2: + float32 leftover log-mass per frame; every shard and set stamped.
LAYOUT = 2
# Floor for the leftover log-mass, only so that a frame whose other tokens are
# all -inf still gives them a finite log-probability (exp(-1e4) is 0 anyway).
LOG_LEFTOVER_FLOOR = -1.0e4


def _logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """float64 logsumexp over ``axis`` (keepdims); -inf for empty or all -inf rows."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[axis] == 0:
        shape = list(x.shape)
        shape[axis] = 1
        return np.full(shape, -np.inf)
    top = np.max(x, axis=axis, keepdims=True)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - safe).sum(axis=axis, keepdims=True)) + safe


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """log(1 - exp(x)) for x <= 0, accurate for x near 0 and for x very negative."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > -math.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def topk_pack(log_probs: np.ndarray, k: int) -> np.ndarray:
    """(T', V) float log-probs -> (T', 2k + 2) uint16.

    Columns: [ids | float16 log-prob bits | float32 leftover log-mass bits].
    """
    if log_probs.ndim != 2:
        raise ValueError(f"expected a (frames, vocab) matrix, got shape {log_probs.shape}")
    vocab_size = log_probs.shape[1]
    if vocab_size > np.iinfo(np.uint16).max:
        raise ValueError(f"top-k storage holds ids < 65536, vocabulary has {vocab_size}")
    k = min(k, vocab_size)
    order = np.argsort(-log_probs, axis=1, kind="stable")
    ids, rest = order[:, :k], order[:, k:]
    exact = log_probs.astype(np.float64)
    values = np.take_along_axis(exact, ids, axis=1).astype(np.float16)
    # exact leftover: the mass of the other tokens relative to the frame's total
    leftover = _logsumexp(np.take_along_axis(exact, rest, axis=1)) - _logsumexp(exact)
    leftover = np.minimum(leftover, 0.0).astype(np.float32)
    return np.concatenate(
        [ids.astype(np.uint16), values.view(np.uint16), leftover.view(np.uint16)], axis=1
    )


def topk_unpack(packed: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T', 2k + 2) uint16 -> (T', k) int64 ids, (T', k) float32 log-probs,
    (T',) float32 leftover log-mass."""
    if packed.ndim != 2 or packed.shape[1] < 4 or packed.shape[1] % 2:
        raise ValueError(
            f"top-k posteriors of shape {packed.shape} are not (frames, 2k + 2): "
            "written by an older layout? re-run stage 7 (dump teacher posteriors)"
        )
    k = (packed.shape[1] - 2) // 2
    ids = packed[:, :k].astype(np.int64)
    values = np.ascontiguousarray(packed[:, k : 2 * k]).view(np.float16).astype(np.float32)
    leftover = np.ascontiguousarray(packed[:, 2 * k :]).view(np.float32)[:, 0]
    return ids, values, leftover


def topk_to_dense(
    ids: np.ndarray, values: np.ndarray, leftover: np.ndarray, vocab_size: int
) -> np.ndarray:
    """Expand top-k frames to (T', V) log-probs.

    The top-k probabilities ``exp(values)`` are renormalised to total
    ``1 - exp(leftover)``; the leftover mass is spread evenly over the other
    ``V - k`` tokens. Computed in the log domain (float64), so tiny leftovers
    stay exact.
    """
    frames, k = ids.shape
    values = values.astype(np.float64)
    others = vocab_size - k
    dense = np.empty((frames, vocab_size), dtype=np.float64)
    if others > 0:
        left = np.maximum(np.asarray(leftover, dtype=np.float64).reshape(frames, 1),
                          LOG_LEFTOVER_FLOOR)
        kept_total = _log1mexp(left)
        dense[:] = left - math.log(others)
    else:
        kept_total = np.zeros((frames, 1))
    top = values - _logsumexp(values) + kept_total
    np.put_along_axis(dense, ids, top, axis=1)
    return dense.astype(np.float32)


def _ark_path(spec: str) -> str:
    """The file of a kaldi scp value ``path.ark:offset`` (or ``path.ark:offset[slice]``)."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.split("[", 1)[0].isdigit():
        return head
    return spec


def features_fingerprint(feats_scp) -> str:
    """sha256 over a feats.scp (ids, file names, offsets) and the bytes of its arks.

    Directories are left out, so a moved dump dir keeps its fingerprint; features
    regenerated with the same ids but other values do not.
    """
    feats_scp = Path(feats_scp)
    digest = hashlib.sha256()
    files: List[str] = []
    lines = sorted(line.split(maxsplit=1) for line in
                   feats_scp.read_text(encoding="utf-8").splitlines() if line.strip())
    for fields in lines:
        utt, spec = fields[0], (fields[1] if len(fields) > 1 else "")
        path = _ark_path(spec)
        digest.update(f"{utt} {os.path.basename(path)}{spec[len(path):]}\n".encode("utf-8"))
        if path not in files:
            files.append(path)
    for path in files:
        resolved = Path(path) if os.path.isabs(path) or Path(path).exists() else feats_scp.parent / path
        if not resolved.is_file():
            raise FileNotFoundError(f"{feats_scp} refers to {path}, which does not exist")
        digest.update(sha256_file(resolved).encode("ascii"))
    return digest.hexdigest()


def text_fingerprint(text_file) -> Optional[str]:
    """sha256 of a set's transcripts (what the Oracle Teacher is fed); None if absent."""
    text_file = Path(text_file)
    return sha256_file(text_file) if text_file.exists() else None


def dump_stamp(model_path, feats_dir, fmt: str, k: int) -> dict:
    """What a set of posteriors is made from: compared on every re-run and before KD."""
    from espnet_oracle.utils.inference import speech_scp

    feats_scp = speech_scp(feats_dir)
    if not feats_scp.exists():
        raise FileNotFoundError(f"{feats_scp} not found — run stage 2 (features) first")
    return dict(
        layout=LAYOUT,
        format=fmt,
        k=k if fmt == "topk" else None,
        teacher_model_sha256=sha256_file(model_path),
        features_sha256=features_fingerprint(feats_scp),
        text_sha256=text_fingerprint(Path(feats_dir) / "text"),
    )


_STAMP_WORDS = dict(
    layout="storage layout",
    format="format",
    k="k",
    teacher_model_sha256="teacher model (sha256 of its model file)",
    features_sha256="features (feats.scp and its ark files)",
    text_sha256="transcripts (text)",
)


def stamp_differences(old: Optional[dict], new: dict) -> List[str]:
    """Human-readable list of what differs between two stamps (empty: same)."""
    if not old:
        return ["no stamp (written by an older version)"]
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a != b:
            short = lambda v: v[:12] if isinstance(v, str) and len(v) > 12 else v  # noqa: E731
            out.append(f"{_STAMP_WORDS.get(key, key)}: {short(a)} -> {short(b)}")
    return out


class PosteriorWriter:
    """Collects one shard of teacher posteriors and writes ``post.<shard>.ark/.scp``.

    Beside them, ``post.<shard>.num_frames`` holds each utterance's frame count and
    ``post.<shard>.json`` the shard's ``stamp`` (see ``dump_stamp``) with any
    ``info`` given to ``close()``. The shard is written under temporary names and
    renamed on ``close()``, the scp last (an older scp is removed first), so an
    interrupted dump never leaves a half-written shard that looks complete.
    """

    def __init__(self, out_dir: str, shard: str, fmt: str = "topk", k: int = 8,
                 stamp: Optional[dict] = None):
        if fmt not in ("topk", "dense"):
            raise ValueError(f"unknown posterior format {fmt!r} (topk or dense)")
        self.out_dir = Path(out_dir)
        (self.out_dir / "data").mkdir(parents=True, exist_ok=True)
        self.fmt, self.k, self.shard = fmt, k, shard
        self.ark = self.out_dir / "data" / f"post.{shard}.ark"
        self.scp = self.out_dir / "data" / f"post.{shard}.scp"
        self.num_frames = self.out_dir / "data" / f"post.{shard}.num_frames"
        self.info_path = self.out_dir / "data" / f"post.{shard}.json"
        self.stamp = stamp
        self.arrays: Dict[str, np.ndarray] = {}

    def write(self, utt_id: str, log_probs: np.ndarray) -> None:
        """log_probs: (T', V) float log-probabilities of one utterance."""
        if utt_id in self.arrays:
            raise ValueError(f"utterance {utt_id!r} written twice to shard {self.shard}")
        if self.fmt == "topk":
            array = topk_pack(log_probs, self.k)
        else:
            array = log_probs.astype(np.float16)
        self.arrays[utt_id] = array

    def paths(self) -> List[Path]:
        """The shard's files, scp first (the one that marks it complete)."""
        return [self.scp, self.ark, self.num_frames, self.info_path]

    def read_info(self) -> Optional[dict]:
        """The finished shard's json (stamp, info), None if there is none."""
        if not (self.scp.exists() and self.info_path.exists() and self.num_frames.exists()):
            return None
        try:
            return json.loads(self.info_path.read_text(encoding="utf-8"))
        except ValueError:
            return None

    def remove(self) -> None:
        for path in self.paths():
            if path.exists():
                path.unlink()

    def close(self, info: Optional[dict] = None) -> None:
        if self.scp.exists():  # an older shard of that number is no longer complete
            self.scp.unlink()
        tmp_ark = self.ark.with_name(self.ark.name + ".tmp")
        tmp_scp = self.scp.with_name(self.scp.name + ".tmp")
        kaldiio.save_ark(str(tmp_ark), self.arrays, scp=str(tmp_scp), write_function="numpy")
        lines = Path(tmp_scp).read_text(encoding="utf-8").replace(str(tmp_ark), str(self.ark))
        Path(tmp_scp).write_text(lines, encoding="utf-8")
        tmp_frames = self.num_frames.with_name(self.num_frames.name + ".tmp")
        tmp_frames.write_text(
            "".join(f"{utt} {a.shape[0]}\n" for utt, a in self.arrays.items()), encoding="utf-8"
        )
        tmp_info = self.info_path.with_name(self.info_path.name + ".tmp")
        tmp_info.write_text(json.dumps(dict(info or {}, stamp=self.stamp), indent=2, sort_keys=True)
                            + "\n", encoding="utf-8")
        os.replace(tmp_ark, self.ark)
        os.replace(tmp_frames, self.num_frames)
        os.replace(tmp_info, self.info_path)
        os.replace(tmp_scp, self.scp)


def token_list_sha(token_list) -> str:
    """Short fingerprint of a token list, stored in meta.json and checked before KD."""
    return hashlib.sha256("\n".join(token_list).encode("utf-8")).hexdigest()[:16]


def write_meta(out_dir: str, **meta) -> None:
    """Write ``meta.json`` of a set (``layout`` defaults to the current ``LAYOUT``)."""
    meta.setdefault("layout", LAYOUT)
    path = Path(out_dir) / META_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_meta(scp_path: str) -> dict:
    path = Path(scp_path).parent / META_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: {scp_path} was not written by espnet_oracle.bin.dump_posteriors"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def check_layout(meta: dict, scp_path) -> None:
    """Refuse posteriors stored in another layout than this code reads."""
    layout = meta.get("layout", 1)
    if layout != LAYOUT:
        raise ValueError(
            f"{scp_path}: teacher posteriors stored in layout {layout}, this version reads "
            f"layout {LAYOUT} (top-k with the exact leftover mass, stamped with the teacher "
            "and features): re-run stage 7 (dump teacher posteriors) for this set"
        )


class TeacherPosteriorReader(Mapping):
    """utt_id -> (T', V) float32 teacher log-probs, read lazily from ``post.scp``.

    Registered as ESPnet data type ``teacher_posterior``:
    ``--train_data_path_and_name_and_type dump/.../post.scp,teacher_post,teacher_posterior``.
    ESPnet's collate function pads it and adds ``teacher_post_lengths`` (T').

    With ``compact`` (data type ``teacher_topk_posterior``, name ``teacher_topk_post``;
    top-k dumps only) each item is instead a (T', 2k + 2) float32 array: the k ids, their
    log-probs, the leftover log-mass and the vocabulary size (every frame), which
    ``kd_loss.frame_kd_loss_topk`` reads without expanding a frame to V values.
    """

    def __init__(self, scp_path: str, compact: bool = False):
        self.scp_path = scp_path
        self.meta = read_meta(scp_path)
        check_layout(self.meta, scp_path)
        self.vocab_size = int(self.meta["vocab_size"])
        self.fmt = self.meta["format"]
        if compact and self.fmt != "topk":
            raise ValueError(
                f"{scp_path}: data type teacher_topk_posterior reads top-k dumps, this one is "
                f"{self.fmt!r}: use data type teacher_posterior (name teacher_post)"
            )
        if compact and self.vocab_size >= 2**24:
            raise ValueError(f"{scp_path}: {self.vocab_size} tokens do not fit float32 ids")
        self.compact = compact
        self.arrays = kaldiio.load_scp(scp_path)

    def __getitem__(self, utt_id: str) -> np.ndarray:
        try:
            array = self.arrays[utt_id]
        except KeyError:
            raise KeyError(
                f"utterance {utt_id!r} has no teacher posteriors in {self.scp_path}: "
                "re-run stage 7 (dump teacher posteriors) for this data set"
            ) from None
        if self.fmt == "dense":
            return array.astype(np.float32)
        ids, values, leftover = topk_unpack(array)
        if not self.compact:
            return topk_to_dense(ids, values, leftover, self.vocab_size)
        frames = len(ids)
        vocab = np.full((frames, 1), self.vocab_size, dtype=np.float32)
        return np.concatenate([ids.astype(np.float32), values, leftover.reshape(frames, 1), vocab], axis=1)

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    def keys(self):
        return self.arrays.keys()


def teacher_posterior_loader(path: str) -> TeacherPosteriorReader:
    return TeacherPosteriorReader(path)


def teacher_topk_posterior_loader(path: str) -> TeacherPosteriorReader:
    return TeacherPosteriorReader(path, compact=True)


def register_data_type() -> None:
    """Make ``teacher_posterior`` and ``teacher_topk_posterior`` data types of ESPnet's dataset."""
    from espnet2.train import dataset

    written = ("Teacher CTC posteriors written by espnet_oracle.bin.dump_posteriors: post.scp with "
               "meta.json beside it")
    dataset.DATA_TYPES.setdefault(
        "teacher_posterior",
        dict(func=teacher_posterior_loader, kwargs=[],
             help=f"{written}; each item is a (frames, vocab) float32 matrix of log-probabilities"),
    )
    # ESPnet picks the first key that re.match()es the requested type: no key may prefix another
    dataset.DATA_TYPES.setdefault(
        "teacher_topk_posterior",
        dict(func=teacher_topk_posterior_loader, kwargs=[],
             help=f"{written} (top-k format); each item is a (frames, 2k + 2) float32 matrix: "
                  "ids, log-probs, leftover log-mass, vocabulary size"),
    )
