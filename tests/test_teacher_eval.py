"""The copy probe's bookkeeping: transcript shuffling, copy rate and time-to-CER."""

import math

import pytest

from espnet_oracle.bin.teacher_eval import copy_probe, other_transcripts, time_to_cer

TEXTS = {
    "a": "ONE TWO",
    "b": "THREE",
    "c": "ONE TWO",
    "d": "FOUR FIVE SIX",
    "e": "SEVEN",
}


def test_other_transcripts_always_differ_and_are_deterministic():
    fed = other_transcripts(TEXTS, seed=3)
    assert set(fed) == set(TEXTS)
    for utt, text in fed.items():
        assert text.split() != TEXTS[utt].split()
        assert text in TEXTS.values()
    assert fed == other_transcripts(TEXTS, seed=3)


def test_other_transcripts_needs_two_different_texts():
    with pytest.raises(ValueError):
        other_transcripts({"a": "ONE", "b": "ONE"})


def test_copy_probe_detects_a_copying_teacher():
    fed = other_transcripts(TEXTS, seed=0)
    copier = copy_probe(TEXTS, fed, hyps=dict(fed))  # outputs exactly what it was fed
    assert copier["copy_rate"] == 1.0 and copier["truth_rate"] == 0.0
    assert copier["cer_vs_fed"] == 0.0
    listener = copy_probe(TEXTS, fed, hyps=dict(TEXTS))  # follows the audio only
    assert listener["copy_rate"] == 0.0 and listener["truth_rate"] == 1.0
    assert listener["cer_vs_fed"] > 50.0


def test_time_to_cer_ratio():
    conventional = [dict(epoch=e, dev_cer=c, wall_seconds=10.0 * e) for e, c in
                    [(1, 90.0), (2, 40.0), (3, 20.0), (4, 21.0)]]
    oracle = [dict(epoch=e, dev_cer=c, wall_seconds=12.0 * e) for e, c in [(1, 50.0), (2, 19.0)]]
    result = time_to_cer(conventional, oracle)
    assert result["target_dev_cer"] == 20.0
    assert result["conventional_seconds"] == 30.0 and result["oracle_seconds"] == 24.0
    assert result["ratio"] == pytest.approx(0.8)
    never = time_to_cer(conventional, [dict(epoch=1, dev_cer=60.0, wall_seconds=5.0)])
    assert math.isnan(never["ratio"])
