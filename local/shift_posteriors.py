#!/usr/bin/env python3
"""A copy of a stage-7 posterior dump with every utterance moved N frames in time, to test whether
a teacher's spike *timing* is what its KD students learn from (the Oracle Teacher fires ~1 frame
earlier in the word than the conventional one; README Findings 4 and 6).

N > 0 moves the posteriors later: the first frame is repeated N times in front and the last N
frames are dropped. N < 0 moves them earlier: the first |N| frames are dropped and the last frame
repeated at the end (a spike in an edge frame is then repeated too). Frame counts stay those of the
features, so the KD student's checks pass; the dump's stamp and meta are kept (same teacher,
features and transcripts) and meta gains ``shift_frames``. The pipeline cannot tell the copy from
the teacher's own dump: keep it in its own exp dir (README Results, "Moving the teachers'
posteriors in time").

  python local/shift_posteriors.py --in_dir exp/teacher_oracle/posteriors/train_sp \
      --out_dir exp_shift/teacher_oracle/posteriors/train_sp --frames 1
"""

import argparse
import shutil
import sys
from pathlib import Path

import kaldiio
import numpy as np

from espnet_oracle.utils.posteriors import read_meta, write_meta


def shift(frames: np.ndarray, by: int) -> np.ndarray:
    """(T', D) rows moved ``by`` rows later (earlier if negative), edge rows repeated; T' kept."""
    length = len(frames)
    if by == 0 or length == 0:
        return frames.copy()
    if by > 0:
        return np.concatenate([np.repeat(frames[:1], min(by, length), axis=0), frames[: max(length - by, 0)]])
    by = -by
    return np.concatenate([frames[min(by, length):], np.repeat(frames[-1:], min(by, length), axis=0)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in_dir", required=True, help="a stage-7 dump dir (post.scp, meta.json, utt2num_frames)")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--frames", type=int, required=True, help="N: > 0 later, < 0 earlier")
    args = parser.parse_args(argv)
    in_dir, out_dir = Path(args.in_dir), Path(args.out_dir)
    meta = read_meta(str(in_dir / "post.scp"))
    if meta.get("shift_frames"):
        raise SystemExit(f"{in_dir} is already shifted ({meta['shift_frames']} frames): shift the original")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "data").mkdir(exist_ok=True)
    arrays = {utt: shift(np.asarray(array), args.frames) for utt, array in kaldiio.load_scp(str(in_dir / "post.scp")).items()}
    kaldiio.save_ark(str(out_dir / "data" / "post.ark"), arrays, scp=str(out_dir / "post.scp"), write_function="numpy")
    for name in ("utt2num_frames", "stats.json"):
        if (in_dir / name).exists():
            shutil.copy(in_dir / name, out_dir / name)
    write_meta(str(out_dir), **meta, shift_frames=args.frames)
    print(f"shift_posteriors: {len(arrays)} utterances of {in_dir} moved {args.frames:+d} frames -> {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
