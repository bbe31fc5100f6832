"""Tests of espnet_oracle.utils.metrics and espnet_oracle.bin.score on hand-made cases."""

from __future__ import annotations

import json
import math
import random

import numpy as np

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
        for _ in (0,):
            ops = M.align(ref, hyp)
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



def test_wer_cer_exact():
    res = M.wer_cer(REFS, HYPS)
    assert res.per_utt == {"a": (0, 3, 0, 11), "b": (1, 2, 4, 8), "c": (1, 1, 3, 3), "d": (1, 2, 4, 10)}
    assert res.wer == pytest.approx(100 * 3 / 8) and res.cer == pytest.approx(100 * 11 / 32)
    assert res.ser == pytest.approx(75.0) and res.n_utts == 4
    assert M.wer_cer({"x": "ONE TWO"}, {"x": "ONETWO"}).cer == 0.0  # spaces excluded
    with pytest.raises(M.ScoringError, match="no hypothesis: b"):
        M.wer_cer(REFS, {u: h for u, h in HYPS.items() if u != "b"})


def test_wer_by_condition():
    res = M.wer_cer(REFS, HYPS)
    by = M.wer_by_condition(res, UTT2SNR)
    assert list(by) == ["clean", "20", "0"]  # names first, then numbers high to low
    assert by["20"] == {"n_utts": 2, "n_words": 3, "errors": 2, "wer": pytest.approx(200 / 3)}
    with pytest.raises(M.ScoringError, match="have no"):
        M.wer_by_condition(res, {"a": "clean"})


def test_score_main_writes_everything(tmp_path):
    data, dec = _make_dirs(tmp_path)
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec),
                       "--condition_files", "utt2snr", "utt2noise", "utt2missing"]) == 0
    js = json.loads((dec / "scores.json").read_text())
    assert js["wer"] == pytest.approx(37.5) and js["n_words"] == 8 and js["word_errors"] == 3
    assert js["wer_by_condition"]["snr"] == {"clean": 0.0, "20": pytest.approx(200 / 3), "0": 50.0}
    assert set(js["wer_by_condition"]) == {"snr", "noise"}
    rows = (dec / "score_conditions.tsv").read_text().splitlines()
    assert rows[1] == "all\t4\t8\t37.50" and "snr=0,noise=white\t1\t2\t50.00" in rows
    assert (dec / "ref.trn").read_text().splitlines()[1] == "FOUR FIVE (b)"
    assert (dec / "hyp.trn").read_text().splitlines()[2] == " (c)"
    assert "b\terrors=1 n=2\tref=FOUR FIVE\thyp=FOUR NINE FIVE" in (dec / "score_wer" / "result.txt").read_text()
    assert js["spike"]["n_tokens"] > 0 and (dec / "spike_timing.tsv").is_file()


def test_score_main_exact_spike_values(tmp_path):
    data, dec = _make_dirs(tmp_path)
    _write(data / "text", ["a ONE TWO"])
    _write(data / "word_align", ["a 0 ONE 0.1000 0.4000", "a 1 TWO 0.5000 0.8000"])
    _write(dec / "text", ["a ONE TWO"])
    _write(dec / "token", ["a O N E <space> T W O"])
    _write(dec / "ctc_frames", ["a 2 3 10 12 15 20 21"])  # ONE at 0.08 0.12 0.40; TWO at 0.60 0.80 0.84
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec)]) == 0
    js = json.loads((dec / "scores.json").read_text())
    assert js["spike"]["n_tokens"] == 6 and js["spike_hit_rate"] == pytest.approx(4 / 6)
    assert js["mean_onset_offset_ms"] == pytest.approx((-20 + 100) / 2)
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec), "--tolerance_ms", "40"]) == 0
    assert json.loads((dec / "scores.json").read_text())["spike_hit_rate"] == pytest.approx(1.0)
    # decode.py's frame_offset_ms moves every spike (+20 ms: as offset_s=0.02 in test_spike_timing_hand_made)
    (dec / "frame_offset_ms").write_text("20\n")
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec)]) == 0
    js = json.loads((dec / "scores.json").read_text())
    assert js["frame_offset_ms"] == 20.0 and js["mean_onset_offset_ms"] == pytest.approx((0 + 120) / 2)
    assert js["spike"]["mean_abs_onset_offset_ms"] == pytest.approx(60.0)
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec), "--offset_ms", "0"]) == 0  # override
    assert json.loads((dec / "scores.json").read_text())["mean_onset_offset_ms"] == pytest.approx(40.0)


def test_score_main_without_optional_files(tmp_path, capsys):
    data, dec = _make_dirs(tmp_path)
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec)]) == 0
    assert (dec / "spike_timing.tsv").is_file()
    for f in ("word_align", "utt2snr", "utt2noise"):
        (data / f).unlink()
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec), "--condition_files", "utt2snr"]) == 0
    js = json.loads((dec / "scores.json").read_text())
    assert js["spike_hit_rate"] is None and js["wer_by_condition"] == {} and js["wer"] == pytest.approx(37.5)
    assert not (dec / "spike_timing.tsv").exists()  # stale result removed
    _write(dec / "text", [f"{u} {t}".rstrip() for u, t in HYPS.items() if u != "b"])
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec)]) == 1
    assert "b" in capsys.readouterr().err


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
    # onset error |onset| = 20, 100, 0 ms: sd sqrt(2800), 95 % CI 40 +- 1.96 sd / sqrt(3)
    summary, half = st.summary(), 1.96 * math.sqrt(2800 / 3)
    assert summary["abs_onset_offset_sd_ms"] == pytest.approx(math.sqrt(2800))
    assert summary["abs_onset_offset_ci95_low_ms"] == pytest.approx(40 - half)
    assert summary["abs_onset_offset_ci95_high_ms"] == pytest.approx(40 + half)

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


def test_spike_timing_empty_summary():
    s = M.SpikeStats().summary()
    assert s["n_onsets"] == 0 and s["abs_onset_offset_sd_ms"] is None and s["abs_onset_offset_ci95_low_ms"] is None


def test_pooled_mean_ci_equals_the_ci_of_the_union():
    rng = np.random.default_rng(1)
    parts = [rng.exponential(50.0, n) for n in (5, 1, 12)]
    union = np.concatenate(parts)
    mean, low, high = M.pooled_mean_ci((len(x), x.mean(), x.std(ddof=1) if len(x) > 1 else None) for x in parts)
    half = 1.96 * union.std(ddof=1) / math.sqrt(len(union))
    assert (mean, low, high) == pytest.approx((union.mean(), union.mean() - half, union.mean() + half))
    assert M.pooled_mean_ci([(1, 7.0, None)]) == (7.0, None, None)
    assert M.pooled_mean_ci([(0, None, None)]) is None


def test_paired_bootstrap():
    errors, words = [0, 2, 1, 3, 0, 1], [3, 4, 2, 5, 1, 3]
    same = M.paired_bootstrap(errors, words, errors, words)
    assert same == {"delta": 0.0, "low": 0.0, "high": 0.0, "p": 1.0}
    better = M.paired_bootstrap([e - 1 if e else e for e in errors], words, [e + 1 for e in errors], words)
    assert better["delta"] < 0 and better["high"] < 0 and better["p"] == 0.0
    worse = M.paired_bootstrap([e + 1 for e in errors], words, errors, words)
    assert worse["low"] > 0 and worse["p"] == 0.0
    # by hand: a 3 errors / 10 words = 30 %, b 5 / 10 = 50 %: delta -20 points
    tiny = M.paired_bootstrap([1, 0, 2], [4, 2, 4], [2, 1, 2], [4, 2, 4])
    assert tiny["delta"] == pytest.approx(-20.0) and tiny["low"] <= -20.0 <= tiny["high"]
    assert 0.0 <= tiny["p"] <= 1.0
    assert M.paired_bootstrap([1, 0, 2], [4, 2, 4], [2, 1, 2], [4, 2, 4]) == tiny  # fixed seed


def _impulse_centres(f, x):
    """{output frame: centre of the input frames whose perturbation changes it}."""
    import torch

    seen: dict = {}
    with torch.no_grad():
        y = f(x)
        for j in range(x.shape[1]):
            for sign in (1.0, -1.0):
                x2 = x.clone()
                x2[0, j] += 10.0 * sign
                for t in ((f(x2) - y).abs().amax(-1)[0] > 1e-6).nonzero().flatten().tolist():
                    seen.setdefault(t, set()).add(j)
    return {t: (min(v) + max(v)) / 2 for t, v in seen.items()}, y.shape[1]


def test_receptive_field_centre_of_espnet_subsampling():
    """conv2d: frame t is centred on input frame 4 t + 3, i.e. 40 t + 42.5 ms for 10 ms Kaldi fbank
    (25 ms window); an impulse experiment finds the same centres (inputs that change output t)."""
    from types import SimpleNamespace

    import torch
    from espnet.nets.pytorch_backend.transformer import subsampling

    from espnet_oracle.asr.encoder.crnn_encoder import CRNNEncoder
    from espnet_oracle.utils.inference import FeatureSet, receptive_field_centre

    torch.manual_seed(0)
    for name, jump, centre in (("Conv2dSubsampling", 4, 3), ("Conv2dSubsampling6", 6, 5),
                               ("Conv2dSubsampling8", 8, 7)):
        sub = getattr(subsampling, name)(16, 4, 0.0).eval()
        assert receptive_field_centre(SimpleNamespace(embed=sub)) == centre
        nested = SimpleNamespace(encoder=SimpleNamespace(source_encoder=SimpleNamespace(embed=sub)))
        assert receptive_field_centre(nested) == centre  # the Oracle Teacher's source encoder
        found, frames = _impulse_centres(lambda x: sub(x, None)[0], torch.randn(1, 40, 16))
        assert found == {t: centre + jump * t for t in range(frames)}
    conv2d = SimpleNamespace(embed=subsampling.Conv2dSubsampling(16, 4, 0.0))
    fbank = SimpleNamespace(input_centre_ms=12.5, input_shift_ms=10.0)
    assert FeatureSet.frame_offset_ms(fbank, conv2d) == 42.5
    assert receptive_field_centre(SimpleNamespace(embed=None)) == 0.0
    # CRNN: padded 3x3 convolutions, 2x width poolings: (S - 1) / 2 + S t (the edge frames see padding)
    crnn = CRNNEncoder(16, 8, input_height=16, channels=(4, 4), width_subsampling=4, batch_norm=False,
                       sequence_model="none").eval()
    assert receptive_field_centre(crnn) == 1.5
    found, frames = _impulse_centres(lambda x: crnn.trunk(x, torch.tensor([x.shape[1]]))[0], torch.randn(1, 24, 16))
    assert {t: found[t] for t in range(1, frames - 1)} == {t: 1.5 + 4 * t for t in range(1, frames - 1)}


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



# --------------------------------------------------------------------------- #
# text recognition: word accuracy, 1 - NED (score.py --extra_metrics)          #
# --------------------------------------------------------------------------- #
STR_REFS = {"a": "hello", "b": "abc12", "c": "car", "d": "x", "e": "it's"}
STR_HYPS = {"a": "Hello", "b": "abd12", "c": "cars", "d": "", "e": "its"}
# a, e: exact after lower-casing / dropping non-alphanumerics; 1 - ED/max: a 1, b 1 - 1/5, c 1 - 1/4, d 0, e 1
STR_ACC, STR_1_NED = 100 * 2 / 5, 100 * (1 + 0.8 + 0.75 + 0 + 1) / 5


def test_word_accuracy_and_one_minus_ned_by_hand():
    assert M.alnum_lower("It's A-4 ok") == "itsa4ok"
    out = M.word_accuracy_ned(STR_REFS, STR_HYPS)
    assert out["n_correct"] == 2
    assert out["word_accuracy"] == pytest.approx(STR_ACC) and out["one_minus_ned"] == pytest.approx(STR_1_NED)
    assert M.word_accuracy_ned({"x": ""}, {"x": ""})["one_minus_ned"] == 100.0  # both empty: identical


def test_score_extra_metrics_only_when_asked(tmp_path):
    data, dec = tmp_path / "data", tmp_path / "dec"
    _write(data / "text", [f"{u} {t}" for u, t in STR_REFS.items()])
    _write(dec / "text", [f"{u} {t}".rstrip() for u, t in STR_HYPS.items()])
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec)]) == 0
    plain = json.loads((dec / "scores.json").read_text())
    assert "word_accuracy" not in plain and "one_minus_ned" not in plain
    assert score.main(["--data_dir", str(data), "--decode_dir", str(dec),
                       "--extra_metrics", "word_accuracy", "one_minus_ned"]) == 0
    out = json.loads((dec / "scores.json").read_text())
    assert out["word_accuracy"] == pytest.approx(STR_ACC) and out["one_minus_ned"] == pytest.approx(STR_1_NED)
    assert {k: v for k, v in out.items() if k not in ("word_accuracy", "one_minus_ned")} == plain
    # single-word references, no punctuation changed by the normalisation: word accuracy = 100 - WER
    refs = {u: t for u, t in STR_REFS.items() if u != "e"}
    assert M.word_accuracy_ned(refs, {u: STR_HYPS[u].lower() for u in refs})["word_accuracy"] == pytest.approx(
        100 - M.wer_cer(refs, {u: STR_HYPS[u].lower() for u in refs}).wer)


def test_score_refuses_an_unknown_metric_before_writing(tmp_path):
    data, dec = tmp_path / "data", tmp_path / "dec"
    _write(data / "text", [f"{u} {t}" for u, t in STR_REFS.items()])
    _write(dec / "text", [f"{u} {t}".rstrip() for u, t in STR_HYPS.items()])
    with pytest.raises(ValueError, match="unknown --extra_metrics.*'bleu'"):
        score.score(data, dec, extra_metrics=("word_accuracy", "bleu"))
    assert sorted(p.name for p in dec.iterdir()) == ["text"]
