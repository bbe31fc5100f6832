"""Frame-level KD: the loss, the KD student model, and teacher-posterior storage.

Everything runs in one process on tiny models (d = 16, one block);
``espnet2.tasks.asr`` is imported once (module-scoped fixture).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from espnet_oracle.asr.kd_loss import frame_kd_loss
from espnet_oracle.asr.length_masked_cer import registered_class
from espnet_oracle.utils.posteriors import (
    PosteriorWriter,
    TeacherPosteriorReader,
    topk_pack,
    topk_to_dense,
    topk_unpack,
    write_meta,
)

REPO = Path(__file__).resolve().parents[1]
STUDENT_YAML = REPO / "conf" / "train_student.yaml"
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "f", "g", "h", "<sos/eos>"]
V = len(TOKENS)
# command-line overrides that shrink the student YAML to d=16, one block
TINY_STUDENT_ARGS = [
    "--encoder_conf", "output_size=16",
    "--encoder_conf", "attention_heads=2",
    "--encoder_conf", "linear_units=32",
    "--encoder_conf", "num_blocks=1",
]


def f16_bound(x):
    """Bound on float16 rounding of log-probs x: |err| <= 1e-3 * max(1, |x|).

    float16 keeps 11 significant bits: relative rounding error <= 2**-11 ~ 4.9e-4.
    """
    return 1e-3 * np.maximum(1.0, np.abs(x))


def conv2d_frames(t: int) -> int:
    return ((t - 1) // 2 - 1) // 2


# ---------------------------------------------------------------------------
# frame_kd_loss


def _direct_kl(student_logits, teacher_log_probs, lengths, tau, frame_mask=None):
    """Per-utterance sum over frames of KL(softmax(t/tau) || softmax(s/tau)), float64 numpy."""
    s = student_logits.double().numpy() / tau
    t = teacher_log_probs.double().numpy() / tau
    log_ps = s - np.log(np.exp(s - s.max(-1, keepdims=True)).sum(-1, keepdims=True)) - s.max(-1, keepdims=True)
    log_pt = t - np.log(np.exp(t - t.max(-1, keepdims=True)).sum(-1, keepdims=True)) - t.max(-1, keepdims=True)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(-1)  # (B, T)
    out = []
    for b, n in enumerate(lengths.tolist()):
        frames = np.arange(kl.shape[1]) < n
        if frame_mask is not None:
            frames &= frame_mask[b].numpy()
        out.append(kl[b][frames].sum())
    return np.array(out)


def _random_posteriors(seed, b=3, t=9, v=V, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(b, t, v, generator=g) * scale
    teacher = torch.log_softmax(torch.randn(b, t, v, generator=g) * scale, dim=-1)
    lengths = torch.tensor([t, t - 3, 2][:b])
    return student, teacher, lengths


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0, 5.0])
def test_kd_loss_zero_for_identical_distributions(tau):
    _, teacher, lengths = _random_posteriors(0)
    loss = frame_kd_loss(teacher.clone(), teacher, lengths, temperature=tau)
    assert loss.shape == (3,)
    torch.testing.assert_close(loss, torch.zeros(3), atol=1e-5, rtol=0)
    # logits are only defined up to a per-frame constant
    shifted = teacher + torch.randn(3, 9, 1) * 10
    loss = frame_kd_loss(shifted, teacher, lengths, temperature=tau)
    torch.testing.assert_close(loss, torch.zeros(3), atol=1e-4, rtol=0)


@pytest.mark.parametrize("tau", [0.7, 1.0, 2.0, 4.0])
def test_kd_loss_equals_direct_kl(tau):
    student, teacher, lengths = _random_posteriors(1)
    loss = frame_kd_loss(student, teacher, lengths, temperature=tau)
    expected = _direct_kl(student, teacher, lengths, tau)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert (loss > 0).all()


def test_kd_loss_ignores_padded_frames():
    student, teacher, lengths = _random_posteriors(2)
    ref = frame_kd_loss(student, teacher, lengths, temperature=2.0)
    pad = torch.arange(9)[None, :, None] >= lengths[:, None, None]
    g = torch.Generator().manual_seed(3)
    noisy_s = torch.where(pad, torch.randn(student.shape, generator=g) * 100, student)
    noisy_t = torch.where(pad, torch.log_softmax(torch.randn(student.shape, generator=g), -1), teacher)
    out = frame_kd_loss(noisy_s, noisy_t, lengths, temperature=2.0)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    # equal to the loss of the unpadded utterance alone
    n = int(lengths[1])
    alone = frame_kd_loss(student[1:2, :n], teacher[1:2, :n], lengths[1:2], temperature=2.0)
    torch.testing.assert_close(alone[0], ref[1], atol=1e-5, rtol=1e-5)


def test_kd_loss_frame_mask():
    student, teacher, lengths = _random_posteriors(4)
    g = torch.Generator().manual_seed(5)
    mask = torch.rand(3, 9, generator=g) < 0.5
    mask[0, 0] = True
    out = frame_kd_loss(student, teacher, lengths, temperature=1.5, frame_mask=mask)
    expected = _direct_kl(student, teacher, lengths, 1.5, frame_mask=mask)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    full = frame_kd_loss(student, teacher, lengths, temperature=1.5)
    assert (out <= full + 1e-6).all()
    none = frame_kd_loss(student, teacher, lengths, frame_mask=torch.zeros(3, 9, dtype=torch.bool))
    torch.testing.assert_close(none, torch.zeros(3), atol=0, rtol=0)


def test_kd_loss_shape_mismatch():
    student, teacher, lengths = _random_posteriors(6)
    with pytest.raises(ValueError, match="shape"):
        frame_kd_loss(student[..., :-1], teacher, lengths)


# ---------------------------------------------------------------------------
# KDStudentModel through the task


# `task` and `token_file` (from TOKENS): tests/conftest.py


@pytest.fixture(scope="module")
def build(task, token_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")

    def _build(*extra):
        parser = task.get_parser()
        args = parser.parse_args(
            [
                "--config", str(STUDENT_YAML),
                "--token_list", str(token_file),
                "--normalize", "utterance_mvn",
                "--output_dir", str(out),
                *TINY_STUDENT_ARGS,
                *extra,
            ]
        )
        return task.build_model(args), args

    return _build


@pytest.fixture(scope="module")
def student_and_args(build):
    torch.manual_seed(0)
    model, args = build("--model", "kd_student", "--model_conf", "kd_weight=0.3")
    return model.eval(), args


@pytest.fixture(scope="module")
def student(student_and_args):
    return student_and_args[0]


@pytest.fixture(scope="module")
def feat_dim(student_and_args):
    """The student's feature dimension, as its config says (``input_size``)."""
    return student_and_args[1].input_size


def speech_batch(feat_dim, seed=10, lengths=(96, 70, 81)):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    speech = torch.zeros(len(lengths), int(lengths.max()), feat_dim)
    for i, n in enumerate(lengths.tolist()):
        speech[i, :n] = torch.randn(n, feat_dim, generator=g)
    tl = torch.tensor([5, 3, 4])[: len(lengths)]
    text = torch.full((len(lengths), int(tl.max())), -1)
    for i, n in enumerate(tl.tolist()):
        text[i, :n] = torch.randint(2, V - 1, (n,), generator=g)
    return speech, lengths, text, tl


UTT_IDS = ["spk1-utt-a", "spk1-utt-b", "spk2-utt-c"]


def _encode(model, speech, lengths):
    with torch.no_grad():
        enc, lens = model.encode(speech.clone(), lengths)  # ESPnet's normalize works in place
    return enc, lens


def test_student_builds_as_kd_student(student):
    from espnet_oracle.asr.kd_student_model import KDStudentModel

    assert registered_class(student) is KDStudentModel
    assert student.kd_weight == 0.3 and student.kd_temperature == 1.0
    assert student.decoder is None and student.vocab_size == V


def test_kd_weight_zero_equals_plain_ctc(build, student, feat_dim):
    torch.manual_seed(1)
    kd0 = build("--model", "kd_student", "--model_conf", "kd_weight=0.0")[0].eval()
    stock = build("--model", "espnet")[0].eval()
    assert registered_class(stock).__name__ == "ESPnetASRModel"
    kd0.load_state_dict(student.state_dict())
    stock.load_state_dict(student.state_dict())  # no parameters beyond a plain CTC model
    # the student counts each utterance's exact frames; give the stock model the same rule
    from espnet_oracle.asr.encoder.exact_subsampling_lengths import install_exact_subsampling_lengths

    install_exact_subsampling_lengths(stock.encoder)
    speech, lengths, text, tl = speech_batch(feat_dim)
    enc, lens = _encode(kd0, speech, lengths)
    g = torch.Generator().manual_seed(11)
    teacher = torch.log_softmax(torch.randn(3, enc.size(1), V, generator=g) * 3, -1)
    with torch.no_grad():
        loss, stats, weight = kd0(speech.clone(), lengths, text, tl, teacher_post=teacher,
                                  teacher_post_lengths=lens, utt_id=UTT_IDS)
        ref_loss, ref_stats, ref_weight = stock(speech.clone(), lengths, text, tl)
    assert float(stats["loss_kd"]) > 0  # computed, but weighted by 0
    torch.testing.assert_close(loss, stats["loss_ctc"], atol=0, rtol=0)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5, abs=1e-5)
    assert float(stats["loss_ctc"]) == pytest.approx(float(ref_stats["loss_ctc"]), rel=1e-5)
    assert int(weight) == int(ref_weight) == 3


def test_kd_loss_zero_for_own_posteriors(student, feat_dim):
    speech, lengths, text, tl = speech_batch(feat_dim)
    enc, lens = _encode(student, speech, lengths)
    own = student.ctc.log_softmax(enc)
    for tau in (1.0, 3.0):
        student.kd_temperature = tau
        try:
            with torch.no_grad():
                loss, stats, _ = student(speech.clone(), lengths, text, tl, teacher_post=own,
                                         teacher_post_lengths=lens, utt_id=UTT_IDS)
        finally:
            student.kd_temperature = 1.0
        assert abs(float(stats["loss_kd"])) < 1e-4
        assert float(loss) == pytest.approx(0.7 * float(stats["loss_ctc"]), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("alpha,tau,frames", [(0.3, 1.0, "all"), (0.6, 2.5, "all"),
                                              (1.0, 2.0, "all"), (0.5, 2.0, "teacher_nonblank")])
def test_kd_loss_formula(build, student, alpha, tau, frames, feat_dim):
    """loss = (1 - a) * CTC + a * tau^2 * sum_frames KL(p_t^tau || p_s^tau) / B."""
    model = build(
        "--model", "kd_student",
        "--model_conf", f"kd_weight={alpha}",
        "--model_conf", f"kd_temperature={tau}",
        "--model_conf", f"kd_frames={frames}",
    )[0].eval()
    model.load_state_dict(student.state_dict())
    assert model.kd_weight == alpha and model.kd_temperature == tau and model.kd_frames == frames
    speech, lengths, text, tl = speech_batch(feat_dim)
    enc, lens = _encode(model, speech, lengths)
    g = torch.Generator().manual_seed(12)
    teacher = torch.log_softmax(torch.randn(3, enc.size(1), V, generator=g) * 3, -1)
    teacher[:, ::3, 0] += 8.0  # some frames with a blank argmax
    teacher = torch.log_softmax(teacher, -1)
    with torch.no_grad():
        loss, stats, _ = model(speech.clone(), lengths, text, tl, teacher_post=teacher,
                               teacher_post_lengths=lens, utt_id=UTT_IDS)
        logits = model.ctc.ctc_lo(enc)
    mask = None
    if frames == "teacher_nonblank":
        mask = teacher.argmax(-1) != 0
        assert mask.any() and (~mask[:, : int(lens.min())]).any()
    kl = _direct_kl(logits, teacher, lens, tau, frame_mask=mask)
    loss_kd = tau**2 * kl.sum() / 3
    assert float(stats["loss_kd"]) == pytest.approx(loss_kd, rel=1e-5, abs=1e-5)
    expected = (1 - alpha) * float(stats["loss_ctc"]) + alpha * loss_kd
    assert float(loss) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert float(stats["loss"]) == pytest.approx(float(loss), rel=1e-6)


def test_kd_gradient_flows(student, feat_dim):
    speech, lengths, text, tl = speech_batch(feat_dim)
    enc, lens = _encode(student, speech, lengths)
    teacher = torch.log_softmax(torch.randn(3, enc.size(1), V), -1)
    student.zero_grad()
    loss, _, _ = student(speech.clone(), lengths, text, tl, teacher_post=teacher,
                         teacher_post_lengths=lens, utt_id=UTT_IDS)
    loss.backward()
    assert float(student.ctc.ctc_lo.weight.grad.abs().sum()) > 0
    assert float(sum(p.grad.abs().sum() for p in student.encoder.parameters())) > 0
    assert teacher.grad is None
    student.zero_grad()


def test_frame_count_mismatch_names_utterance(student, feat_dim):
    from espnet_oracle.asr.kd_student_model import FrameMismatchError

    speech, lengths, text, tl = speech_batch(feat_dim)
    enc, lens = _encode(student, speech, lengths)
    teacher = torch.log_softmax(torch.randn(3, enc.size(1), V), -1)
    bad = lens.clone()
    bad[1] -= 1
    with pytest.raises(FrameMismatchError) as info:
        student(speech.clone(), lengths, text, tl, teacher_post=teacher,
                teacher_post_lengths=bad, utt_id=UTT_IDS)
    message = str(info.value)
    assert "spk1-utt-b" in message
    assert f"{int(lens[1]) - 1} frames" in message
    assert f"encoder output {int(lens[1])}" in message
    assert "spk1-utt-a" not in message and "spk2-utt-c" not in message
    assert isinstance(info.value, ValueError)
    # without ids the batch index is named
    with pytest.raises(FrameMismatchError, match="batch item 1"):
        student(speech.clone(), lengths, text, tl, teacher_post=teacher, teacher_post_lengths=bad)


def test_vocabulary_mismatch_raises(student, feat_dim):
    from espnet_oracle.asr.kd_student_model import FrameMismatchError

    speech, lengths, text, tl = speech_batch(feat_dim)
    enc, lens = _encode(student, speech, lengths)
    teacher = torch.log_softmax(torch.randn(3, enc.size(1), V + 1), -1)
    with pytest.raises(FrameMismatchError, match=f"{V + 1} classes.*{V}"):
        student(speech.clone(), lengths, text, tl, teacher_post=teacher,
                teacher_post_lengths=lens, utt_id=UTT_IDS)


def test_missing_teacher_posteriors_raises(student, feat_dim):
    speech, lengths, text, tl = speech_batch(feat_dim)
    with pytest.raises(ValueError, match="teacher_posterior"):
        student(speech.clone(), lengths, text, tl)
    with pytest.raises(ValueError, match="teacher posteriors"):
        student(speech.clone(), lengths, text, tl, teacher_post=torch.zeros(3, 5, V))


def test_time_warp_is_refused(build):
    with pytest.raises(ValueError, match="time warp"):
        build("--model", "kd_student", "--specaug_conf", "apply_time_warp=true")
    # stock ESPnet models still accept it; masking-only SpecAug is fine for the student
    build("--model", "espnet", "--specaug_conf", "apply_time_warp=true")
    model, _ = build("--model", "kd_student")
    assert model.specaug is not None and model.specaug.time_warp is None


def test_bad_kd_options_raise(build):
    with pytest.raises(ValueError, match="kd_weight"):
        build("--model", "kd_student", "--model_conf", "kd_weight=1.5")
    with pytest.raises(ValueError, match="kd_temperature"):
        build("--model", "kd_student", "--model_conf", "kd_temperature=0.0")
    with pytest.raises(ValueError, match="kd_frames"):
        build("--model", "kd_student", "--model_conf", "kd_frames=some")


# ESPnet's Conv2dSubsampling subsamples the *batch* mask, so an utterance shorter than the
# batch maximum gets 1-2 more frames than when it is encoded alone.
ESPNET_CONV2D_BATCH_DEPENDENCE = (
    "ESPnet Conv2dSubsampling derives output lengths from the padded batch mask "
    "(x_mask[:, :, :-2:2][:, :, :-2:2]): a 70-frame utterance gets 16 frames alone but 18 "
    "when batched with a 96-frame one (the batch's longest utterance always gets "
    "((T-1)//2-1)//2, the others ceil(ceil(T/2)/2)). Teacher posteriors dumped in one batch composition "
    "(dump_posteriors, batch_size 16) then disagree with the student's frame count in "
    "another (training batches), and KDStudentModel.check_frames raises FrameMismatchError."
)


def test_batched_and_single_lengths_agree(student, feat_dim):
    speech, lengths, text, tl = speech_batch(feat_dim)
    _, batched = _encode(student, speech, lengths)
    single = []
    for i, n in enumerate(lengths.tolist()):
        _, lens = _encode(student, speech[i : i + 1, :n], lengths[i : i + 1])
        single.append(int(lens[0]))
    assert single == [conv2d_frames(n) for n in lengths.tolist()]
    assert batched.tolist() == single  # fails: [23, 18, 21] != [23, 16, 19]


def test_single_utterance_posteriors_fit_single_utterance_batches(student, feat_dim):
    """What does hold: posteriors dumped one utterance at a time fit a batch of one."""
    speech, lengths, text, tl = speech_batch(feat_dim)
    for i, n in enumerate(lengths.tolist()):
        x, xl = speech[i : i + 1, :n], lengths[i : i + 1]
        enc, lens = _encode(student, x, xl)
        assert int(lens[0]) == conv2d_frames(n)
        post = torch.log_softmax(torch.randn(1, int(lens[0]), V), -1)
        with torch.no_grad():
            loss, stats, _ = student(x.clone(), xl, text[i : i + 1], tl[i : i + 1], teacher_post=post,
                                     teacher_post_lengths=lens, utt_id=[UTT_IDS[i]])
        assert torch.isfinite(loss).all()


# ---------------------------------------------------------------------------
# top-k storage


def _log_probs(seed, frames=20, vocab=V, scale=3.0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((frames, vocab)) * scale
    z -= z.max(axis=1, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=1, keepdims=True))).astype(np.float32)


@pytest.mark.parametrize("k", [1, 4, 8])
def test_topk_pack_unpack_round_trip(k):
    x = _log_probs(0)
    packed = topk_pack(x, k)
    assert packed.dtype == np.uint16 and packed.shape == (20, 2 * k + 2)
    ids, values, _ = topk_unpack(packed)
    assert ids.dtype == np.int64 and values.dtype == np.float32
    np.testing.assert_array_equal(ids, np.argsort(-x, axis=1, kind="stable")[:, :k])
    stored = np.take_along_axis(x, ids, axis=1)
    assert np.all(np.abs(values - stored) <= f16_bound(stored))
    assert np.all(np.diff(values, axis=1) <= 0)  # sorted, most likely first
    # k larger than the vocabulary is clipped
    assert topk_pack(x, V + 5).shape == (20, 2 * V + 2)


def test_topk_pack_rejects_bad_shapes():
    with pytest.raises(ValueError):
        topk_pack(np.zeros(5, dtype=np.float32), 2)


def test_topk_to_dense_is_a_distribution_with_stored_top_k():
    k = 3
    rng = np.random.default_rng(1)
    # peaky frames: all mass in the top k, the others at exp(-40)
    x = np.full((15, V), -40.0)
    for row in x:
        top = rng.choice(V, size=k, replace=False)
        p = rng.dirichlet(np.ones(k))
        row[top] = np.log(p)
    ids, values, leftover = topk_unpack(topk_pack(x.astype(np.float32), k))
    dense = topk_to_dense(ids, values, leftover, V)
    assert dense.shape == (15, V) and dense.dtype == np.float32
    np.testing.assert_allclose(np.exp(dense.astype(np.float64)).sum(axis=1), 1.0, atol=1e-5)
    top = np.take_along_axis(dense, ids, axis=1)
    orig = np.take_along_axis(x, ids, axis=1)
    assert np.all(np.abs(top - values) <= f16_bound(values))
    assert np.all(np.abs(top - orig) <= 2 * f16_bound(orig))
    # the others share the (floored) leftover mass
    others = np.ones_like(dense, dtype=bool)
    np.put_along_axis(others, ids, False, axis=1)
    assert np.all(np.exp(dense[others]) < 1e-3)
    assert np.isfinite(dense).all()


def test_topk_to_dense_spreads_leftover_mass_evenly():
    k = 4
    x = _log_probs(2, scale=1.0)  # flat: plenty of mass outside the top k
    ids, values, leftover = topk_unpack(topk_pack(x, k))
    dense = topk_to_dense(ids, values, leftover, V)
    p = np.exp(dense.astype(np.float64))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    # the stored (exact) leftover, not 1 - sum of the float16-rounded top k
    kept = 1 - np.exp(leftover.astype(np.float64))
    others = np.ones_like(dense, dtype=bool)
    np.put_along_axis(others, ids, False, axis=1)
    rest = p[others].reshape(20, V - k)
    np.testing.assert_allclose(rest, np.repeat(((1 - kept) / (V - k))[:, None], V - k, axis=1),
                               rtol=1e-4)
    top = values - np.log(np.exp(values.astype(np.float64)).sum(axis=1, keepdims=True) / kept[:, None])
    np.testing.assert_allclose(np.take_along_axis(dense, ids, axis=1), top, atol=1e-5)


def test_topk_with_k_equal_vocab_is_dense():
    x = _log_probs(3, scale=4.0)
    dense = topk_to_dense(*topk_unpack(topk_pack(x, V)), V)
    # float16 rounding of each entry plus the renormalization it causes
    assert np.all(np.abs(dense - x) <= 2 * f16_bound(x)), np.abs(dense - x).max()
    np.testing.assert_allclose(np.exp(dense.astype(np.float64)).sum(axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------
# writer / meta / reader / ESPnet data type


def _write_set(root: Path, fmt: str, k: int = 4):
    """A dump dir like dump_posteriors writes: data/post.1.ark/.scp, post.scp, meta.json."""
    out = root / fmt
    arrays = {f"utt{i}": _log_probs(10 + i, frames=5 + 3 * i) for i in range(3)}
    writer = PosteriorWriter(str(out), "1", fmt=fmt, k=k)
    for utt, x in arrays.items():
        writer.write(utt, x)
    with pytest.raises(ValueError, match="twice"):
        writer.write("utt0", arrays["utt0"])
    writer.close()
    assert writer.scp.exists() and writer.ark.exists()
    assert not list((out / "data").glob("*.tmp"))
    shutil.copy(writer.scp, out / "post.scp")
    write_meta(str(out), format=fmt, k=k if fmt == "topk" else None, vocab_size=V)
    return out / "post.scp", arrays


@pytest.mark.parametrize("fmt", ["topk", "dense"])
def test_posterior_writer_reader_round_trip(tmp_path, fmt):
    scp, arrays = _write_set(tmp_path, fmt)
    reader = TeacherPosteriorReader(str(scp))
    assert len(reader) == 3
    assert sorted(reader.keys()) == sorted(arrays) == sorted(reader)
    assert reader.vocab_size == V and reader.fmt == fmt
    for utt, x in arrays.items():
        got = reader[utt]
        assert got.shape == x.shape and got.dtype == np.float32
        if fmt == "dense":
            assert np.all(np.abs(got - x) <= f16_bound(x))
        else:
            expected = topk_to_dense(*topk_unpack(topk_pack(x, 4)), V)
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
            np.testing.assert_array_equal(got.argmax(axis=1), x.argmax(axis=1))
        np.testing.assert_allclose(np.exp(got.astype(np.float64)).sum(axis=1), 1.0, atol=2e-3)
    with pytest.raises(KeyError) as info:
        reader["no-such-utt"]
    assert "no-such-utt" in str(info.value) and str(scp) in str(info.value)


def test_reader_without_meta_raises(tmp_path):
    scp, _ = _write_set(tmp_path, "topk")
    with pytest.raises(FileNotFoundError, match="meta.json"):
        TeacherPosteriorReader(str(scp.parent / "data" / "post.1.scp"))


def test_writer_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="format"):
        PosteriorWriter(str(tmp_path), "1", fmt="fp8")


def test_writer_refuses_nan_positive_and_wrong_width_naming_the_utterance(tmp_path):
    writer = PosteriorWriter(str(tmp_path), "1", fmt="topk", k=4, vocab_size=V)
    x = _log_probs(0, frames=5)
    writer.write("good", x)
    bad = x.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="'nan-utt'.*NaN"):
        writer.write("nan-utt", bad)
    with pytest.raises(ValueError, match="'raw-scores'.*above 0"):
        writer.write("raw-scores", x + 5.0)  # logits, not log-probabilities
    with pytest.raises(ValueError, match=f"'narrow'.*expected \\(frames, {V}\\)"):
        writer.write("narrow", x[:, :-1])
    assert list(writer.arrays) == ["good"]


def test_meta_json_errors_name_the_file(tmp_path):
    scp, _ = _write_set(tmp_path, "topk")
    meta = scp.parent / "meta.json"
    meta.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{meta}.*not valid JSON"):
        TeacherPosteriorReader(str(scp))
    for broken in ('{"format": "fp8", "vocab_size": 11, "layout": 2}', '{"format": "topk", "layout": 2}',
                   '{"format": "topk", "vocab_size": 11, "layout": 2}'):  # unknown format, no vocab_size, no k
        meta.write_text(broken, encoding="utf-8")
        with pytest.raises(ValueError, match=f"{meta}: not a teacher posterior description"):
            TeacherPosteriorReader(str(scp))


def test_reader_refuses_arrays_that_disagree_with_meta(tmp_path):
    scp, _ = _write_set(tmp_path, "topk", k=4)
    # meta says k=3: the stored rows (width 10) are not what it describes
    write_meta(str(scp.parent), format="topk", k=3, vocab_size=V)
    with pytest.raises(ValueError, match="'utt0'.*k=3"):
        TeacherPosteriorReader(str(scp))["utt0"]
    # meta says fewer tokens than the stored ids reach: ids would wrap around in the dense expansion
    write_meta(str(scp.parent), format="topk", k=4, vocab_size=5)
    reader = TeacherPosteriorReader(str(scp))
    with pytest.raises(ValueError, match="'utt.'.*outside the 5 tokens"):
        for utt in reader.keys():
            reader[utt]
    dense_scp, _ = _write_set(tmp_path, "dense")
    write_meta(str(dense_scp.parent), format="dense", vocab_size=V + 1)
    with pytest.raises(ValueError, match=f"'utt0'.*{V + 1} tokens"):
        TeacherPosteriorReader(str(dense_scp))["utt0"]


def test_training_refuses_posteriors_of_a_reordered_token_list(task, tmp_path, monkeypatch):
    """Same size, another order: the per-batch vocabulary check cannot see it, the task must."""
    import argparse

    from espnet_oracle.utils.posteriors import token_list_sha

    scp, _ = _write_set(tmp_path, "topk")
    write_meta(str(scp.parent), format="topk", k=4, vocab_size=V, token_list_sha=token_list_sha(TOKENS))
    reordered = TOKENS[:2] + TOKENS[2:-1][::-1] + TOKENS[-1:]
    token_file = tmp_path / "tokens.txt"
    token_file.write_text("\n".join(reordered) + "\n", encoding="utf-8")
    args = argparse.Namespace(token_list=str(token_file), valid_data_path_and_name_and_type=[],
                              train_data_path_and_name_and_type=[("feats.scp", "speech", "kaldi_ark"),
                                                                 (str(scp), "teacher_topk_post",
                                                                  "teacher_topk_posterior")])
    monkeypatch.setattr(task.__mro__[1], "build_iter_factory", classmethod(lambda cls, *a, **k: "built"))
    with pytest.raises(ValueError, match=f"{scp} was made with another token list.*--token_list"):
        task.build_iter_factory(args, None, "train")
    assert task.build_iter_factory(args, None, "valid") == "built"  # no posteriors there
    args.token_list = list(TOKENS)  # the dump's own list, as ESPnet holds it after build_model
    assert task.build_iter_factory(args, None, "train") == "built"


def test_teacher_posterior_data_type(task, tmp_path):
    from espnet2.train.collate_fn import common_collate_fn
    from espnet2.train.dataset import DATA_TYPES, ESPnetDataset

    assert "teacher_posterior" in DATA_TYPES
    assert "teacher_post" in task.optional_data_names(train=True)
    scp, arrays = _write_set(tmp_path, "topk")
    reader = TeacherPosteriorReader(str(scp))
    dataset = ESPnetDataset([(str(scp), "teacher_post", "teacher_posterior")])
    for utt, x in arrays.items():
        uid, data = dataset[utt]
        assert uid == utt and set(data) == {"teacher_post"}
        assert data["teacher_post"].shape == x.shape and data["teacher_post"].dtype == np.float32
        np.testing.assert_array_equal(data["teacher_post"], reader[utt])
    uid, data = dataset[0]
    assert uid in arrays
    # ESPnet's collate pads it and adds teacher_post_lengths, the names KDStudentModel reads
    uids, batch = common_collate_fn([dataset["utt0"], dataset["utt2"]])
    assert batch["teacher_post"].shape == (2, arrays["utt2"].shape[0], V)
    assert batch["teacher_post_lengths"].tolist() == [arrays["utt0"].shape[0], arrays["utt2"].shape[0]]
