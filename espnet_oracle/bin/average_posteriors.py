"""Average two (or more) teachers' stored posteriors into one posterior set.
Why it exists: no ESPnet tool mixes stored teacher posteriors (KD from both teachers at once).

For KD from both teachers at once: per utterance and frame, the mixture
``p(k|t) = sum_i w_i p_i(k|t)`` in probability space (weights normalised to sum
to 1; equal by default), computed in float64 from the stored log-probs (top-k
sets are first expanded as ``TeacherPosteriorReader`` does), then stored like
``dump_posteriors`` stores a teacher's: ``post.scp``, ``data/post.<n>.*``
shards, ``meta.json``, ``utt2num_frames``, ``stats.json``, ``.done``.

Refuses (exit status 1, naming what differs) inputs whose utterance ids,
per-utterance frame counts, vocabulary (size, token-list fingerprint),
features or transcripts (stamp fingerprints) or frame shift differ: a frame
of one set must be the same frame of the other.

Stamp: ``layout``, ``format``, ``k``, ``features_sha256`` and ``text_sha256``
as in ``dump_stamp`` (shared by the inputs); ``teacher_model_sha256`` is a
sha256 over the inputs' teacher fingerprints and weights, and ``sources``
lists each input's stamp and weight. A re-run whose stamp equals the finished
set's does nothing; otherwise (a source was re-dumped, other weights, ...)
the set is rewritten. ``check_posteriors`` checks the features and transcripts
of the averaged set as of any other (its meta has no single teacher model file
to re-hash; re-running this tool after stage 7 catches a changed teacher).
"""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from espnet_oracle.utils.datadir import atomic_write_text
from espnet_oracle.utils.posteriors import (
    LAYOUT,
    META_NAME,
    PosteriorWriter,
    TeacherPosteriorReader,
    _logsumexp,
    write_meta,
)

SET_FILES = (".done", "post.scp", META_NAME, "utt2num_frames", "stats.json")


def mix_log_probs(log_probs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """(T', V) log-probs of ``sum_i w_i p_i``, computed in float64 (weights must sum to 1)."""
    stacked = np.stack([np.asarray(x, dtype=np.float64) for x in log_probs])  # (N, T', V)
    with np.errstate(divide="ignore"):
        log_w = np.log(np.asarray(weights, dtype=np.float64)).reshape(-1, 1, 1)
    return _logsumexp(stacked + log_w, axis=0)[0]


def _check_same(readers: List[TeacherPosteriorReader], names: List[str]) -> None:
    first, first_name = readers[0], names[0]
    for reader, name in zip(readers[1:], names[1:]):
        a, b = first.meta, reader.meta
        if a.get("vocab_size") != b.get("vocab_size") or a.get("token_list_sha") != b.get("token_list_sha"):
            raise ValueError(
                f"{first_name} and {name} were made with other token lists "
                f"({a.get('vocab_size')} vs {b.get('vocab_size')} tokens)"
            )
        sa, sb = a.get("stamp") or {}, b.get("stamp") or {}
        if not sa or not sb:
            raise ValueError(f"{first_name} or {name} carries no stamp: re-run stage 7")
        for key, what in (("features_sha256", "features"), ("text_sha256", "transcripts")):
            if sa.get(key) != sb.get(key):
                raise ValueError(f"{first_name} and {name} were dumped from other {what}")
        if a.get("frame_shift_ms") != b.get("frame_shift_ms"):
            raise ValueError(
                f"{first_name} and {name} have other frame shifts "
                f"({a.get('frame_shift_ms')} vs {b.get('frame_shift_ms')} ms)"
            )
        ids_a, ids_b = set(first.keys()), set(reader.keys())
        if ids_a != ids_b:
            only_a, only_b = sorted(ids_a - ids_b)[:5], sorted(ids_b - ids_a)[:5]
            raise ValueError(
                f"{first_name} and {name} hold other utterances: only in the first {only_a}, "
                f"only in the second {only_b}"
            )


def average_posteriors(
    post_scps: Sequence[Path],
    out_dir: Path,
    weights: Optional[Sequence[float]] = None,
    fmt: str = "topk",
    k: int = 8,
    shard_size: int = 1000,
) -> bool:
    """Write the averaged set to ``out_dir``; False if it was already up to date."""
    post_scps = [Path(p) for p in post_scps]
    if len(post_scps) < 2:
        raise ValueError("give at least two posterior sets to average")
    weights = [1.0] * len(post_scps) if weights is None else [float(w) for w in weights]
    if len(weights) != len(post_scps) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need one weight >= 0 per set, not all 0: {weights}")
    weights = [w / sum(weights) for w in weights]
    names = [str(p) for p in post_scps]
    readers = [TeacherPosteriorReader(str(p)) for p in post_scps]
    _check_same(readers, names)
    stamps = [r.meta["stamp"] for r in readers]
    combined = hashlib.sha256(json.dumps(
        [[w, s.get("teacher_model_sha256")] for w, s in zip(weights, stamps)]).encode()).hexdigest()
    stamp = dict(
        layout=LAYOUT,
        format=fmt,
        k=k if fmt == "topk" else None,
        teacher_model_sha256=combined,
        features_sha256=stamps[0].get("features_sha256"),
        text_sha256=stamps[0].get("text_sha256"),
        sources=[dict(weight=w, stamp=s) for w, s in zip(weights, stamps)],
    )
    out_dir = Path(out_dir)
    done = out_dir / ".done"
    if done.exists() and (out_dir / "post.scp").exists():
        try:
            if json.loads(done.read_text(encoding="utf-8")).get("stamp") == stamp:
                return False
        except ValueError:
            pass
    for name in SET_FILES:
        if (out_dir / name).exists():
            (out_dir / name).unlink()
    if (out_dir / "data").exists():
        for path in sorted((out_dir / "data").glob("post.*")):
            path.unlink()
    started = time.time()
    utt_ids = sorted(readers[0].keys())
    vocab_size = readers[0].vocab_size
    lines, frames_lines, total_bytes, total_frames = [], [], 0, 0
    for index, start in enumerate(range(0, len(utt_ids), shard_size), 1):
        writer = PosteriorWriter(str(out_dir), str(index), fmt=fmt, k=k, stamp=stamp)
        for utt in utt_ids[start : start + shard_size]:
            arrays = [reader[utt] for reader in readers]
            for array, name in zip(arrays[1:], names[1:]):
                if array.shape != arrays[0].shape:
                    raise ValueError(
                        f"utterance {utt}: {names[0]} has {arrays[0].shape[0]} frames x "
                        f"{arrays[0].shape[1]} tokens, {name} {array.shape[0]} x {array.shape[1]}"
                    )
            mixed = mix_log_probs(arrays, weights)
            writer.write(utt, mixed)
            total_frames += mixed.shape[0]
        writer.close(info=dict(frame_shift_ms=readers[0].meta.get("frame_shift_ms")))
        lines.extend(writer.scp.read_text(encoding="utf-8").splitlines())
        frames_lines.extend(writer.num_frames.read_text(encoding="utf-8").splitlines())
        total_bytes += writer.ark.stat().st_size
    write_meta(
        str(out_dir),
        format=fmt,
        k=k if fmt == "topk" else None,
        vocab_size=vocab_size,
        token_list_sha=readers[0].meta.get("token_list_sha"),
        teacher="average of " + ", ".join(f"{n} (weight {w:g})" for n, w in zip(names, weights)),
        teacher_model="average",
        feats_dir=readers[0].meta.get("feats_dir"),
        frame_shift_ms=readers[0].meta.get("frame_shift_ms"),
        averaged_from=[dict(post_scp=n, weight=w, teacher=r.meta.get("teacher"))
                       for n, w, r in zip(names, weights, readers)],
        leftover_mass=readers[0].meta.get("leftover_mass"),
        stamp=stamp,
    )
    atomic_write_text(out_dir / "utt2num_frames", "\n".join(sorted(frames_lines)) + "\n")
    stats = dict(utterances=len(lines), frames=total_frames, bytes=total_bytes,
                 bytes_per_frame=total_bytes / max(total_frames, 1),
                 seconds=time.time() - started)
    atomic_write_text(out_dir / "stats.json", json.dumps(stats, indent=2) + "\n")
    atomic_write_text(out_dir / "post.scp", "\n".join(sorted(lines)) + "\n")
    atomic_write_text(done, json.dumps(dict(stamp=stamp), indent=2, sort_keys=True) + "\n")
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--post_scp", action="append", required=True,
                        help="post.scp of a teacher's set (repeat, at least twice)")
    parser.add_argument("--weights", type=float, nargs="+", default=None,
                        help="one per --post_scp (default: equal)")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--format", choices=("topk", "dense"), default="topk")
    parser.add_argument("--topk", type=int, default=8)
    parser.add_argument("--shard_size", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        wrote = average_posteriors(args.post_scp, Path(args.out_dir), args.weights,
                                   args.format, args.topk, args.shard_size)
    except (FileNotFoundError, ValueError, KeyError) as error:
        sys.exit(f"average_posteriors: {error}")
    if wrote:
        print(f"average_posteriors: {args.out_dir}/post.scp")
    else:
        print(f"average_posteriors: {args.out_dir} is up to date")


if __name__ == "__main__":
    main()
