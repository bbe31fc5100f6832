"""Stage 10: write RESULTS.md from what the pipeline left in exp/ (never by hand).
Why it exists: the tables of this method (KD systems over seeds, probes, significance) are no library's.

Reads each system's config.yaml, stamp.json, model files, cer_curve.tsv and decode dirs' scores.json; the
students of exp/variants/*/ (KD variants, issue 12) and exp/kd_sweep/*/; exp/teacher_eval, exp/anticopy,
posterior stats, exp/benchmark, exp/stage_times.tsv and exp/commands.log where present.
"""

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Dict, List, Optional

from espnet_oracle.utils.datadir import atomic_write_text
from espnet_oracle.utils.metrics import EXTRA_METRICS, condition_key, paired_bootstrap, pooled_mean_ci
from espnet_oracle.utils.stamps import read_stamp
from espnet_oracle.utils.systems import (AVERAGED_TEACHERS, HYPS_TEACHER, POSTERIOR_TEACHER, VARIANT_SYSTEMS,
                                         add_setting_args, parse_student_dir, settings_of, student_group)

TEACHERS = ("teacher_conventional", "teacher_oracle")
STUDENT_SYSTEMS = {
    "nokd": "student, no KD",
    "convkd": "student, KD from conventional teacher",
    "oraclekd": "student, KD from Oracle Teacher",
    "avgkd": "student, KD from both teachers' averaged posteriors",
    "convguided": "student, Guided CTC from conventional teacher",
    "oracleguided": "student, Guided CTC from Oracle Teacher",
    "convkdguided": "student, KD + Guided CTC from conventional teacher",
    "oraclekdguided": "student, KD + Guided CTC from Oracle Teacher",
    "convseqkd": "student, sequence-level KD from conventional teacher",
    "oracleseqkd": "student, sequence-level KD from Oracle Teacher",
    "selfdistill": "one-stage oracle self-distillation (source path)",
}
LABELS = {
    "teacher_conventional": "conventional teacher",
    "teacher_oracle": "Oracle Teacher (fed the true transcript: oracle numbers)",
}
#: --extra_metrics: column name and what it is (all in %, from score.py)
EXTRA_HEADERS = {"word_accuracy": "word acc", "one_minus_ned": "1−NED"}
EXTRA_NOTES = {
    "word_accuracy": "word accuracy in %, share of utterances read exactly (case-insensitive, "
                     "alphanumeric characters only)",
    "one_minus_ned": "100 × mean over utterances of 1 − edit distance / max(reference length, "
                     "hypothesis length), on the same normalised strings",
}


def load_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def num_params(exp_dir: Path) -> Optional[int]:
    """Parameters of the deployed model: the exported one where there is one (self-distillation's
    source path, ``inference.pth``), else the averaged checkpoint."""
    path = next((p for p in (exp_dir / "inference.pth", exp_dir / "valid.loss.ave.pth") if p.exists()), None)
    if path is None:
        return None
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return int(sum(v.numel() for k, v in state.items() if v.is_floating_point()
                   and "normalize" not in k))


def train_seconds(exp_dir: Path) -> Optional[float]:
    """Measured time of all epochs (training + validation; no start-up), from cer_curve.tsv."""
    curve = exp_dir / "cer_curve.tsv"
    if not curve.exists():
        return None
    return float(curve.read_text(encoding="utf-8").strip().splitlines()[-1].split("\t")[-1])


def student_groups(exp: Path, seeds: Optional[List[str]], current: Dict[str, str]) -> List[tuple]:
    """[(group name, system, [dirs])] of the students under ``exp`` (with one of ``seeds``, if given).

    Groups of this run's KD settings (``current``) come first, in the order nokd, convkd,
    oraclekd; students trained with other KD settings follow, sorted by name.
    """
    groups: Dict[str, tuple] = {}
    for path in sorted(exp.glob("student_*")):
        info = parse_student_dir(path.name)
        if info is None or (seeds is not None and str(info["seed"]) not in seeds) or not path.is_dir():
            continue
        groups.setdefault(info["group"], (info["system"], []))[1].append(path)
    order = {}
    for i, system in enumerate(STUDENT_SYSTEMS):
        try:
            order[student_group(system, **current)] = i
        except ValueError:  # e.g. a system this run's --online_teacher true does not train
            continue
    names = sorted(groups, key=lambda g: (order.get(g, len(order)), g))
    return [(g, groups[g][0], groups[g][1]) for g in names]


#: how a label spells the settings a student dir name carries: (field that marks them, text)
GROUP_SETTINGS = (("alpha", "α {alpha}, τ {tau}, frames {frames}"),
                  ("sd_weight", "KD weight {sd_weight}, τ {sd_tau}, frames {sd_frames}"),
                  ("guided", "Guided CTC weight {guided}"), ("seq", "weight {seq}, {nbest}-best"))


def group_label(group: str, system: str) -> str:
    info = parse_student_dir(f"{group}_seed0") or {}
    settings = [text.format(**info) for field, text in GROUP_SETTINGS if info.get(field) is not None]
    shift = info.get("shift") or 0
    settings += [f"teacher posteriors moved {shift:+d} frame{'s' * (abs(shift) > 1)}"] if shift else []
    settings += ["online teacher, no dump"] if info.get("online") else []
    return STUDENT_SYSTEMS[system] + (f" ({'; '.join(settings)})" if settings else "")


#: model_conf keys with their own columns in the settings table
CORE_MODEL_CONF = ("ctc_weight", "kd_weight", "kd_temperature", "kd_frames")
#: ESPnet options whose values change the model itself (not where data or output live)
MODEL_OPTIONS = ("--encoder_conf", "--model_conf", "--encoder", "--specaug", "--specaug_conf",
                 "--preencoder", "--preencoder_conf", "--frontend", "--frontend_conf")


def other_options(config: dict, stamp: dict) -> List[str]:
    """What else shaped a system: model_conf entries beyond the KD columns (e.g. Guided CTC,
    sequence-level KD, aux CTC weights; from config.yaml) and model options given on the
    command line on top of the config file (e.g. anti-copy encoder_conf overrides; from stamp.json)."""
    out = [f"{k}={v}" for k, v in sorted((config.get("model_conf") or {}).items())
           if k not in CORE_MODEL_CONF]
    options = list(stamp.get("options") or [])
    for i, arg in enumerate(options):
        name, eq, value = arg.partition("=")
        if name not in MODEL_OPTIONS or name == "--model_conf":  # model_conf: already above
            continue
        if not eq:
            value = options[i + 1] if i + 1 < len(options) else ""
        out.append(f"{name[2:]}: {value}")
    return out


def system_settings(directory: Path) -> dict:
    """What a trained system was made with, from ESPnet's config.yaml and our stamp.json."""
    import yaml

    path = directory / "config.yaml"
    config = (yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None) or {}
    model_conf = config.get("model_conf") or {}
    stamp = read_stamp(directory / "stamp.json") or {}
    conf = stamp.get("config") or config.get("config") or "?"
    if stamp.get("config_sha256"):
        conf = f"{conf} (sha256 {stamp['config_sha256'][:10]})"
    kd = config.get("model") in ("kd_student", "oracle_self_distill")
    return {
        "config": conf,
        "model": config.get("model", "?"),
        **{key: model_conf.get(key) if kd else None for key in ("kd_weight", "kd_temperature", "kd_frames")},
        "seed": config.get("seed"),
        "max_epoch": config.get("max_epoch"),
        "other": ", ".join(other_options(config, stamp)) or None,
        "stamped": bool(stamp),
    }


#: the copy-probe table: column, entry of exp/teacher_eval/summary.json, metric
COPY_PROBE_COLUMNS = (
    ("conventional CER", "teacher_conventional/audio_only", "cer"),
    ("Oracle CER (true transcript)", "teacher_oracle/true_transcript", "cer"),
    ("Oracle, zeroed audio: CER", "teacher_oracle/zeroed_source", "cer"),
    ("fed vs truth CER", "teacher_oracle/other_transcript", "fed_vs_truth_cer"),
    ("Oracle fed another transcript: CER vs truth", "teacher_oracle/other_transcript", "cer"),
    ("… CER vs fed", "teacher_oracle/other_transcript", "cer_vs_fed"),
    ("… copy rate", "teacher_oracle/other_transcript", "copy_rate"),
    ("… follow rate", "teacher_oracle/other_transcript", "follow_rate"),
    ("chance follow rate", "teacher_conventional/other_transcript_chance", "follow_rate"),
    ("fed another transcript, zeroed audio: CER vs fed", "teacher_oracle/other_transcript_zeroed_source",
     "cer_vs_fed"),
    ("… copy rate", "teacher_oracle/other_transcript_zeroed_source", "copy_rate"),
    ("… follow rate", "teacher_oracle/other_transcript_zeroed_source", "follow_rate"),
)


def teacher_eval_staleness(exp: Path, teacher_eval: dict) -> Optional[str]:
    """Why exp/teacher_eval does not describe the teachers now in ``exp`` (None if it does)."""
    from espnet_oracle.bin.teacher_eval import teacher_models

    made_with = teacher_eval.get("models")
    if made_with is None:
        return "it records no teacher checksums (made by an older version)"
    now = teacher_models(exp / "teacher_conventional", exp / "teacher_oracle")
    changed = [role for role in now if made_with.get(role) != now[role]]
    if changed:
        return (f"made with other model files of the {' and '.join(changed)} teacher"
                f"{'s' if len(changed) > 1 else ''} than those in {exp}")
    return None


def scores(exp_dir: Path, set_name: str, mode: str) -> Optional[dict]:
    return load_json(exp_dir / f"decode_{set_name}_{mode}" / "scores.json")


def metric_headers(set_name: str, extra: List[str]) -> List[str]:
    """Column names of one set's metrics: WER, CER, then the recipe's ``--extra_metrics``."""
    return [f"{set_name} WER", f"{set_name} CER"] + [f"{set_name} {EXTRA_HEADERS[m]}" for m in extra]


def metric_cells(results: List[Optional[dict]], extra: List[str]) -> List[str]:
    """The cells under :func:`metric_headers`: each metric over the seeds' scores.json."""
    return [fmt([r and r.get(m) for r in results]) for m in ("wer", "cer", *extra)]


def fmt(values: List[Optional[float]], digits: int = 2, scale: float = 1.0) -> str:
    """One value, or mean ± std of several (one per seed); says so when some seeds have none."""
    given = len(values)
    values = [v * scale for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        text = f"{values[0]:.{digits}f}"
    else:
        text = f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
    if len(values) < given:
        text += f" ({len(values)} of {given} seeds)"
    return text


def percent(shares: List[Optional[float]]) -> str:
    """:func:`fmt` of shares in %, the sign before any "(n of m seeds)"."""
    text = fmt(shares, 1, 100.0)
    value, sep, seeds = text.partition(" (")
    return text if text == "–" else f"{value} %{sep}{seeds}"


def onset_error(results: List[Optional[dict]]) -> str:
    """``mean [low, high]`` of the onset error, the seeds' words pooled ("–" if a seed lacks it)."""
    spikes = [(r or {}).get("spike") or {} for r in results]
    if not all("abs_onset_offset_sd_ms" in s for s in spikes):
        return "–"
    pooled = pooled_mean_ci((s["n_onsets"], s["mean_abs_onset_offset_ms"], s["abs_onset_offset_sd_ms"])
                            for s in spikes)
    if pooled is None:
        return "–"
    return f"{pooled[0]:.0f}" + (f" [{pooled[1]:.0f}, {pooled[2]:.0f}]" if pooled[1] is not None else "")


def word_errors(decode_dir: Path) -> Optional[Dict[str, tuple]]:
    """{utt: (word errors, reference words)} from score.py's ``score_wer/result.txt`` (None if absent)."""
    path = decode_dir / "score_wer" / "result.txt"
    if not path.exists():
        return None
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        utt, counts = line.split("\t")[:2]
        errors, n = (int(x.split("=")[1]) for x in counts.split())
        out[utt] = (errors, n)
    return out


def pooled_word_errors(dirs: List[Path], set_name: str) -> tuple:
    """({utt: (errors, words)} summed over ``dirs`` (seeds), or None; how many dirs were scored)."""
    found = [e for e in (word_errors(d / f"decode_{set_name}_greedy") for d in dirs) if e is not None]
    if not found or any(set(e) != set(found[0]) for e in found):
        return None, len(found)
    return {u: tuple(map(sum, zip(*(e[u] for e in found)))) for u in found[0]}, len(found)


def bootstrap(a: Dict[str, tuple], b: Dict[str, tuple]) -> dict:
    """:func:`paired_bootstrap` of {utt: (errors, words)} a vs b (same utts), plus both WERs and p as text."""
    utts = sorted(a)
    (ea, na), (eb, nb) = ([list(c) for c in zip(*(table[u] for u in utts))] for table in (a, b))
    r = paired_bootstrap(ea, na, eb, nb)
    return dict(r, wer_a=100 * sum(ea) / sum(na), wer_b=100 * sum(eb) / sum(nb),
                p_text="< 0.001" if r["p"] == 0 else format(r["p"], ".3f"))


SHORT = {"nokd": "no KD", "convkd": "conventional KD", "oraclekd": "Oracle KD"}


def significance(exp: Path, test_sets: List[str], seeds: List[str], current: Dict[str, str]) -> List[str]:
    """The paired-bootstrap section: Oracle-KD vs conventional-KD vs no-KD students, seeds pooled."""
    out = ["", "## Significance (paired bootstrap over utterances, seeds pooled)", "",
           f"Greedy decoding, students of this run's KD settings. Per utterance, word errors and reference words "
           f"are summed over the seeds of each system ({', '.join(seeds)}); the utterances are resampled with "
           "replacement 1000 times (seed 0), the same resample for both systems. ΔWER = WER(A) − WER(B) in "
           "absolute points on all utterances; 95 % CI: 2.5th–97.5th percentiles of the resampled Δ; p: "
           "two-sided, twice the share of resamples whose Δ does not have the observed sign (at most 1).", "",
           "| set | A vs B | WER A | WER B | ΔWER (points) | 95 % CI of Δ | p | better (p < 0.05) |",
           "|---|---|---|---|---|---|---|---|"]
    rows, notes = [], []
    for set_name in test_sets:
        pooled = {}
        for system in SHORT:
            group = student_group(system, **current)
            errors, n_found = pooled_word_errors([exp / f"{group}_seed{seed}" for seed in seeds], set_name)
            if errors is not None:
                pooled[system] = errors
                if n_found < len(seeds):
                    notes.append(f"- {set_name}: {SHORT[system]} pooled over {n_found} of {len(seeds)} seeds")
            else:
                notes.append(f"- {set_name}: {SHORT[system]} missing (no scored greedy decodes of `{group}_seed*`"
                             f"{', or its seeds have different utterances' if n_found else ''}): "
                             "its comparisons skipped")
        for a, b in (("oraclekd", "convkd"), ("convkd", "nokd"), ("oraclekd", "nokd")):
            if a not in pooled or b not in pooled:
                continue
            if set(pooled[a]) != set(pooled[b]):
                notes.append(f"- {set_name}: {SHORT[a]} vs {SHORT[b]} skipped (different utterances)")
                continue
            r = bootstrap(pooled[a], pooled[b])
            better = ("neither" if r["p"] >= 0.05 else SHORT[a] if r["delta"] < 0 else SHORT[b])
            rows.append(f"| {set_name} | {SHORT[a]} vs {SHORT[b]} | {r['wer_a']:.2f} | {r['wer_b']:.2f} | "
                        f"{r['delta']:+.2f} | [{r['low']:+.2f}, {r['high']:+.2f}] | {r['p_text']} | "
                        f"{better} |")
    if not rows:  # fewer than two student systems scored
        out[-2:] = ["Not computed: it needs greedy scores of at least two of the student systems "
                    f"({', '.join(SHORT.values())})."]
    return out + rows + ([""] + notes if notes else [])


def variant_groups(exp: Path, seeds: List[str], current: Dict[str, str]) -> List[tuple]:
    """[(group, system, [dirs])] of the students under ``exp`` and ``exp/variants/*/``, one entry per
    group name and seed (a dir found under ``exp`` first wins: the sweep links the reference students)."""
    roots = [exp] + sorted(p for p in (exp / "variants").glob("*") if p.is_dir())
    found: Dict[str, tuple] = {}
    for root in roots:
        for group, system, dirs in student_groups(root, seeds, current):
            by_seed = found.setdefault(group, (system, {}))[1]
            for d in dirs:
                by_seed.setdefault(parse_student_dir(d.name)["seed"], d)
    order = {s: i for i, s in enumerate(STUDENT_SYSTEMS)}
    reference = {student_group(s, **current) for s in ("nokd", "convkd", "oraclekd")}
    names = sorted(found, key=lambda g: (g not in reference, order[found[g][0]], g))
    return [(g, found[g][0], [found[g][1][k] for k in sorted(found[g][1])]) for g in names]


def stored_seconds(path: Path) -> Optional[float]:
    """``seconds`` of a posterior set's stats.json or a decode dir's ``seconds`` file."""
    if path.name == "stats.json":
        return (load_json(path) or {}).get("seconds") if path.exists() else None
    try:
        return float(path.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def two_stage_seconds(system: str, dirs: List[Path], info: dict, sets: List[str]) -> tuple:
    """(teacher training s, teacher-output s: posterior dumps / averaging / hypothesis decoding of the
    sets ``sets`` (train, valid)), or (None, None) when the system has no teacher or a part is missing."""
    root = dirs[0].parent
    if system in HYPS_TEACHER:
        teachers = [HYPS_TEACHER[system]]
        outputs = [root / teachers[0] / f"seqkd_nbest{info['nbest']}_{x}_beam" / "seconds" for x in sets]
    elif system in POSTERIOR_TEACHER:
        teacher = POSTERIOR_TEACHER[system]
        teachers = list(AVERAGED_TEACHERS) if teacher == "teacher_average" else [teacher]
        outputs = [root / t / "posteriors" / x / "stats.json" for t in [*teachers, teacher] for x in sets]
        outputs = list(dict.fromkeys(outputs))  # (one teacher: its dumps once)
    else:
        return None, None
    train = [train_seconds(root / t) for t in teachers]
    made = [stored_seconds(o) for o in outputs]
    if None in train or None in made:
        return None, None
    return sum(train), sum(made)


def kd_variants(exp: Path, sets: List[str], train_set: str, seeds: List[str], current: Dict[str, str],
                extra: List[str] = ()) -> List[str]:
    """The KD-variants table (issue 12): WER/CER (and the recipe's ``extra`` metrics) over seeds, paired
    bootstrap vs conventional frame-level KD (seeds pooled), wall times. Empty when no variant was trained."""
    groups = variant_groups(exp, seeds, current)
    swept = any((exp / "variants").glob("*/student_*"))
    if not swept and not any(system in VARIANT_SYSTEMS for _, system, _ in groups):
        return []
    test_sets = sets[1:] or sets
    reference = student_group("convkd", **current)
    ref_dirs = next((dirs for g, _, dirs in groups if g == reference), [])
    ref_errors = {x: pooled_word_errors(ref_dirs, x)[0] for x in test_sets}
    out = ["", "## KD variants (greedy CTC; mean ± std over seeds)", "",
           "Students under `exp/` and `exp/variants/<variant>/` (`local/variant_sweep.sh`), each on the same "
           "teachers and data. ΔWER: WER(system) − WER(conventional frame-level KD, "
           f"`{reference}`) in absolute points, by the paired bootstrap of the significance section "
           "(per utterance, word errors summed over each system's seeds; 1000 resamples): Δ [95 % CI], p. "
           "Wall time in seconds, measured epochs only (training + validation, no start-up), mean over seeds: "
           "*training*: the student's (self-distillation: its one joint run); *two-stage total*: teacher "
           "training + teacher outputs (posterior dumps of the train and valid sets, their averaging for "
           "`avgkd`, the hypothesis decoding for sequence-level KD) + student training; `avgkd` counts both "
           "teachers. Teachers trained two side by side and students two at a time (one core each): compare "
           "the times roughly.", ""]
    header = ["system", "directories", "seeds",
              *[c for x in test_sets for c in metric_headers(x, extra) + [f"{x} ΔWER vs conv. KD"]],
              "training (s)", "two-stage total (s): teacher + outputs + student"]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for group, system, dirs in groups:
        info = parse_student_dir(dirs[0].name) or {}
        cells = [group_label(group, system), f"`{group}_seed*`", str(len(dirs))]
        for x in test_sets:
            cells += metric_cells([scores(d, x, "greedy") for d in dirs], extra)
            errors, n_found = pooled_word_errors(dirs, x)
            ref = ref_errors[x]
            if group == reference:
                cells.append("(reference)")
            elif errors is None or ref is None or set(errors) != set(ref):
                cells.append("–")
                if errors is not None and ref is not None:
                    notes.append(f"- {x}: `{group}` and the reference hold different utterances")
            else:
                r = bootstrap(errors, ref)
                mark = "**" if r["p"] < 0.05 else ""
                cells.append(f"{mark}{r['delta']:+.2f}{mark} [{r['low']:+.2f}, {r['high']:+.2f}], "
                             f"p {r['p_text']}")
                if n_found < len(dirs):
                    notes.append(f"- {x}: `{group}` pooled over {n_found} of {len(dirs)} seeds")
        seconds = [train_seconds(d) for d in dirs]
        student = mean(seconds)
        cells.append(fmt(seconds, 0))
        teacher, made = two_stage_seconds(system, dirs, info, [train_set, sets[0]])
        if student is None:
            cells.append("–")
        elif teacher is None:
            cells.append(f"{student:.0f} (one stage)" if system in ("nokd", "selfdistill") else "–")
        else:
            cells.append(f"{teacher:.0f} + {made:.0f} + {student:.0f} = **{teacher + made + student:.0f}**")
        out.append("| " + " | ".join(cells) + " |")
    if not any(g == reference for g, _, _ in groups) or all(v is None for v in ref_errors.values()):
        notes.append(f"- no scored greedy decodes of the reference `{reference}_seed*`: no ΔWER")
    return out + ([""] + notes if notes else [])


def wall_time_section(times: Path) -> List[str]:
    """The stage-time table from ``exp/stage_times.tsv`` (one ``stage name seconds`` row per stage
    run, appended). Rows whose stage number does not rise start a new run. The table is the last
    run that went from stage 0 to the highest stage ever run (a whole recipe run), so that later
    partial reruns (sweeps, checks) do not make up a total nobody measured; without such a run,
    the last run of each stage."""
    rows = [parts for parts in (line.split("\t") for line in times.read_text(encoding="utf-8").splitlines())
            if len(parts) == 3]
    number = lambda stage: float(stage.split("+")[0])  # noqa: E731 ("4+5": teachers side by side)
    runs: List[list] = []
    for row in rows:
        if not runs or number(row[0]) <= number(runs[-1][-1][0]):
            runs.append([])
        runs[-1].append(row)
    last = max((number(r[0]) for r in rows), default=0)
    whole = [i for i, run in enumerate(runs) if number(run[0][0]) == 0 and number(run[-1][0]) == last]
    if whole:
        chosen, later = runs[whole[-1]], len(runs) - 1 - whole[-1]
        title = "last whole run, stages 0-" + chosen[-1][0]
        note = [f"{later} partial rerun(s) since, not counted (`exp/stage_times.tsv`)."] if later else []
    else:
        chosen = sorted({row[0]: row for row in rows}.values(), key=lambda row: number(row[0]))
        title, note = "last run of each stage", []
    out = ["", f"## Wall time per stage (this machine; {title})", "", "| stage | name | seconds |", "|---|---|---|"]
    out += [f"| {stage} | {name} | {seconds} |" for stage, name, seconds in chosen]
    total = sum(int(seconds) for _, _, seconds in chosen)
    out.append(f"| all | | **{total}** ({total / 60:.1f} min) |")
    return out + ([""] + note if note else [])


def mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def environment() -> List[str]:
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "unknown CPU")
    except OSError:
        cpu = "unknown CPU"
    versions = []
    for package in ("torch", "torchaudio", "espnet"):
        try:
            versions.append(f"{package} {version(package)}")
        except Exception:  # noqa: BLE001 - report what is there
            versions.append(f"{package} ?")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).resolve().parents[2]).stdout.strip()
    except OSError:
        commit = ""
    return [
        f"- Machine: {cpu}, {os.cpu_count()} CPU cores, no GPU (`--ngpu 0`)",
        f"- Software: Python {platform.python_version()}, {', '.join(versions)}",
        f"- Code: espnet-oracle commit `{commit or 'unknown'}`; generated "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by `espnet_oracle.bin.make_results`",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exp", default="exp")
    parser.add_argument("--recipe_dir", default=".")
    parser.add_argument("--sets", default="dev test test_unseen", help="valid set, then test sets")
    parser.add_argument("--train_set", default="train")
    parser.add_argument("--student_inference_model", default="valid.loss.ave.pth",
                        help="the students' checkpoint that stage 9 decoded")
    parser.add_argument("--condition_files", default="", help="per-condition tables, e.g. 'utt2snr utt2noise'")
    parser.add_argument("--targets", default="", help="e.g. 'oraclekd<=0.8*nokd oraclekd<convkd' (WER)")
    parser.add_argument("--extra_metrics", default="",
                        help="more columns per set from scores.json (score.py --extra_metrics), e.g. "
                             "'word_accuracy one_minus_ned'")
    parser.add_argument("--seeds", default="1 2 3")
    parser.add_argument("--out", default="RESULTS.md")
    parser.add_argument("--oracle_kd_shift_file", type=Path,
                        help="onset_move's JSON when --oracle_kd_shift_frames auto chose the move")
    add_setting_args(parser)  # this run's KD (-variant) settings: its groups are listed first
    args = parser.parse_args(argv)
    exp = Path(args.exp)
    sets = args.sets.split()
    test = sets[1] if len(sets) > 1 else sets[0]  # spike timing and per-condition tables
    seeds = args.seeds.split()
    current = settings_of(args)
    groups = student_groups(exp, seeds, current)
    # (name, label, dirs) of every system in the tables: teachers, then student groups
    systems = [(t, LABELS[t], [exp / t]) for t in TEACHERS if (exp / t).exists()]
    systems += [(g, f"{group_label(g, system)} ({len(dirs)} seed{'s' if len(dirs) != 1 else ''})", dirs)
                for g, system, dirs in groups]
    out: List[str] = ["# Results", "", f"Generated from `{args.exp}/` by `python -m espnet_oracle.bin.make_results` "
                      "(run.sh stage 10). Do not edit by hand.", "", "## Environment", ""]
    out += environment()
    commands = exp / "commands.log"
    if commands.exists():
        out += ["", f"Commands that produced `{args.exp}/` (from `{commands}`):", "", "```",
                *commands.read_text(encoding="utf-8").strip().splitlines()[-10:], "```"]

    # ---- main table ----
    out += ["", "## Systems", "",
            "WER / CER in %, greedy CTC decoding (beam-search WER in the next table). Students: "
            f"mean ± std over seeds {', '.join(seeds)}, each decoded from its `{args.student_inference_model}`"
            + (" (ESPnet's average of the best checkpoints by validation loss)" if args.student_inference_model
               == "valid.loss.ave.pth" else "") + ". Spike hit rate: share of emitted tokens whose "
            f"first CTC frame lies inside the true span of their word ({test} set, greedy path; needs word_align; "
            "a frame's time is the centre of its receptive field). Onset: time of a word's earliest token minus "
            "the word's start; onset error: mean |onset| over the words that got a token, with a 95 % CI by the "
            "normal approximation (students: the words of all seeds pooled).", ""]
    extra = args.extra_metrics.split()
    unknown = set(extra) - set(EXTRA_METRICS)
    if unknown:
        raise SystemExit(f"make_results: unknown --extra_metrics {sorted(unknown)} (known: {' '.join(EXTRA_METRICS)})")
    if extra:
        out[-2] += (" " + " ".join(f"{EXTRA_HEADERS[m]}: {EXTRA_NOTES[m]}." for m in extra))
    header = ["system", "params", "train time (s)", *[c for s in sets for c in metric_headers(s, extra)],
              f"spike hit rate ({test})", f"mean onset offset (ms, {test})", f"onset error (ms, 95 % CI, {test})"]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    for _, label, dirs in systems:
        params = [num_params(d) for d in dirs]
        cells = [label, fmt([p / 1e6 for p in params if p], 3) + " M" if any(params) else "–",
                 fmt([train_seconds(d) for d in dirs], 0)]
        for s in sets:
            cells += metric_cells([scores(d, s, "greedy") for d in dirs], extra)
        on_test = [scores(d, test, "greedy") for d in dirs]
        cells += [percent([r and r.get("spike_hit_rate") for r in on_test]),
                  fmt([r and r.get("mean_onset_offset_ms") for r in on_test], 0), onset_error(on_test)]
        out.append("| " + " | ".join(cells) + " |")

    # ---- settings of every system ----
    out += ["", "### What each system was trained with", "",
            "From each system's `config.yaml` (written by ESPnet) and `stamp.json` (config, options and "
            "input fingerprints, checked by run.sh before any reuse). Student directory names carry the "
            "KD settings: `student_<system>_a<KD weight>_t<temperature>_<frames>[_shift<frames moved>]_seed<seed>`.", "",
            "| system | directories | config | model | KD weight | KD temperature | KD frames | seeds | max epoch "
            "| other model options |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, label, dirs in systems:
        settings = [system_settings(d) for d in dirs]

        def values(key):
            found = sorted({str(x[key]) for x in settings if x[key] is not None})
            return ", ".join(found) if found else "–"

        dir_names = dirs[0].name if len(dirs) == 1 else f"{name}_seed*"
        unstamped = " (no stamp: older run)" if not all(x["stamped"] for x in settings) else ""
        out.append(f"| {label} | `{dir_names}` | `{values('config')}`{unstamped} | {values('model')} | "
                   f"{values('kd_weight')} | {values('kd_temperature')} | {values('kd_frames')} | "
                   f"{values('seed') if name.startswith('student_') else '–'} | {values('max_epoch')} | "
                   f"{'; '.join(sorted({x['other'] for x in settings if x['other']})) or '–'} |")
    if args.oracle_kd_shift_file:  # this run's --oracle_kd_shift_frames auto (onsets on the valid set)
        move = json.loads(args.oracle_kd_shift_file.read_text())
        frames = move["move_frames"]
        out += ["", f"The teachers' word onsets on `{sets[0]}` (conventional {move['conventional_onset_ms']:.1f} ms, "
                f"Oracle {move['oracle_onset_ms']:.1f} ms; `{args.oracle_kd_shift_file}`) give the Oracle Teacher's "
                f"posteriors the move of {frames:+d} frame{'s' * (abs(frames) > 1)} (`--oracle_kd_shift_frames auto`)."]

    # ---- beam search ----
    beam = any(scores(d, s, "beam") for _, _, dirs in systems for d in dirs for s in sets)
    if beam:  # not with --decode_modes greedy
        out += ["", "### CTC prefix beam search (ESPnet BatchBeamSearch + CTCPrefixScorer)", "",
                "| system | " + " | ".join(f"{s} WER" for s in sets) + " |", "|---|" + "---|" * len(sets)]
        out += [f"| {label} | " + " | ".join(fmt([(scores(d, s, "beam") or {}).get("wer") for d in dirs])
                                             for s in sets) + " |" for _, label, dirs in systems]

    # ---- target check ----
    def student_wer(system, set_name):
        group = student_group(system, **current)
        return mean([(scores(exp / f"{group}_seed{seed}", set_name, "greedy") or {}).get("wer")
                     for seed in seeds])

    targets = [re.fullmatch(r"(\w+)(<=|<)(?:([\d.]+)\*)?(\w+)", t) for t in args.targets.split()]
    if None in targets:
        raise SystemExit(f"make_results: bad --targets {args.targets!r} (e.g. 'oraclekd<=0.8*nokd oraclekd<convkd')")
    if targets:
        out += ["", f"### Targets (WER, student means over seeds; KD weight {args.kd_weight}, temperature "
                f"{args.kd_temperature}, frames {args.kd_frames}): {', '.join(args.targets.split())}", ""]
    for set_name in sets[1:] if targets else ():
        checks = []
        for m in targets:
            a, op, factor, b = m.groups()
            wa, wb = student_wer(a, set_name), student_wer(b, set_name)
            if None in (wa, wb):
                continue
            bound = float(factor or 1) * wb
            ok = wa <= bound if op == "<=" else wa < bound
            checks.append(f"{a} {wa:.2f} {op} {float(factor or 1):g} × {b} {wb:.2f}: {'met' if ok else 'NOT met'}")
        if checks:
            out.append(f"- {set_name}: " + "; ".join(checks))

    # ---- noise conditions ----
    for kind in (f.removeprefix("utt2") for f in args.condition_files.split()):
        tables = {label: [(r.get("wer_by_condition") or {}).get(kind, {}) for r in
                          filter(None, (scores(d, test, "greedy") for d in dirs))] for _, label, dirs in systems}
        conds = sorted({c for rs in tables.values() for r in rs for c in r}, key=condition_key)
        if not conds:
            continue
        out += ["", f"### WER by {kind} on `{test}` (greedy; students: mean over seeds)", "",
                "| system | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]
        for label, rs in tables.items():
            if rs:
                out.append(f"| {label} | " + " | ".join(fmt([mean([r.get(c) for r in rs])]) for c in conds) + " |")

    if groups:  # after the per-condition tables (### under ## Systems)
        out += significance(exp, sets[1:] or sets, seeds, current)
    out += kd_variants(exp, sets, args.train_set, seeds, current, extra)

    # ---- teacher evaluation ----
    teacher_eval = load_json(exp / "teacher_eval" / "summary.json")
    stale = teacher_eval_staleness(exp, teacher_eval) if teacher_eval else None
    if teacher_eval:
        out += ["", "## Teacher evaluation and copy probe (stage 6, greedy CTC)", ""]
    if stale:
        out.append(f"Not shown: `{exp / 'teacher_eval'}` is stale ({stale}); re-run stage 6.")
    elif teacher_eval:
        unit = {"char": "characters", "word": "words"}.get(teacher_eval.get("follow_unit"), "tokens")
        out += ["Copy probe: the Oracle Teacher is fed another utterance's transcript, with the real audio "
                "and with the audio zeroed (features at the training mean). *Fed vs truth* is the fed "
                "transcripts' own CER against the truth (how far apart the two candidate outputs are). "
                "*Copy rate*: share of outputs equal to the fed transcript, word for word. *Follow rate*: "
                f"the output is aligned to the truth and to the fed transcript (in {unit}); of the output "
                "tokens matched in exactly one of the two alignments, the share matched to the fed "
                "transcript (~100 % for a teacher that copies its transcript input, ~0 % for one that "
                "follows the audio; – when no token takes a side). *Chance* is the follow rate of the "
                "conventional teacher's output against the same fed transcripts: it never saw them, so "
                "this is what coincidence gives for these units and error rates.", "",
                "| set | " + " | ".join(header for header, _, _ in COPY_PROBE_COLUMNS) + " |",
                "|---|" + "---|" * len(COPY_PROBE_COLUMNS)]
        for set_name, result in teacher_eval["sets"].items():
            cells = [(percent if metric.endswith("_rate") else fmt)([result.get(probe, {}).get(metric)])
                     for _, probe, metric in COPY_PROBE_COLUMNS]
            out.append(f"| {set_name} | " + " | ".join(cells) + " |")
        speed = teacher_eval.get("time_to_cer", {})
        if speed:
            out += ["", f"Time to reach the conventional teacher's best dev CER ({speed['target_dev_cer']:.2f} %): "
                    f"conventional {speed['conventional_seconds']:.0f} s (epoch {speed['conventional_epoch']:.0f}), "
                    f"Oracle Teacher {speed['oracle_seconds']:.0f} s (epoch {speed['oracle_epoch']:.0f}); "
                    f"ratio **{speed['ratio']:.2f}**. Oracle Teacher best dev CER (with transcript): "
                    f"{speed['oracle_best_dev_cer']:.2f} %. Both teachers trained side by side, one core each."]

    # ---- anti-copy sweep ----
    sweep = exp / "anticopy" / "summary.tsv"
    if sweep.exists():
        table: Dict[str, Dict[tuple, float]] = {}
        for line in sweep.read_text(encoding="utf-8").splitlines()[1:]:
            with contextlib.suppress(ValueError):  # skipped: not 5 fields, or no number
                variant, set_name, probe, metric, value = line.split("\t")
                table.setdefault(variant, {})[(set_name, probe, metric)] = float(value)
        out += ["", "## Anti-copy strategies (`local/anticopy_sweep.sh`, Oracle Teacher variants, test set)", "",
                "Each variant is the default Oracle Teacher plus the named options, trained the same way "
                "(two variants side by side, one core each); `default` is the stage-5 teacher above. "
                "Epoch counts are load-independent; wall times are comparable only roughly (each variant "
                "trained beside another variant, the conventional teacher beside the default one).", "",
                "| variant | CER, true transcript | CER vs truth, other transcript fed | CER vs fed | copy rate "
                "| CER, zeroed audio | epochs (wall time) to the conventional teacher's best dev CER |", "|---|---|---|---|---|---|---|"]
        for variant, values in table.items():
            cells = [fmt([values.get((test, probe, metric))]) for probe, metric in (
                ("true_transcript", "cer"), ("other_transcript", "cer"), ("other_transcript", "cer_vs_fed"))]
            copy = values.get((test, "other_transcript", "copy_rate"))
            cells += [fmt([copy], 1, 100.0) + " %" if copy is not None else "–",
                      fmt([values.get((test, "zeroed_source", "cer"))])]
            times = [fmt([values.get(("dev", "time_to_cer", m))], 0) for m in
                     ("oracle_epoch", "oracle_seconds", "conventional_epoch", "conventional_seconds")]
            out.append(f"| {variant} | " + " | ".join(cells)
                       + " | {} ({} s; conventional: {}, {} s) |".format(*times))

    # ---- KD hyper-parameter sweep ----
    settings = sorted(p for p in (exp / "kd_sweep").glob("*") if p.is_dir())
    sweep_sets = sets[1:] or sets  # the test sets (all sets when only one is scored)
    if settings:
        out += ["", "## KD hyper-parameter sweep (`local/kd_sweep.sh`; greedy CTC, mean ± std over seeds)", "",
                "Setting `a<alpha>_t<tau>_<frames>` (`_matched`: all frames with the KD weight matched to the "
                "nonblank setting's effective one, per teacher; see the sweep log); the run above used "
                f"a{args.kd_weight}_t{args.kd_temperature}_{args.kd_frames}. The no-KD students are the same "
                "in every setting. Student: its directory name, which carries the KD settings it was trained with.",
                "", "| setting | student | seeds | " + " | ".join(f"{s} CER | {s} WER" for s in sweep_sets) + " |",
                "|---|---|---|" + "---|---|" * len(sweep_sets)]
        for setting in settings:
            for group, system, dirs in student_groups(setting, None, current):
                if system == "nokd":
                    continue
                results = {s: [scores(d, s, "greedy") for d in dirs] for s in sweep_sets}
                if not any(r for s in sweep_sets for r in results[s]):
                    continue
                cells = [fmt([r and r.get(m) for r in results[s]]) for s in sweep_sets for m in ("cer", "wer")]
                out.append(f"| {setting.name} | {STUDENT_SYSTEMS[system]} (`{group}`) | {len(dirs)} | "
                           + " | ".join(cells) + " |")

    # ---- storage, benchmark, stage times ----
    out += ["", "## Posterior storage (stage 7)", ""]
    for teacher in TEACHERS:
        stats = load_json(exp / teacher / "posteriors" / args.train_set / "stats.json")
        meta = load_json(exp / teacher / "posteriors" / args.train_set / "meta.json")
        if stats and meta:
            out.append(f"- {teacher}: {meta['format']} (k={meta.get('k')}), {stats['frames']} frames, "
                       f"**{stats['bytes_per_frame']:.1f} bytes/frame** on disk (train)")
    online = [g for g, _, _ in groups if (parse_student_dir(f"{g}_seed0") or {}).get("online")]
    if online:
        out.append(f"- online teacher (`{'`, `'.join(online)}`): nothing stored; the frozen teacher ran inside "
                   "each training step (exact dense posteriors)")
    bench = load_json(exp / "benchmark" / "benchmark.json")
    if bench:
        out += ["", "## Benchmark (`python -m espnet_oracle.bin.benchmark`, run after the recipe)", ""]
        out += [f"- {key}: {value}" for key, value in bench.items()]
    times = exp / "stage_times.tsv"
    if times.exists():
        out += wall_time_section(times)
    atomic_write_text(Path(args.recipe_dir) / args.out, "\n".join(out) + "\n")  # (an absolute --out as it is)
    print(f"make_results: wrote {args.out}")


if __name__ == "__main__":
    main()
