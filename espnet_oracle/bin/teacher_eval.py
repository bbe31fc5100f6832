"""Stage 6: evaluate both teachers, probe the Oracle Teacher for copying, compare training speed.

For each set (greedy CTC decoding):
  * conventional teacher: CER/WER (it only sees the audio);
  * Oracle Teacher fed the true transcript: CER/WER (its own, oracle accuracy);
  * copy probe: Oracle Teacher fed ANOTHER utterance's transcript (a different
    word sequence): CER/WER against the truth, CER against the fed transcript,
    and the copy rate (share of outputs equal to the fed transcript; a teacher
    that copies its target input has copy rate ~1, one that follows the audio ~0);
  * zeroed source: true transcript, features replaced by the training mean
    (zero after normalization). A teacher that ignores the audio still scores well.
Plus time-to-CER: wall time for the Oracle Teacher to reach the conventional
teacher's best dev CER, divided by the conventional teacher's time to reach it.

Writes ``summary.tsv`` (long format: system, set, probe, metric, value),
``summary.json`` and ``attention_<utt>.png`` cross-attention plots.
"""

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from espnet_oracle.utils.datadir import atomic_write_text
from espnet_oracle.utils.metrics import to_chars, wer_cer, edit_counts


def other_transcripts(texts: Dict[str, str], seed: int = 0) -> Dict[str, str]:
    """Give every utterance another utterance's transcript with a different word sequence."""
    ids = sorted(texts)
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(len(ids)))
    assigned = {}
    for position, index in enumerate(order):
        utt = ids[index]
        for step in range(1, len(ids)):
            candidate = ids[order[(position + step) % len(ids)]]
            if texts[candidate].split() != texts[utt].split():
                assigned[utt] = texts[candidate]
                break
        else:
            raise ValueError("copy probe needs at least two different transcripts")
    return assigned


def copy_probe(refs: Dict[str, str], fed: Dict[str, str], hyps: Dict[str, str]) -> dict:
    """What a teacher fed ``fed`` transcripts produced: copy rate, truth rate, CER vs fed.

    copy_rate: share of outputs equal (word for word) to the fed transcript, ~1 for a
    teacher that copies its target input; truth_rate: share equal to the truth.
    """
    return dict(
        cer_vs_fed=cer_against(fed, hyps),
        copy_rate=float(np.mean([hyps[u].split() == fed[u].split() for u in refs])),
        truth_rate=float(np.mean([hyps[u].split() == refs[u].split() for u in refs])),
    )


def greedy_texts(model, data, utt_ids, fed: Optional[Dict[str, str]] = None,
                 zero_source: bool = False, batch_size: int = 16) -> Dict[str, str]:
    from espnet_oracle.utils.inference import ctc_log_probs, greedy_path, tokens_to_text

    token_list = list(model.token_list)
    hyps = {}
    for batch in data.batches(batch_size, utt_ids):
        utterances = [data.get(u, None if fed is None else fed[u]) for u in batch]
        log_probs, lengths, _ = ctc_log_probs(model, utterances, zero_source=zero_source)
        for i, utt in enumerate(utterances):
            ids, _ = greedy_path(log_probs[i, : int(lengths[i])], model.blank_id)
            hyps[utt.utt_id] = tokens_to_text([token_list[t] for t in ids], data.token_type)
    return hyps


def cer_against(refs: Dict[str, str], hyps: Dict[str, str]) -> float:
    errors = total = 0
    for utt, ref in refs.items():
        counts = edit_counts(to_chars(ref), to_chars(hyps[utt]))
        errors += counts.errors
        total += counts.n_ref
    return 100.0 * errors / max(total, 1)


def read_curve(path: Path) -> List[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path} missing — it is written at the end of stage 4/5")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, map(float, line.split("\t")))) for line in lines[1:] if line.strip()]


def time_to_cer(conventional: List[dict], oracle: List[dict]) -> dict:
    """When does each teacher first reach the conventional teacher's best dev CER?"""
    target = min(row["dev_cer"] for row in conventional)

    def first(rows):
        for row in rows:
            if row["dev_cer"] <= target + 1e-9:
                return row
        return None

    conv_row, oracle_row = first(conventional), first(oracle)
    result = dict(
        target_dev_cer=target,
        conventional_epoch=conv_row["epoch"],
        conventional_seconds=conv_row["wall_seconds"],
        oracle_epoch=oracle_row["epoch"] if oracle_row else math.nan,
        oracle_seconds=oracle_row["wall_seconds"] if oracle_row else math.nan,
        oracle_best_dev_cer=min(row["dev_cer"] for row in oracle),
        conventional_total_seconds=conventional[-1]["wall_seconds"],
        oracle_total_seconds=oracle[-1]["wall_seconds"],
    )
    result["ratio"] = (
        result["oracle_seconds"] / result["conventional_seconds"]
        if oracle_row and result["conventional_seconds"] > 0 else math.nan
    )
    return result


def plot_attention(model, data, utt_ids: Sequence[str], out_dir: Path) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from espnet_oracle.utils.inference import ctc_log_probs

    token_list = list(model.token_list)
    written = []
    for utt_id in utt_ids:
        utt = data.get(utt_id)
        _, lengths, attention = ctc_log_probs(model, [utt], return_attention=True)
        if attention is None:
            continue
        weights = attention[0].mean(dim=0)[: int(lengths[0]), : len(utt.token_ids)].numpy()
        fig, ax = plt.subplots(figsize=(max(6, len(utt.token_ids) * 0.3), 4))
        ax.imshow(weights.T, aspect="auto", origin="lower", interpolation="nearest", cmap="viridis")
        ax.set_yticks(range(len(utt.token_ids)))
        ax.set_yticklabels(["_" if token_list[t] == "<space>" else token_list[t] for t in utt.token_ids],
                           fontsize=7)
        ax.set_xlabel("source frame (40 ms)")
        ax.set_ylabel("target token")
        ax.set_title(f"Oracle Teacher cross-attention (last block, mean over heads)\n{utt_id}: {utt.text}",
                     fontsize=9)
        fig.tight_layout()
        path = out_dir / f"attention_{utt_id}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conventional_dir", required=True)
    parser.add_argument("--oracle_dir", required=True)
    parser.add_argument("--dump_dir", required=True, help="feature dump root, e.g. dump/fbank")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--sets", default="dev test test_unseen")
    parser.add_argument("--probe_sets", default=None, help="sets for the probes (default: --sets)")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--num_attention_plots", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the transcript shuffle")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from espnet_oracle.utils.inference import FeatureSet, is_oracle, load_model

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conventional, conv_args = load_model(Path(args.conventional_dir))
    oracle, oracle_args = load_model(Path(args.oracle_dir))
    if not is_oracle(oracle) or is_oracle(conventional):
        sys.exit("teacher_eval: --oracle_dir must hold model: oracle_teacher and "
                 "--conventional_dir a source-only model")
    if list(conventional.token_list) != list(oracle.token_list):
        sys.exit("teacher_eval: the two teachers use different token lists")

    rows = []  # (system, set, probe, metric, value)
    report = {"sets": {}}
    probe_sets = (args.probe_sets or args.sets).split()
    for set_name in args.sets.split():
        feats_dir = Path(args.dump_dir) / set_name
        data_conv = FeatureSet(feats_dir, conv_args)
        data = FeatureSet(feats_dir, oracle_args)
        refs = {u: data.texts[u] for u in data.utt_ids}
        result = {}

        def record(system, probe, hyps, fed=None):
            scores = wer_cer(refs, hyps)
            entry = dict(cer=scores.cer.rate, wer=scores.wer.rate, n_utts=scores.n_utts)
            if fed is not None:
                entry.update(copy_probe(refs, fed, hyps))
            result[f"{system}/{probe}"] = entry
            for metric, value in entry.items():
                rows.append((system, set_name, probe, metric, value))
            print(f"teacher_eval: {set_name:12s} {system:22s} {probe:17s} "
                  + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()),
                  flush=True)

        record("teacher_conventional", "audio_only", greedy_texts(conventional, data_conv, data.utt_ids))
        record("teacher_oracle", "true_transcript", greedy_texts(oracle, data, data.utt_ids))
        if set_name in probe_sets:
            fed = other_transcripts(refs, seed=args.seed)
            record("teacher_oracle", "other_transcript", greedy_texts(oracle, data, data.utt_ids, fed=fed), fed)
            record("teacher_oracle", "zeroed_source",
                   greedy_texts(oracle, data, data.utt_ids, zero_source=True))
        report["sets"][set_name] = result
        if set_name == args.sets.split()[0] and args.num_attention_plots > 0:
            plot_attention(oracle, data, data.utt_ids[: args.num_attention_plots], out_dir)

    speed = time_to_cer(read_curve(Path(args.conventional_dir) / "cer_curve.tsv"),
                        read_curve(Path(args.oracle_dir) / "cer_curve.tsv"))
    report["time_to_cer"] = speed
    for metric, value in speed.items():
        rows.append(("teacher_oracle", "dev", "time_to_cer", metric, value))
    lines = ["system\tset\tprobe\tmetric\tvalue"]
    for system, set_name, probe, metric, value in rows:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{system}\t{set_name}\t{probe}\t{metric}\t{text}")
    atomic_write_text(out_dir / "summary.tsv", "\n".join(lines) + "\n")
    atomic_write_text(out_dir / "summary.json", json.dumps(report, indent=2, default=float) + "\n")
    print(f"teacher_eval: time-to-CER ratio (oracle / conventional) = {speed['ratio']:.3f} "
          f"(target dev CER {speed['target_dev_cer']:.2f}%)")
    print(f"teacher_eval: wrote {out_dir / 'summary.tsv'}")


if __name__ == "__main__":
    main()
