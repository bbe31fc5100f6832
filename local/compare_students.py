#!/usr/bin/env python3
"""Student systems from any experiment dirs side by side: greedy WER per set, spike onset error, the
last epoch's mean ``kd_shift_chosen``, and paired bootstraps of chosen pairs (seeds pooled).

Why it exists: RESULTS.md (stage 10) compares the student systems of one ``--exp``; runs that put
students with other settings in their own experiment dir (e.g. RESULTS_timing_tolerant_kd_*.md)
need the same table and the same bootstrap across dirs. Run from the recipe dir after stage 10:

    python local/compare_students.py --sets "test test_unseen" \
        --system "Oracle KD=exp/student_oraclekd_a0.5_t1_words_seed*" \
        --system "Oracle KD, tolerant=exp_tol1/student_oraclekd_a0.5_t1_words_seed*" \
        --compare "Oracle KD, tolerant:Oracle KD"

Each system is a glob of its seed dirs; bootstraps pool a system's seeds per utterance
(``make_results.pooled_word_errors``) and need both systems to have the same number of seeds.
"""

import argparse
import glob
import sys
from pathlib import Path

from espnet_oracle.bin.make_results import bootstrap, fmt, onset_error, pooled_word_errors, scores
from espnet_oracle.bin.training_curve import reporter_state


def last_epoch_stat(exp_dir: Path, key: str):
    """The last finished epoch's training mean of ``key`` in ESPnet's reporter state (None if absent)."""
    path = exp_dir / "checkpoint.pth"
    if not path.exists():
        return None
    stats = reporter_state(path).get("stats") or {}
    value = stats[max(stats)].get("train", {}).get(key) if stats else None
    return None if value is None else float(value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", action="append", required=True, metavar="NAME=GLOB",
                        help="a student system: its name and a glob of its seed dirs")
    parser.add_argument("--sets", default="test test_unseen")
    parser.add_argument("--onset_set", default="test", help="set whose spike onset error is reported")
    parser.add_argument("--compare", action="append", default=[], metavar="A:B", help="bootstrap A vs B")
    args = parser.parse_args(argv)
    sets = args.sets.split()
    systems = {}
    for spec in args.system:
        name, sep, pattern = spec.partition("=")
        dirs = sorted(Path(d) for d in glob.glob(pattern))
        if not sep or not dirs:
            sys.exit(f"compare_students: --system {spec!r}: need NAME=GLOB matching at least one dir")
        systems[name] = dirs
    for spec in args.compare:
        if spec.count(":") != 1 or any(n not in systems for n in spec.split(":")):
            sys.exit(f"compare_students: --compare {spec!r}: need A:B, both names given by --system")

    # onset error as in RESULTS.md: mean |spike onset - word start| over the seeds' words, 95 % CI
    print(f"| system | seeds | onset error (ms, {args.onset_set}) | "
          + " | ".join(f"{s} WER %" for s in sets) + " | kd_shift_chosen (last epoch) |")
    print("|---|---|---|" + "---|" * len(sets) + "---|")
    for name, dirs in systems.items():
        onset = onset_error([scores(d, args.onset_set, "greedy") for d in dirs])
        wers = [fmt([(scores(d, s, "greedy") or {}).get("wer") for d in dirs]) for s in sets]
        chosen = [last_epoch_stat(d, "kd_shift_chosen") for d in dirs]
        print(f"| {name} | {len(dirs)} | {onset} | " + " | ".join(wers)
              + f" | {fmt(chosen) if any(c is not None for c in chosen) else '–'} |")

    if args.compare:
        print("\n| set | A vs B | WER A | WER B | ΔWER (points) | 95 % CI of Δ | p |\n|---|---|---|---|---|---|---|")
    for spec in args.compare:
        a, b = spec.split(":")
        if len(systems[a]) != len(systems[b]):
            sys.exit(f"compare_students: {a!r} has {len(systems[a])} seeds, {b!r} {len(systems[b])}")
        for s in sets:
            (ea, na), (eb, nb) = (pooled_word_errors(systems[n], s) for n in (a, b))
            if ea is None or eb is None or na < len(systems[a]) or nb < len(systems[b]) or set(ea) != set(eb):
                print(f"| {s} | {a} vs {b} | (not comparable: unscored seeds or different utterances) ||||| ")
                continue
            r = bootstrap(ea, eb)
            print(f"| {s} | {a} vs {b} | {r['wer_a']:.2f} | {r['wer_b']:.2f} | {r['delta']:+.2f} | "
                  f"[{r['low']:+.2f}, {r['high']:+.2f}] | {r['p_text']} |")


if __name__ == "__main__":
    main()
