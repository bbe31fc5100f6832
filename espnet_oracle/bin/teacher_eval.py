"""Stage 6: evaluate both teachers, probe the Oracle Teacher for copying, compare training speed.
Why it exists: the copy probe and time-to-accuracy are this method's own measurements.

For each set (greedy CTC decoding), rows of ``summary.tsv`` by probe:
  * ``audio_only`` (conventional teacher) and ``true_transcript`` (the Oracle Teacher fed the
    true transcript: oracle accuracy): CER/WER;
  * ``zeroed_source``: true transcript, features replaced by the training mean (zero after
    normalization). A teacher that ignores the audio still scores well.
Copy probes (``--probe_sets``), the Oracle Teacher fed ANOTHER utterance's transcript (a
different word sequence, ``other_transcripts``): ``other_transcript`` with the real audio,
``other_transcript_zeroed_source`` with the features zeroed as above. A teacher that copies its
target input still writes the fed transcript; one that listens has nothing left to write it from.
Each copy probe reports (see ``copy_probe`` and ``follow_counts``):
  * ``cer``/``wer``: the output against the truth; ``cer_vs_fed``: against the fed transcript;
  * ``copy_rate``/``truth_rate``: share of outputs equal, word for word, to the fed transcript /
    to the truth. Whole-utterance matches only: they stay near 0 under heavy copying when the
    teacher makes errors, hence:
  * ``fed_vs_truth_cer``/``fed_vs_truth_wer``: the fed transcripts scored against the truth,
    i.e. how far apart the two candidate outputs are (the baseline);
  * ``follow_rate``: share of the output tokens that follow the fed transcript, among those that
    follow exactly one of fed and truth (~1 for a copying teacher, ~0 for a listening one);
    ``follow_fed_per_token``/``follow_truth_per_token``: both counts per output token;
    ``hyp_tokens``, ``follow_fed_tokens``, ``follow_truth_tokens``: the raw counts. Tokens are
    the model's units: characters (spaces excluded) for char models, words otherwise
    (``follow_unit`` in summary.json).
  * ``other_transcript_chance`` (conventional teacher, probe sets): the same metrics for an output
    that cannot have seen the fed transcript: the chance level of ``follow_rate`` etc. for this
    task's units and error rate.
Plus time-to-CER: wall time for the Oracle Teacher to reach the conventional teacher's best dev
CER, divided by the conventional teacher's time to reach it.

Writes ``summary.tsv`` (long format: system, set, probe, metric, value), ``summary.json`` and
``attention_<utt>.png`` cross-attention plots.
"""

import argparse
import collections
import json
import logging
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from espnet_oracle.utils.datadir import atomic_write_text
from espnet_oracle.utils.metrics import COR, align, to_chars, to_words, wer_cer


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


def follow_unit(token_type: str) -> str:
    """The unit the follow rate counts in: ``char`` for char models, else ``word``."""
    return "char" if token_type == "char" else "word"


def to_units(text: str, unit: str) -> List[str]:
    """Characters (spaces excluded, as in the CER) or words of ``text``."""
    return to_chars(text) if unit == "char" else to_words(text)


class FollowCounts(collections.Counter):
    """How the tokens of one hypothesis (or a sum of hypotheses) side with fed vs truth: counts of
    hyp_tokens (all), follow_fed / follow_truth (matched to that transcript only), both, neither."""

    @property
    def follow_rate(self) -> float:
        """follow_fed / (follow_fed + follow_truth); NaN when no token takes a side."""
        sided = self["follow_fed"] + self["follow_truth"]
        return self["follow_fed"] / sided if sided else math.nan


def follow_counts(truth: Sequence, fed: Sequence, hyp: Sequence) -> FollowCounts:
    """Which hypothesis tokens follow the fed transcript, which the truth.

    ``hyp`` is aligned (minimum edit distance, ``metrics.align``) once to ``truth`` and once to
    ``fed``; a token is *matched* to a transcript when that alignment pairs it with an equal token.
    follow_fed: matched to fed only (it follows the fed transcript where that differs from the
    truth); follow_truth: to the truth only (it follows the audio); both: fed and truth agree there
    (no evidence either way); neither: an error against both. Among alignments with equally few
    edits, ``align``'s deterministic tie-break (matches first) decides.
    """
    hyp = list(hyp)
    to_truth = {j for op, _, j in align(list(truth), hyp) if op == COR}
    to_fed = {j for op, _, j in align(list(fed), hyp) if op == COR}
    return FollowCounts(hyp_tokens=len(hyp), follow_fed=len(to_fed - to_truth),
                        follow_truth=len(to_truth - to_fed), both=len(to_fed & to_truth),
                        neither=len(hyp) - len(to_fed | to_truth))


def copy_probe(refs: Dict[str, str], fed: Dict[str, str], hyps: Dict[str, str],
               unit: str = "char") -> dict:
    """What a teacher fed ``fed`` transcripts produced (keys: see the module docstring); the
    follow counts are corpus sums of ``follow_counts`` in ``unit`` tokens (chars or words)."""
    baseline = wer_cer(refs, {u: fed[u] for u in refs})
    total = FollowCounts()
    for u in refs:
        total += follow_counts(to_units(refs[u], unit), to_units(fed[u], unit), to_units(hyps[u], unit))
    per_token = max(total["hyp_tokens"], 1)
    return dict(
        cer_vs_fed=wer_cer(fed, {u: hyps[u] for u in fed}).cer,
        copy_rate=float(np.mean([hyps[u].split() == fed[u].split() for u in refs])),
        truth_rate=float(np.mean([hyps[u].split() == refs[u].split() for u in refs])),
        fed_vs_truth_cer=baseline.cer,
        fed_vs_truth_wer=baseline.wer,
        follow_rate=total.follow_rate,
        follow_fed_per_token=total["follow_fed"] / per_token,
        follow_truth_per_token=total["follow_truth"] / per_token,
        hyp_tokens=total["hyp_tokens"],
        follow_fed_tokens=total["follow_fed"],
        follow_truth_tokens=total["follow_truth"],
    )


def oracle_probes(model, data, probe: bool = True, seed: int = 0,
                  batch_size: int = 16) -> Dict[str, dict]:
    """Every Oracle Teacher row of one set: {probe name: {metric: value}}.

    ``data`` is a ``FeatureSet``; ``probe`` adds ``zeroed_source`` and the copy
    probes ``other_transcript`` and ``other_transcript_zeroed_source``, whose fed
    transcripts ``seed`` chooses (``other_transcripts``).
    """
    refs = {u: data.texts[u] for u in data.utt_ids}

    def decode(fed=None, zero_source=False):
        return greedy_texts(model, data, data.utt_ids, fed=fed, zero_source=zero_source,
                            batch_size=batch_size)

    entries = {"true_transcript": scores(refs, decode())}
    if not probe:
        return entries
    fed = other_transcripts(refs, seed=seed)
    unit = follow_unit(data.token_type)

    def copy_entry(zero_source):
        hyps = decode(fed=fed, zero_source=zero_source)
        return {**scores(refs, hyps), **copy_probe(refs, fed, hyps, unit)}

    entries["other_transcript"] = copy_entry(zero_source=False)
    entries["zeroed_source"] = scores(refs, decode(zero_source=True))
    entries["other_transcript_zeroed_source"] = copy_entry(zero_source=True)
    return entries


def scores(refs: Dict[str, str], hyps: Dict[str, str]) -> dict:
    result = wer_cer(refs, hyps)
    return dict(cer=result.cer, wer=result.wer, n_utts=result.n_utts)


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
        return next((row for row in rows if row["dev_cer"] <= target + 1e-9), None)

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
        weights = attention[0].mean(dim=0)[: int(lengths[0])].numpy()
        fig, ax = plt.subplots(figsize=(max(6, weights.shape[1] * 0.3), 4))
        ax.imshow(weights.T, aspect="auto", origin="lower", interpolation="nearest", cmap="viridis")
        # with target_ctc_expansion the attended sequence is the expanded one, not the transcript
        if weights.shape[1] == len(utt.token_ids):
            ax.set_yticks(range(len(utt.token_ids)))
            ax.set_yticklabels(["_" if token_list[t] == "<space>" else token_list[t]
                                for t in utt.token_ids], fontsize=7)
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


def teacher_models(conventional_dir: Path, oracle_dir: Path) -> Dict[str, Optional[str]]:
    """sha256 of each teacher's model file (None where there is none): stored in summary.json,
    so stage 10 can tell results of the current teachers from those of earlier ones."""
    from espnet_oracle.utils.datadir import model_file
    from espnet_oracle.utils.stamps import sha256_file

    out = {}
    for role, directory in (("conventional", conventional_dir), ("oracle", oracle_dir)):
        try:
            out[role] = sha256_file(model_file(Path(directory)))
        except FileNotFoundError:
            out[role] = None
    return out


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
    report = {"sets": {}, "models": teacher_models(Path(args.conventional_dir), Path(args.oracle_dir))}
    report["follow_unit"] = follow_unit(oracle_args.token_type)
    probe_sets = (args.probe_sets or args.sets).split()
    for set_name in args.sets.split():
        feats_dir = Path(args.dump_dir) / set_name
        data_conv = FeatureSet(feats_dir, conv_args)
        data = FeatureSet(feats_dir, oracle_args)
        refs = {u: data.texts[u] for u in data.utt_ids}
        result = {}

        def record(system, probe, entry):
            result[f"{system}/{probe}"] = entry
            for metric, value in entry.items():
                rows.append((system, set_name, probe, metric, value))
            print(f"teacher_eval: {set_name:12s} {system:22s} {probe:30s} "
                  + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()),
                  flush=True)

        conventional_hyps = greedy_texts(conventional, data_conv, data.utt_ids)
        record("teacher_conventional", "audio_only", scores(refs, conventional_hyps))
        if set_name in probe_sets:
            # The chance level of the copy probe: the conventional teacher never sees the fed
            # transcript, so whatever of it its output "follows" is coincidence (shared units).
            fed = other_transcripts(refs, seed=args.seed)
            record("teacher_conventional", "other_transcript_chance",
                   {**scores(refs, conventional_hyps),
                    **copy_probe(refs, fed, conventional_hyps, follow_unit(data.token_type))})
        for probe, entry in oracle_probes(oracle, data, probe=set_name in probe_sets, seed=args.seed).items():
            record("teacher_oracle", probe, entry)
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
