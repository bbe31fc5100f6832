#!/usr/bin/env python3
"""Where do a CTC model's inserted words fire? Inserted words of greedy decodes, placed in the
reference word whose span holds their spike.

Why it exists: on the digits recipe some KD students lose to no KD on the unseen speaker through
insertions (README Results, "Why KD does not help these students"); this says which words are
inserted and inside which true word they fire (e.g. a second spike inside a long word), which
WER alone does not. Needs word units (one token per word: the decode's ``token`` file equals
its ``text``), the decode dirs' ``ctc_frames`` (stage 9) and ``data/<set>/word_align``.
Run from the recipe dir after stage 9:

    python local/insertion_check.py --set test_unseen --out exp/insertions \
        --system "no KD=exp/student_nokd_seed*" \
        --system "conventional KD=exp/student_convkd_a0.5_t1_words_seed*"

Writes ``<out>/<set>.tsv`` (system; ``I``, inserted word, reference word its spike lies in or
``-`` for none; or ``S``, reference word, the word written for it; count over the system's models)
and prints, per system, substitution / deletion / insertion rates (mean over models) and the most
frequent (inserted word, host word) and (reference word, substitute) pairs; with ``--positions``
also where in each reference word the correctly written words fire (0 = its start, 1 = its end).
"""

import argparse
import glob
import sys
from collections import Counter
from pathlib import Path
from statistics import mean

from espnet_oracle.bin.score import read_word_align
from espnet_oracle.utils.datadir import read_kaldi_map
from espnet_oracle.utils.metrics import align


def read_lists(path: Path) -> dict:
    """{utt: [fields after the id]} of a Kaldi-style text file."""
    return {utt: rest.split() for utt, rest in read_kaldi_map(path).items()}


def read_decode(decode_dir: Path, refs: dict) -> tuple:
    """(hyps, {utt: frames}, a frame's time: offset_s + frame * shift_s) of a greedy word-unit decode."""
    hyps, tokens = read_lists(decode_dir / "text"), read_lists(decode_dir / "token")
    frames = {u: [int(f) for f in v] for u, v in read_lists(decode_dir / "ctc_frames").items()}
    shift_s = float((decode_dir / "frame_shift_ms").read_text()) / 1000.0
    offset_s = float((decode_dir / "frame_offset_ms").read_text()) / 1000.0
    missing = sorted(set(refs) - set(hyps))
    if missing:
        raise SystemExit(f"{decode_dir}: no hypothesis for {len(missing)} utterance(s), e.g. {missing[0]}")
    for utt in refs:
        if tokens.get(utt) != hyps[utt] or len(frames.get(utt, [])) != len(hyps[utt]):
            raise SystemExit(f"{decode_dir}: utterance {utt}: tokens/ctc_frames do not match the words of "
                             f"'text' (this check needs word units, one CTC frame per word)")
    return hyps, frames, offset_s, shift_s


def spike_positions(decode_dir: Path, refs: dict, word_align: dict) -> dict:
    """{reference word: [where its spike fires in its span, 0 = start .. 1 = end]} over the words
    the decode writes correctly (a mean onset over all words can hide one word's placement)."""
    hyps, frames, offset_s, shift_s = read_decode(decode_dir, refs)
    out = {}
    for utt, ref in refs.items():
        for op, i, j in align(ref, hyps[utt]):
            if op == "C":
                span = word_align[utt][i]
                t = offset_s + frames[utt][j] * shift_s
                out.setdefault(ref[i], []).append((t - span.start) / max(span.end - span.start, 1e-6))
    return out


def model_insertions(decode_dir: Path, refs: dict, word_align: dict) -> tuple:
    """((words, substitutions, deletions, insertions), Counter of ("I", inserted word, host word) and
    ("S", reference word, substitute))."""
    hyps, frames, offset_s, shift_s = read_decode(decode_dir, refs)
    counts, hosts = Counter(), Counter()
    for utt, ref in refs.items():
        hyp = hyps[utt]
        counts["words"] += len(ref)
        for op, i, j in align(ref, hyp):
            counts[op] += 1
            if op == "S":
                hosts[("S", ref[i], hyp[j])] += 1
            if op == "I":
                t = offset_s + frames[utt][j] * shift_s
                inside = [span.word for span in word_align[utt] if span.start <= t <= span.end]
                hosts[("I", hyp[j], inside[0] if inside else "-")] += 1
    return tuple(counts[k] for k in ("words", "S", "D", "I")), hosts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--system", action="append", required=True, help="NAME=GLOB of model dirs")
    parser.add_argument("--set", default="test_unseen")
    parser.add_argument("--data", default="data", help="dir holding <set>/text and <set>/word_align")
    parser.add_argument("--top", type=int, default=3, help="(inserted, host) pairs printed per system")
    parser.add_argument("--out", required=True)
    parser.add_argument("--positions", action="store_true",
                        help="also print where in each reference word its spike fires (correct words, "
                             "share of the word's span, the models pooled)")
    args = parser.parse_args(argv)
    refs = read_lists(Path(args.data) / args.set / "text")
    word_align = read_word_align(Path(args.data) / args.set / "word_align")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = ["system\ttype\tword\tinside_word_or_substitute\tcount"]
    for spec in args.system:
        name, _, pattern = spec.partition("=")
        dirs = sorted(Path(d) for d in glob.glob(pattern))
        if not name or not dirs:
            raise SystemExit(f"--system '{spec}': expected NAME=GLOB matching model dirs")
        rates, hosts = [], Counter()
        for d in dirs:
            (words, *errors), model_hosts = model_insertions(d / f"decode_{args.set}_greedy", refs, word_align)
            rates.append([100.0 * e / words for e in errors])
            hosts.update(model_hosts)
        rows += [f"{name}\t{kind}\t{w}\t{other}\t{n}" for (kind, w, other), n in hosts.most_common()]
        sub, dele, ins = (mean(r[i] for r in rates) for i in range(3))
        top = {kind: [(key, n) for key, n in hosts.most_common() if key[0] == kind][:args.top] for kind in "IS"}
        inserted = ", ".join(f"{w} in {host} {n}" for (_, w, host), n in top["I"])
        substituted = ", ".join(f"{w} -> {other} {n}" for (_, w, other), n in top["S"])
        print(f"{name} ({len(dirs)} models, {args.set}): sub {sub:.1f} % del {dele:.1f} % ins {ins:.1f} %; "
              f"{sum(n for key, n in hosts.items() if key[0] == 'I')} insertions, most: {inserted}; "
              f"substitutions, most: {substituted}")
        if args.positions:
            pooled = {}
            for d in dirs:
                for word, values in spike_positions(d / f"decode_{args.set}_greedy", refs, word_align).items():
                    pooled.setdefault(word, []).extend(values)
            print(f"{name}: spike position in the word (correct words): "
                  + ", ".join(f"{w} {mean(v):.2f}" for w, v in sorted(pooled.items())))
    (out / f"{args.set}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
