"""Compact storage of teacher CTC posteriors, and their loader for ESPnet's data pipeline.
Why it exists: KD posteriors must be stored compactly with an exact KL bound; no library has such a format.

Per utterance, one (T', 2k + 2) uint16 array in a kaldiio ark (numpy format): the ids of the
frame's k most likely tokens, their log-probs as float16 bits, and the float32 bits of the
leftover log-mass ``log(1 - sum(top-k probs))``, computed at dump time in float64 from the
unrounded log-probs (rebuilding it from the float16 values was wrong by orders of magnitude on
peaky frames). ``topk_to_dense`` renormalises the top k to ``1 - leftover`` and spreads the
leftover evenly over the other V - k tokens, so the KL to the expanded frame is finite.
``--format dense`` stores the whole (T', V) float16 matrix instead.

``meta.json`` beside ``post.scp`` records the ``layout``, format, k, vocabulary size and the
``stamp`` (``dump_stamp``) of what the posteriors were made from; every shard carries it too.
"""

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import kaldiio
import numpy as np
from scipy.special import logsumexp

from espnet_oracle.utils.datadir import atomic_write_text, speech_scp
from espnet_oracle.utils.stamps import ark_path, read_stamp, sha256_file

META_NAME = "meta.json"
# a set's merged outputs
SET_FILES = (".done", "post.scp", META_NAME, "utt2num_frames", "stats.json")
# Storage layout version, bumped whenever old dumps can no longer be read right.
# 1: top-k ids + float16 log-probs, leftover rebuilt from the rounded values.
# 2: + float32 leftover log-mass per frame; every shard and set stamped.
LAYOUT = 2
# Floor for the leftover log-mass, only so that a frame whose other tokens are
# all -inf still gives them a finite log-probability (exp(-1e4) is 0 anyway).
LOG_LEFTOVER_FLOOR = -1.0e4


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """log(1 - exp(x)) for x <= 0, accurate for x near 0 and for x very negative."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > -math.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def topk_pack(log_probs: np.ndarray, k: int) -> np.ndarray:
    """(T', V) float log-probs -> (T', 2k + 2) uint16: [ids | float16 log-probs | float32 leftover]."""
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
    leftover = (logsumexp(np.take_along_axis(exact, rest, axis=1), axis=1, keepdims=True)
                - logsumexp(exact, axis=1, keepdims=True))
    leftover = np.minimum(leftover, 0.0).astype(np.float32)
    return np.concatenate([ids.astype(np.uint16), values.view(np.uint16), leftover.view(np.uint16)], axis=1)


def topk_unpack(packed: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T', 2k + 2) uint16 -> (T', k) int64 ids, (T', k) float32 log-probs,
    (T',) float32 leftover log-mass."""
    if packed.ndim != 2 or packed.shape[1] < 4 or packed.shape[1] % 2:
        raise ValueError(f"top-k posteriors of shape {packed.shape} are not (frames, 2k + 2): "
                         "written by an older layout? re-run stage 7 (dump teacher posteriors)")
    k = (packed.shape[1] - 2) // 2
    ids = packed[:, :k].astype(np.int64)
    values = np.ascontiguousarray(packed[:, k : 2 * k]).view(np.float16).astype(np.float32)
    leftover = np.ascontiguousarray(packed[:, 2 * k :]).view(np.float32)[:, 0]
    return ids, values, leftover


def topk_to_dense(
    ids: np.ndarray, values: np.ndarray, leftover: np.ndarray, vocab_size: int
) -> np.ndarray:
    """Expand top-k frames to (T', V) float32 log-probs (in float64, so tiny leftovers stay exact)."""
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
    top = values - logsumexp(values, axis=1, keepdims=True) + kept_total
    np.put_along_axis(dense, ids, top, axis=1)
    return dense.astype(np.float32)


def topk_compact(ids: np.ndarray, values: np.ndarray, leftover: np.ndarray, vocab_size: int) -> np.ndarray:
    """Unpacked top-k frames -> the (T', 2k + 2) float32 items of data type ``teacher_topk_posterior``:
    [ids | log-probs | leftover log-mass | vocabulary size] (``kd_loss.unpack_topk_batch`` reads them)."""
    frames = len(ids)
    return np.concatenate([ids.astype(np.float32), values.astype(np.float32),
                           leftover.reshape(frames, 1).astype(np.float32),
                           np.full((frames, 1), vocab_size, dtype=np.float32)], axis=1)


def features_fingerprint(feats_scp) -> str:
    """sha256 over a feats.scp (ids, file names, offsets) and the bytes of its arks.
    Directories are left out, so a moved dump dir keeps its fingerprint."""
    feats_scp = Path(feats_scp)
    digest = hashlib.sha256()
    files: Dict[str, None] = {}
    lines = sorted(line.split(maxsplit=1) for line in
                   feats_scp.read_text(encoding="utf-8").splitlines() if line.strip())
    for fields in lines:
        utt, spec = fields[0], (fields[1] if len(fields) > 1 else "")
        path = ark_path(spec)
        digest.update(f"{utt} {os.path.basename(path)}{spec[len(path):]}\n".encode("utf-8"))
        files.setdefault(path, None)
    for path in files:  # (in the sorted lines' order: the digest must not change)
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
    feats_scp = speech_scp(feats_dir)
    if not feats_scp.exists():
        raise FileNotFoundError(f"{feats_scp} not found — run stage 2 (features) first")
    return dict(layout=LAYOUT, format=fmt, k=k if fmt == "topk" else None,
                teacher_model_sha256=sha256_file(model_path),
                features_sha256=features_fingerprint(feats_scp),
                text_sha256=text_fingerprint(Path(feats_dir) / "text"))


_STAMP_WORDS = dict(layout="storage layout", format="format", k="k",
                    teacher_model_sha256="teacher model (sha256 of its model file)",
                    features_sha256="features (feats.scp and its ark files)",
                    text_sha256="transcripts (text)")


def stamp_differences(old: Optional[dict], new: dict) -> List[str]:
    """Human-readable list of what differs between two stamps (empty: same)."""
    if not old:
        return ["no stamp (written by an older version)"]
    short = lambda v: v[:12] if isinstance(v, str) and len(v) > 12 else v  # noqa: E731
    return [f"{_STAMP_WORDS.get(key, key)}: {short(old.get(key))} -> {short(new.get(key))}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


class PosteriorWriter:
    """One shard: ``data/post.<shard>.ark/.scp``, ``.num_frames`` (T' per utterance) and ``.json``
    (``stamp`` and the ``info`` given to ``close()``). ``close()`` writes the scp last, so an
    interrupted dump never leaves a half-written shard that looks complete."""

    def __init__(self, out_dir: str, shard: str, fmt: str = "topk", k: int = 8,
                 stamp: Optional[dict] = None, vocab_size: Optional[int] = None):
        if fmt not in ("topk", "dense"):
            raise ValueError(f"unknown posterior format {fmt!r} (topk or dense)")
        self.out_dir = Path(out_dir)
        (self.out_dir / "data").mkdir(parents=True, exist_ok=True)
        self.fmt, self.k, self.shard, self.stamp, self.vocab_size = fmt, k, shard, stamp, vocab_size
        self.ark, self.scp, self.num_frames, self.info_path = (
            self.out_dir / "data" / f"post.{shard}.{ext}" for ext in ("ark", "scp", "num_frames", "json"))
        self.arrays: Dict[str, np.ndarray] = {}

    def write(self, utt_id: str, log_probs: np.ndarray) -> None:
        """log_probs: (T', V) float log-probabilities of one utterance."""
        if utt_id in self.arrays:
            raise ValueError(f"utterance {utt_id!r} written twice to shard {self.shard}")
        where = f"utterance {utt_id!r} (shard {self.shard} of {self.out_dir})"
        if self.vocab_size is not None and (log_probs.ndim != 2 or log_probs.shape[1] != self.vocab_size):
            raise ValueError(f"{where}: teacher output of shape {log_probs.shape}, expected (frames, "
                             f"{self.vocab_size}) for its {self.vocab_size}-token list")
        # a diverged teacher (NaN) or scores that are not log-probabilities must not become KD targets
        if np.isnan(log_probs).any() or (log_probs > 1e-3).any():
            raise ValueError(f"{where}: teacher log-probabilities contain NaN or values above 0 "
                             "(diverged teacher or broken input); the shard is not written")
        dense = self.fmt == "dense"
        self.arrays[utt_id] = log_probs.astype(np.float16) if dense else topk_pack(log_probs, self.k)

    def read_info(self) -> Optional[dict]:
        """The finished shard's json (stamp, info), None if there is none."""
        if self.scp.exists() and self.num_frames.exists():
            return read_stamp(self.info_path)
        return None

    def remove(self) -> None:
        for path in (self.scp, self.ark, self.num_frames, self.info_path):
            path.unlink(missing_ok=True)

    def close(self, info: Optional[dict] = None) -> None:
        self.scp.unlink(missing_ok=True)  # an older shard of that number is no longer complete
        tmp_ark, tmp_scp = (p.with_name(p.name + ".tmp") for p in (self.ark, self.scp))
        kaldiio.save_ark(str(tmp_ark), self.arrays, scp=str(tmp_scp), write_function="numpy")
        scp_text = tmp_scp.read_text(encoding="utf-8").replace(str(tmp_ark), str(self.ark))
        tmp_scp.unlink()
        os.replace(tmp_ark, self.ark)
        atomic_write_text(self.num_frames, "".join(f"{u} {a.shape[0]}\n" for u, a in self.arrays.items()))
        atomic_write_text(self.info_path, _json(dict(info or {}, stamp=self.stamp)))
        atomic_write_text(self.scp, scp_text)


def _json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def remove_set_files(out_dir) -> None:
    """Remove a set's merged outputs (before any re-dump, so a stale set never looks complete)."""
    for name in SET_FILES:
        (Path(out_dir) / name).unlink(missing_ok=True)


def merge_shards(out_dir, count: int, meta: dict, check_ids=None, **stats) -> dict:
    """Write a set's meta.json, utt2num_frames, stats.json, post.scp and .done (last) from its
    shards 1..count; ``check_ids(sorted utterance ids)`` may refuse them first. Returns the stats."""
    out_dir = Path(out_dir)
    lines, frames, size = [], [], 0
    for index in range(1, count + 1):
        shard = PosteriorWriter(out_dir, str(index))
        lines += shard.scp.read_text(encoding="utf-8").splitlines()
        frames += shard.num_frames.read_text(encoding="utf-8").splitlines()
        size += shard.ark.stat().st_size
    lines.sort()
    frames.sort()
    if check_ids is not None:
        check_ids([line.split(maxsplit=1)[0] for line in lines])
    total = sum(int(line.split()[1]) for line in frames)
    write_meta(str(out_dir), **meta)
    atomic_write_text(out_dir / "utt2num_frames", "\n".join(frames) + "\n")
    stats = dict(utterances=len(lines), frames=total, bytes=size,
                 bytes_per_frame=size / max(total, 1), **stats)
    atomic_write_text(out_dir / "stats.json", json.dumps(stats, indent=2) + "\n")
    atomic_write_text(out_dir / "post.scp", "\n".join(lines) + "\n")
    atomic_write_text(out_dir / ".done", _json(dict(stamp=meta["stamp"])))
    return stats


def token_list_sha(token_list) -> str:
    """Short fingerprint of a token list, stored in meta.json and checked before KD."""
    return hashlib.sha256("\n".join(token_list).encode("utf-8")).hexdigest()[:16]


def write_meta(out_dir: str, **meta) -> None:
    """Write ``meta.json`` of a set (``layout`` defaults to the current ``LAYOUT``)."""
    meta.setdefault("layout", LAYOUT)
    atomic_write_text(Path(out_dir) / META_NAME, _json(meta))


def read_meta(scp_path: str) -> dict:
    path = Path(scp_path).parent / META_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {scp_path} was not written by "
                                "espnet_oracle.bin.dump_posteriors")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): re-run stage 7 (dump teacher posteriors)") from None
    missing = [key for key in ("format", "vocab_size") if key not in meta]
    if missing or meta["format"] not in ("topk", "dense") or (meta["format"] == "topk" and not meta.get("k")):
        raise ValueError(f"{path}: not a teacher posterior description (format topk with k, or dense; "
                         f"vocab_size), got {meta!r:.200}: re-run stage 7 (dump teacher posteriors)")
    return meta


def check_token_list(meta: dict, scp_path, token_list: Sequence[str], source) -> None:
    """Refuse posteriors dumped with another token list than ``token_list`` (read from ``source``),
    a list of the same size in another order included."""
    sha = token_list_sha(token_list)
    if meta.get("vocab_size") != len(token_list) or meta.get("token_list_sha") != sha:
        raise ValueError(f"{scp_path} was made with another token list ({meta.get('vocab_size')} tokens, "
                         f"sha {meta.get('token_list_sha')}) than {source} ({len(token_list)} tokens, "
                         f"sha {sha}): re-run stage 7 (dump teacher posteriors) with the student's token list")


def check_layout(meta: dict, scp_path) -> None:
    """Refuse posteriors stored in another layout than this code reads."""
    layout = meta.get("layout", 1)
    if layout != LAYOUT:
        raise ValueError(f"{scp_path}: teacher posteriors stored in layout {layout}, this version reads "
                         f"layout {LAYOUT} (top-k with the exact leftover mass, stamped with the teacher "
                         "and features): re-run stage 7 (dump teacher posteriors) for this set")


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
            raise KeyError(f"utterance {utt_id!r} has no teacher posteriors in {self.scp_path}: "
                           "re-run stage 7 (dump teacher posteriors) for this data set") from None
        if self.fmt == "dense":
            if array.ndim != 2 or array.shape[1] != self.vocab_size:
                raise ValueError(f"utterance {utt_id!r} in {self.scp_path}: dense posteriors of shape "
                                 f"{array.shape}, meta.json says {self.vocab_size} tokens")
            return array.astype(np.float32)
        width = 2 * min(int(self.meta["k"]), self.vocab_size) + 2  # topk_pack keeps at most V
        if array.ndim != 2 or array.shape[1] != width:
            raise ValueError(f"utterance {utt_id!r} in {self.scp_path}: top-k posteriors of shape {array.shape}, "
                             f"meta.json says k={self.meta['k']} of {self.vocab_size} tokens (width {width})")
        ids, values, leftover = topk_unpack(array)
        if len(ids) and int(ids.max()) >= self.vocab_size:
            raise ValueError(f"utterance {utt_id!r} in {self.scp_path}: token id {int(ids.max())} outside "
                             f"the {self.vocab_size} tokens of meta.json")
        if self.compact:
            return topk_compact(ids, values, leftover, self.vocab_size)
        return topk_to_dense(ids, values, leftover, self.vocab_size)

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    def keys(self):  # kaldiio's keys: Mapping's would load every array for ``in``
        return self.arrays.keys()


def teacher_topk_posterior_loader(path: str) -> TeacherPosteriorReader:
    return TeacherPosteriorReader(path, compact=True)


# ESPnet data types of teacher posteriors (registered below)
DENSE_DATA_TYPE, TOPK_DATA_TYPE = "teacher_posterior", "teacher_topk_posterior"
DATA_TYPES = (DENSE_DATA_TYPE, TOPK_DATA_TYPE)


def register_data_type() -> None:
    """Make ``teacher_posterior`` and ``teacher_topk_posterior`` data types of ESPnet's dataset."""
    from espnet2.train import dataset

    written = ("Teacher CTC posteriors written by espnet_oracle.bin.dump_posteriors: post.scp with "
               "meta.json beside it")
    dataset.DATA_TYPES.setdefault(DENSE_DATA_TYPE, dict(
        func=TeacherPosteriorReader, kwargs=[],
        help=f"{written}; each item is a (frames, vocab) float32 matrix of log-probabilities"))
    # ESPnet picks the first key that re.match()es the requested type: no key may prefix another
    dataset.DATA_TYPES.setdefault(TOPK_DATA_TYPE, dict(
        func=teacher_topk_posterior_loader, kwargs=[],
        help=f"{written} (top-k format); each item is a (frames, 2k + 2) float32 matrix: "
        "ids, log-probs, leftover log-mass, vocabulary size"))
