"""Scoring metrics: WER / CER with S/D/I counts, per-condition breakdowns, CTC spike timing.

Pure Python (plus :mod:`editdistance`); no torch / espnet imports, so it is
cheap to import from scripts and tests.

Definitions
-----------
Edit alignment
    Levenshtein alignment with unit costs for substitution, deletion and
    insertion.  :func:`align` computes the full DP table and backtraces from the
    end; among equally cheap paths it prefers, at each step back, a match, then
    a substitution, then a deletion, then an insertion (an optional secondary
    ``tie_break`` cost can pick among the minimal alignments first; WER/CER do
    not use one, spike timing does).  The total number of errors always
    equals the edit distance (``editdistance.eval``).

WER
    Corpus level: ``(S + D + I) / N_ref_words`` summed over all utterances
    (not an average of per-utterance rates).  Words are the whitespace-split
    fields of the transcript, compared exactly (case-sensitive).

CER
    Computed on the characters of the words, **spaces excluded**: the word
    sequence is concatenated without separators and compared character by
    character.  A pure word-boundary error (``ONE TWO`` vs ``ONETWO``)
    therefore costs 0 in CER (it is still counted by WER).

SER
    Percentage of utterances with at least one error (for WER: at least one
    word error; the CER summary uses character errors).

All rates (WER, CER, SER, per-condition WER) are in **percent**.  A rate over
zero reference units is ``None`` (undefined), never a division by zero.

Spike timing (see :func:`spike_timing`)
    The decoder writes, per utterance, its greedy CTC tokens (``token``, with
    ``<space>`` as the word separator) and the first encoder frame of each
    token's run (``ctc_frames``).  Frame ``t`` is placed at time
    ``offset_s + t * frame_shift_s``; with Conv2dSubsampling (x4) over 10 ms
    fbank frames encoder frame ``t`` covers input frames starting at ``4t``,
    i.e. at ``t * 40 ms``, which is what ``offset_s = 0`` assumes.

    Alignment is at the character level, so that a missing or extra word
    separator (a frequent char-CTC error) does not drag whole words out of
    alignment: the reference is the characters of the ``word_align`` words,
    each labelled with its word; every non-``<space>`` hyp token is spelled
    out into its characters (BPE ``\u2581`` dropped), all at the token's time;
    the two character strings are aligned with :func:`align` (fewest edits).

    * Every non-``<space>`` hyp token is *considered*.  It belongs to the
      reference word of the character its first character is aligned to
      (match **or** substitution); it is a *hit* when its time lies in
      ``[start - tol, end + tol]`` of that word (bounds inclusive, with 1e-9 s
      slack for float rounding; ``tol`` = tolerance, default 0).
    * A token whose first character is inserted belongs to no word: a miss.
    * Reference characters with no hyp character contribute nothing (already
      counted by CER).
    * Onset offset: for every reference word that received at least one
      token, ``time(earliest such token) - start(word)``; negative = the spike
      comes before the true word onset.  Reported as the mean signed offset
      and the mean absolute offset, in ms.
    * ``hit_rate = hits / tokens considered`` is a fraction in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional, Union

import editdistance

#: Word separator token in the char token sequences written by the decoder.
SPACE_TOKEN = "<space>"
#: Display / sort order of the SNR conditions of the noisy-digits corpus.
SNR_ORDER = ("clean", "20", "15", "10", "5", "0")
#: Display / sort order of the noise types.
NOISE_ORDER = ("clean", "white", "pink", "babble")
#: How many offending ids an error message lists.
MAX_IDS_IN_ERROR = 5

Transcript = Union[str, Sequence[str]]


class ScoringError(ValueError):
    """Inputs to scoring are inconsistent (missing / extra utterances, malformed alignments ...)."""


def format_ids(ids: Iterable[str], limit: int = MAX_IDS_IN_ERROR) -> str:
    ids = sorted(ids)
    shown = ", ".join(ids[:limit])
    if len(ids) > limit:
        shown += f", ... ({len(ids) - limit} more)"
    return shown


def _rate(num: float, den: float) -> Optional[float]:
    """``100 * num / den`` or ``None`` when ``den`` is 0."""
    return None if den == 0 else 100.0 * num / den


# --------------------------------------------------------------------------- #
# Edit alignment                                                               #
# --------------------------------------------------------------------------- #
#: Alignment operations: correct, substitution, deletion, insertion.
COR, SUB, DEL, INS = "C", "S", "D", "I"


def error_counts(ref: Sequence, hyp: Sequence) -> tuple[int, int]:
    """``(errors, ref_len)``: the Levenshtein distance between the sequences and ``len(ref)``."""
    return int(editdistance.eval(list(ref), list(hyp))), len(ref)


def align(ref: Sequence, hyp: Sequence,
          tie_break: Optional[Callable[[object, object], float]] = None
          ) -> list[tuple[str, Optional[int], Optional[int]]]:
    """Minimum-edit alignment of ``hyp`` to ``ref``.

    Returns a list of ``(op, ref_index, hyp_index)`` in sequence order, with
    ``op`` one of ``"C"`` (match), ``"S"`` (substitution), ``"D"`` (deletion:
    ``hyp_index`` is None) and ``"I"`` (insertion: ``ref_index`` is None).

    The number of errors is always minimal.  Among the minimal alignments,
    ``tie_break(ref_item, hyp_item)`` (``None`` for the missing side of a
    deletion / insertion), when given, is a secondary cost whose sum is
    minimised too; any remaining tie is resolved by preferring, at each step
    of the backtrace from the end, match > substitution > deletion > insertion.
    """
    ref, hyp = list(ref), list(hyp)
    n, m = len(ref), len(hyp)
    if tie_break is None:
        def tb(r, h):
            return 0
    else:
        tb = tie_break
    # d[i][j] = (errors, secondary cost) of the best alignment of ref[:i] and hyp[:j]
    d = [[(0, 0.0)] * (m + 1) for _ in range(n + 1)]
    ins_c = [tb(None, h) for h in hyp]
    del_c = [tb(r, None) for r in ref]
    for j in range(1, m + 1):
        d[0][j] = (j, d[0][j - 1][1] + ins_c[j - 1])
    for i in range(1, n + 1):
        row, prev = d[i], d[i - 1]
        row[0] = (i, prev[0][1] + del_c[i - 1])
        r = ref[i - 1]
        for j in range(1, m + 1):
            h = hyp[j - 1]
            pe, ps = prev[j - 1]
            diag = (pe, ps) if r == h else (pe + 1, ps + tb(r, h))
            up = (prev[j][0] + 1, prev[j][1] + del_c[i - 1])
            left = (row[j - 1][0] + 1, row[j - 1][1] + ins_c[j - 1])
            row[j] = min(diag, up, left)
    ops: list[tuple[str, Optional[int], Optional[int]]] = []
    i, j = n, m
    while i > 0 or j > 0:
        cur = d[i][j]
        if i > 0 and j > 0:
            r, h = ref[i - 1], hyp[j - 1]
            pe, ps = d[i - 1][j - 1]
            if r == h and cur == (pe, ps):
                ops.append((COR, i - 1, j - 1))
                i, j = i - 1, j - 1
                continue
            if r != h and cur == (pe + 1, ps + tb(r, h)):
                ops.append((SUB, i - 1, j - 1))
                i, j = i - 1, j - 1
                continue
        if i > 0 and cur == (d[i - 1][j][0] + 1, d[i - 1][j][1] + del_c[i - 1]):
            ops.append((DEL, i - 1, None))
            i -= 1
        else:
            ops.append((INS, None, j - 1))
            j -= 1
    ops.reverse()
    return ops


def char_tie_break(ref_word: Optional[str], hyp_word: Optional[str]) -> int:
    """Secondary cost for word alignment: the character edit distance (a missing word = ``""``).

    Among word alignments with the fewest word errors it pairs each
    substituted hyp word with the most similar reference word
    (``TREE`` with ``THREE`` rather than with ``SIX``).
    """
    return int(editdistance.eval(ref_word or "", hyp_word or ""))


@dataclass
class EditCounts:
    """Counts of an alignment (or a sum of alignments)."""

    n_ref: int = 0
    cor: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    def __iadd__(self, other: "EditCounts") -> "EditCounts":
        self.n_ref += other.n_ref
        self.cor += other.cor
        self.sub += other.sub
        self.dele += other.dele
        self.ins += other.ins
        return self


def edit_counts(ref: Sequence, hyp: Sequence) -> EditCounts:
    """Correct / substitution / deletion / insertion counts of the alignment of ``hyp`` to ``ref``."""
    c = EditCounts(n_ref=len(ref))
    for op, _, _ in align(ref, hyp):
        if op == COR:
            c.cor += 1
        elif op == SUB:
            c.sub += 1
        elif op == DEL:
            c.dele += 1
        else:
            c.ins += 1
    return c


# --------------------------------------------------------------------------- #
# Corpus WER / CER                                                             #
# --------------------------------------------------------------------------- #
def to_words(transcript: Transcript) -> list[str]:
    """Whitespace-split a string; a sequence of words is returned as a list."""
    if isinstance(transcript, str):
        return transcript.split()
    return [str(w) for w in transcript]


def to_chars(transcript: Transcript) -> list[str]:
    """Characters of the words, spaces excluded (see the module docstring)."""
    return list("".join(to_words(transcript)))


def check_ids(refs: Mapping[str, object], hyps: Mapping[str, object],
              ref_name: str = "reference", hyp_name: str = "hypothesis") -> None:
    """Raise :class:`ScoringError` unless ``hyps`` has exactly the ids of ``refs``."""
    missing = set(refs) - set(hyps)
    extra = set(hyps) - set(refs)
    msgs = []
    if missing:
        msgs.append(f"{len(missing)} utterance(s) of the {ref_name} have no {hyp_name}: "
                    f"{format_ids(missing)}")
    if extra:
        msgs.append(f"{len(extra)} {hyp_name} utterance(s) not in the {ref_name}: "
                    f"{format_ids(extra)}")
    if msgs:
        raise ScoringError("; ".join(msgs))


@dataclass
class ErrorStats:
    """Corpus totals of one unit (words or chars) plus per-utterance counts."""

    unit: str
    counts: EditCounts = field(default_factory=EditCounts)
    n_sent: int = 0
    n_sent_err: int = 0
    per_utt: dict[str, EditCounts] = field(default_factory=dict)

    @property
    def rate(self) -> Optional[float]:
        """Error rate in percent (None over zero reference units)."""
        return _rate(self.counts.errors, self.counts.n_ref)

    @property
    def ser(self) -> Optional[float]:
        """Sentence error rate in percent (None over zero sentences)."""
        return _rate(self.n_sent_err, self.n_sent)

    def add(self, utt: str, c: EditCounts) -> None:
        self.per_utt[utt] = c
        self.counts += c
        self.n_sent += 1
        self.n_sent_err += c.errors > 0

    def summary(self) -> dict:
        """JSON-friendly totals (rates in percent)."""
        c = self.counts
        return {
            "unit": self.unit, "n_sent": self.n_sent, "n_ref": c.n_ref,
            "cor": c.cor, "sub": c.sub, "del": c.dele, "ins": c.ins, "err": c.errors,
            "n_sent_err": self.n_sent_err, "rate": self.rate, "ser": self.ser,
        }


def score_units(refs: Mapping[str, Sequence], hyps: Mapping[str, Sequence], unit: str) -> ErrorStats:
    """Align already-tokenised refs/hyps (same ids required) and accumulate :class:`ErrorStats`."""
    check_ids(refs, hyps)
    stats = ErrorStats(unit=unit)
    for utt in refs:
        stats.add(utt, edit_counts(refs[utt], hyps[utt]))
    return stats


@dataclass
class WerCer:
    wer: ErrorStats
    cer: ErrorStats

    @property
    def n_utts(self) -> int:
        return self.wer.n_sent

    def summary(self) -> dict:
        return {
            "wer": self.wer.rate, "cer": self.cer.rate, "ser": self.wer.ser,
            "n_utts": self.n_utts,
            "wer_counts": self.wer.summary(), "cer_counts": self.cer.summary(),
        }


def wer_cer(refs: Mapping[str, Transcript], hyps: Mapping[str, Transcript]) -> WerCer:
    """Corpus WER and CER (spaces excluded) of ``hyps`` against ``refs``.

    Both are ``{uttid: transcript}`` with the transcript a string or a list of
    words.  Every reference id must have a hypothesis (an empty hypothesis is
    fine) and every hypothesis id must be in the references; otherwise
    :class:`ScoringError` names the offending ids.
    """
    check_ids(refs, hyps)
    wer = score_units({u: to_words(t) for u, t in refs.items()},
                      {u: to_words(t) for u, t in hyps.items()}, "word")
    cer = score_units({u: to_chars(t) for u, t in refs.items()},
                      {u: to_chars(t) for u, t in hyps.items()}, "char")
    return WerCer(wer=wer, cer=cer)


# --------------------------------------------------------------------------- #
# Per-condition breakdown                                                      #
# --------------------------------------------------------------------------- #
def _cond_key(order: Sequence[str]):
    def key(c: str):
        if c in order:
            return (0, order.index(c), 0.0, c)
        try:
            return (1, 0, -float(c), c)  # unknown numeric SNRs: high to low
        except ValueError:
            return (2, 0, 0.0, c)
    return key


def sort_conditions(conds: Iterable[str], order: Sequence[str] = SNR_ORDER) -> list[str]:
    """Known conditions in ``order`` first, then numbers high to low, then the rest by name."""
    return sorted(set(conds), key=_cond_key(order))


def _per_utt_word_counts(refs, hyps, per_utt) -> dict[str, EditCounts]:
    if per_utt is not None:
        return per_utt
    check_ids(refs, hyps)
    return {u: edit_counts(to_words(refs[u]), to_words(hyps[u])) for u in refs}


def _check_cond_map(utt2cond: Mapping[str, str], ids: Iterable[str], name: str) -> None:
    missing = set(ids) - set(utt2cond)
    if missing:
        raise ScoringError(f"{len(missing)} utterance(s) have no {name}: {format_ids(missing)}")


def breakdown(per_utt: Mapping[str, EditCounts], utt2cond: Mapping[str, str],
              order: Sequence[str] = SNR_ORDER, name: str = "condition") -> dict[str, dict]:
    """``{condition: {"n_utts", "n_words", "errors", "wer"}}`` pooled over the utterances of each condition.

    Only conditions that occur are listed, in :func:`sort_conditions` order.
    Every utterance of ``per_utt`` needs a condition; extra ids in
    ``utt2cond`` are ignored.
    """
    _check_cond_map(utt2cond, per_utt, name)
    acc: dict[str, list] = {}
    for utt, c in per_utt.items():
        a = acc.setdefault(str(utt2cond[utt]), [0, EditCounts()])
        a[0] += 1
        a[1] += c
    out = {}
    for cond in sort_conditions(acc, order):
        n, c = acc[cond]
        out[cond] = {"n_utts": n, "n_words": c.n_ref, "errors": c.errors,
                     "wer": _rate(c.errors, c.n_ref)}
    return out


def wer_by_condition(refs: Mapping[str, Transcript], hyps: Mapping[str, Transcript],
                     utt2cond: Mapping[str, str], order: Sequence[str] = SNR_ORDER,
                     per_utt: Optional[Mapping[str, EditCounts]] = None) -> dict[str, dict]:
    """WER per condition (e.g. ``utt2snr`` or ``utt2noise``); see :func:`breakdown`."""
    return breakdown(_per_utt_word_counts(refs, hyps, per_utt), utt2cond, order)


def wer_by_snr(refs, hyps, utt2snr, per_utt=None) -> dict[str, dict]:
    """WER per SNR condition (``clean``, ``20`` ... ``0``)."""
    return breakdown(_per_utt_word_counts(refs, hyps, per_utt), utt2snr, SNR_ORDER, "SNR")


def wer_by_noise(refs, hyps, utt2noise, per_utt=None) -> dict[str, dict]:
    """WER per noise type (``clean``, ``white``, ``pink``, ``babble``)."""
    return breakdown(_per_utt_word_counts(refs, hyps, per_utt), utt2noise, NOISE_ORDER, "noise type")


def aurora_table(refs, hyps, utt2noise: Mapping[str, str], utt2snr: Mapping[str, str],
                 per_utt=None, detail: bool = False) -> dict[str, dict]:
    """Aurora-2 style table: ``{noise: {snr: WER %}}`` (rows noise type, columns SNR).

    Only cells with utterances are present (the ``clean`` noise row normally
    has just the ``clean`` column).  With ``detail=True`` each cell is the
    :func:`breakdown` dict (n_utts, n_words, errors, wer) instead of the WER.
    """
    per_utt = _per_utt_word_counts(refs, hyps, per_utt)
    _check_cond_map(utt2noise, per_utt, "noise type")
    _check_cond_map(utt2snr, per_utt, "SNR")
    rows: dict[str, dict[str, EditCounts]] = {}
    for noise in sort_conditions({str(utt2noise[u]) for u in per_utt}, NOISE_ORDER):
        utts = {u: c for u, c in per_utt.items() if str(utt2noise[u]) == noise}
        cells = breakdown(utts, utt2snr, SNR_ORDER, "SNR")
        rows[noise] = cells if detail else {s: v["wer"] for s, v in cells.items()}
    return rows


# --------------------------------------------------------------------------- #
# Spike timing                                                                 #
# --------------------------------------------------------------------------- #
#: Slack (seconds) on the span bounds for float rounding of frame times.
_EPS = 1e-9


@dataclass
class WordSpan:
    word: str
    start: float  # seconds
    end: float  # seconds


@dataclass
class SpikeStats:
    """Spike-timing counts of one utterance or a corpus (see the module docstring)."""

    n_tokens: int = 0
    n_hits: int = 0
    onset_offsets_s: list[float] = field(default_factory=list)

    @property
    def hit_rate(self) -> Optional[float]:
        """``hits / tokens considered`` as a fraction (None when no token was considered)."""
        return None if self.n_tokens == 0 else self.n_hits / self.n_tokens

    @property
    def mean_onset_offset_ms(self) -> Optional[float]:
        o = self.onset_offsets_s
        return None if not o else 1000.0 * math.fsum(o) / len(o)

    @property
    def mean_abs_onset_offset_ms(self) -> Optional[float]:
        o = self.onset_offsets_s
        return None if not o else 1000.0 * math.fsum(abs(x) for x in o) / len(o)

    def __iadd__(self, other: "SpikeStats") -> "SpikeStats":
        self.n_tokens += other.n_tokens
        self.n_hits += other.n_hits
        self.onset_offsets_s.extend(other.onset_offsets_s)
        return self

    def summary(self) -> dict:
        return {
            "hit_rate": self.hit_rate, "n_tokens": self.n_tokens, "n_hits": self.n_hits,
            "n_onsets": len(self.onset_offsets_s),
            "mean_onset_offset_ms": self.mean_onset_offset_ms,
            "mean_abs_onset_offset_ms": self.mean_abs_onset_offset_ms,
        }


def _as_span(w) -> WordSpan:
    if isinstance(w, WordSpan):
        return w
    if len(w) == 4:  # (word_index, word, start, end)
        w = w[1:]
    word, start, end = w
    return WordSpan(str(word), float(start), float(end))


def group_words(tokens: Sequence[str], times: Sequence[float]) -> list[tuple[str, list[float]]]:
    """Split char tokens at ``<space>`` into ``[(word, [token times])]`` (no empty words)."""
    words: list[tuple[str, list[float]]] = []
    chars: list[str] = []
    ts: list[float] = []
    for tok, t in zip(tokens, times):
        if tok == SPACE_TOKEN:
            if chars:
                words.append(("".join(chars), ts))
            chars, ts = [], []
        else:
            chars.append(tok)
            ts.append(t)
    if chars:
        words.append(("".join(chars), ts))
    return words


def spike_timing(word_align: Sequence, tokens: Sequence[str], frames: Sequence[int],
                 frame_shift_s: float, offset_s: float = 0.0, tolerance_s: float = 0.0,
                 utt: str = "<utt>") -> SpikeStats:
    """Spike timing of one utterance (rules in the module docstring).

    ``word_align``: the reference words in order, as :class:`WordSpan` or
    ``(word, start_s, end_s)`` / ``(index, word, start_s, end_s)`` tuples.
    ``tokens``: the hyp tokens (``<space>`` separates words); ``frames``:
    the first encoder frame of each token's run, one per token.
    """
    tokens, frames = list(tokens), list(frames)
    if len(tokens) != len(frames):
        raise ScoringError(f"utterance {utt}: {len(tokens)} token(s) but {len(frames)} CTC frame(s)")
    spans = [_as_span(w) for w in word_align]
    ref_chars, ref_word = [], []
    for index, span in enumerate(spans):
        for char in span.word:
            ref_chars.append(char)
            ref_word.append(index)
    hyp_chars, hyp_owner, token_times = [], [], []
    for token, frame in zip(tokens, frames):
        if token == SPACE_TOKEN:
            continue
        spelled = token.replace("\u2581", "") or token
        token_index = len(token_times)
        token_times.append(offset_s + int(frame) * frame_shift_s)
        for position, char in enumerate(spelled):
            hyp_chars.append(char)
            hyp_owner.append(token_index if position == 0 else None)
    token_word: dict[int, int] = {}
    for op, ri, hi in align(ref_chars, hyp_chars):
        if op in ("C", "S") and hyp_owner[hi] is not None:
            token_word[hyp_owner[hi]] = ref_word[ri]
    stats = SpikeStats(n_tokens=len(token_times))
    earliest: dict[int, float] = {}
    for token_index, t in enumerate(token_times):
        word = token_word.get(token_index)
        if word is None:
            continue
        span = spans[word]
        # _EPS absorbs float rounding (3 * 0.04 != 0.12), so a spike exactly
        # on a boundary written in word_align counts as inside.
        if span.start - tolerance_s - _EPS <= t <= span.end + tolerance_s + _EPS:
            stats.n_hits += 1
        earliest[word] = min(t, earliest.get(word, t))
    stats.onset_offsets_s.extend(earliest[w] - spans[w].start for w in sorted(earliest))
    return stats


def spike_timing_corpus(word_aligns: Mapping[str, Sequence], tokens: Mapping[str, Sequence[str]],
                        frames: Mapping[str, Sequence[int]], frame_shift_s: float,
                        offset_s: float = 0.0, tolerance_s: float = 0.0
                        ) -> tuple[SpikeStats, dict[str, SpikeStats]]:
    """Spike timing summed over utterances: ``(total, {uttid: per-utterance stats})``.

    ``tokens`` and ``frames`` must cover exactly the ids of ``word_aligns``.
    """
    check_ids(word_aligns, tokens, "word alignment", "token sequence")
    check_ids(word_aligns, frames, "word alignment", "CTC frame sequence")
    total = SpikeStats()
    per_utt = {}
    for utt in word_aligns:
        s = spike_timing(word_aligns[utt], tokens[utt], frames[utt], frame_shift_s,
                         offset_s, tolerance_s, utt=utt)
        per_utt[utt] = s
        total += s
    return total, per_utt


__all__ = [
    "SPACE_TOKEN", "SNR_ORDER", "NOISE_ORDER", "ScoringError", "format_ids", "error_counts", "align",
    "char_tie_break", "EditCounts", "edit_counts", "to_words", "to_chars", "check_ids", "ErrorStats",
    "score_units", "WerCer", "wer_cer", "sort_conditions", "breakdown", "wer_by_condition",
    "wer_by_snr", "wer_by_noise", "aurora_table", "WordSpan", "SpikeStats", "group_words",
    "spike_timing", "spike_timing_corpus",
]
