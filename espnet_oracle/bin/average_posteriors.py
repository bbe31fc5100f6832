"""Average two (or more) teachers' stored posteriors into one posterior set.
Why it exists: no ESPnet tool mixes stored teacher posteriors (KD from both teachers at once).

Per frame the mixture ``sum_i w_i p_i(k|t)`` in probability space (weights normalised; equal by
default), in float64 from the expanded stored log-probs, stored as ``dump_posteriors`` stores a
teacher's. Refuses inputs whose utterance ids, frame counts, vocabulary, features, transcripts or
frame shift differ. The stamp is ``dump_stamp``'s with ``teacher_model_sha256`` a sha256 over the
inputs' teacher fingerprints and weights, and ``sources`` (each input's stamp and weight); a re-run
with the finished set's stamp does nothing, else the set is rewritten.
"""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from scipy.special import logsumexp

from espnet_oracle.utils.posteriors import (
    LAYOUT,
    PosteriorWriter,
    TeacherPosteriorReader,
    merge_shards,
    remove_set_files,
)
from espnet_oracle.utils.stamps import read_stamp


def mix_log_probs(log_probs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """(T', V) log-probs of ``sum_i w_i p_i``, computed in float64 (weights must sum to 1)."""
    stacked = np.stack([np.asarray(x, dtype=np.float64) for x in log_probs])  # (N, T', V)
    return logsumexp(stacked, axis=0, b=np.asarray(weights, dtype=np.float64).reshape(-1, 1, 1))


def _check_same(readers: List[TeacherPosteriorReader], names: List[str]) -> None:
    first, first_name = readers[0], names[0]
    for reader, name in zip(readers[1:], names[1:]):
        a, b = first.meta, reader.meta
        if a.get("vocab_size") != b.get("vocab_size") or a.get("token_list_sha") != b.get("token_list_sha"):
            raise ValueError(f"{first_name} and {name} were made with other token lists "
                             f"({a.get('vocab_size')} vs {b.get('vocab_size')} tokens)")
        sa, sb = a.get("stamp") or {}, b.get("stamp") or {}
        if not sa or not sb:
            raise ValueError(f"{first_name} or {name} carries no stamp: re-run stage 7")
        for key, what in (("features_sha256", "features"), ("text_sha256", "transcripts")):
            if sa.get(key) != sb.get(key):
                raise ValueError(f"{first_name} and {name} were dumped from other {what}")
        if a.get("frame_shift_ms") != b.get("frame_shift_ms"):
            raise ValueError(f"{first_name} and {name} have other frame shifts "
                             f"({a.get('frame_shift_ms')} vs {b.get('frame_shift_ms')} ms)")
        ids_a, ids_b = set(first.keys()), set(reader.keys())
        if ids_a != ids_b:
            only_a, only_b = sorted(ids_a - ids_b)[:5], sorted(ids_b - ids_a)[:5]
            raise ValueError(f"{first_name} and {name} hold other utterances: only in the first {only_a}, "
                             f"only in the second {only_b}")


def average_posteriors(post_scps: Sequence[Path], out_dir: Path, weights: Optional[Sequence[float]] = None,
                       fmt: str = "topk", k: int = 8, shard_size: int = 1000) -> bool:
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
    stamp = dict(layout=LAYOUT, format=fmt, k=k if fmt == "topk" else None, teacher_model_sha256=combined,
                 features_sha256=stamps[0].get("features_sha256"), text_sha256=stamps[0].get("text_sha256"),
                 sources=[dict(weight=w, stamp=s) for w, s in zip(weights, stamps)])
    out_dir = Path(out_dir)
    if (out_dir / "post.scp").exists() and (read_stamp(out_dir / ".done") or {}).get("stamp") == stamp:
        return False
    remove_set_files(out_dir)
    for path in sorted((out_dir / "data").glob("post.*")):
        path.unlink()
    started = time.time()
    utt_ids = sorted(readers[0].keys())
    shards = range(0, len(utt_ids), shard_size)
    for index, start in enumerate(shards, 1):
        writer = PosteriorWriter(str(out_dir), str(index), fmt=fmt, k=k, stamp=stamp)
        for utt in utt_ids[start : start + shard_size]:
            arrays = [reader[utt] for reader in readers]
            shape = arrays[0].shape
            for array, name in zip(arrays[1:], names[1:]):
                if array.shape != shape:
                    raise ValueError(f"utterance {utt}: {names[0]} has {shape[0]} frames x "
                                     f"{shape[1]} tokens, {name} {array.shape[0]} x {array.shape[1]}")
            writer.write(utt, mix_log_probs(arrays, weights))
        writer.close(info=dict(frame_shift_ms=readers[0].meta.get("frame_shift_ms")))
    first = readers[0].meta
    meta = dict(format=fmt, k=k if fmt == "topk" else None, vocab_size=readers[0].vocab_size,
                token_list_sha=first.get("token_list_sha"),
                teacher="average of " + ", ".join(f"{n} (weight {w:g})" for n, w in zip(names, weights)),
                teacher_model="average", feats_dir=first.get("feats_dir"),
                frame_shift_ms=first.get("frame_shift_ms"),
                averaged_from=[dict(post_scp=n, weight=w, teacher=r.meta.get("teacher"))
                               for n, w, r in zip(names, weights, readers)],
                leftover_mass=first.get("leftover_mass"), stamp=stamp)
    merge_shards(out_dir, len(shards), meta, seconds=time.time() - started)
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
    print(f"average_posteriors: {args.out_dir}" + ("/post.scp" if wrote else " is up to date"))


if __name__ == "__main__":
    main()
