"""``--oracle_kd_shift_frames auto``: the whole frames that move the Oracle Teacher's posteriors onto the
conventional teacher's word onsets on the validation set (README "KD variants"); a rule of this project.

Reads the two teachers' greedy decode dirs scored by ``espnet_oracle.bin.score`` (``scores.json`` with
``mean_onset_offset_ms``, which needs the set's ``word_align``; ``frame_shift_ms``) and prints
``-(Oracle onset - conventional onset) / frame shift``, rounded half away from zero.
"""

import argparse
import json
import math
import sys
from pathlib import Path

from espnet_oracle.utils.datadir import atomic_write_text


def onset_move(conventional_dir: Path, oracle_dir: Path) -> dict:
    """{"move_frames": N, and the onsets (ms) and frame shift it comes from}; ValueError naming the file."""
    onsets, shifts = {}, {}
    for name, decode_dir in (("conventional", Path(conventional_dir)), ("oracle", Path(oracle_dir))):
        scores, shift = decode_dir / "scores.json", decode_dir / "frame_shift_ms"
        try:
            onsets[name] = json.loads(scores.read_text()).get("mean_onset_offset_ms")
            shifts[name] = float(shift.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read {scores} / {shift} (score.py on a greedy decode writes them): {e}") from e
        if onsets[name] is None:
            raise ValueError(f"{scores}: no word onsets (the set needs word_align; none of its words were recognised?)")
    if shifts["conventional"] != shifts["oracle"]:
        raise ValueError(f"the teachers' frame shifts differ ({shifts}): a move in frames has no single size")
    frames = -(onsets["oracle"] - onsets["conventional"]) / shifts["oracle"]
    return dict(move_frames=int(math.copysign(math.floor(abs(frames) + 0.5), frames)),
                conventional_onset_ms=onsets["conventional"], oracle_onset_ms=onsets["oracle"],
                frame_shift_ms=shifts["oracle"], conventional_decode_dir=str(conventional_dir),
                oracle_decode_dir=str(oracle_dir))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--conventional_decode_dir", required=True, type=Path)
    p.add_argument("--oracle_decode_dir", required=True, type=Path)
    p.add_argument("--out", type=Path, help="also write the move and its inputs here (JSON)")
    args = p.parse_args(argv)
    try:
        move = onset_move(args.conventional_decode_dir, args.oracle_decode_dir)
    except ValueError as e:
        print(f"onset_move: error: {e}", file=sys.stderr)
        return 1
    if args.out:
        atomic_write_text(args.out, json.dumps(move, indent=2) + "\n")
    print(move["move_frames"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
