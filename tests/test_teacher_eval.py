"""The copy probe (stage 6): transcript shuffling, follow counting, time-to-CER,
and the probe run on real tiny Oracle Teachers, one that copies and one that listens.

The probe must be able to fail. Two tiny Oracle Teachers (d = 32, one block) are
built through ``OracleASRTask`` and trained in-process on synthetic data:

* the copier: target positions on, trained on silent input (every feature at the
  training mean), so the only way to lower the CTC loss is to copy the target;
* the listener: synthetic "audio" in which every token is a fixed feature pattern
  for a few frames (+ noise), with the target made nearly useless (no positions,
  90 % of target tokens masked in training).

Both are then probed through ``teacher_eval.oracle_probes`` on one feature dir
(kaldiio feats.scp + text), exactly as stage 6 does.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
import yaml

from espnet_oracle.bin.teacher_eval import (
    FollowCounts,
    copy_probe,
    follow_counts,
    oracle_probes,
    other_transcripts,
    time_to_cer,
)

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


# --------------------------------------------------------------------------- #
# follow counting on hand-computed cases                                      #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "truth, fed, hyp, expected",
    [
        # a b d agree in truth and fed (both); x is fed's, where the truth says c
        ("abcd", "abxd", "abxd", FollowCounts(hyp_tokens=4, follow_fed=1, both=3)),
        # a b only in truth; z only in fed; q in neither (a substitution against both)
        ("abcd", "xyzd", "abzq", FollowCounts(hyp_tokens=4, follow_fed=1, follow_truth=2, neither=1)),
        # words: THE is the truth's, DOG the fed transcript's, SAT both; DOWN never output
        ("THE CAT SAT".split(), "A DOG SAT DOWN".split(), "THE DOG SAT".split(),
         FollowCounts(hyp_tokens=3, follow_fed=1, follow_truth=1, both=1)),
        # an inserted token equal to a fed token is still matched (to the fed transcript only)
        ("ab", "cab", "cab", FollowCounts(hyp_tokens=3, follow_fed=1, both=2)),
        # nothing output: no token takes a side
        ("ab", "cd", "", FollowCounts()),
    ],
)
def test_follow_counts_hand_computed(truth, fed, hyp, expected):
    assert follow_counts(truth, fed, hyp) == expected


def test_follow_rate_definition():
    assert FollowCounts(hyp_tokens=4, follow_fed=1, follow_truth=2, neither=1).follow_rate == pytest.approx(1 / 3)
    assert math.isnan(FollowCounts().follow_rate)


def test_copy_probe_baseline_and_follow_in_chars_and_words():
    refs = {"u": "AB CD", "v": "EF"}
    fed = {"u": "AB CE", "v": "GF"}
    hyps = {"u": "AB CE", "v": "EF"}  # u copies the fed E, v follows the truth
    chars = copy_probe(refs, fed, hyps, unit="char")
    # baseline: fed vs truth, 2 of 6 characters and 2 of 3 words differ
    assert chars["fed_vs_truth_cer"] == pytest.approx(100 * 2 / 6)
    assert chars["fed_vs_truth_wer"] == pytest.approx(100 * 2 / 3)
    assert (chars["hyp_tokens"], chars["follow_fed_tokens"], chars["follow_truth_tokens"]) == (6, 1, 1)
    assert chars["follow_rate"] == 0.5
    assert chars["follow_fed_per_token"] == pytest.approx(1 / 6)
    assert chars["follow_truth_per_token"] == pytest.approx(1 / 6)
    assert (chars["copy_rate"], chars["truth_rate"]) == (0.5, 0.5)
    words = copy_probe(refs, fed, hyps, unit="word")  # CE is fed's word, EF the truth's
    assert (words["hyp_tokens"], words["follow_fed_tokens"], words["follow_truth_tokens"]) == (3, 1, 1)
    assert words["fed_vs_truth_cer"] == chars["fed_vs_truth_cer"]


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


# --------------------------------------------------------------------------- #
# the probe on real tiny teachers                                             #
# --------------------------------------------------------------------------- #
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "f", "<sos/eos>"]  # conftest's token_file
LETTER_IDS = list(range(2, 8))
FEAT_DIM = 16
TOKEN_FRAMES, GAP_FRAMES = 8, 4  # 10 ms frames; the x4 subsampling leaves 3 frames per token
PATTERNS = np.random.default_rng(1234).normal(size=(len(TOKENS), FEAT_DIM)) * 1.5
COPIER_STEPS, LISTENER_STEPS = 1000, 250
TIMINGS = {}


def random_ids(rng, low=4, high=6):
    """A letter sequence of ``low``..``high`` tokens without immediate repeats."""
    ids = []
    for _ in range(int(rng.integers(low, high + 1))):
        ids.append(int(rng.choice([t for t in LETTER_IDS if not ids or t != ids[-1]])))
    return ids


def synthetic_audio(ids, rng) -> np.ndarray:
    """Noise, plus each token's feature pattern for TOKEN_FRAMES frames, gaps between."""
    frames = GAP_FRAMES + len(ids) * (TOKEN_FRAMES + GAP_FRAMES) + GAP_FRAMES
    feats = rng.normal(size=(frames, FEAT_DIM)) * 0.3
    for i, token in enumerate(ids):
        start = GAP_FRAMES + i * (TOKEN_FRAMES + GAP_FRAMES)
        feats[start : start + TOKEN_FRAMES] += PATTERNS[token]
    return feats.astype(np.float32)


def tiny_config(stats_file, **encoder_options) -> dict:
    return dict(
        model="oracle_teacher", model_conf=dict(ctc_weight=1.0),
        frontend=None, input_size=FEAT_DIM, specaug=None, preencoder=None,
        normalize="global_mvn", normalize_conf=dict(stats_file=str(stats_file)),
        encoder="oracle_teacher",
        encoder_conf=dict(
            source_encoder="transformer",
            source_encoder_conf=dict(output_size=32, attention_heads=4, linear_units=64, num_blocks=1,
                                     dropout_rate=0.0, positional_dropout_rate=0.0,
                                     attention_dropout_rate=0.0, input_layer="conv2d",
                                     normalize_before=True),
            num_fusion_blocks=1, fusion_attention_heads=4, fusion_linear_units=64,
            dropout_rate=0.0, **encoder_options),
        decoder=None, ctc_conf=dict(dropout_rate=0.0), token_type="char",
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe")
    # global-MVN stats of mean 0, variance 1: the training mean is the all-zero frame
    np.savez(path / "stats.npz", count=np.array(1000.0), sum=np.zeros(FEAT_DIM),
             sum_square=np.full(FEAT_DIM, 1000.0))
    return path


@pytest.fixture(scope="module")
def build(task, token_file, workdir):
    def _build(name, config, seed=0):
        torch.manual_seed(seed)  # the initial weights, whatever ran before
        conf = workdir / f"{name}.yaml"
        conf.write_text(yaml.safe_dump(config), encoding="utf-8")
        args = task.get_parser().parse_args(
            ["--config", str(conf), "--token_list", str(token_file), "--output_dir", str(workdir / name)])
        return task.build_model(args), args

    return _build


def train(model, steps, silent, seed, batch_size=16, lr=3e-3):
    """Plain Adam loop on freshly drawn synthetic batches; silent: features at the training mean."""
    from espnet_oracle.utils.inference import pad

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        ids = [random_ids(rng, 3, 6) for _ in range(batch_size)]
        feats = [synthetic_audio(s, rng) for s in ids]
        if silent:
            feats = [np.zeros_like(f) for f in feats]
        speech, speech_lengths = pad(feats, 0.0)
        text, text_lengths = pad([np.asarray(s, dtype=np.int64) for s in ids], -1)
        loss, _, _ = model(speech, speech_lengths, text, text_lengths)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
    model.eval()
    return model


@pytest.fixture(scope="module")
def probe_dir(workdir):
    """A stage-2-like feature dir: 30 synthetic utterances (feats.scp, feats_shape, text)."""
    import kaldiio

    path = workdir / "probe_set"
    path.mkdir()
    rng = np.random.default_rng(7)
    texts, shapes = [], []
    with kaldiio.WriteHelper(f"ark,scp:{path / 'feats.ark'},{path / 'feats.scp'}") as writer:
        for i in range(30):
            ids = random_ids(rng)
            feats = synthetic_audio(ids, rng)
            utt = f"utt{i:03d}"
            writer(utt, feats)
            texts.append(f"{utt} {''.join(TOKENS[t] for t in ids)}")
            shapes.append(f"{utt} {feats.shape[0]},{FEAT_DIM}")
    (path / "text").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (path / "feats_shape").write_text("\n".join(shapes) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def copier(build, workdir):
    model, args = build("copier", tiny_config(workdir / "stats.npz", target_positional_encoding=True))
    start = time.perf_counter()
    train(model, COPIER_STEPS, silent=True, seed=1)
    TIMINGS["copier"] = time.perf_counter() - start
    return model, args


@pytest.fixture(scope="module")
def listener(build, workdir):
    model, args = build("listener", tiny_config(workdir / "stats.npz", target_positional_encoding=False,
                                                target_token_dropout=0.9))
    start = time.perf_counter()
    train(model, LISTENER_STEPS, silent=False, seed=2)
    TIMINGS["listener"] = time.perf_counter() - start
    return model, args


def run_probes(model_and_args, probe_dir):
    from espnet_oracle.utils.inference import FeatureSet

    model, args = model_and_args
    entries = oracle_probes(model, FeatureSet(probe_dir, args), seed=0)
    for probe, entry in entries.items():
        print(probe, {k: round(v, 3) if isinstance(v, float) else v for k, v in entry.items()})
    return entries


def test_probe_catches_a_copying_teacher(copier, probe_dir):
    entries = run_probes(copier, probe_dir)
    print("copier training seconds:", round(TIMINGS["copier"], 1))
    assert list(entries) == ["true_transcript", "other_transcript", "zeroed_source",
                             "other_transcript_zeroed_source"]
    other, zeroed = entries["other_transcript"], entries["other_transcript_zeroed_source"]
    # the fed transcripts are far from the truth, so following one is visible
    assert other["fed_vs_truth_cer"] > 50.0
    # the old zeroed-audio probe: with the true transcript and no audio it is near perfect
    assert entries["zeroed_source"]["cer"] < 10.0
    for entry in (other, zeroed):
        assert entry["follow_rate"] >= 0.8
        assert entry["follow_fed_per_token"] > 3 * entry["follow_truth_per_token"]
        assert entry["truth_rate"] == 0.0
        assert entry["cer_vs_fed"] < entry["cer"]
    # Silence is what it was trained on: there it copies whole utterances. Real audio
    # (never seen in training) perturbs it into partial copies, which the whole-utterance
    # copy rate undercounts (measured here: copy rate 0.13, follow rate 0.97; over three
    # initial weights, copy rate 0.13-0.53, follow rate 0.95-1.0).
    assert zeroed["copy_rate"] >= 0.5
    assert other["follow_rate"] > other["copy_rate"] + 0.3


def test_probe_clears_a_listening_teacher(listener, probe_dir):
    entries = run_probes(listener, probe_dir)
    print("listener training seconds:", round(TIMINGS["listener"], 1))
    true, other = entries["true_transcript"], entries["other_transcript"]
    assert true["cer"] < 10.0
    assert other["follow_rate"] <= 0.2
    assert other["follow_truth_per_token"] > 3 * other["follow_fed_per_token"]
    assert other["copy_rate"] == 0.0 and other["truth_rate"] >= 0.8
    assert other["cer"] < 10.0 < other["cer_vs_fed"]
    # without audio it has nothing to write the fed transcript from
    zeroed = entries["other_transcript_zeroed_source"]
    assert zeroed["copy_rate"] == 0.0
    assert zeroed["follow_fed_per_token"] <= 0.2
    assert entries["zeroed_source"]["cer"] > 50.0


def test_teacher_eval_main_writes_the_probe_rows(copier, build, workdir, probe_dir, monkeypatch, tmp_path):
    """Stage 6's entry point end to end (models handed in), then stage 10's copy-probe table."""
    import espnet_oracle.utils.inference as inference
    from espnet_oracle.bin import make_results, teacher_eval

    config = tiny_config(workdir / "stats.npz")
    conventional_config = dict(config, model="espnet", encoder="transformer",
                               encoder_conf=config["encoder_conf"]["source_encoder_conf"])
    conventional = build("conventional", conventional_config)
    conventional[0].eval()
    models = {"conventional": conventional, "oracle": copier}
    exp = tmp_path / "exp"
    for name in models:
        (exp / name).mkdir(parents=True)
        (exp / name / "cer_curve.tsv").write_text(
            "epoch\tdev_cer\twall_seconds\n1\t50.0\t10.0\n2\t20.0\t20.0\n", encoding="utf-8")
    monkeypatch.setattr(inference, "load_model", lambda exp_dir, device="cpu": models[exp_dir.name])
    dump = probe_dir.parent
    teacher_eval.main(["--conventional_dir", str(exp / "conventional"), "--oracle_dir", str(exp / "oracle"),
                       "--dump_dir", str(dump), "--sets", "probe_set", "--out_dir",
                       str(exp / "teacher_eval"), "--num_attention_plots", "0"])

    lines = (exp / "teacher_eval" / "summary.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "system\tset\tprobe\tmetric\tvalue"
    rows = {tuple(line.split("\t")[:4]): line.split("\t")[4] for line in lines[1:]}
    assert all(len(line.split("\t")) == 5 for line in lines)
    for probe in ("other_transcript", "other_transcript_zeroed_source"):
        for metric in ("cer", "wer", "copy_rate", "truth_rate", "cer_vs_fed", "fed_vs_truth_cer",
                       "fed_vs_truth_wer", "follow_rate", "follow_fed_per_token", "follow_truth_per_token",
                       "hyp_tokens", "follow_fed_tokens", "follow_truth_tokens"):
            float(rows[("teacher_oracle", "probe_set", probe, metric)])
    assert float(rows[("teacher_oracle", "probe_set", "other_transcript", "follow_rate")]) >= 0.8
    assert ("teacher_oracle", "probe_set", "zeroed_source", "cer") in rows
    assert ("teacher_conventional", "probe_set", "audio_only", "cer") in rows
    # the chance level: the conventional teacher's output against the same fed transcripts
    assert float(rows[("teacher_conventional", "probe_set", "other_transcript_chance", "fed_vs_truth_cer")]) \
        == float(rows[("teacher_oracle", "probe_set", "other_transcript", "fed_vs_truth_cer")])
    assert ("teacher_conventional", "probe_set", "other_transcript_chance", "follow_rate") in rows
    report = json.loads((exp / "teacher_eval" / "summary.json").read_text(encoding="utf-8"))
    assert report["follow_unit"] == "char"
    assert report["sets"]["probe_set"]["teacher_oracle/other_transcript_zeroed_source"]["follow_rate"] >= 0.8

    results = tmp_path / "RESULTS.md"
    make_results.main(["--exp", str(exp), "--sets", "probe_set", "--out", str(results)])
    text = results.read_text(encoding="utf-8")
    header = next(line for line in text.splitlines() if line.startswith("| set | conventional CER"))
    row = next(line for line in text.splitlines() if line.startswith("| probe_set |"))
    names, cells = ([c.strip() for c in line.strip("|").split("|")] for line in (header, row))
    assert len(names) == len(cells) == 13
    assert "chance follow rate" in names
    follow = [float(cell.rstrip(" %")) for name, cell in zip(names, cells) if name == "… follow rate"]
    assert len(follow) == 2 and min(follow) >= 80.0  # real audio, zeroed audio
    assert float(cells[names.index("fed vs truth CER")]) > 50.0


def test_feature_set_reads_raw_audio_first_channel(build, workdir):
    """--feats_type raw: FeatureSet.get gives each utterance's samples, (samples,) float32, of the
    first channel of a multi-channel file."""
    import soundfile as sf

    from espnet_oracle.utils.inference import FeatureSet

    _, args = build("raw_reader", tiny_config(workdir / "stats.npz"))
    raw = workdir / "raw_set"
    raw.mkdir()
    rng = np.random.default_rng(3)
    mono, stereo = rng.uniform(-0.5, 0.5, 1600), rng.uniform(-0.5, 0.5, (2400, 2))
    sf.write(raw / "mono.wav", mono, 16000, subtype="FLOAT")
    sf.write(raw / "stereo.wav", stereo, 16000, subtype="FLOAT")
    (raw / "wav.scp").write_text(f"utt_mono {raw / 'mono.wav'}\nutt_stereo {raw / 'stereo.wav'}\n")
    (raw / "text").write_text("utt_mono ab\nutt_stereo ba\n")
    features = FeatureSet(raw, args)
    assert features.raw
    for utt, expected in (("utt_mono", mono), ("utt_stereo", stereo[:, 0])):
        got = features.get(utt).feats
        assert got.dtype == np.float32 and got.shape == expected.shape, (utt, got.shape)
        np.testing.assert_allclose(got, expected, atol=1e-7)
