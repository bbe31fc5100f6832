"""Names of the experiment directories of the students: one definition for run.sh and Python.
Why it exists: run.sh and Python must agree on the student directory names.

A student's directory name carries the settings that make it what it is, so
students trained with other settings never share (or silently reuse) a
directory::

    student_nokd_seed1                      no KD: nothing to carry
    student_convkd_a0.5_t1_all_seed1        frame-level KD from the conventional teacher
    student_oraclekd_a0.5_t1_nonblank_seed2 ... from the Oracle Teacher, teacher_nonblank frames
    student_oraclekd_a0.5_t1_renorm_seed1   ... teacher_nonblank_renorm (weight-preserving)
    student_convkd_a0.5_t1_words_seed1      ... teacher_nonblank_words (KL over non-blank tokens)
    student_avgkd_a0.5_t1_nonblank_seed1    ... from both teachers' averaged posteriors

and the KD variants (issue 12)::

    student_convguided_g1_seed1             Guided CTC (weight g) from the conventional teacher
    student_oraclekdguided_a0.5_t1_nonblank_g1_seed1   frame-level KD + Guided CTC
    student_oracleseqkd_s1_n1_seed1         sequence-level KD (weight s) to the teacher's
                                            N-best (n = N; 1: its 1-best)
    student_selfdistill_k1_t1_nonblank_seed1   one-stage oracle self-distillation (its own
                                            KD weight k; temperature and frames as the students')

``<conv|oracle>`` names the teacher, the rest the method: ``kd`` frame-level KD,
``guided`` Guided CTC, ``kdguided`` both, ``seqkd`` sequence-level KD.

Frame-level KD from an online teacher (run.sh ``--online_teacher true``: the teacher runs
inside each training step, no posterior dump; only ``convkd`` and ``oraclekd``) adds
``_online`` before the seed, so such students never share a directory (or a results row)
with the dump-based ones::

    student_oraclekd_a0.5_t1_nonblank_online_seed1

The posteriors of a teacher moved N frames in time (run.sh ``--conv_kd_shift_frames N`` /
``--oracle_kd_shift_frames N``, model_conf ``kd_shift_frames``; for the systems that learn from that
teacher's posteriors) add ``_shift<N>`` before it (N < 0: earlier); N = 0 adds nothing::

    student_oraclekd_a0.5_t1_words_shift1_seed1
    student_convguided_g1_shift-1_seed1

run.sh calls ``python -m espnet_oracle.utils.systems`` (see ``main``); stage 10
(make_results) and the plots import :func:`student_dir`.
"""

from __future__ import annotations

import argparse
import re
from typing import Dict, Optional, Tuple

#: system -> the setting groups its name carries, in name order
SYSTEM_SETTINGS: Dict[str, Tuple[str, ...]] = {
    "nokd": (),
    "convkd": ("kd",),
    "oraclekd": ("kd",),
    "avgkd": ("kd",),
    "convguided": ("guided",),
    "oracleguided": ("guided",),
    "convkdguided": ("kd", "guided"),
    "oraclekdguided": ("kd", "guided"),
    "convseqkd": ("seqkd",),
    "oracleseqkd": ("seqkd",),
    "selfdistill": ("selfdistill",),
}
STUDENT_SYSTEMS = tuple(SYSTEM_SETTINGS)
#: the systems of the paper's comparison (run.sh's default --student_systems)
PAPER_SYSTEMS = ("nokd", "convkd", "oraclekd")
#: the KD variants beyond the paper (issue 12)
VARIANT_SYSTEMS = tuple(s for s in STUDENT_SYSTEMS if s not in PAPER_SYSTEMS)
#: system -> whose stored posteriors it learns from (frame KD / Guided CTC); "" for none
POSTERIOR_TEACHER = {
    "convkd": "teacher_conventional", "convguided": "teacher_conventional",
    "convkdguided": "teacher_conventional",
    "oraclekd": "teacher_oracle", "oracleguided": "teacher_oracle", "oraclekdguided": "teacher_oracle",
    "avgkd": "teacher_average",
}
#: system -> whose decoded hypotheses it learns from (sequence-level KD)
HYPS_TEACHER = {"convseqkd": "teacher_conventional", "oracleseqkd": "teacher_oracle"}
#: the teachers behind each averaged-posterior set
AVERAGED_TEACHERS = ("teacher_conventional", "teacher_oracle")
#: systems that can learn from an online teacher (run.sh --online_teacher true)
ONLINE_SYSTEMS = ("convkd", "oraclekd")
#: systems that need no teacher, so --online_teacher changes nothing for them
NO_TEACHER_SYSTEMS = ("nokd",)
#: teacher -> the option that moves its posteriors in time (frames; kd_loss.shift_frames)
SHIFT_OPTIONS = {"teacher_conventional": "conv_kd_shift_frames", "teacher_oracle": "oracle_kd_shift_frames"}
KD_FRAMES = {"all": "all", "teacher_nonblank": "nonblank", "teacher_nonblank_renorm": "renorm",
             "teacher_nonblank_words": "words"}
_NUM = r"[0-9.e+-]+"
_FRAMES = "|".join(KD_FRAMES.values())
#: student_<system>[_a<alpha>_t<tau>_<frames>][_k<w>_t<tau>_<frames>][_g<g>][_s<s>_n<N>][_shift<N>][_online]_seed<seed>
STUDENT_DIR = re.compile(
    rf"^student_(?P<system>{'|'.join(sorted(STUDENT_SYSTEMS, key=len, reverse=True))})"
    rf"(?:_a(?P<alpha>{_NUM})_t(?P<tau>{_NUM})_(?P<frames>{_FRAMES}))?"
    rf"(?:_k(?P<sd_weight>{_NUM})_t(?P<sd_tau>{_NUM})_(?P<sd_frames>{_FRAMES}))?"
    rf"(?:_g(?P<guided>{_NUM}))?"
    rf"(?:_s(?P<seq>{_NUM})_n(?P<nbest>[0-9]+))?"
    r"(?:_shift(?P<shift>-?[1-9][0-9]*))?"
    r"(?P<online>_online)?"
    r"_seed(?P<seed>[0-9]+)$"
)
#: setting group -> the regex groups that spell it
_GROUP_FIELDS = {"kd": ("alpha", "tau", "frames"), "selfdistill": ("sd_weight", "sd_tau", "sd_frames"),
                 "guided": ("guided",), "seqkd": ("seq", "nbest")}


def number(value) -> str:
    """Shortest stable spelling of a number: 0.5 -> 0.5, 1.0 -> 1, 0.38461538 -> 0.3846."""
    return f"{float(value):.4g}"


def kd_tag(kd_weight, kd_temperature, kd_frames: str) -> str:
    if kd_frames not in KD_FRAMES:
        raise ValueError(f"unknown kd_frames {kd_frames!r} (one of {', '.join(KD_FRAMES)})")
    return f"a{number(kd_weight)}_t{number(kd_temperature)}_{KD_FRAMES[kd_frames]}"


def check_system(system: str) -> None:
    if system not in SYSTEM_SETTINGS:
        raise ValueError(f"unknown student system {system!r} (one of {', '.join(STUDENT_SYSTEMS)})")


def check_online(system: str, online_teacher) -> None:
    """Refuse ``online_teacher`` for a system that learns from a teacher but not online."""
    if as_bool(online_teacher) and system not in ONLINE_SYSTEMS + NO_TEACHER_SYSTEMS:
        raise ValueError(
            f"--online_teacher true trains only the frame-level KD systems {' and '.join(ONLINE_SYSTEMS)} "
            f"online (and {', '.join(NO_TEACHER_SYSTEMS)}, which needs no teacher); {system} needs stored "
            "teacher outputs: run it without --online_teacher (its students go to other directories)"
        )


def kd_shift(system: str, conv_kd_shift_frames=0, oracle_kd_shift_frames=0) -> int:
    """The frames ``system``'s teacher posteriors are moved (0 for systems without them)."""
    given = dict(conv_kd_shift_frames=conv_kd_shift_frames, oracle_kd_shift_frames=oracle_kd_shift_frames)
    for name, value in given.items():
        if not re.fullmatch(r"0|-?[1-9][0-9]*", str(value)):
            only = " (run.sh's auto is for oracle_kd_shift_frames only)" if value == "auto" else ""
            raise ValueError(f"{name} must be a whole number of frames{only}: {value!r}")
    teacher = POSTERIOR_TEACHER.get(system)
    if teacher in SHIFT_OPTIONS:
        return int(given[SHIFT_OPTIONS[teacher]])
    if teacher is not None and any(int(v) for v in given.values()):
        raise ValueError(f"{system} averages both teachers' unmoved posteriors: it takes no "
                         "conv_kd_shift_frames / oracle_kd_shift_frames (leave both 0)")
    return 0


def as_bool(value) -> bool:
    """true/false (run.sh's spelling) or a bool."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ValueError(f"online_teacher must be true or false: {value!r}")


def student_group(
    system: str,
    kd_weight=None,
    kd_temperature=None,
    kd_frames: Optional[str] = None,
    *,
    guided_ctc_weight=None,
    seq_kd_weight=None,
    seq_kd_nbest=None,
    self_distill_kd_weight=None,
    online_teacher=False,
    conv_kd_shift_frames=0,
    oracle_kd_shift_frames=0,
) -> str:
    """The directory name without its seed, e.g. ``student_oraclekd_a0.5_t1_all``.

    Only the settings the system's name carries are needed (see ``SYSTEM_SETTINGS``).
    ``online_teacher`` (true for run.sh's ``--online_teacher true``) appends ``_online`` for
    ``convkd``/``oraclekd``, leaves ``nokd`` as it is and is refused for the other systems.
    ``conv_kd_shift_frames`` / ``oracle_kd_shift_frames`` (frames, 0: unmoved) append ``shift<N>``
    for the systems that learn from that teacher's posteriors.
    """
    check_system(system)
    check_online(system, online_teacher)
    given = dict(kd_weight=kd_weight, kd_temperature=kd_temperature, kd_frames=kd_frames,
                 guided_ctc_weight=guided_ctc_weight, seq_kd_weight=seq_kd_weight,
                 seq_kd_nbest=seq_kd_nbest, self_distill_kd_weight=self_distill_kd_weight)

    def need(*names):
        missing = [n for n in names if given[n] is None]
        if missing:
            raise ValueError(f"student system {system} needs {', '.join(missing)}")
        return [given[n] for n in names]

    parts = [f"student_{system}"]
    for setting in SYSTEM_SETTINGS[system]:
        if setting == "kd":
            parts.append(kd_tag(*need("kd_weight", "kd_temperature", "kd_frames")))
        elif setting == "selfdistill":
            weight, tau, frames = need("self_distill_kd_weight", "kd_temperature", "kd_frames")
            if float(weight) < 0:
                raise ValueError(f"self_distill_kd_weight must be >= 0: {weight}")
            parts.append("k" + kd_tag(weight, tau, frames)[1:])
        elif setting == "guided":
            (weight,) = need("guided_ctc_weight")
            if float(weight) <= 0:
                raise ValueError(f"{system} needs guided_ctc_weight > 0: {weight}")
            parts.append(f"g{number(weight)}")
        elif setting == "seqkd":
            weight, nbest = need("seq_kd_weight", "seq_kd_nbest")
            if float(weight) <= 0:
                raise ValueError(f"{system} needs seq_kd_weight > 0: {weight}")
            if not str(nbest).isdigit() or int(nbest) < 1:
                raise ValueError(f"seq_kd_nbest must be a whole number >= 1: {nbest}")
            parts.append(f"s{number(weight)}_n{int(nbest)}")
    shift = kd_shift(system, conv_kd_shift_frames, oracle_kd_shift_frames)
    if shift:
        parts.append(f"shift{shift}")
    if as_bool(online_teacher) and system in ONLINE_SYSTEMS:
        parts.append("online")
    return "_".join(parts)


def student_dir(system: str, seed, kd_weight=None, kd_temperature=None, kd_frames: Optional[str] = None,
                **settings) -> str:
    return f"{student_group(system, kd_weight, kd_temperature, kd_frames, **settings)}_seed{int(seed)}"


def parse_student_dir(name: str) -> Optional[dict]:
    """The settings a student directory name carries, or None if it is no student dir name.

    Keys: ``system``, ``seed``, ``group`` (the name without ``_seed<n>``) and every
    setting field (None when the system's name does not carry it): ``alpha``, ``tau``,
    ``frames`` (frame-level KD), ``sd_weight``, ``sd_tau``, ``sd_frames``
    (self-distillation), ``guided``, ``seq``, ``nbest``, ``shift`` (int: frames the teacher's
    posteriors were moved, 0 if not) and ``online`` (bool: trained from an online teacher). For
    the paper's three systems the keys are ``system alpha tau frames shift online seed group``.
    """
    match = STUDENT_DIR.match(name)
    if match is None:
        return None
    out = match.groupdict()
    carried = SYSTEM_SETTINGS[out["system"]]
    for setting, fields in _GROUP_FIELDS.items():
        present = out[fields[0]] is not None
        if present != (setting in carried):
            return None  # e.g. a Guided-CTC tag on a plain KD system: not a name we make
    out["online"] = out["online"] is not None
    out["shift"] = int(out["shift"] or 0)
    if out["shift"] and POSTERIOR_TEACHER.get(out["system"]) not in SHIFT_OPTIONS:
        return None
    if out["online"] and out["system"] not in ONLINE_SYSTEMS:
        return None
    out["seed"] = int(out["seed"])
    out["group"] = name[: name.rindex("_seed")]
    if out["system"] in PAPER_SYSTEMS:
        out = {k: out[k] for k in ("system", "alpha", "tau", "frames", "shift", "online", "seed", "group")}
    return out


#: the run's settings that student dir names carry: run.sh option -> default (shared by main and make_results).
#: --online_teacher true: convkd/oraclekd learn from an online teacher (refused for the other KD systems);
#: --conv/oracle_kd_shift_frames: frames that teacher's posteriors are moved (< 0: earlier)
SETTING_DEFAULTS = dict(kd_weight="0.5", kd_temperature="1.0", kd_frames="all", guided_ctc_weight="1.0",
                        seq_kd_weight="1.0", seq_kd_nbest="1", self_distill_kd_weight="1.0", online_teacher="false",
                        conv_kd_shift_frames="0", oracle_kd_shift_frames="0")


def add_setting_args(parser: argparse.ArgumentParser) -> None:
    """--kd_weight ... --oracle_kd_shift_frames (run.sh's spelling; see student_group)."""
    for name, default in SETTING_DEFAULTS.items():
        parser.add_argument(f"--{name}", default=default)


def settings_of(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in SETTING_DEFAULTS}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print student experiment dir names, one a line.")
    parser.add_argument("--systems", default="nokd convkd oraclekd")
    parser.add_argument("--seeds", default="1")
    add_setting_args(parser)
    parser.add_argument("--what", choices=("dirs", "posterior_teacher", "hyps_teacher", "kd_shift_frames"),
                        default="dirs",
                        help="dirs: the dir names; posterior_teacher / hyps_teacher: per system, the "
                             "teacher whose posteriors / hypotheses it learns from ('-' for none); "
                             "kd_shift_frames: per system, the frames its teacher posteriors are moved")
    args = parser.parse_args(argv)
    settings = settings_of(args)
    try:
        for system in args.systems.split():
            if args.what == "dirs":
                for seed in args.seeds.split():
                    print(student_dir(system, seed, **settings))
                continue
            check_system(system)
            check_online(system, args.online_teacher)
            print(kd_shift(system, args.conv_kd_shift_frames, args.oracle_kd_shift_frames)
                  if args.what == "kd_shift_frames"
                  else (POSTERIOR_TEACHER if args.what == "posterior_teacher" else HYPS_TEACHER).get(system, "-"))
    except ValueError as e:
        parser.exit(2, f"espnet_oracle.utils.systems: {e}\n")


if __name__ == "__main__":
    main()
