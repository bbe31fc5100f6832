"""KD variants (issue 12): Guided CTC, sequence-level KD, renormalised non-blank KD,
one-stage oracle self-distillation and its export, averaged teacher posteriors.

Losses are checked against hand-computed small cases; the models are tiny
(d = 16/32, one block) and built through the task (``espnet2.tasks.asr`` is
imported once, module-scoped fixture).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from espnet_oracle.asr.kd_loss import frame_kd_loss, guided_ctc_loss, weighted_ctc_loss
from espnet_oracle.asr.length_masked_cer import registered_class
from espnet_oracle.utils.teacher_hyps import (
    pack_nbest,
    parse_nbest,
    read_teacher_hyps,
    unpack_batch,
    unpack_nbest,
    write_teacher_hyps,
)

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "f", "g", "h", "<sos/eos>"]
V = len(TOKENS)
TINY_STUDENT_ARGS = [
    "--encoder_conf", "output_size=16",
    "--encoder_conf", "attention_heads=2",
    "--encoder_conf", "linear_units=32",
    "--encoder_conf", "num_blocks=1",
]
TINY_ORACLE_ARGS = [
    "--encoder_conf", "source_encoder_conf.output_size=32",
    "--encoder_conf", "source_encoder_conf.linear_units=64",
    "--encoder_conf", "source_encoder_conf.num_blocks=1",
    "--encoder_conf", "fusion_linear_units=64",
]
UTT_IDS = ["spk1-utt-a", "spk1-utt-b", "spk2-utt-c"]


def logits_of(probs):
    """Logits whose softmax is ``probs`` (any shape, last axis normalised)."""
    return torch.log(torch.tensor(probs, dtype=torch.float32))


# ---------------------------------------------------------------------------
# Guided CTC


def test_guided_ctc_hand_case_padding_and_gradient():
    # V = 3: blank 0, tokens 1, 2. Teacher argmax per frame: 1, blank, 2, (2 = padding in utt 2)
    teacher = torch.log(torch.tensor([
        [[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.1, 0.7]],
        [[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.1, 0.7]],
    ]))
    probs = [[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]]
    student = logits_of([probs, probs]).requires_grad_(True)
    lengths = torch.tensor([3, 2])
    loss = guided_ctc_loss(student, teacher, lengths, blank_id=0)
    assert loss.shape == (2,)
    # utt 1: spikes at frames 0 (token 1) and 2 (token 2): (1 - 0.5) + (1 - 0.7)
    # utt 2: frame 2 is padding, frame 1 is the teacher's blank: (1 - 0.5)
    torch.testing.assert_close(loss, torch.tensor([0.8, 0.5]), atol=1e-6, rtol=0)
    loss.sum().backward()
    grad = student.grad
    # d(1 - p_k)/dz_j = -p_k (delta_kj - p_j); frame 0 of utt 1: k = 1
    p = torch.tensor(probs[0])
    expected = -p[1] * (torch.eye(3)[1] - p)
    torch.testing.assert_close(grad[0, 0], expected, atol=1e-6, rtol=0)
    assert float(grad[:, 1].abs().sum()) == 0  # the teacher's blank frames are not guided
    assert float(grad[1, 2].abs().sum()) == 0  # padding
    assert float(grad[0, 2].abs().sum()) > 0


def test_guided_ctc_zero_at_teacher_spikes_and_blank_id():
    g = torch.Generator().manual_seed(0)
    teacher = torch.log_softmax(torch.randn(2, 6, V, generator=g) * 3, -1)
    lengths = torch.tensor([6, 4])
    best = teacher.argmax(-1)
    peaky = torch.nn.functional.one_hot(best, V).float() * 60.0  # student = teacher's argmax
    assert float(guided_ctc_loss(peaky, teacher, lengths).abs().max()) < 1e-6
    # another blank id moves which frames count
    uniform = torch.zeros(2, 6, V)
    for blank in (0, 3):
        spikes = (best != blank) & (torch.arange(6) < lengths[:, None])
        expected = spikes.sum(1).float() * (1 - 1 / V)
        torch.testing.assert_close(guided_ctc_loss(uniform, teacher, lengths, blank), expected)
    with pytest.raises(ValueError, match="shape"):
        guided_ctc_loss(uniform[..., :-1], teacher, lengths)


# ---------------------------------------------------------------------------
# teacher_nonblank_renorm


def test_renormalised_nonblank_kd_hand_case():
    # two frames, V = 2; teacher frame 0 spikes on token 1, frame 1 is blank
    teacher = torch.log(torch.tensor([[[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]]]))
    student = logits_of([[[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]])
    lengths = torch.tensor([2])  # frame 2 is padding
    kl0 = 0.2 * math.log(0.2 / 0.5) + 0.8 * math.log(0.8 / 0.5)
    kl1 = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    mask = teacher.argmax(-1) != 0
    full = frame_kd_loss(student, teacher, lengths)
    drop = frame_kd_loss(student, teacher, lengths, frame_mask=mask)
    renorm = frame_kd_loss(student, teacher, lengths, frame_mask=mask, renormalize=True)
    assert float(full) == pytest.approx(kl0 + kl1, abs=1e-6)
    assert float(drop) == pytest.approx(kl0, abs=1e-6)
    assert float(renorm) == pytest.approx(kl0 * 2 / 1, abs=1e-6)  # n / m = 2 valid / 1 selected


def test_renormalised_kd_batch_rules():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(3, 8, V, generator=g)
    teacher = torch.log_softmax(torch.randn(3, 8, V, generator=g) * 3, -1)
    lengths = torch.tensor([8, 5, 3])
    mask = torch.rand(3, 8, generator=g) < 0.5
    mask[1, :5] = False  # utterance 2: no selected frame -> 0, not nan
    mask[0, 0] = True
    out = frame_kd_loss(student, teacher, lengths, 1.5, mask, renormalize=True)
    plain = frame_kd_loss(student, teacher, lengths, 1.5, mask)
    valid = torch.arange(8) < lengths[:, None]
    m = (mask & valid).sum(1)
    for b in range(3):
        if int(m[b]) == 0:
            assert float(out[b]) == 0
        else:
            assert float(out[b]) == pytest.approx(float(plain[b]) * int(lengths[b]) / int(m[b]), rel=1e-6)
    # with every frame selected it is the plain KD; without a mask renormalize is a no-op
    allmask = torch.ones(3, 8, dtype=torch.bool)
    ref = frame_kd_loss(student, teacher, lengths, 1.5)
    torch.testing.assert_close(frame_kd_loss(student, teacher, lengths, 1.5, allmask, True), ref)
    torch.testing.assert_close(frame_kd_loss(student, teacher, lengths, 1.5, None, True), ref)
    # a KL equal on every frame: the renormalised total equals "all" frames
    flat_t = teacher[:, :1].expand(-1, 8, -1)
    flat_s = student[:, :1].expand(-1, 8, -1)
    keep = mask.clone()
    keep[1, 0] = True
    torch.testing.assert_close(frame_kd_loss(flat_s, flat_t, lengths, 1.0, keep, True),
                               frame_kd_loss(flat_s, flat_t, lengths, 1.0), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# sequence-level KD loss


def test_weighted_ctc_hand_case():
    # V = 2 (blank 0, token 1), T = 2: P([1]) = p1(1)p2(1) + p1(1)p2(0) + p1(0)p2(1)
    probs = [[0.4, 0.6], [0.7, 0.3], [0.5, 0.5]]
    student = logits_of([probs, probs]).requires_grad_(True)
    lengths = torch.tensor([2, 2])
    p_one = 0.6 * 0.3 + 0.6 * 0.7 + 0.4 * 0.3  # 0.72
    p_empty = 0.4 * 0.7  # all blank
    nbest = [
        [(0.75, [1]), (0.25, [])],
        [(1.0, [1, 1]), (0.0, [1])],  # [1, 1] needs 3 frames: infeasible -> 0 (zero_infinity)
    ]
    loss = weighted_ctc_loss(student, lengths, nbest, blank_id=0)
    assert loss.shape == (2,)
    expected0 = 0.75 * -math.log(p_one) + 0.25 * -math.log(p_empty)
    assert float(loss[0].detach()) == pytest.approx(expected0, abs=1e-5)
    assert float(loss[1].detach()) == 0.0
    loss.sum().backward()
    assert torch.isfinite(student.grad).all()
    assert float(student.grad[0, 2].abs().sum()) == 0  # padding frame
    assert float(student.grad[1].abs().sum()) == 0
    # 1-best equals torch's CTC with the same targets; no hypothesis at all -> 0
    single = weighted_ctc_loss(student.detach(), lengths, [[(1.0, [1])], [(1.0, [1])]])
    torch.testing.assert_close(single, torch.full((2,), -math.log(p_one)), atol=1e-5, rtol=0)
    none = weighted_ctc_loss(student.detach(), lengths, [[(0.0, [1])], [(0.0, [])]])
    torch.testing.assert_close(none, torch.zeros(2))
    with pytest.raises(ValueError, match="hypothesis lists"):
        weighted_ctc_loss(student, lengths, nbest[:1])


# ---------------------------------------------------------------------------
# teacher_hyps file, packing, ESPnet data type, writer tool


NBEST = {
    "utt1": [(1.0, [5, 3, 9])],
    "utt2": [(0.625, [5, 3, 9]), (0.25, [5, 3]), (0.125, [5, 9])],
    "utt3": [(1.0, [])],
}


def test_teacher_hyps_file_round_trip(tmp_path):
    path = tmp_path / "teacher_hyp.txt"
    write_teacher_hyps(path, NBEST)
    lines = path.read_text().splitlines()
    assert lines[0] == "utt1 1.0 5 3 9"
    assert lines[1] == "utt2 0.625 5 3 9 | 0.25 5 3 | 0.125 5 9"
    assert lines[2] == "utt3 1.0"
    assert read_teacher_hyps(path) == NBEST
    for hyps in NBEST.values():
        packed = pack_nbest(hyps)
        assert packed.dtype == np.float32 and packed.ndim == 1
        assert unpack_nbest(packed) == hyps
        assert unpack_nbest(np.concatenate([packed, np.zeros(4, np.float32)])) == hyps
    assert pack_nbest(NBEST["utt2"]).tolist() == [3, 0.625, 3, 5, 3, 9, 0.25, 2, 5, 3, 0.125, 2, 5, 9]
    for bad in ("x 1 2", "0.5 1 | ", "-1 4", "nan 3", "1.0 -2"):
        with pytest.raises(ValueError):
            parse_nbest(bad, "here")
    (tmp_path / "dup.txt").write_text("u 1.0 2\nu 1.0 3\n")
    with pytest.raises(ValueError, match="twice"):
        read_teacher_hyps(tmp_path / "dup.txt")


def test_teacher_hyps_data_type(task, tmp_path):
    from espnet2.train.collate_fn import common_collate_fn
    from espnet2.train.dataset import DATA_TYPES, ESPnetDataset

    assert "teacher_hyps" in DATA_TYPES
    assert "teacher_hyp" in task.optional_data_names(train=True)
    assert "teacher_post" in task.optional_data_names(train=True)
    path = tmp_path / "teacher_hyp.txt"
    write_teacher_hyps(path, NBEST)
    dataset = ESPnetDataset([(str(path), "teacher_hyp", "teacher_hyps")])
    uid, data = dataset["utt2"]
    assert data["teacher_hyp"].dtype == np.float32
    # the collate function pads (with 0) and adds teacher_hyp_lengths; unpacking ignores the padding
    uids, batch = common_collate_fn([dataset[u] for u in ("utt1", "utt2", "utt3")])
    assert batch["teacher_hyp"].shape == (3, len(pack_nbest(NBEST["utt2"])))
    assert unpack_batch(batch["teacher_hyp"], batch["teacher_hyp_lengths"]) == [
        NBEST[u] for u in uids
    ]
    with pytest.raises(KeyError, match="write_teacher_hyps"):
        dataset.loader_dict["teacher_hyp"]["nope"]


def test_write_teacher_hyps_tool(tmp_path):
    from espnet_oracle.bin.write_teacher_hyps import build_nbest, main

    token_list = tmp_path / "tokens.txt"
    token_list.write_text("\n".join(TOKENS) + "\n")
    rank1 = tmp_path / "token.1"
    rank1.write_text("u1 a b c\nu2 d\nu3\n")  # u3: empty hypothesis
    out = tmp_path / "hyp.txt"
    main(["--token_list", str(token_list), "--hyp", str(rank1), "--out", str(out)])
    assert read_teacher_hyps(out) == {"u1": [(1.0, [2, 3, 4])], "u2": [(1.0, [5])], "u3": [(1.0, [])]}
    # N-best with rank weights; u2 has no rank-2 hypothesis, u1's rank 3 repeats rank 1 (merged)
    hyps = [{"u1": "a b c", "u2": "d"}, {"u1": "a b"}, {"u1": "a b c"}]
    nbest = build_nbest(hyps, TOKENS, weights=[0.5, 0.3, 0.2])
    assert nbest["u1"] == [(pytest.approx(0.7), [2, 3, 4]), (pytest.approx(0.3), [2, 3])]
    assert nbest["u2"] == [(1.0, [5])]
    # score-based: softmax(score / T)
    scores = [{"u1": "-1.0", "u2": "-3.0"}, {"u1": "-2.0"}]
    nbest = build_nbest(hyps[:2], TOKENS, scores=scores, score_temperature=2.0)
    w = np.exp([-0.5, -1.0]) / np.exp([-0.5, -1.0]).sum()
    assert [h[0] for h in nbest["u1"]] == pytest.approx(w.tolist())
    for bad_hyps, match in (([{"u1": "a zz"}], "not in the token list"),
                            ([{"u1": "a <blank>"}], "blank"),
                            ([{"u1": "a"}, {"u9": "a"}], "rank-1")):
        with pytest.raises(ValueError, match=match):
            build_nbest(bad_hyps, TOKENS)
    with pytest.raises(SystemExit, match="token list"):
        rank1.write_text("u1 a zz\n")
        main(["--token_list", str(token_list), "--hyp", str(rank1), "--out", str(out)])


# ---------------------------------------------------------------------------
# KDStudentModel options through the task


@pytest.fixture(scope="module")
def build(task, token_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")

    def _build(yaml_name, *extra):
        parser = task.get_parser()
        args = parser.parse_args([
            "--config", str(CONF / yaml_name),
            "--token_list", str(token_file),
            "--normalize", "utterance_mvn",
            "--output_dir", str(out),
            *extra,
        ])
        return task.build_model(args), args

    return _build


def speech_batch(feat_dim, seed=10, lengths=(96, 70, 81), text_lengths=(5, 3, 4)):
    """Features of ``feat_dim`` bins: the ``input_size`` of the args the model was built from."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    speech = torch.zeros(len(lengths), int(lengths.max()), feat_dim)
    for i, n in enumerate(lengths.tolist()):
        speech[i, :n] = torch.randn(n, feat_dim, generator=g)
    tl = torch.tensor(text_lengths)
    text = torch.full((len(lengths), int(tl.max())), -1)
    for i, n in enumerate(tl.tolist()):
        text[i, :n] = torch.randint(2, V - 1, (n,), generator=g)
    return speech, lengths, text, tl


def packed_batch(nbest):
    from espnet2.train.collate_fn import common_collate_fn

    _, batch = common_collate_fn([(f"u{i}", {"teacher_hyp": pack_nbest(h)})
                                  for i, h in enumerate(nbest)])
    return batch["teacher_hyp"], batch["teacher_hyp_lengths"]


@pytest.fixture(scope="module")
def student_state(build):
    torch.manual_seed(0)
    model, _ = build("train_student.yaml", *TINY_STUDENT_ARGS, "--model", "kd_student")
    return model.state_dict()


def _student(build, state, *conf):
    extra = []
    for c in conf:
        extra += ["--model_conf", c]
    model, args = build("train_student.yaml", *TINY_STUDENT_ARGS, "--model", "kd_student", *extra)
    model.load_state_dict(state)
    return model.eval(), args


@pytest.mark.parametrize("alpha,tau,frames,g,s", [
    (0.5, 2.0, "teacher_nonblank_renorm", 0.0, 0.0),
    (0.5, 1.0, "all", 0.7, 0.0),            # frame-level KD + Guided CTC
    (0.0, 1.0, "all", 1.3, 0.0),            # Guided CTC alone
    (0.3, 1.5, "teacher_nonblank", 0.4, 0.6),  # everything at once
])
def test_student_loss_formula(build, student_state, alpha, tau, frames, g, s):
    """loss = (1-a) CTC + a tau^2 KD + g GuidedCTC + s SeqKD, each summed per utterance / B."""
    model, args = _student(build, student_state, f"kd_weight={alpha}", f"kd_temperature={tau}",
                           f"kd_frames={frames}", f"guided_ctc_weight={g}", f"seq_kd_weight={s}")
    assert (model.kd_frames, model.guided_ctc_weight, model.seq_kd_weight) == (frames, g, s)
    speech, lengths, text, tl = speech_batch(args.input_size)
    with torch.no_grad():
        enc, lens = model.encode(speech.clone(), lengths)
        logits = model.ctc.ctc_lo(enc)
    gen = torch.Generator().manual_seed(12)
    teacher = torch.log_softmax(torch.randn(3, enc.size(1), V, generator=gen) * 3, -1)
    teacher[:, ::3, 0] += 8.0  # some frames with a blank argmax
    teacher = torch.log_softmax(teacher, -1)
    nbest = [[(0.6, [2, 3]), (0.4, [2])], [(1.0, [4, 5, 6])], [(1.0, [7])]]
    hyp, hyp_lens = packed_batch(nbest)
    with torch.no_grad():
        loss, stats, _ = model(speech.clone(), lengths, text, tl, teacher_post=teacher,
                               teacher_post_lengths=lens, teacher_hyp=hyp,
                               teacher_hyp_lengths=hyp_lens, utt_id=UTT_IDS)
    mask = None if frames == "all" else teacher.argmax(-1) != 0
    kd = frame_kd_loss(logits, teacher, lens, tau, mask, frames == "teacher_nonblank_renorm")
    loss_kd = tau**2 * float(kd.sum()) / 3
    loss_guided = float(guided_ctc_loss(logits, teacher, lens).sum()) / 3
    loss_seq = float(weighted_ctc_loss(logits, lens, nbest).sum()) / 3
    assert float(stats["loss_kd"]) == pytest.approx(loss_kd, rel=1e-5)
    assert float(stats["loss_guided_ctc"]) == pytest.approx(loss_guided, rel=1e-5)
    assert float(stats["loss_seq_kd"]) == pytest.approx(loss_seq, rel=1e-5)
    expected = ((1 - alpha) * float(stats["loss_ctc"]) + alpha * loss_kd
                + g * loss_guided + s * loss_seq)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    if frames == "teacher_nonblank_renorm":
        dropped = frame_kd_loss(logits, teacher, lens, tau, mask)
        assert float(kd.sum()) > float(dropped.sum())  # weight given back to the spike frames


def test_seq_kd_with_the_true_transcript_is_ctc(build, student_state):
    model, args = _student(build, student_state, "kd_weight=0.0", "seq_kd_weight=1.0")
    speech, lengths, text, tl = speech_batch(args.input_size)
    nbest = [[(1.0, text[i, : tl[i]].tolist())] for i in range(3)]
    hyp, hyp_lens = packed_batch(nbest)
    with torch.no_grad():  # no posteriors needed for sequence-level KD alone
        loss, stats, _ = model(speech.clone(), lengths, text, tl, teacher_hyp=hyp,
                               teacher_hyp_lengths=hyp_lens, utt_id=UTT_IDS)
    assert "loss_kd" not in stats
    assert float(stats["loss_seq_kd"]) == pytest.approx(float(stats["loss_ctc"]), rel=1e-5)
    assert float(loss) == pytest.approx(2 * float(stats["loss_ctc"]), rel=1e-5)
    # ids the student cannot emit are refused, naming the utterance
    bad, bad_lens = packed_batch([nbest[0], [(1.0, [2, 0])], nbest[2]])
    with pytest.raises(ValueError, match="spk1-utt-b.*token id 0"):
        model(speech.clone(), lengths, text, tl, teacher_hyp=bad, teacher_hyp_lengths=bad_lens,
              utt_id=UTT_IDS)
    with pytest.raises(ValueError, match="teacher_hyps"):
        model(speech.clone(), lengths, text, tl)


def test_student_option_checks_and_guided_gradient(build, student_state):
    model, args = _student(build, student_state, "kd_weight=0.0", "guided_ctc_weight=1.0")
    speech, lengths, text, tl = speech_batch(args.input_size)
    with pytest.raises(ValueError, match="guided_ctc_weight"):
        model(speech.clone(), lengths, text, tl)  # guided CTC needs the posteriors
    with torch.no_grad():
        enc, lens = model.encode(speech.clone(), lengths)
    teacher = torch.log_softmax(torch.randn(3, enc.size(1), V) * 3, -1)
    model.zero_grad()
    loss, stats, _ = model(speech.clone(), lengths, text, tl, teacher_post=teacher,
                           teacher_post_lengths=lens, utt_id=UTT_IDS)
    loss.backward()
    assert float(model.ctc.ctc_lo.weight.grad.abs().sum()) > 0
    assert float(sum(p.grad.abs().sum() for p in model.encoder.parameters())) > 0
    model.zero_grad()
    for conf, match in (("guided_ctc_weight=-1", "guided_ctc_weight"),
                        ("seq_kd_weight=-0.5", "seq_kd_weight"),
                        ("kd_frames=nonblank", "kd_frames")):
        with pytest.raises(ValueError, match=match):
            build("train_student.yaml", *TINY_STUDENT_ARGS, "--model", "kd_student",
                  "--model_conf", conf)


# ---------------------------------------------------------------------------
# one-stage oracle self-distillation


@pytest.fixture(scope="module")
def self_distill(build):
    torch.manual_seed(3)
    model, args = build("train_oracle_self_distill.yaml", *TINY_ORACLE_ARGS,
                        "--model_conf", "kd_weight=0.5", "--model_conf", "kd_temperature=2.0")
    return model.eval(), args


def test_self_distill_builds_and_encodes_source_path(self_distill):
    from espnet_oracle.asr.oracle_self_distill_model import OracleSelfDistillModel
    from espnet_oracle.utils.inference import is_oracle

    model, args = self_distill
    assert registered_class(model) is OracleSelfDistillModel and not is_oracle(model)
    assert (model.source_ctc_weight, model.oracle_ctc_weight, model.kd_weight,
            model.kd_temperature, model.kd_frames) == (1.0, 1.0, 0.5, 2.0, "all")
    speech, lengths, text, tl = speech_batch(args.input_size)
    with torch.no_grad():
        enc, lens = model.encode(speech.clone(), lengths)
        out = model.encode_with_target(speech.clone(), lengths, text, tl)
    assert enc.shape == out.source.shape == out.fused.shape and enc.size(-1) == 32
    torch.testing.assert_close(enc, out.source)
    torch.testing.assert_close(lens, out.lengths)
    assert not torch.allclose(out.source, out.fused)


@pytest.mark.parametrize("frames", ["all", "teacher_nonblank_renorm", "teacher_nonblank_words"])
def test_self_distill_loss_formula(self_distill, frames):
    model, args = self_distill
    model.kd_frames = frames
    try:
        speech, lengths, text, tl = speech_batch(args.input_size)
        with torch.no_grad():
            loss, stats, weight = model(speech.clone(), lengths, text, tl)
            out = model.encode_with_target(speech.clone(), lengths, text, tl)
            src = model._calc_ctc_loss(out.source, out.lengths, text, tl)[0]
            orc = model._calc_ctc_loss(out.fused, out.lengths, text, tl)[0]
            teacher = model.ctc.log_softmax(out.fused)
            mask = None if frames == "all" else teacher.argmax(-1) != 0
            kd = frame_kd_loss(model.ctc.ctc_lo(out.source), teacher, out.lengths, 2.0, mask,
                               frames == "teacher_nonblank_renorm",
                               exclude_token=0 if frames == "teacher_nonblank_words" else None)
    finally:
        model.kd_frames = "all"
    loss_kd = 4.0 * float(kd.sum()) / 3
    assert float(stats["loss_ctc"]) == pytest.approx(float(src), rel=1e-5)
    assert float(stats["loss_oracle_ctc"]) == pytest.approx(float(orc), rel=1e-5)
    assert float(stats["loss_kd"]) == pytest.approx(loss_kd, rel=1e-5)
    assert float(loss) == pytest.approx(float(src) + float(orc) + 0.5 * loss_kd, rel=1e-5)
    assert int(weight) == 3 and "cer_oracle_ctc" in stats


def test_self_distill_kd_stops_gradient_at_the_oracle_path(self_distill):
    model, args = self_distill
    weights = (model.source_ctc_weight, model.oracle_ctc_weight)
    model.source_ctc_weight, model.oracle_ctc_weight = 0.0, 0.0  # the KL term alone
    try:
        model.zero_grad()
        speech, lengths, text, tl = speech_batch(args.input_size)
        loss, _, _ = model(speech.clone(), lengths, text, tl)
        loss.backward()
        enc = model.encoder
        oracle_only = [enc.target_embedding, enc.fusion_blocks, enc.after_norm]
        for module in oracle_only:
            assert all(p.grad is None or float(p.grad.abs().sum()) == 0
                       for p in module.parameters())
        assert float(sum(p.grad.abs().sum() for p in enc.source_encoder.parameters())) > 0
        assert float(model.ctc.ctc_lo.weight.grad.abs().sum()) > 0
        # with the oracle CTC on, the fusion blocks learn too
        model.zero_grad()
        model.oracle_ctc_weight = 1.0
        loss, _, _ = model(speech.clone(), lengths, text, tl)
        loss.backward()
        assert float(sum(p.grad.abs().sum() for p in enc.fusion_blocks.parameters())) > 0
    finally:
        model.source_ctc_weight, model.oracle_ctc_weight = weights
        model.zero_grad()


def test_self_distill_option_checks(build):
    with pytest.raises(TypeError, match="encoder: oracle_teacher"):
        build("train_student.yaml", *TINY_STUDENT_ARGS, "--model", "oracle_self_distill")
    with pytest.raises(ValueError, match="source path"):
        build("train_oracle_self_distill.yaml", *TINY_ORACLE_ARGS,
              "--model_conf", "source_ctc_weight=0.0", "--model_conf", "kd_weight=0.0")


def test_self_distill_exports_as_plain_espnet_model(self_distill, tmp_path):
    """config.inference.yaml + inference.pth load in stock ESPnet and give the source path."""
    from espnet2.tasks.asr import ASRTask
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from espnet_oracle.bin.export_self_distill import main

    model, args = self_distill
    exp = tmp_path / "exp"
    exp.mkdir()
    with open(exp / "config.yaml", "w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
    torch.save(model.state_dict(), exp / "valid.loss.ave.pth")
    main(["--exp_dir", str(exp)])
    config = yaml.safe_load((exp / "config.inference.yaml").read_text())
    assert config["model"] == "espnet" and config["encoder"] == "transformer"
    assert config["encoder_conf"]["output_size"] == 32 and "vocab_size" not in config["encoder_conf"]
    assert not {"kd_weight", "kd_temperature", "source_ctc_weight"} & set(config["model_conf"])
    plain, _ = ASRTask.build_model_from_file(exp / "config.inference.yaml",
                                             exp / "inference.pth", "cpu")
    assert type(plain).__name__ == "ESPnetASRModel"
    state = torch.load(exp / "inference.pth")
    assert set(state) == set(plain.state_dict())  # nothing missing or left over (loading is lax)
    plain.eval()
    speech, lengths, text, tl = speech_batch(args.input_size)
    for i, n in enumerate(lengths.tolist()):  # one utterance at a time: no padding rule involved
        x, xl = speech[i : i + 1, :n], lengths[i : i + 1]
        with torch.no_grad():
            enc, lens = model.encode(x.clone(), xl)
            ref = model.ctc.log_softmax(enc)
            enc2, lens2 = plain.encode(x.clone(), xl)
            got = plain.ctc.log_softmax(enc2)
        assert lens.tolist() == lens2.tolist()
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(SystemExit, match="oracle_self_distill"):
        (exp / "config.yaml").write_text(yaml.safe_dump(dict(config, model="espnet")))
        main(["--exp_dir", str(exp)])


# ---------------------------------------------------------------------------
# KD from both teachers' averaged posteriors


def _post_set(root: Path, name: str, seed: int, fmt="dense", frames=(5, 7, 4), ids=None,
              vocab=V, **stamp_overrides):
    from espnet_oracle.utils.posteriors import LAYOUT, PosteriorWriter, write_meta

    rng = np.random.default_rng(seed)
    out = root / name
    ids = ids or [f"utt{i}" for i in range(len(frames))]
    stamp = dict(layout=LAYOUT, format=fmt, k=4 if fmt == "topk" else None,
                 teacher_model_sha256=f"teacher-{name}", features_sha256="feats",
                 text_sha256="text")
    stamp.update(stamp_overrides)
    writer = PosteriorWriter(str(out), "1", fmt=fmt, k=4, stamp=stamp)
    arrays = {}
    for utt, n in zip(ids, frames):
        z = rng.standard_normal((n, vocab)) * 3
        arrays[utt] = (z - np.log(np.exp(z).sum(1, keepdims=True))).astype(np.float32)
        writer.write(utt, arrays[utt])
    writer.close()
    shutil.copy(writer.scp, out / "post.scp")
    write_meta(str(out), format=fmt, k=stamp["k"], vocab_size=vocab, token_list_sha="tok",
               frame_shift_ms=40.0, teacher=name, stamp=stamp)
    return out / "post.scp"


def test_average_posteriors(tmp_path):
    from espnet_oracle.bin.average_posteriors import average_posteriors, main
    from espnet_oracle.utils.posteriors import TeacherPosteriorReader

    a = _post_set(tmp_path, "conv", 0)
    b = _post_set(tmp_path, "oracle", 1, fmt="topk")
    out = tmp_path / "avg"
    assert average_posteriors([a, b], out, weights=[3, 1], fmt="dense") is True
    ra, rb, avg = (TeacherPosteriorReader(str(p)) for p in (a, b, out / "post.scp"))
    assert sorted(avg.keys()) == sorted(ra.keys())
    for utt in ra.keys():
        p = 0.75 * np.exp(ra[utt].astype(np.float64)) + 0.25 * np.exp(rb[utt].astype(np.float64))
        got = avg[utt]
        assert got.shape == ra[utt].shape
        np.testing.assert_allclose(np.exp(got.astype(np.float64)), p, atol=2e-3, rtol=2e-3)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["vocab_size"] == V and meta["frame_shift_ms"] == 40.0
    stamp = meta["stamp"]
    assert stamp["features_sha256"] == "feats" and stamp["text_sha256"] == "text"
    assert [s["weight"] for s in stamp["sources"]] == [0.75, 0.25]
    assert (out / ".done").exists() and (out / "utt2num_frames").read_text().split() == [
        "utt0", "5", "utt1", "7", "utt2", "4"]
    assert average_posteriors([a, b], out, weights=[3, 1], fmt="dense") is False  # up to date
    assert average_posteriors([a, b], out, fmt="topk", k=4) is True  # other options: rewritten
    assert TeacherPosteriorReader(str(out / "post.scp")).fmt == "topk"
    # refused: other utterances, frame counts, vocabulary, features
    bad = {
        "ids": (_post_set(tmp_path, "ids", 2, ids=["utt0", "utt1", "uttX"]), "other utterances"),
        "frames": (_post_set(tmp_path, "frames", 3, frames=(5, 6, 4)), "utt1.*7 frames.*6"),
        "vocab": (_post_set(tmp_path, "vocab", 4, vocab=V + 1), "token lists"),
        "feats": (_post_set(tmp_path, "feats", 5, features_sha256="other"), "features"),
    }
    for path, match in bad.values():
        with pytest.raises(ValueError, match=match):
            average_posteriors([a, path], tmp_path / "refused")
    with pytest.raises(SystemExit, match="other utterances"):
        main(["--post_scp", str(a), "--post_scp", str(bad["ids"][0]),
              "--out_dir", str(tmp_path / "refused")])
