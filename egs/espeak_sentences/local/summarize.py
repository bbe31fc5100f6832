#!/usr/bin/env python3
"""Markdown tables of the de-risk: teachers' WER/CER and the Oracle Teachers' copy probes, from the
stage-6 outputs (``<exp>/teacher_eval/summary.tsv``) and training curves (``cer_curve.tsv``).

    local/summarize.py [--exp exp] [--variants "nodropout ..."] [--out exp/derisk_summary.md]

Systems: the conventional teacher and the default Oracle Teacher from ``<exp>/teacher_eval``, each
variant's Oracle Teacher from ``<exp>/anticopy/<variant>/teacher_eval``. Missing results are left out
(named on stderr), so a partial run still gives its tables.
"""

import argparse
import csv
import sys
from pathlib import Path

SETS = ("dev", "test", "test_unseen")


def read_summary(path: Path) -> dict:
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            out[(row["system"], row["set"], row["probe"], row["metric"])] = float(row["value"])
    return out


def read_curve(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f, delimiter="\t")]


def fmt(x, pct=False, nd=2):
    if x is None:
        return "–"
    return f"{100 * x:.1f} %" if pct else f"{x:.{nd}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", default="exp")
    ap.add_argument("--variants", default="nodropout")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    exp = Path(a.exp)
    systems = [("default (30 % target-token dropout, no target positions)", exp / "teacher_eval", exp / "teacher_oracle")]
    systems += [(v, exp / "anticopy" / v / "teacher_eval", exp / "anticopy" / v / "teacher_oracle")
                for v in a.variants.split()]
    lines = []
    base = exp / "teacher_eval" / "summary.tsv"
    conv = read_summary(base) if base.is_file() else {}
    if not conv:
        print(f"summarize.py: {base} missing (stage 6 not run)", file=sys.stderr)

    def g(s, system, set_, probe, metric):
        return s.get((system, set_, probe, metric))

    lines.append("| system | " + " | ".join(f"{s} WER / CER" for s in SETS) + " | epochs | best dev CER (epoch) | train time |")
    lines.append("|---" * (len(SETS) + 4) + "|")
    rows = [("conventional teacher (audio only)", conv, "teacher_conventional", "audio_only",
             exp / "teacher_conventional")]
    for name, d, mdir in systems:
        f = d / "summary.tsv"
        if f.is_file():
            rows.append((f"Oracle Teacher, {name}: true transcript", read_summary(f), "teacher_oracle",
                         "true_transcript", mdir))
        else:
            print(f"summarize.py: {f} missing", file=sys.stderr)
    for label, s, system, probe, mdir in rows:
        if not s:
            continue
        curve = read_curve(mdir / "cer_curve.tsv")
        best = min(curve, key=lambda r: r["dev_cer"]) if curve else None
        cells = [f"{fmt(g(s, system, x, probe, 'wer'))} / {fmt(g(s, system, x, probe, 'cer'))}" for x in SETS]
        lines.append(f"| {label} | " + " | ".join(cells) + (
            f" | {len(curve)} | {best['dev_cer']:.2f} ({int(best['epoch'])}) | {curve[-1]['wall_seconds'] / 60:.0f} min |"
            if curve else " | – | – | – |"))
    lines.append("")
    lines.append("Copy probe (per set dev / test / test_unseen; follow rate in words; chance = the conventional "
                 "teacher's output scored against the same fed transcripts):")
    lines.append("")
    lines.append("| Oracle Teacher | zeroed audio: WER | another transcript: WER vs truth | … follow rate | chance "
                 "| … copy rate | another transcript + zeroed audio: follow rate | … CER vs fed |")
    lines.append("|---" * 8 + "|")
    for name, d, _ in systems:
        f = d / "summary.tsv"
        if not f.is_file():
            continue
        s = read_summary(f)

        def per_set(probe, metric, pct=False, src=s, system="teacher_oracle"):
            return " / ".join(fmt(g(src, system, x, probe, metric), pct=pct) for x in SETS)

        lines.append(f"| {name} | {per_set('zeroed_source', 'wer')} | {per_set('other_transcript', 'wer')} | "
                     f"{per_set('other_transcript', 'follow_rate', True)} | "
                     f"{per_set('other_transcript_chance', 'follow_rate', True, s, 'teacher_conventional')} | "
                     f"{per_set('other_transcript', 'copy_rate', True)} | "
                     f"{per_set('other_transcript_zeroed_source', 'follow_rate', True)} | "
                     f"{per_set('other_transcript_zeroed_source', 'cer_vs_fed')} |")
    text = "\n".join(lines) + "\n"
    if a.out:
        Path(a.out).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
