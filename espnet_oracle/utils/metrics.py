"""Corpus WER/CER (editdistance), per-condition WER, and what no library does: CTC spike timing.

WER: word errors (Levenshtein distance) summed over utterances / reference words. CER: the same on the
characters of the words, spaces excluded. Rates in percent; a rate over zero reference units is None.

Spike timing (:func:`spike_timing`): each greedy hyp token (``<space>`` separates words) is placed at
``offset_s + frame * frame_shift_s`` (the first encoder frame of its CTC run). Hyp and reference
are aligned character by character (:func:`align`, BPE ``\u2581`` dropped); a non-space token belongs
to the reference word its first character is aligned to (match or substitution) and is a *hit* when
its time lies in that word's ``[start - tol, end + tol]``; a token aligned to nothing is a miss.
Onset offset: per reference word that got a token, time(earliest token) - word start.
``hit_rate = hits / tokens considered``. Onset error: the mean of ``|onset offset|`` over those words, with
a 95 % confidence interval by the normal approximation (mean +- 1.96 sd / sqrt(n), words taken as
independent; :func:`pooled_mean_ci` pools several runs' words the same way).

Paired bootstrap (:func:`paired_bootstrap`): WER(a) - WER(b) on utterances resampled with replacement,
the same resample for both systems.

Text-recognition metrics (:func:`word_accuracy_ned`, only when a recipe asks for them): both strings
are lower-cased and everything outside ``a-z0-9`` is dropped (the scene-text convention, spaces too);
*word accuracy* is the share of utterances whose normalised hypothesis equals the normalised
reference, *1 - NED* the mean over utterances of ``1 - ED(ref, hyp) / max(len(ref), len(hyp))``
(characters; 1 when both are empty). Both in percent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import editdistance
import numpy as np

SPACE_TOKEN = "<space>"
COR, SUB, DEL, INS = "C", "S", "D", "I"


class ScoringError(ValueError):
    """Inputs to scoring are inconsistent (missing / extra utterances, malformed alignments ...)."""


def format_ids(ids: Iterable[str], limit: int = 5) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:limit]) + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def rate(errors: float, n: float) -> Optional[float]:
    return None if n == 0 else 100.0 * errors / n


def check_ids(refs: Mapping, hyps: Mapping, ref_name: str = "reference", hyp_name: str = "hypothesis") -> None:
    missing, extra = set(refs) - set(hyps), set(hyps) - set(refs)
    msgs = [f"{len(missing)} utterance(s) of the {ref_name} have no {hyp_name}: {format_ids(missing)}"] if missing else []
    msgs += [f"{len(extra)} {hyp_name} utterance(s) not in the {ref_name}: {format_ids(extra)}"] if extra else []
    if msgs:
        raise ScoringError("; ".join(msgs))


def to_words(text) -> list[str]:
    return text.split() if isinstance(text, str) else [str(w) for w in text]


def to_chars(text) -> list[str]:
    return list("".join(to_words(text)))


@dataclass
class WerCer:
    """Per utterance ``(word errors, ref words, char errors, ref chars)`` and the corpus rates."""

    per_utt: dict[str, tuple[int, int, int, int]]

    def total(self, k: int) -> int:
        return sum(v[k] for v in self.per_utt.values())

    @property
    def wer(self) -> Optional[float]:
        return rate(self.total(0), self.total(1))

    @property
    def cer(self) -> Optional[float]:
        return rate(self.total(2), self.total(3))

    @property
    def ser(self) -> Optional[float]:
        return rate(sum(v[0] > 0 for v in self.per_utt.values()), len(self.per_utt))

    @property
    def n_utts(self) -> int:
        return len(self.per_utt)


def wer_cer(refs: Mapping[str, str], hyps: Mapping[str, str]) -> WerCer:
    """WER and CER of ``hyps`` against ``refs`` (same utterance ids required)."""
    check_ids(refs, hyps)
    out = {}
    for u in refs:
        rw, hw, rc, hc = to_words(refs[u]), to_words(hyps[u]), to_chars(refs[u]), to_chars(hyps[u])
        out[u] = (editdistance.eval(rw, hw), len(rw), editdistance.eval(rc, hc), len(rc))
    return WerCer(out)


EXTRA_METRICS = ("word_accuracy", "one_minus_ned")
_NOT_ALNUM = re.compile(r"[^0-9a-z]")


def alnum_lower(text) -> str:
    """``"Hello, World 2"`` -> ``"helloworld2"``: lower-cased, only ``a-z0-9`` kept."""
    return _NOT_ALNUM.sub("", " ".join(to_words(text)).lower())


def word_accuracy_ned(refs: Mapping[str, str], hyps: Mapping[str, str]) -> dict[str, Optional[float]]:
    """``{"word_accuracy": %, "one_minus_ned": %, "n_correct": n}`` on alphanumeric, lower-cased strings."""
    check_ids(refs, hyps)
    correct, similarity = 0, 0.0
    for u in refs:
        r, h = alnum_lower(refs[u]), alnum_lower(hyps[u])
        correct += r == h
        longest = max(len(r), len(h))
        similarity += 1.0 - editdistance.eval(r, h) / longest if longest else 1.0
    return {"word_accuracy": rate(correct, len(refs)), "one_minus_ned": rate(similarity, len(refs)),
            "n_correct": correct}


def condition_key(cond: str):
    """Names first (alphabetically), then numbers high to low (SNRs: 20, 15, ... 0)."""
    try:
        return (1, -float(cond), cond)
    except ValueError:
        return (0, 0.0, cond)


def wer_by_condition(result: WerCer, utt2cond: Mapping[str, str], name: str = "condition") -> dict[str, dict]:
    """``{condition: {n_utts, n_words, errors, wer}}`` pooled over the utterances of each condition."""
    missing = set(result.per_utt) - set(utt2cond)
    if missing:
        raise ScoringError(f"{len(missing)} utterance(s) have no {name}: {format_ids(missing)}")
    acc: dict[str, list[int]] = {}
    for u, (err, n, _, _) in result.per_utt.items():
        a = acc.setdefault(str(utt2cond[u]), [0, 0, 0])
        a[0], a[1], a[2] = a[0] + 1, a[1] + n, a[2] + err
    return {c: {"n_utts": a[0], "n_words": a[1], "errors": a[2], "wer": rate(a[2], a[1])}
            for c, a in sorted(acc.items(), key=lambda kv: condition_key(kv[0]))}


def align(ref: Sequence, hyp: Sequence) -> list[tuple[str, Optional[int], Optional[int]]]:
    """Minimum-edit alignment: ``(op, ref_index, hyp_index)`` with op C/S/D/I (None for a missing side).

    Ties are resolved, backtracing from the end, as match > substitution > deletion > insertion.
    """
    ref, hyp = list(ref), list(hyp)
    n, m = len(ref), len(hyp)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        d[i][0] = i
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]), d[i - 1][j] + 1, d[i][j - 1] + 1)
    ops, i, j = [], n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append((COR if ref[i - 1] == hyp[j - 1] else SUB, i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and d[i][j] == d[i - 1][j] + 1:
            ops.append((DEL, i - 1, None))
            i -= 1
        else:
            ops.append((INS, None, j - 1))
            j -= 1
    return ops[::-1]


# Spike timing (below). _EPS: slack (seconds) on the span bounds for float rounding of frame times.
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
        """Counts and rates; the onset error's sd and 95 % CI (normal approximation, ``pooled_mean_ci``)."""
        o = 1000.0 * np.abs(self.onset_offsets_s)
        sd = float(o.std(ddof=1)) if len(o) > 1 else None
        _, low, high = pooled_mean_ci([(len(o), self.mean_abs_onset_offset_ms, sd)]) or (None, None, None)
        return {
            "hit_rate": self.hit_rate, "n_tokens": self.n_tokens, "n_hits": self.n_hits,
            "n_onsets": len(self.onset_offsets_s),
            "mean_onset_offset_ms": self.mean_onset_offset_ms,
            "mean_abs_onset_offset_ms": self.mean_abs_onset_offset_ms,
            "abs_onset_offset_sd_ms": sd, "abs_onset_offset_ci95_low_ms": low, "abs_onset_offset_ci95_high_ms": high,
        }


def pooled_mean_ci(parts: Iterable[tuple]) -> Optional[tuple]:
    """``(mean, low, high)`` of the union of samples given as ``(n, mean, sd)`` (sd None when n < 2).

    95 % CI by the normal approximation, ``mean +- 1.96 sd / sqrt(N)`` with the pooled sample sd;
    low, high None for fewer than 2 values; None when there are no values at all.
    """
    parts = [(n, m, s or 0.0) for n, m, s in parts if n]
    total = sum(n for n, _, _ in parts)
    if not total:
        return None
    mean = math.fsum(n * m for n, m, _ in parts) / total
    if total < 2:
        return mean, None, None
    ss = math.fsum((n - 1) * s * s + n * (m - mean) ** 2 for n, m, s in parts)
    half = 1.96 * math.sqrt(ss / (total - 1) / total)
    return mean, mean - half, mean + half


def paired_bootstrap(errors_a, words_a, errors_b, words_b, resamples: int = 1000, seed: int = 0) -> dict:
    """Paired bootstrap over utterances of ``WER(a) - WER(b)`` (percent points; arrays aligned by utterance).

    Returns ``delta`` (on all utterances), ``low``/``high`` (2.5th/97.5th percentiles of the resampled
    deltas) and ``p``: two-sided, twice the share of resamples whose delta is not of the observed sign
    (zero counts against), at most 1; 1 when the observed delta is 0.
    """
    ea, na, eb, nb = (np.asarray(x, dtype=float) for x in (errors_a, words_a, errors_b, words_b))
    delta = 100.0 * (ea.sum() / na.sum() - eb.sum() / nb.sum())
    idx = np.random.default_rng(seed).integers(0, len(ea), size=(resamples, len(ea)))
    d = 100.0 * (ea[idx].sum(1) / na[idx].sum(1) - eb[idx].sum(1) / nb[idx].sum(1))
    low, high = np.percentile(d, [2.5, 97.5])
    p = 1.0 if delta == 0 else min(1.0, 2.0 * float(np.mean(d <= 0 if delta > 0 else d >= 0)))
    return {"delta": float(delta), "low": float(low), "high": float(high), "p": p}


def _as_span(w) -> WordSpan:
    if isinstance(w, WordSpan):
        return w
    if len(w) == 4:  # (word_index, word, start, end)
        w = w[1:]
    word, start, end = w
    return WordSpan(str(word), float(start), float(end))


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
    ref_chars = [char for span in spans for char in span.word]
    ref_word = [index for index, span in enumerate(spans) for _ in span.word]
    hyp_chars, hyp_owner, token_times = [], [], []
    for token, frame in zip(tokens, frames):
        if token == SPACE_TOKEN:
            continue
        spelled = token.replace("\u2581", "") or token
        hyp_chars.extend(spelled)
        hyp_owner.extend(len(token_times) if position == 0 else None for position in range(len(spelled)))
        token_times.append(offset_s + int(frame) * frame_shift_s)
    token_word: dict[int, int] = {}
    for op, ri, hi in align(ref_chars, hyp_chars):
        if op in (COR, SUB) and hyp_owner[hi] is not None:
            token_word[hyp_owner[hi]] = ref_word[ri]
    stats = SpikeStats(n_tokens=len(token_times))
    earliest: dict[int, float] = {}
    for token_index, word in token_word.items():  # tokens aligned to nothing are misses
        t, span = token_times[token_index], spans[word]
        # _EPS absorbs float rounding (3 * 0.04 != 0.12): a spike exactly on a word_align boundary is inside.
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
