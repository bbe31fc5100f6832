"""Compact storage of teacher CTC posteriors, and their loader for ESPnet's data pipeline.

On disk, per utterance, one uint16 array of shape (T', 2k) in a kaldiio ark
(numpy format): columns [0, k) are the ids of the k most likely tokens of the
frame, columns [k, 2k) their log-probabilities as float16 bit patterns. That is
4k bytes a frame (32 bytes for k = 8) plus a ~130-byte header per utterance.
``meta.json`` beside ``post.scp`` records the format, k and the vocabulary size.

The mass outside the top k, ``1 - sum(top-k probs)``, is spread evenly over the
other ``V - k`` tokens when a frame is expanded back (``topk_to_dense``), so the
expanded frame is a proper distribution and the KL divergence to it is finite.
With ``--format dense`` the whole (T', V) float16 log-probability matrix is
stored instead (2V bytes a frame), for checking what top-k truncation costs.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Iterator, Mapping, Tuple

import kaldiio
import numpy as np

META_NAME = "meta.json"
# Floor for the leftover mass: a frame whose top k hold (numerically) all the
# mass still gives the other tokens a finite log-probability.
MIN_REMAINDER = 1e-8


def topk_pack(log_probs: np.ndarray, k: int) -> np.ndarray:
    """(T', V) float log-probs -> (T', 2k) uint16 [ids | float16 log-prob bits]."""
    if log_probs.ndim != 2:
        raise ValueError(f"expected a (frames, vocab) matrix, got shape {log_probs.shape}")
    vocab_size = log_probs.shape[1]
    if vocab_size > np.iinfo(np.uint16).max:
        raise ValueError(f"top-k storage holds ids < 65536, vocabulary has {vocab_size}")
    k = min(k, vocab_size)
    ids = np.argsort(-log_probs, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(log_probs, ids, axis=1).astype(np.float16)
    return np.concatenate([ids.astype(np.uint16), values.view(np.uint16)], axis=1)


def topk_unpack(packed: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(T', 2k) uint16 -> (T', k) int64 ids and (T', k) float32 log-probs."""
    k = packed.shape[1] // 2
    ids = packed[:, :k].astype(np.int64)
    values = np.ascontiguousarray(packed[:, k:]).view(np.float16).astype(np.float32)
    return ids, values


def topk_to_dense(ids: np.ndarray, values: np.ndarray, vocab_size: int) -> np.ndarray:
    """Expand top-k frames to (T', V) log-probs, the leftover mass spread evenly."""
    frames, k = ids.shape
    kept = np.exp(values.astype(np.float64))
    total = kept.sum(axis=1, keepdims=True)
    # float16 rounding can push the kept mass slightly over 1
    kept = np.where(total > 1.0, kept / total, kept)
    remainder = np.maximum(1.0 - kept.sum(axis=1, keepdims=True), MIN_REMAINDER)
    others = max(vocab_size - k, 1)
    dense = np.repeat(remainder / others, vocab_size, axis=1)
    np.put_along_axis(dense, ids, kept, axis=1)
    dense /= dense.sum(axis=1, keepdims=True)
    return np.log(dense).astype(np.float32)


class PosteriorWriter:
    """Collects one shard of teacher posteriors and writes ``post.<shard>.ark/.scp``.

    Beside them, ``post.<shard>.num_frames`` holds each utterance's frame count.
    The shard is written under temporary names and renamed on ``close()``, the scp
    last, so an interrupted dump never leaves a half-written shard that looks complete.
    """

    def __init__(self, out_dir: str, shard: str, fmt: str = "topk", k: int = 8):
        if fmt not in ("topk", "dense"):
            raise ValueError(f"unknown posterior format {fmt!r} (topk or dense)")
        self.out_dir = Path(out_dir)
        (self.out_dir / "data").mkdir(parents=True, exist_ok=True)
        self.fmt, self.k, self.shard = fmt, k, shard
        self.ark = self.out_dir / "data" / f"post.{shard}.ark"
        self.scp = self.out_dir / "data" / f"post.{shard}.scp"
        self.num_frames = self.out_dir / "data" / f"post.{shard}.num_frames"
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

    def close(self) -> None:
        tmp_ark = self.ark.with_name(self.ark.name + ".tmp")
        tmp_scp = self.scp.with_name(self.scp.name + ".tmp")
        kaldiio.save_ark(str(tmp_ark), self.arrays, scp=str(tmp_scp), write_function="numpy")
        lines = Path(tmp_scp).read_text(encoding="utf-8").replace(str(tmp_ark), str(self.ark))
        Path(tmp_scp).write_text(lines, encoding="utf-8")
        tmp_frames = self.num_frames.with_name(self.num_frames.name + ".tmp")
        tmp_frames.write_text(
            "".join(f"{utt} {a.shape[0]}\n" for utt, a in self.arrays.items()), encoding="utf-8"
        )
        os.replace(tmp_ark, self.ark)
        os.replace(tmp_frames, self.num_frames)
        os.replace(tmp_scp, self.scp)


def token_list_sha(token_list) -> str:
    """Short fingerprint of a token list, stored in meta.json and checked before KD."""
    return hashlib.sha256("\n".join(token_list).encode("utf-8")).hexdigest()[:16]


def write_meta(out_dir: str, **meta) -> None:
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


class TeacherPosteriorReader(Mapping):
    """utt_id -> (T', V) float32 teacher log-probs, read lazily from ``post.scp``.

    Registered as ESPnet data type ``teacher_posterior``:
    ``--train_data_path_and_name_and_type dump/.../post.scp,teacher_post,teacher_posterior``.
    ESPnet's collate function pads it and adds ``teacher_post_lengths`` (T').
    """

    def __init__(self, scp_path: str):
        self.scp_path = scp_path
        self.meta = read_meta(scp_path)
        self.vocab_size = int(self.meta["vocab_size"])
        self.fmt = self.meta["format"]
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
        ids, values = topk_unpack(array)
        return topk_to_dense(ids, values, self.vocab_size)

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    def keys(self):
        return self.arrays.keys()


def teacher_posterior_loader(path: str) -> TeacherPosteriorReader:
    return TeacherPosteriorReader(path)


def register_data_type() -> None:
    """Make ``teacher_posterior`` a data type of ESPnet's dataset (idempotent)."""
    from espnet2.train import dataset

    dataset.DATA_TYPES.setdefault(
        "teacher_posterior",
        dict(
            func=teacher_posterior_loader,
            kwargs=[],
            help="Teacher CTC posteriors written by espnet_oracle.bin.dump_posteriors: "
            "post.scp with meta.json beside it; each item is a (frames, vocab) "
            "float32 matrix of log-probabilities",
        ),
    )
