"""Score a decode directory: WER/CER, per-condition WER, CTC spike timing.

Usage::

    python -m espnet_oracle.bin.score --data_dir data/test --decode_dir exp/x/decode_test \\
        [--frame_shift_ms 40] [--offset_ms 0] [--tolerance_ms 0]

Reads
    ``<data_dir>/text``                        references (``uttid WORD WORD ...``)
    ``<data_dir>/utt2snr``, ``utt2noise``      optional; per-condition WER
    ``<data_dir>/word_align``                  optional; ``uttid index word start end`` (s)
    ``<decode_dir>/text``                      hypotheses (``uttid`` alone = empty hyp)
    ``<decode_dir>/token``, ``ctc_frames``     optional; greedy CTC char tokens and
                                               the first encoder frame of each token's run
    ``<decode_dir>/frame_shift_ms``            encoder frame shift, unless ``--frame_shift_ms``

Writes (into ``<decode_dir>``, each file atomically)
    ``score_wer/result.txt``, ``score_cer/result.txt``   sclite-like summaries + per-utterance lines
    ``score_conditions.tsv``   ``condition n_utts n_words WER`` for all / per SNR / per noise /
                               per (noise, SNR) cell
    ``spike_timing.tsv``       hit rate, tokens considered, mean (abs) onset offset in ms
    ``scores.json``            everything above, machine-readable

Encoder frame ``t`` is placed at ``offset_ms + t * frame_shift_ms``: with
Conv2dSubsampling (x4) on 10 ms fbank frames, encoder frame ``t`` covers the
input frames starting at ``4t`` (the conv's receptive field reaches 6 input
frames further), so ``--offset_ms 0`` dates a spike at the start of its
first input frame.  Rates: WER/CER/SER in percent; the spike hit rate is a
fraction.  Exact definitions: :mod:`espnet_oracle.utils.metrics`.

Spike timing is skipped (``spike_note`` in scores.json says why, the spike
values are null and a stale ``spike_timing.tsv`` is removed) when
``<decode_dir>/ctc_frames`` or ``<data_dir>/word_align`` does not exist.
Every reference utterance must have a hypothesis and vice versa; errors name
the file and the utterances.  Exit status 1 on such errors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

from espnet_oracle.utils.datadir import DataDirError, atomic_write_text, read_kaldi_map
from espnet_oracle.utils.metrics import (
    COR,
    DEL,
    INS,
    SUB,
    ErrorStats,
    ScoringError,
    WordSpan,
    align,
    aurora_table,
    check_ids,
    format_ids,
    group_words,
    spike_timing_corpus,
    to_words,
    wer_by_noise,
    wer_by_snr,
    wer_cer,
)


# --------------------------------------------------------------------------- #
# Readers                                                                      #
# --------------------------------------------------------------------------- #
def read_text(path: Path) -> dict[str, str]:
    """``uttid words...`` (an id alone = empty transcript)."""
    return read_kaldi_map(path, allow_empty_value=True)


def read_word_align(path: Path) -> dict[str, list[WordSpan]]:
    """``uttid word_index word start end`` lines -> ``{uttid: [WordSpan, ...]}`` in index order.

    Indices of an utterance must be 0, 1, ... (any line order), ``start <= end``.
    """
    raw: dict[str, dict[int, tuple[WordSpan, int]]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{path}:{lineno}"
            if len(fields) != 5:
                raise ScoringError(f"{where}: expected 'uttid word_index word start end', "
                                   f"got {line.rstrip()!r}")
            utt, idx, word, start, end = fields
            try:
                k, s, e = int(idx), float(start), float(end)
            except ValueError:
                raise ScoringError(f"{where}: utterance {utt}: bad number in {line.rstrip()!r}") from None
            if not (math.isfinite(s) and math.isfinite(e)) or s > e or s < 0:
                raise ScoringError(f"{where}: utterance {utt}: bad word span [{start}, {end}]")
            words = raw.setdefault(utt, {})
            if k in words:
                raise ScoringError(f"{where}: utterance {utt}: word index {k} repeated "
                                   f"(first on line {words[k][1]})")
            words[k] = (WordSpan(word, s, e), lineno)
    out: dict[str, list[WordSpan]] = {}
    for utt, words in raw.items():
        if sorted(words) != list(range(len(words))):
            raise ScoringError(f"{path}: utterance {utt}: word indices {sorted(words)} "
                               f"are not 0..{len(words) - 1}")
        out[utt] = [words[k][0] for k in range(len(words))]
    return out


def read_tokens(path: Path) -> dict[str, list[str]]:
    return {u: v.split() for u, v in read_kaldi_map(path, allow_empty_value=True).items()}


def read_frames(path: Path) -> dict[str, list[int]]:
    out = {}
    for utt, value in read_kaldi_map(path, allow_empty_value=True).items():
        try:
            frames = [int(x) for x in value.split()]
        except ValueError:
            raise ScoringError(f"{path}: utterance {utt}: frame indices must be integers") from None
        if any(f < 0 for f in frames):
            raise ScoringError(f"{path}: utterance {utt}: negative frame index")
        if any(b <= a for a, b in zip(frames, frames[1:])):
            raise ScoringError(f"{path}: utterance {utt}: frame indices not strictly increasing "
                               "(each token's run must start after the previous one)")
        out[utt] = frames
    return out


def read_frame_shift_ms(path: Path) -> float:
    try:
        text = path.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        raise ScoringError(f"{path}: no such file (pass --frame_shift_ms or write it)") from None
    try:
        (value,) = text
        shift = float(value)
    except ValueError:
        raise ScoringError(f"{path}: expected one number, got {' '.join(text)!r}") from None
    if not (math.isfinite(shift) and shift > 0):
        raise ScoringError(f"{path}: frame shift must be > 0, got {shift}")
    return shift


def _ids_against(refs, hyps, ref_path: Path, hyp_path: Path) -> None:
    check_ids(refs, hyps, f"references ({ref_path})", f"entry in {hyp_path}")


# --------------------------------------------------------------------------- #
# Writers                                                                      #
# --------------------------------------------------------------------------- #
def _pct(x: Optional[float]) -> str:
    return "NA" if x is None else f"{x:.2f}"


def _share(n: int, total: int) -> str:
    return "NA" if total == 0 else f"{100.0 * n / total:.1f}"


def _align_str(ref: list[str], hyp: list[str]) -> str:
    """``ONE TWO>THREE SEVEN>* *>SIX``: a word-level alignment, errors as ``ref>hyp``."""
    parts = []
    for op, ri, hi in align(ref, hyp):
        if op == COR:
            parts.append(ref[ri])
        elif op == SUB:
            parts.append(f"{ref[ri]}>{hyp[hi]}")
        elif op == DEL:
            parts.append(f"{ref[ri]}>*")
        elif op == INS:
            parts.append(f"*>{hyp[hi]}")
    return " ".join(parts)


def format_result(stats: ErrorStats, refs: dict[str, str], hyps: dict[str, str],
                  ref_path: Path, hyp_path: Path, title: str) -> str:
    c = stats.counts
    n = c.n_ref
    unit = stats.unit
    lines = [
        f"{title} (unit: {unit}{', spaces excluded' if unit == 'char' else ''})",
        f"REF: {ref_path}",
        f"HYP: {hyp_path}",
        f"Corr/Sub/Del/Ins/Err in % of the {n} reference {unit}s; "
        f"S.Err in % of the {stats.n_sent} utterances with at least one {unit} error.",
        "",
        f"| {'':8} | {'#Snt':>6} | {'#Wrd' if unit == 'word' else '#Chr':>7} | {'Corr':>6} | {'Sub':>6} | "
        f"{'Del':>6} | {'Ins':>6} | {'Err':>6} | {'S.Err':>6} |",
        f"| {'Sum/Avg':8} | {stats.n_sent:>6} | {n:>7} | {_share(c.cor, n):>6} | "
        f"{_share(c.sub, n):>6} | {_share(c.dele, n):>6} | {_share(c.ins, n):>6} | "
        f"{_pct(stats.rate) if n else 'NA':>6} | {_pct(stats.ser):>6} |",
        "",
        f"Counts: N={n} Corr={c.cor} Sub={c.sub} Del={c.dele} Ins={c.ins} Err={c.errors} "
        f"S.Err={stats.n_sent_err}/{stats.n_sent}",
        f"{'WER' if unit == 'word' else 'CER'} = {_pct(stats.rate)} %",
        "",
        "Per utterance (errors counted in " + unit + "s):",
    ]
    for utt, uc in stats.per_utt.items():
        ref = " ".join(to_words(refs[utt]))
        hyp = " ".join(to_words(hyps[utt]))
        line = (f"{utt}\tref={ref}\thyp={hyp}\terrors={uc.errors} "
                f"(n={uc.n_ref} sub={uc.sub} del={uc.dele} ins={uc.ins})")
        if unit == "word" and uc.errors:
            line += f"\talign={_align_str(to_words(refs[utt]), to_words(hyps[utt]))}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def format_conditions(rows: list[dict]) -> str:
    out = ["condition\tn_utts\tn_words\tWER"]
    for r in rows:
        out.append(f"{r['condition']}\t{r['n_utts']}\t{r['n_words']}\t{_pct(r['wer'])}")
    return "\n".join(out) + "\n"


def _num(x) -> str:
    if x is None:
        return "NA"
    return f"{x:.6g}" if isinstance(x, float) else str(x)


# --------------------------------------------------------------------------- #
# Main                                                                         #
# --------------------------------------------------------------------------- #
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m espnet_oracle.bin.score",
        description="WER/CER, per-condition WER and CTC spike timing of a decode directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data_dir", required=True, type=Path, help="reference data dir (text, ...)")
    p.add_argument("--decode_dir", required=True, type=Path, help="decode dir (text, token, ctc_frames)")
    p.add_argument("--frame_shift_ms", type=float, default=None,
                   help="encoder frame shift in ms (default: read <decode_dir>/frame_shift_ms)")
    p.add_argument("--offset_ms", type=float, default=0.0,
                   help="added to every frame time (encoder frame t is at offset + t * shift)")
    p.add_argument("--tolerance_ms", type=float, default=0.0,
                   help="a spike within this much outside its word span still counts as a hit")
    return p


def score(data_dir: Path, decode_dir: Path, frame_shift_ms: Optional[float] = None,
          offset_ms: float = 0.0, tolerance_ms: float = 0.0) -> dict:
    """Score ``decode_dir`` against ``data_dir``, write all outputs, return the scores.json dict."""
    data_dir, decode_dir = Path(data_dir), Path(decode_dir)
    if tolerance_ms < 0:
        raise ScoringError(f"--tolerance_ms must be >= 0, got {tolerance_ms}")
    if frame_shift_ms is not None and not (math.isfinite(frame_shift_ms) and frame_shift_ms > 0):
        raise ScoringError(f"--frame_shift_ms must be > 0, got {frame_shift_ms}")
    ref_path, hyp_path = data_dir / "text", decode_dir / "text"
    refs, hyps = read_text(ref_path), read_text(hyp_path)
    _ids_against(refs, hyps, ref_path, hyp_path)
    res = wer_cer(refs, hyps)
    per_utt = res.wer.per_utt

    # ---- per-condition WER
    rows = [{"condition": "all", "n_utts": res.n_utts, "n_words": res.wer.counts.n_ref,
             "wer": res.wer.rate}]
    conds: dict[str, dict] = {}
    cond_notes = []
    maps = {}
    for name in ("utt2snr", "utt2noise"):
        path = data_dir / name
        if path.is_file():
            maps[name] = read_kaldi_map(path, allow_empty_value=False)
            missing = set(refs) - set(maps[name])
            if missing:
                raise ScoringError(f"{path}: {len(missing)} utterance(s) of {ref_path} missing: "
                                   f"{format_ids(missing)}")
        else:
            cond_notes.append(f"{path} not found")
    if "utt2snr" in maps:
        conds["snr"] = wer_by_snr(refs, hyps, maps["utt2snr"], per_utt=per_utt)
    if "utt2noise" in maps:
        conds["noise"] = wer_by_noise(refs, hyps, maps["utt2noise"], per_utt=per_utt)
    aurora = {}
    if len(maps) == 2:
        aurora_detail = aurora_table(refs, hyps, maps["utt2noise"], maps["utt2snr"],
                                     per_utt=per_utt, detail=True)
        aurora = {nz: {s: v["wer"] for s, v in cells.items()} for nz, cells in aurora_detail.items()}
    for kind in ("snr", "noise"):
        for cond, v in conds.get(kind, {}).items():
            rows.append({"condition": f"{kind}={cond}", **{k: v[k] for k in ("n_utts", "n_words", "wer")}})
    if len(maps) == 2:
        for nz, cells in aurora_detail.items():
            for s, v in cells.items():
                rows.append({"condition": f"noise={nz},snr={s}",
                             **{k: v[k] for k in ("n_utts", "n_words", "wer")}})

    # ---- spike timing
    frames_path, token_path = decode_dir / "ctc_frames", decode_dir / "token"
    wa_path = data_dir / "word_align"
    spike_note = None
    spike = None
    spike_info: dict = {}
    if not frames_path.is_file():
        spike_note = f"skipped: {frames_path} not found"
    elif not wa_path.is_file():
        spike_note = f"skipped: {wa_path} not found"
    else:
        if frame_shift_ms is None:
            frame_shift_ms = read_frame_shift_ms(decode_dir / "frame_shift_ms")
        if not token_path.is_file():
            raise ScoringError(f"{token_path}: no such file (needed with {frames_path})")
        tokens, frames = read_tokens(token_path), read_frames(frames_path)
        _ids_against(refs, tokens, ref_path, token_path)
        _ids_against(refs, frames, ref_path, frames_path)
        word_align = read_word_align(wa_path)
        wa = {}
        for utt in refs:
            spans = word_align.get(utt, [])
            ref_words = to_words(refs[utt])
            if [s.word for s in spans] != ref_words:
                raise ScoringError(f"{wa_path}: utterance {utt}: words "
                                   f"{' '.join(s.word for s in spans) or '(none)'!r} differ from "
                                   f"{ref_path}: {' '.join(ref_words)!r}")
            wa[utt] = spans
            if len(tokens[utt]) != len(frames[utt]):
                raise ScoringError(f"utterance {utt}: {len(tokens[utt])} token(s) in {token_path} "
                                   f"but {len(frames[utt])} frame(s) in {frames_path}")
        spike, _ = spike_timing_corpus(wa, tokens, frames, frame_shift_ms / 1000.0,
                                       offset_ms / 1000.0, tolerance_ms / 1000.0)
        mismatch = sorted(u for u in refs
                          if [w for w, _ in group_words(tokens[u], frames[u])] != to_words(hyps[u]))
        spike_info = {**spike.summary(), "frame_shift_ms": frame_shift_ms, "offset_ms": offset_ms,
                      "tolerance_ms": tolerance_ms,
                      "n_utts_token_differs_from_text": len(mismatch),
                      "utts_token_differs_from_text": mismatch[:20]}

    out = {
        "wer": res.wer.rate, "cer": res.cer.rate, "ser": res.wer.ser, "n_utts": res.n_utts,
        "wer_by_snr": {k: v["wer"] for k, v in conds.get("snr", {}).items()},
        "wer_by_noise": {k: v["wer"] for k, v in conds.get("noise", {}).items()},
        "aurora_table": aurora,
        "spike_hit_rate": spike.hit_rate if spike else None,
        "spike_n_tokens": spike.n_tokens if spike else None,
        "mean_onset_offset_ms": spike.mean_onset_offset_ms if spike else None,
        "mean_abs_onset_offset_ms": spike.mean_abs_onset_offset_ms if spike else None,
        "spike_note": spike_note,
        "spike": spike_info,
        "wer_counts": res.wer.summary(),
        "cer_counts": res.cer.summary(),
        "conditions": rows,
        "conditions_note": "; ".join(cond_notes) or None,
        "units": {"wer": "percent", "cer": "percent (characters of the words, spaces excluded)",
                  "ser": "percent", "spike_hit_rate": "fraction",
                  "onset_offset": "ms, first token time - true word start"},
        "data_dir": str(data_dir),
        "decode_dir": str(decode_dir),
    }

    # ---- write
    atomic_write_text(decode_dir / "score_wer" / "result.txt",
                      format_result(res.wer, refs, hyps, ref_path, hyp_path, "WER"))
    atomic_write_text(decode_dir / "score_cer" / "result.txt",
                      format_result(res.cer, refs, hyps, ref_path, hyp_path, "CER"))
    atomic_write_text(decode_dir / "score_conditions.tsv", format_conditions(rows))
    spike_tsv = decode_dir / "spike_timing.tsv"
    if spike is not None:
        cols = ["hit_rate", "n_tokens", "mean_onset_offset_ms", "mean_abs_onset_offset_ms",
                "n_hits", "n_onsets", "tolerance_ms", "frame_shift_ms", "offset_ms"]
        atomic_write_text(spike_tsv, "\t".join(cols) + "\n"
                          + "\t".join(_num(spike_info[c]) for c in cols) + "\n")
    elif spike_tsv.exists():
        os.unlink(spike_tsv)  # stale result of an earlier run
    atomic_write_text(decode_dir / "scores.json", json.dumps(out, indent=2, allow_nan=False) + "\n")
    return out


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        out = score(args.data_dir, args.decode_dir, args.frame_shift_ms, args.offset_ms,
                    args.tolerance_ms)
    except (ScoringError, DataDirError) as e:
        print(f"score: error: {e}", file=sys.stderr)
        return 1
    msg = (f"{args.decode_dir}: WER {_pct(out['wer'])} %  CER {_pct(out['cer'])} %  "
           f"SER {_pct(out['ser'])} %  ({out['n_utts']} utts)")
    if out["spike_hit_rate"] is not None:
        msg += (f"  spike hit rate {out['spike_hit_rate']:.3f} over {out['spike_n_tokens']} tokens, "
                f"onset offset {_num(out['mean_onset_offset_ms'])} ms "
                f"(|.| {_num(out['mean_abs_onset_offset_ms'])} ms)")
    elif out["spike_note"]:
        msg += f"  spike timing {out['spike_note']}"
    print(msg, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
