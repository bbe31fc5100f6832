"""Global mean/variance statistics of a feature set, for ESPnet's GlobalMVN.

Usage::

    python -m espnet_oracle.bin.compute_cmvn_stats \\
        --feats_scp dump/fbank/train/feats.scp --out dump/fbank/train/feats_stats.npz

The output is the "new style" npz that ``espnet2.layers.global_mvn.GlobalMVN``
(``--normalize global_mvn --normalize_conf stats_file=...``) loads, the same
layout ESPnet's collect_stats writes:

* ``count``      -- int64 scalar, total number of frames
* ``sum``        -- float64 (D,), per-dimension sum over all frames
* ``sum_square`` -- float64 (D,), per-dimension sum of squares

so ``mean = sum / count`` and ``var = sum_square / count - mean**2``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from espnet_oracle.utils.datadir import DataDirError, atomic_output, read_kaldi_map


def accumulate_stats(feats_scp: Path) -> tuple[int, np.ndarray, np.ndarray]:
    """Return ``(count, sum, sum_square)`` over every frame listed in ``feats_scp``."""
    import kaldiio

    entries = read_kaldi_map(feats_scp, allow_empty_value=False)
    if not entries:
        raise DataDirError(f"{feats_scp}: empty")
    count = 0
    total: Optional[np.ndarray] = None
    total_sq: Optional[np.ndarray] = None
    fd_cache: dict = {}
    try:
        for utt, spec in entries.items():
            try:
                mat = kaldiio.load_mat(spec, fd_dict=fd_cache)
            except Exception as exc:
                raise DataDirError(f"{feats_scp}: cannot read features of {utt} ({spec}): {exc}") from exc
            mat = np.asarray(mat, dtype=np.float64)
            if mat.ndim != 2:
                raise DataDirError(f"{feats_scp}: features of {utt} have shape {mat.shape}, expected (T, D)")
            if total is None:
                total = np.zeros(mat.shape[1], dtype=np.float64)
                total_sq = np.zeros(mat.shape[1], dtype=np.float64)
            elif mat.shape[1] != total.shape[0]:
                raise DataDirError(
                    f"{feats_scp}: features of {utt} have dimension {mat.shape[1]}, "
                    f"others have {total.shape[0]}"
                )
            count += mat.shape[0]
            total += mat.sum(axis=0)
            total_sq += np.square(mat).sum(axis=0)
    finally:
        for fd in fd_cache.values():
            fd.close()
    if count == 0:
        raise DataDirError(f"{feats_scp}: no frames")
    return count, total, total_sq


def write_stats(out: Path, count: int, total: np.ndarray, total_sq: np.ndarray) -> None:
    """Atomically write the GlobalMVN npz."""
    with atomic_output(out, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:  # a file object stops np.savez from renaming
            np.savez(f, count=np.int64(count), sum=total, sum_square=total_sq)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet_oracle.bin.compute_cmvn_stats",
        description="Global mean/variance stats (npz with count, sum, sum_square) for ESPnet GlobalMVN.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--feats_scp", required=True, help="feats.scp of the training set")
    parser.add_argument("--out", required=True, help="output npz, e.g. dump/fbank/train/feats_stats.npz")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    feats_scp, out = Path(args.feats_scp), Path(args.out)
    count, total, total_sq = accumulate_stats(feats_scp)
    write_stats(out, count, total, total_sq)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    print(
        f"compute_cmvn_stats: {count} frames x {total.shape[0]} dims -> {out} "
        f"(mean {mean.mean():.3f}, std {std.mean():.3f} averaged over dims)",
        file=sys.stderr,
    )
    return 0


def cli() -> int:
    try:
        return main()
    except DataDirError as exc:
        print(f"compute_cmvn_stats: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
