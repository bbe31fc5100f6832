"""Stage 10 scoring of a decode dir; exists for per-condition WER and CTC spike timing (no library has them).

Writes into --decode_dir: ``ref.trn``/``hyp.trn`` (sclite form ``WORDS (uttid)``, for ``sclite -r ref.trn trn
-h hyp.trn trn -i rm``), ``score_wer/result.txt``, ``score_cer/result.txt`` (totals + per-utterance errors),
``score_conditions.tsv`` (WER per value of each --condition_files file, and per pair of values when two are
given), ``spike_timing.tsv`` (when --data_dir has ``word_align`` and the decode dir ``ctc_frames``; frame t at
``frame_offset_ms + t * frame_shift_ms``) and ``scores.json``. Metrics: espnet_oracle.utils.metrics.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from espnet_oracle.utils.datadir import atomic_write_text, read_kaldi_map
from espnet_oracle.utils.metrics import (EXTRA_METRICS, ScoringError, WordSpan, check_ids, spike_timing_corpus,
                                         wer_by_condition, wer_cer, word_accuracy_ned)


def read_word_align(path: Path) -> dict:
    """``uttid word_index word start end`` -> {uttid: [WordSpan in index order]}."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            utt, index, word, start, end = line.split()
            out.setdefault(utt, []).append((int(index), WordSpan(word, float(start), float(end))))
    return {u: [w for _, w in sorted(v, key=lambda x: x[0])] for u, v in out.items()}


def write_result(path: Path, unit: str, res, refs, hyps) -> None:
    k = 0 if unit == "word" else 2
    lines = [f"{'WER' if unit == 'word' else 'CER'} = {_pct(res.wer if k == 0 else res.cer)} % "
             f"(errors {res.total(k)} / {res.total(k + 1)} reference {unit}s, {res.n_utts} utterances)"]
    lines += [f"{u}\terrors={v[k]} n={v[k + 1]}\tref={refs[u]}\thyp={hyps[u]}" for u, v in res.per_utt.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _pct(x) -> str:
    return "NA" if x is None else f"{x:.2f}"


def score(data_dir: Path, decode_dir: Path, condition_files=(), offset_ms: Optional[float] = None,
          tolerance_ms: float = 0.0, extra_metrics=()) -> dict:
    unknown = set(extra_metrics) - set(EXTRA_METRICS)
    if unknown:  # before anything is written
        raise ValueError(f"unknown --extra_metrics {sorted(unknown)} (known: {' '.join(EXTRA_METRICS)})")
    data_dir, decode_dir = Path(data_dir), Path(decode_dir)
    refs, hyps = read_kaldi_map(data_dir / "text"), read_kaldi_map(decode_dir / "text")
    check_ids(refs, hyps, f"references ({data_dir / 'text'})", f"entry in {decode_dir / 'text'}")
    res = wer_cer(refs, hyps)
    for name, table in (("ref.trn", refs), ("hyp.trn", hyps)):
        atomic_write_text(decode_dir / name, "".join(f"{table[u]} ({u})\n" for u in sorted(table)))
    write_result(decode_dir / "score_wer" / "result.txt", "word", res, refs, hyps)
    write_result(decode_dir / "score_cer" / "result.txt", "char", res, refs, hyps)

    maps = {name.removeprefix("utt2"): read_kaldi_map(data_dir / name)
            for name in condition_files if (data_dir / name).is_file()}
    by = {kind: wer_by_condition(res, utt2cond, kind) for kind, utt2cond in maps.items()}
    rows = [("all", res.n_utts, res.total(1), res.wer)]
    rows += [(f"{kind}={c}", v["n_utts"], v["n_words"], v["wer"])
             for kind, table in by.items() for c, v in table.items()]
    if len(maps) == 2:
        (a, ma), (b, mb) = maps.items()
        pairs = wer_by_condition(res, {u: f"{a}={ma[u]},{b}={mb[u]}" for u in res.per_utt})
        rows += [(c, v["n_utts"], v["n_words"], v["wer"]) for c, v in pairs.items()]
    atomic_write_text(decode_dir / "score_conditions.tsv", "condition\tn_utts\tn_words\tWER\n"
                      + "".join(f"{c}\t{n}\t{w}\t{_pct(x)}\n" for c, n, w, x in rows))

    out = {"wer": res.wer, "cer": res.cer, "ser": res.ser, "n_utts": res.n_utts,
           "word_errors": res.total(0), "n_words": res.total(1), "char_errors": res.total(2),
           "n_chars": res.total(3), "wer_by_condition": {k: {c: v["wer"] for c, v in t.items()} for k, t in by.items()},
           "spike_hit_rate": None, "mean_onset_offset_ms": None}
    if extra_metrics:
        extra = word_accuracy_ned(refs, hyps)
        out.update({name: extra[name] for name in EXTRA_METRICS if name in extra_metrics})
    spike_tsv, frames_path, wa_path = decode_dir / "spike_timing.tsv", decode_dir / "ctc_frames", data_dir / "word_align"
    spike_tsv.unlink(missing_ok=True)
    if frames_path.is_file() and wa_path.is_file():
        tokens = {u: v.split() for u, v in read_kaldi_map(decode_dir / "token").items()}
        frames = {u: [int(f) for f in v.split()] for u, v in read_kaldi_map(frames_path).items()}
        shift = float((decode_dir / "frame_shift_ms").read_text())
        if offset_ms is None:
            offset_file = decode_dir / "frame_offset_ms"
            offset_ms = float(offset_file.read_text()) if offset_file.is_file() else 0.0
        spike, _ = spike_timing_corpus(read_word_align(wa_path), tokens, frames, shift / 1000.0,
                                       offset_ms / 1000.0, tolerance_ms / 1000.0)
        s = spike.summary()
        out.update(spike_hit_rate=s["hit_rate"], mean_onset_offset_ms=s["mean_onset_offset_ms"], spike=s,
                   frame_offset_ms=offset_ms)
        atomic_write_text(spike_tsv, "\t".join(s) + "\n" + "\t".join(str(v) for v in s.values()) + "\n")
    atomic_write_text(decode_dir / "scores.json", json.dumps(out, indent=2) + "\n")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data_dir", required=True, type=Path)
    p.add_argument("--decode_dir", required=True, type=Path)
    p.add_argument("--condition_files", nargs="*", default=[], help="e.g. utt2snr utt2noise (optional files)")
    p.add_argument("--offset_ms", type=float, default=None,
                   help="encoder frame t is at offset + t * shift (default: the decode dir's frame_offset_ms, else 0)")
    p.add_argument("--tolerance_ms", type=float, default=0.0, help="slack around a word span for a spike hit")
    p.add_argument("--extra_metrics", nargs="*", default=[], choices=EXTRA_METRICS,
                   help="text recognition: word accuracy, 1 - normalised edit distance (case-insensitive alphanumeric)")
    args = p.parse_args(argv)
    try:
        out = score(args.data_dir, args.decode_dir, args.condition_files, args.offset_ms, args.tolerance_ms,
                    args.extra_metrics)
    except (ScoringError, ValueError, FileNotFoundError) as e:
        print(f"score: error: {args.decode_dir}: {e}", file=sys.stderr)
        return 1
    extra = "".join(f"  {name} {_pct(out[name])} %" for name in args.extra_metrics)
    print(f"{args.decode_dir}: WER {_pct(out['wer'])} %  CER {_pct(out['cer'])} %{extra}  ({out['n_utts']} utts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
