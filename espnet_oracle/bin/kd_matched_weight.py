"""The KD weight that matches a ``teacher_nonblank`` run's effective one, with all frames.
Why it exists: the control experiment of ``teacher_nonblank`` needs this weight, measured from the posteriors.

``kd_frames: teacher_nonblank`` drops the frames whose teacher argmax is blank
from the KD term without renormalising, so with KD weight α its KD : CTC weight
ratio is effectively α·s : (1 − α), s being the share of training frames whose
teacher argmax is non-blank. A run on all frames with

    α' = α·s / (1 − α + α·s)

has the same ratio (α' : (1 − α') = α·s : (1 − α)); it separates "which frames"
from "how much KD weight" (local/kd_sweep.sh, setting ``a<α>_t<τ>_matched``).

Prints ``<s>\\t<α'>\\t<frames>`` (α' rounded to 4 significant digits, as in the
student dir names) for the teacher posteriors in --post_scp (blank id 0).
"""

import argparse
import sys

import numpy as np

from espnet_oracle.utils.systems import number

BLANK_ID = 0


def nonblank_share(post_scp: str) -> tuple:
    """(share of frames whose argmax is not blank, number of frames) of a teacher posterior set."""
    from espnet_oracle.utils.posteriors import TeacherPosteriorReader

    reader = TeacherPosteriorReader(post_scp)
    nonblank = frames = 0
    for utt_id in reader.keys():
        log_probs = reader[utt_id]
        nonblank += int(np.count_nonzero(log_probs.argmax(axis=-1) != BLANK_ID))
        frames += int(log_probs.shape[0])
    if frames == 0:
        raise ValueError(f"{post_scp} holds no frames")
    return nonblank / frames, frames


def matched_weight(alpha: float, share: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"KD weight must lie in (0, 1), got {alpha}")
    return alpha * share / (1.0 - alpha + alpha * share)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--post_scp", required=True, help="the teacher's train posteriors (post.scp)")
    parser.add_argument("--kd_weight", type=float, required=True, help="α of the teacher_nonblank run")
    args = parser.parse_args(argv)
    try:
        share, frames = nonblank_share(args.post_scp)
        weight = matched_weight(args.kd_weight, share)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"kd_matched_weight: {e}")
    print(f"{share:.4f}\t{number(weight)}\t{frames}")


if __name__ == "__main__":
    main()
