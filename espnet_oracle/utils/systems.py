"""Names of the experiment directories of the students: one definition for run.sh and Python.
Why it exists: run.sh and Python must agree on the student directory names.

A KD student's directory name carries the KD settings, so students distilled
with other settings never share (or silently reuse) a directory::

    student_nokd_seed1                      no KD: nothing to carry
    student_convkd_a0.5_t1_all_seed1        KD from the conventional teacher
    student_oraclekd_a0.5_t1_nonblank_seed2 KD from the Oracle Teacher, teacher_nonblank frames
    student_oraclekd_a0.5_t1_renorm_seed1   ... teacher_nonblank_renorm (weight-preserving)

run.sh calls ``python -m espnet_oracle.utils.systems`` (see ``main``); stage 10
(make_results) and the plots import :func:`student_dir`.
"""

from __future__ import annotations

import argparse
import re
from typing import Optional

STUDENT_SYSTEMS = ("nokd", "convkd", "oraclekd")
KD_FRAMES = {"all": "all", "teacher_nonblank": "nonblank", "teacher_nonblank_renorm": "renorm"}
#: student_<system>[_a<alpha>_t<tau>_<frames>]_seed<seed>
STUDENT_DIR = re.compile(
    r"^student_(?P<system>nokd|convkd|oraclekd)"
    r"(?:_a(?P<alpha>[0-9.e+-]+)_t(?P<tau>[0-9.e+-]+)_(?P<frames>all|nonblank|renorm))?"
    r"_seed(?P<seed>[0-9]+)$"
)


def number(value) -> str:
    """Shortest stable spelling of a number: 0.5 -> 0.5, 1.0 -> 1, 0.38461538 -> 0.3846."""
    return f"{float(value):.4g}"


def kd_tag(kd_weight, kd_temperature, kd_frames: str) -> str:
    if kd_frames not in KD_FRAMES:
        raise ValueError(f"unknown kd_frames {kd_frames!r} (one of {', '.join(KD_FRAMES)})")
    return f"a{number(kd_weight)}_t{number(kd_temperature)}_{KD_FRAMES[kd_frames]}"


def student_group(system: str, kd_weight=None, kd_temperature=None, kd_frames: Optional[str] = None) -> str:
    """The directory name without its seed, e.g. ``student_oraclekd_a0.5_t1_all``."""
    if system not in STUDENT_SYSTEMS:
        raise ValueError(f"unknown student system {system!r} (one of {', '.join(STUDENT_SYSTEMS)})")
    if system == "nokd":
        return "student_nokd"
    return f"student_{system}_{kd_tag(kd_weight, kd_temperature, kd_frames)}"


def student_dir(system: str, seed, kd_weight=None, kd_temperature=None, kd_frames: Optional[str] = None) -> str:
    return f"{student_group(system, kd_weight, kd_temperature, kd_frames)}_seed{int(seed)}"


def parse_student_dir(name: str) -> Optional[dict]:
    """The settings a student directory name carries, or None if it is no student dir name."""
    match = STUDENT_DIR.match(name)
    if match is None:
        return None
    out = match.groupdict()
    out["seed"] = int(out["seed"])
    out["group"] = name[: name.rindex("_seed")]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print student experiment dir names, one a line.")
    parser.add_argument("--systems", default="nokd convkd oraclekd")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--kd_weight", default="0.5")
    parser.add_argument("--kd_temperature", default="1.0")
    parser.add_argument("--kd_frames", default="all")
    args = parser.parse_args(argv)
    try:
        for system in args.systems.split():
            for seed in args.seeds.split():
                print(student_dir(system, seed, args.kd_weight, args.kd_temperature, args.kd_frames))
    except ValueError as e:
        parser.exit(2, f"espnet_oracle.utils.systems: {e}\n")


if __name__ == "__main__":
    main()
