#!/usr/bin/env python3
"""Blank-bias calibration of CTC students: are KD students better models with a miscalibrated blank?

Why it exists: the digits recipe's KD students trade deletions for insertions (README, Findings 5):
a student can rank words better yet lose on WER because its blank/non-blank balance moved. This
decodes each model greedily with ``b`` added to the blank log-probability, picks ``b`` per model on
the tuning set (``--tune_set``, dev), and scores the test sets at b = 0 and at the tuned b, so systems
are compared with their bias calibrated. Run from the recipe dir after stage 8:

    python local/blank_bias_check.py --out exp/blank_bias \
        --system "no KD=exp/student_nokd_seed*" \
        --system "conventional KD=exp/student_convkd_a0.5_t1_nonblank_seed*" \
        --system "Oracle KD=exp/student_oraclekd_a0.5_t1_nonblank_seed*"

Writes ``<out>/bias.tsv`` (every model, set and bias: words, errors, substitutions, deletions,
insertions) and ``<out>/summary.md`` (per system, mean ± std over its models, and the paired
bootstrap of each system against the first, seeds pooled, at the tuned biases).
"""

import argparse
import glob
import sys
from pathlib import Path
from statistics import mean

import torch

from espnet_oracle.bin.make_results import bootstrap, fmt  # RESULTS.md's paired bootstrap and mean ± std
from espnet_oracle.utils.inference import FeatureSet, ctc_log_probs, load_model, tokens_to_text
from espnet_oracle.utils.metrics import align


def counts(ref: str, hyp: str) -> tuple:
    """(reference words, substitutions, deletions, insertions) of one utterance."""
    ops = [op for op, _, _ in align(ref.split(), hyp.split())]
    return len(ref.split()), ops.count("S"), ops.count("D"), ops.count("I")


def totals(per_utt: dict) -> tuple:
    """(words, substitutions, deletions, insertions) summed over a set's {utt: counts}."""
    return tuple(sum(c[k] for c in per_utt.values()) for k in range(4))


def set_log_probs(model, args, feats_dir: Path, batch_size: int) -> tuple:
    """({utt: (T', V) CTC log-probs}, {utt: transcript}) of one feature set."""
    features = FeatureSet(feats_dir, args)
    out = {}
    for ids in features.batches(batch_size):
        log_probs, lengths, _ = ctc_log_probs(model, [features.get(u) for u in ids])
        for u, lp, n in zip(ids, log_probs, lengths):
            out[u] = lp[: int(n)].clone()
    return out, features.texts


def decode(log_probs: dict, bias: float, blank_id: int, token_list, token_type: str) -> dict:
    hyps = {}
    for u, lp in log_probs.items():
        shifted = lp.clone()
        shifted[:, blank_id] += bias
        ids = torch.unique_consecutive(shifted.argmax(dim=-1))
        hyps[u] = tokens_to_text([token_list[i] for i in ids.tolist() if i != blank_id], token_type)
    return hyps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--system", action="append", required=True,
                        help='"name=glob [glob ...]" of model dirs (one per seed); the first is the reference')
    parser.add_argument("--dump", default="dump/fbank", help="feature dump dir holding the sets")
    parser.add_argument("--tune_set", default="dev")
    parser.add_argument("--test_sets", default="test test_unseen")
    parser.add_argument("--biases", default="-4 -3 -2.5 -2 -1.5 -1 -0.5 0 0.5 1 1.5 2 2.5 3 4",
                        help="blank log-prob offsets to try")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--out", required=True)
    opts = parser.parse_args(argv)
    biases = [float(b) for b in opts.biases.split()]
    if 0.0 not in biases:
        biases.append(0.0)
    sets = [opts.tune_set] + opts.test_sets.split()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    systems = []
    for spec in opts.system:
        name, _, patterns = spec.partition("=")
        dirs = sorted({d for pattern in patterns.split() for d in glob.glob(pattern)})
        if not name or not dirs:
            parser.error(f"--system {spec!r}: want name=glob [glob ...] matching model dirs (matched none)")
        if name in (n for n, _ in systems):
            parser.error(f"--system {spec!r}: a system named {name!r} was given before")
        systems.append((name, dirs))

    rows = ["system\tmodel\tset\tbias\twords\terrors\tsub\tdel\tins"]
    # per system: per set: tuned {utt: (errors, words)} pooled over models; per model: (b*, {set: (wer0, wer*)})
    results = {}
    for name, dirs in systems:
        per_model, pooled = [], {s: {} for s in opts.test_sets.split()}
        for d in dirs:
            model, args = load_model(Path(d))
            blank_id = int(getattr(model, "blank_id", 0))
            table = {}  # (set, bias) -> {utt: (words, S, D, I)}
            for set_name in sets:
                log_probs, refs = set_log_probs(model, args, Path(opts.dump) / set_name, opts.batch_size)
                for b in biases:
                    hyps = decode(log_probs, b, blank_id, args.token_list, args.token_type)
                    table[set_name, b] = {u: counts(refs[u], hyps[u]) for u in refs}
                    n, s, dl, i = totals(table[set_name, b])
                    rows.append(f"{name}\t{d}\t{set_name}\t{b:g}\t{n}\t{s + dl + i}\t{s}\t{dl}\t{i}")

            def wer(set_name, b):
                n, s, dl, i = totals(table[set_name, b])
                return 100.0 * (s + dl + i) / n, 100.0 * dl / n, 100.0 * i / n

            best = min(biases, key=lambda b: (wer(opts.tune_set, b)[0], abs(b)))
            per_model.append((best, {s: (wer(s, 0.0), wer(s, best)) for s in sets}))
            for s in opts.test_sets.split():
                for u, (n, sub, dl, i) in table[s, best].items():
                    e0, n0 = pooled[s].get(u, (0, 0))
                    pooled[s][u] = (e0 + sub + dl + i, n0 + n)
            print(f"{name}: {d}: tuned blank bias {best:g}", file=sys.stderr)
        results[name] = (per_model, pooled)
    (out / "bias.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    lines = ["# Blank-bias calibration (greedy CTC, blank log-prob + b; b tuned per model on "
             f"`{opts.tune_set}` over {opts.biases})", "",
             "WER % (deletions / insertions %), mean ± std over each system's models.", "",
             "| system | models | tuned b | " + " | ".join(
                 f"{s} b = 0 | {s} tuned" for s in sets) + " |",
             "|---|---|---|" + "---|---|" * len(sets)]
    for name, (per_model, _) in results.items():
        cells = []
        for s in sets:
            for k in (0, 1):
                w = [m[1][s][k][0] for m in per_model]
                dl = [m[1][s][k][1] for m in per_model]
                i = [m[1][s][k][2] for m in per_model]
                cells.append(f"{fmt(w)} ({mean(dl):.1f} / {mean(i):.1f})")
        lines.append(f"| {name} | {len(per_model)} | {', '.join(f'{m[0]:g}' for m in per_model)} | "
                     + " | ".join(cells) + " |")
    ref_name = systems[0][0]
    lines += ["", f"Paired bootstrap at the tuned biases against {ref_name} (utterances resampled 1000 times, "
              "seeds pooled; Δ = WER(system) − WER(reference), points):", "",
              "| set | system | Δ WER | 95 % CI | p |", "|---|---|---|---|---|"]
    for s in opts.test_sets.split():
        ref = results[ref_name][1][s]
        for name, (_, pooled) in list(results.items())[1:]:
            if set(pooled[s]) != set(ref):
                lines.append(f"| {s} | {name} | different utterances: skipped | | |")
                continue
            r = bootstrap(pooled[s], ref)
            lines.append(f"| {s} | {name} | {r['delta']:+.2f} | [{r['low']:+.2f}, {r['high']:+.2f}] | {r['p_text']} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
