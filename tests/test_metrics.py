"""Tests of espnet_oracle.utils.metrics and espnet_oracle.bin.score on hand-made cases."""

from __future__ import annotations

import json
import random

import editdistance
import pytest

from espnet_oracle.bin import score
from espnet_oracle.utils import metrics as M

REFS = {"a": "ONE TWO THREE", "b": "FOUR FIVE", "c": "SIX", "d": "SEVEN EIGHT"}
HYPS = {
    "a": "ONE TWO THREE",  # correct
    "b": "FOUR NINE FIVE",  # 1 insertion  (chars: +NINE = 4 insertions)
    "c": "",  # 1 deletion   (chars: 3 deletions)
    "d": "SEVEN OH",  # 1 substitution (chars: EIGHT -> OH = 4 edits)
}
UTT2SNR = {"a": "clean", "b": "20", "c": "20", "d": "0"}
UTT2NOISE = {"a": "clean", "b": "white", "c": "babble", "d": "white"}


# --------------------------------------------------------------------------- #
# Edit alignment                                                               #
# --------------------------------------------------------------------------- #
def test_error_counts():
    assert M.error_counts("ONE TWO".split(), "ONE TWO".split()) == (0, 2)
    assert M.error_counts("ONE TWO".split(), []) == (2, 2)
    assert M.error_counts([], "ONE".split()) == (1, 0)
    assert M.error_counts(list("KITTEN"), list("SITTING")) == (3, 6)


@pytest.mark.parametrize(
    "ref, hyp, sdi",
    [
        ("ONE TWO THREE", "ONE TWO THREE", (0, 0, 0)),
        ("ONE TWO THREE", "ONE FOUR THREE", (1, 0, 0)),
        ("ONE TWO THREE", "ONE THREE", (0, 1, 0)),
        ("ONE TWO THREE", "ONE TWO TWO THREE", (0, 0, 1)),
        ("ONE TWO", "", (0, 2, 0)),
        ("", "ONE TWO", (0, 0, 2)),
        ("ONE TWO THREE FOUR", "TWO THREE SIX FOUR FIVE", (0, 1, 2)),
    ],
)
def test_edit_counts_sdi(ref, hyp, sdi):
    c = M.edit_counts(ref.split(), hyp.split())
    assert (c.sub, c.dele, c.ins) == sdi
    assert c.n_ref == len(ref.split())
    assert c.cor + c.sub + c.dele == c.n_ref
    assert c.errors == editdistance.eval(ref.split(), hyp.split())


def test_align_ops_and_indices():
    ops = M.align("A B C D".split(), "A X C D E".split())
    assert ops == [("C", 0, 0), ("S", 1, 1), ("C", 2, 2), ("C", 3, 3), ("I", None, 4)]
    ops = M.align("A B C".split(), "A C".split())
    assert ops == [("C", 0, 0), ("D", 1, None), ("C", 2, 1)]


def test_align_random_matches_editdistance():
    rng = random.Random(0)
    for _ in range(300):
        ref = [rng.choice("ABC") for _ in range(rng.randint(0, 8))]
        hyp = [rng.choice("ABC") for _ in range(rng.randint(0, 8))]
        for tb in (None, lambda r, h: rng.random() < 2):  # constant secondary cost
            ops = M.align(ref, hyp, tie_break=tb)
            # the alignment covers both sequences in order
            assert [r for _, r, _ in ops if r is not None] == list(range(len(ref)))
            assert [h for _, _, h in ops if h is not None] == list(range(len(hyp)))
            errors = sum(op != "C" for op, _, _ in ops)
            assert errors == editdistance.eval(ref, hyp)
            for op, r, h in ops:
                if op == "C":
                    assert ref[r] == hyp[h]
                if op == "S":
                    assert ref[r] != hyp[h]


def test_char_tie_break_pairs_similar_words():
    ref, hyp = ["ONE", "TWO", "THREE"], ["ONE", "TWO", "TREE", "SIX"]
    ops = M.align(ref, hyp, tie_break=M.char_tie_break)
    assert ops[2] == ("S", 2, 2) and ops[3] == ("I", None, 3)
    # without the tie-break the word-level tie is resolved at the end of the sequence
    assert sum(op != "C" for op, _, _ in M.align(ref, hyp)) == 2


# --------------------------------------------------------------------------- #
# WER / CER                                                                    #
# --------------------------------------------------------------------------- #
def test_wer_cer_exact():
    res = M.wer_cer(REFS, HYPS)
    w = res.wer.counts
    assert (w.n_ref, w.cor, w.sub, w.dele, w.ins) == (8, 6, 1, 1, 1)
    assert res.wer.rate == pytest.approx(100 * 3 / 8)
    assert res.wer.ser == pytest.approx(75.0)
    assert res.n_utts == 4
    # chars, spaces excluded: 11 + 8 + 3 + 10 = 32 ref chars; 0 + 4 + 3 + 4 errors
    assert res.cer.counts.n_ref == 32
    assert res.cer.counts.errors == 11
    assert res.cer.rate == pytest.approx(100 * 11 / 32)
    assert res.cer.per_utt["b"].ins == 4 and res.cer.per_utt["c"].dele == 3
    assert res.wer.per_utt["d"].sub == 1
    s = res.summary()
    assert s["wer"] == pytest.approx(37.5) and s["ser"] == pytest.approx(75.0)
    assert s["wer_counts"]["del"] == 1 and s["cer_counts"]["err"] == 11


def test_cer_excludes_spaces():
    res = M.wer_cer({"u": "ONE TWO"}, {"u": "ONETWO"})
    assert res.cer.rate == 0.0
    assert res.wer.rate == pytest.approx(100.0)  # ONE->ONETWO, TWO deleted
    assert M.to_chars("AB  C") == ["A", "B", "C"]


def test_empty_hyp_and_lists():
    res = M.wer_cer({"u": ["ONE", "TWO"]}, {"u": []})
    assert res.wer.rate == pytest.approx(100.0) and res.wer.counts.dele == 2
    assert res.cer.rate == pytest.approx(100.0)
    # empty reference: rate undefined, not a ZeroDivisionError
    res = M.wer_cer({"u": ""}, {"u": "ONE"})
    assert res.wer.rate is None and res.wer.counts.ins == 1 and res.wer.ser == 100.0


def test_missing_and_extra_ids():
    hyps = dict(HYPS)
    del hyps["c"]
    with pytest.raises(M.ScoringError, match=r"\bc\b"):
        M.wer_cer(REFS, hyps)
    with pytest.raises(M.ScoringError, match="zz"):
        M.wer_cer(REFS, {**HYPS, "zz": "ONE"})


# --------------------------------------------------------------------------- #
# Conditions                                                                   #
# --------------------------------------------------------------------------- #
def test_breakdown_by_condition():
    snr = M.wer_by_snr(REFS, HYPS, UTT2SNR)
    assert list(snr) == ["clean", "20", "0"]
    assert snr["clean"] == {"n_utts": 1, "n_words": 3, "errors": 0, "wer": 0.0}
    assert snr["20"]["n_utts"] == 2 and snr["20"]["n_words"] == 3
    assert snr["20"]["wer"] == pytest.approx(100 * 2 / 3)
    assert snr["0"]["wer"] == pytest.approx(50.0)

    noise = M.wer_by_noise(REFS, HYPS, UTT2NOISE)
    assert list(noise) == ["clean", "white", "babble"]
    assert noise["white"]["n_words"] == 4 and noise["white"]["wer"] == pytest.approx(50.0)
    assert noise["babble"]["wer"] == pytest.approx(100.0)

    table = M.aurora_table(REFS, HYPS, UTT2NOISE, UTT2SNR)
    assert table == {
        "clean": {"clean": 0.0},
        "white": {"20": pytest.approx(50.0), "0": pytest.approx(50.0)},
        "babble": {"20": pytest.approx(100.0)},
    }
    with pytest.raises(M.ScoringError, match="SNR.*\\bd\\b"):
        M.wer_by_snr(REFS, HYPS, {k: v for k, v in UTT2SNR.items() if k != "d"})


def test_sort_conditions():
    assert M.sort_conditions(["0", "clean", "-5", "20", "15", "7"]) == ["clean", "20", "15", "0", "7", "-5"]


# --------------------------------------------------------------------------- #
# Spike timing                                                                 #
# --------------------------------------------------------------------------- #
SHIFT = 0.04
WA = [("ONE", 0.10, 0.40), ("TWO", 0.50, 0.80), ("THREE", 1.00, 1.40)]


def _toks(spec):
    """[(token, frame)] -> (tokens, frames)."""
    return [t for t, _ in spec], [f for _, f in spec]


def test_spike_timing_hand_made():
    tokens, frames = _toks([
        ("O", 2),    # 0.08 s: before ONE starts (0.10) -> miss; onset -20 ms
        ("N", 5),    # 0.20 hit
        ("E", 10),   # 0.40 exactly on ONE's end -> hit
        ("<space>", 11),
        ("T", 15),   # 0.60 hit; onset +100 ms
        ("W", 17),   # 0.68 hit
        ("O", 20),   # 0.80 exactly on TWO's end -> hit
        ("<space>", 22),
        ("T", 25),   # substituted word TREE ~ THREE: 1.00 = start -> hit; onset 0
        ("R", 27),   # 1.08 hit
        ("E", 30),   # 1.20 hit
        ("E", 36),   # 1.44 > 1.40 -> miss
        ("<space>", 37),
        ("S", 40), ("I", 41), ("X", 42),  # inserted word: 3 misses
    ])
    st = M.spike_timing(WA, tokens, frames, SHIFT)
    assert st.n_tokens == 13
    assert st.n_hits == 8
    assert st.hit_rate == pytest.approx(8 / 13)
    assert st.onset_offsets_s == pytest.approx([-0.02, 0.10, 0.0])
    assert st.mean_onset_offset_ms == pytest.approx(80 / 3)
    assert st.mean_abs_onset_offset_ms == pytest.approx(40.0)

    # a tolerance of 20 ms rescues the early O (-20 ms) and the late E (+40 ms needs 40)
    st = M.spike_timing(WA, tokens, frames, SHIFT, tolerance_s=0.02)
    assert st.n_hits == 9
    st = M.spike_timing(WA, tokens, frames, SHIFT, tolerance_s=0.04)
    assert st.n_hits == 10
    # an offset moves every spike: +20 ms makes ONE's O hit but pushes the E of ONE
    # and the O of TWO (on the end boundaries) out
    st = M.spike_timing(WA, tokens, frames, SHIFT, offset_s=0.02)
    assert st.n_hits == 7 and st.mean_onset_offset_ms == pytest.approx(80 / 3 + 20)


def test_spike_timing_deleted_word_and_sign():
    # hyp "TWO" only: ONE and THREE deleted (no tokens); TWO late by 160 ms
    tokens, frames = _toks([("<space>", 1), ("T", 16), ("W", 17), ("O", 18), ("<space>", 19)])
    st = M.spike_timing(WA, tokens, frames, SHIFT)
    assert (st.n_tokens, st.n_hits) == (3, 3)
    assert st.mean_onset_offset_ms == pytest.approx(140.0)
    # early spike -> negative offset
    st = M.spike_timing([("ONE", 0.5, 0.9)], ["O", "N", "E"], [10, 11, 12], SHIFT)
    assert st.mean_onset_offset_ms == pytest.approx(-100.0)
    assert st.mean_abs_onset_offset_ms == pytest.approx(100.0)
    assert st.n_hits == 0  # O 0.40, N 0.44, E 0.48: all before the start (0.50)


def test_spike_timing_empty_and_errors():
    st = M.spike_timing(WA, [], [], SHIFT)
    assert st.n_tokens == 0 and st.hit_rate is None and st.mean_onset_offset_ms is None
    with pytest.raises(M.ScoringError, match="u7.*2 token.*1 CTC frame"):
        M.spike_timing(WA, ["O", "N"], [1], SHIFT, utt="u7")


def test_spike_timing_corpus():
    wa = {"x": WA[:1], "y": WA[1:2]}
    tokens = {"x": ["O", "N", "E"], "y": ["T", "W", "O"]}
    frames = {"x": [3, 5, 7], "y": [10, 30, 31]}  # x all hit; y: 0.40 miss, 1.20 miss, 1.24 miss
    total, per = M.spike_timing_corpus(wa, tokens, frames, SHIFT)
    assert (total.n_tokens, total.n_hits) == (6, 3)
    assert per["y"].n_hits == 0
    assert total.mean_onset_offset_ms == pytest.approx((20 - 100) / 2)
    with pytest.raises(M.ScoringError, match="y"):
        M.spike_timing_corpus(wa, {"x": tokens["x"]}, frames, SHIFT)


# --------------------------------------------------------------------------- #
# score.main                                                                   #
# --------------------------------------------------------------------------- #
def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _make_dirs(tmp_path, with_spikes=True):
    data = tmp_path / "data" / "test"
    dec = tmp_path / "exp" / "decode_test"
    _write(data / "text", [f"{u} {t}" for u, t in REFS.items()])
    _write(data / "utt2snr", [f"{u} {v}" for u, v in UTT2SNR.items()])
    _write(data / "utt2noise", [f"{u} {v}" for u, v in UTT2NOISE.items()])
    wa = []
    for u, t in REFS.items():
        for k, w in enumerate(t.split()):
            wa.append(f"{u} {k} {w} {0.1 + 0.5 * k:.4f} {0.4 + 0.5 * k:.4f}")
    _write(data / "word_align", wa)
    _write(dec / "text", [f"{u} {t}".rstrip() for u, t in HYPS.items()])
    if with_spikes:
        tok, fr = [], []
        for u, t in HYPS.items():
            toks, frames = [], []
            for k, w in enumerate(t.split()):
                if k:
                    toks.append("<space>")
                    frames.append(12 * k + 1)
                for c, ch in enumerate(w):
                    toks.append(ch)
                    frames.append(3 + 12 * k + c)  # word k starts at 0.12 + 0.48 k s
            tok.append(f"{u} {' '.join(toks)}".rstrip())
            fr.append(f"{u} {' '.join(map(str, frames))}".rstrip())
        _write(dec / "token", tok)
        _write(dec / "ctc_frames", fr)
        (dec / "frame_shift_ms").write_text("40\n")
    return data, dec


def test_score_main_writes_everything(tmp_path, capsys):
    data, dec = _make_dirs(tmp_path)
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec)]) == 0
    for f in ("score_wer/result.txt", "score_cer/result.txt", "score_conditions.tsv",
              "spike_timing.tsv", "scores.json"):
        assert (dec / f).is_file(), f
    assert not list(dec.rglob(".*.tmp"))
    js = json.loads((dec / "scores.json").read_text())
    for k in ("wer", "cer", "ser", "n_utts", "wer_by_snr", "wer_by_noise", "aurora_table",
              "spike_hit_rate", "spike_n_tokens", "mean_onset_offset_ms", "mean_abs_onset_offset_ms"):
        assert k in js, k
    assert js["wer"] == pytest.approx(37.5) and js["cer"] == pytest.approx(100 * 11 / 32)
    assert js["ser"] == pytest.approx(75.0) and js["n_utts"] == 4
    assert js["wer_by_snr"]["20"] == pytest.approx(100 * 2 / 3)
    assert js["wer_by_noise"]["babble"] == pytest.approx(100.0)
    assert js["aurora_table"]["white"] == {"20": pytest.approx(50.0), "0": pytest.approx(50.0)}
    assert js["spike_note"] is None
    # spikes: word k of every hyp at 0.12 + 0.48 k with one frame (40 ms) per char;
    # ref word k spans [0.1 + 0.5 k, 0.4 + 0.5 k]
    n_tokens = sum(len(t.replace(" ", "")) for t in HYPS.values())
    assert js["spike_n_tokens"] == n_tokens == 11 + 12 + 0 + 7
    assert 0 < js["spike_hit_rate"] < 1
    assert js["spike"]["frame_shift_ms"] == 40.0

    wer_txt = (dec / "score_wer" / "result.txt").read_text()
    assert "Sum/Avg" in wer_txt and "WER = 37.50 %" in wer_txt
    assert "d\tref=SEVEN EIGHT\thyp=SEVEN OH\terrors=1" in wer_txt
    assert "c\tref=SIX\thyp=\terrors=1" in wer_txt
    assert "CER = 34.38 %" in (dec / "score_cer" / "result.txt").read_text()
    cond = (dec / "score_conditions.tsv").read_text().splitlines()
    assert cond[0] == "condition\tn_utts\tn_words\tWER"
    assert "all\t4\t8\t37.50" in cond and "snr=20\t2\t3\t66.67" in cond
    assert "noise=white,snr=0\t1\t2\t50.00" in cond
    sp = (dec / "spike_timing.tsv").read_text().splitlines()
    assert sp[0].split("\t")[:4] == ["hit_rate", "n_tokens", "mean_onset_offset_ms",
                                     "mean_abs_onset_offset_ms"]
    assert sp[1].split("\t")[1] == str(n_tokens)
    assert "WER 37.50" in capsys.readouterr().err


def test_score_main_exact_spike_values(tmp_path):
    data, dec = _make_dirs(tmp_path)
    _write(data / "text", ["a ONE TWO"])
    _write(data / "word_align", ["a 0 ONE 0.1000 0.4000", "a 1 TWO 0.5000 0.8000"])
    _write(dec / "text", ["a ONE TWO"])
    _write(dec / "token", ["a O N E <space> T W O"])
    # ONE at 0.08 0.12 0.40 ; TWO at 0.60 0.80 0.84   (frame shift 40 ms)
    _write(dec / "ctc_frames", ["a 2 3 10 12 15 20 21"])
    for f in ("utt2snr", "utt2noise"):
        (data / f).unlink()
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec)]) == 0
    js = json.loads((dec / "scores.json").read_text())
    assert js["spike_n_tokens"] == 6 and js["spike_hit_rate"] == pytest.approx(4 / 6)
    assert js["mean_onset_offset_ms"] == pytest.approx((-20 + 100) / 2)
    assert js["mean_abs_onset_offset_ms"] == pytest.approx((20 + 100) / 2)
    assert js["wer_by_snr"] == {} and js["aurora_table"] == {} and js["conditions_note"]
    # --frame_shift_ms overrides the file; --tolerance_ms widens the spans
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec),
                       "--frame_shift_ms", "40", "--tolerance_ms", "40"]) == 0
    js = json.loads((dec / "scores.json").read_text())
    assert js["spike_hit_rate"] == pytest.approx(1.0)


def test_score_main_skips_spikes(tmp_path):
    data, dec = _make_dirs(tmp_path)
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec)]) == 0
    assert (dec / "spike_timing.tsv").is_file()
    (dec / "ctc_frames").unlink()
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec)]) == 0
    js = json.loads((dec / "scores.json").read_text())
    assert js["spike_hit_rate"] is None and "ctc_frames" in js["spike_note"]
    assert not (dec / "spike_timing.tsv").exists()  # stale result removed
    assert js["wer"] == pytest.approx(37.5)

    data2, dec2 = _make_dirs(tmp_path / "second")
    (data2 / "word_align").unlink()
    assert score.main(["--data_dir", str(data2), "--decode_dir", str(dec2)]) == 0
    js = json.loads((dec2 / "scores.json").read_text())
    assert js["spike_n_tokens"] is None and "word_align" in js["spike_note"]


def test_score_main_errors_name_files_and_utts(tmp_path, capsys):
    data, dec = _make_dirs(tmp_path)
    _write(dec / "text", [f"{u} {t}".rstrip() for u, t in HYPS.items() if u != "b"])
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec)]) == 1
    err = capsys.readouterr().err
    assert "b" in err and str(dec / "text") in err
    assert not (dec / "scores.json").exists()

    data, dec = _make_dirs(tmp_path / "2")
    _write(dec / "ctc_frames", ["a 1 2", "b 1", "c", "d 1 2"])
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec)]) == 1
    err = capsys.readouterr().err
    assert "utterance a" in err and "token" in err

    data, dec = _make_dirs(tmp_path / "3")
    (dec / "frame_shift_ms").unlink()
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec)]) == 1
    assert "frame_shift_ms" in capsys.readouterr().err

    data, dec = _make_dirs(tmp_path / "4")
    _write(data / "word_align", ["a 0 ONE 0.1 0.4"])
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec)]) == 1
    err = capsys.readouterr().err
    assert "word_align" in err and "utterance a" in err


def test_spike_timing_survives_a_missing_word_separator():
    """Char-level alignment: 'ONETWO' without <space> still maps each char to its own word."""
    from espnet_oracle.utils.metrics import spike_timing

    words = [("ONE", 0.0, 0.4), ("TWO", 0.5, 0.9)]
    tokens = list("ONETWO")
    frames = [1, 2, 3, 13, 14, 15]  # 40 ms frames: ONE at 0.04-0.12 s, TWO at 0.52-0.60 s
    stats = spike_timing(words, tokens, frames, frame_shift_s=0.04)
    assert stats.n_tokens == 6 and stats.n_hits == 6
    assert stats.onset_offsets_s == pytest.approx([0.04, 0.02])
    # the same tokens spiking inside the wrong word are misses
    late = spike_timing(words, tokens, [13, 14, 15, 16, 17, 18], frame_shift_s=0.04)
    assert late.n_hits == 3
