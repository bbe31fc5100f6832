"""Frame-level KD from stored top-k posteriors without expanding them (data type teacher_topk_posterior).

The closed-form loss must equal ``frame_kd_loss`` on the frames ``topk_to_dense`` expands,
in value and gradient, and the student must give the same loss and stats from either form.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from espnet_oracle.asr import kd_loss
from espnet_oracle.asr.kd_loss import frame_kd_loss, frame_kd_loss_topk, unpack_topk_batch
from espnet_oracle.utils import posteriors
from espnet_oracle.utils.posteriors import (
    TeacherPosteriorReader,
    topk_compact,
    topk_pack,
    topk_to_dense,
    topk_unpack,
)

from test_kd import (  # noqa: F401  (fixtures: build, student, student_and_args, feat_dim; TOKENS for conftest)
    TOKENS,
    UTT_IDS,
    V,
    _encode,
    _write_set,
    build,
    feat_dim,
    speech_batch,
    student,
    student_and_args,
)


def _stored(teacher, lengths, k):
    """(B, T, V) teacher log-probs -> what stage 8 hands a student from a top-k dump: the compact
    (B, T, 2k + 2) batch and its dense expansion (B, T, V), zero-padded past ``lengths``."""
    b, t, v = teacher.shape
    compact, dense = torch.zeros(b, t, 2 * k + 2), torch.zeros(b, t, v)
    for i, n in enumerate(lengths.tolist()):
        ids, values, leftover = topk_unpack(topk_pack(teacher[i, :n].numpy(), k))
        compact[i, :n] = torch.from_numpy(topk_compact(ids, values, leftover, v))
        dense[i, :n] = torch.from_numpy(topk_to_dense(ids, values, leftover, v))
    return compact, dense


def _batch(seed, b=3, t=9, v=V, k=4, scale=3.0, peaky=False):
    """Student logits, the compact (B, T, 2k + 2) teacher batch, its dense expansion, lengths."""
    g = torch.Generator().manual_seed(seed)
    student_logits = torch.randn(b, t, v, generator=g) * scale
    teacher = torch.log_softmax(torch.randn(b, t, v, generator=g) * scale, dim=-1)
    if peaky:  # top-1 probabilities of 1 - 1e-9 and beyond: leftovers far below float32's epsilon
        teacher[:, ::2, 3] += 40.0
        teacher = torch.log_softmax(teacher.double(), dim=-1)
    lengths = torch.tensor([t, t - 3, 2][:b])
    compact, dense = _stored(teacher, lengths, k)
    return student_logits, compact, dense, lengths


def _both(student_logits, compact, dense, lengths, **options):
    """(loss, gradient) of the top-k and the dense loss."""
    out = []
    for form in ("topk", "dense"):
        logits = student_logits.clone().requires_grad_(True)
        if form == "topk":
            ids, values, leftover, _ = unpack_topk_batch(compact)
            loss = frame_kd_loss_topk(logits, ids, values, leftover, lengths, **options)
        else:
            loss = frame_kd_loss(logits, dense, lengths, **options)
        (loss * torch.tensor([1.0, 2.0, 3.0])[: len(loss)]).sum().backward()
        out.append((loss.detach(), logits.grad))
    return out


@pytest.mark.parametrize("k", [1, 4, V - 1, V])
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0, 5.0])
def test_topk_loss_equals_dense_loss_of_the_expanded_frames(k, tau):
    student_logits, compact, dense, lengths = _batch(k * 10 + int(tau * 2), k=k)
    (loss, grad), (ref, ref_grad) = _both(student_logits, compact, dense, lengths, temperature=tau)
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
    assert (loss > 0).all()


@pytest.mark.parametrize("renormalize", [False, True])
def test_topk_loss_with_frame_mask_peaky_frames_and_padding(renormalize):
    student_logits, compact, dense, lengths = _batch(7, peaky=True)
    # padding frames hold zeros (ESPnet's collate): leftover 0 would be log(0) mass
    assert float(compact[2, 5:].abs().sum()) == 0
    mask = compact[..., 0] != 0  # "teacher_nonblank": top-1 id is not blank (id 0)
    assert mask[:, :2].any() and (~mask[0]).any()
    (loss, grad), (ref, ref_grad) = _both(student_logits, compact, dense, lengths, temperature=2.0,
                                          frame_mask=mask, renormalize=renormalize)
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
    assert torch.isfinite(grad).all() and float(grad[2, 2:].abs().sum()) == 0


def test_topk_loss_fails_without_the_leftover_term():
    """The equality above is not vacuous: treating the top-k as the whole distribution differs."""
    student_logits, compact, dense, lengths = _batch(3, k=2, scale=1.0)
    ids, values, leftover, _ = unpack_topk_batch(compact)
    truncated = frame_kd_loss_topk(student_logits, ids, values, torch.full_like(leftover, -1e4), lengths)
    ref = frame_kd_loss(student_logits, dense, lengths)
    assert (truncated - ref).abs().max() > 0.1


def test_float16_batches_are_refused():
    _, compact, _, _ = _batch(5)
    with pytest.raises(ValueError, match="float32"):
        unpack_topk_batch(compact.half())


def test_floor_is_the_storage_floor():
    assert kd_loss.LOG_LEFTOVER_FLOOR == posteriors.LOG_LEFTOVER_FLOOR


def test_topk_data_type_reads_compact_frames(task, tmp_path):
    from espnet2.train.collate_fn import common_collate_fn
    from espnet2.train.dataset import DATA_TYPES, ESPnetDataset

    assert "teacher_topk_posterior" in DATA_TYPES
    assert "teacher_topk_post" in task.optional_data_names(train=True)
    scp, arrays = _write_set(tmp_path, "topk")  # k = 4
    dense_reader = TeacherPosteriorReader(str(scp))
    dataset = ESPnetDataset([(str(scp), "teacher_topk_post", "teacher_topk_posterior")])
    for utt in arrays:
        _, data = dataset[utt]
        frames = data["teacher_topk_post"]
        assert frames.dtype == np.float32 and frames.shape == (len(arrays[utt]), 10)
        ids, values, leftover = topk_unpack(topk_pack(arrays[utt], 4))
        np.testing.assert_array_equal(frames[:, :4], ids)
        assert (frames[:, -1] == V).all()
        expanded = topk_to_dense(frames[:, :4].astype(np.int64), frames[:, 4:8], frames[:, 8], V)
        np.testing.assert_array_equal(expanded, dense_reader[utt])
    _, batch = common_collate_fn([dataset["utt0"], dataset["utt2"]])
    assert batch["teacher_topk_post_lengths"].tolist() == [len(arrays["utt0"]), len(arrays["utt2"])]
    dense_scp, _ = _write_set(tmp_path / "dense", "dense")
    with pytest.raises(ValueError, match="teacher_topk_posterior reads top-k dumps.*dense"):
        TeacherPosteriorReader(str(dense_scp), compact=True)


@pytest.mark.parametrize("frames", ["all", "teacher_nonblank_renorm", "teacher_nonblank_words"])
def test_student_gives_the_same_loss_from_topk_and_dense(build, student, feat_dim, frames):
    model = build("--model", "kd_student", "--model_conf", "kd_weight=0.5",
                  "--model_conf", "kd_temperature=2.0", "--model_conf", f"kd_frames={frames}",
                  "--model_conf", "guided_ctc_weight=0.5")[0].eval()
    model.load_state_dict(student.state_dict())
    speech, lengths, text, tl = speech_batch(feat_dim)
    _, lens = _encode(model, speech, lengths)
    t = int(lens.max())
    g = torch.Generator().manual_seed(21)
    teacher = torch.log_softmax(torch.randn(3, t, V, generator=g) * 3, -1)
    teacher[:, ::3, 0] += 8.0  # some blank frames
    compact, dense = _stored(torch.log_softmax(teacher, -1), lens, k=4)
    with torch.no_grad():
        _, stats, _ = model(speech.clone(), lengths, text, tl, teacher_topk_post=compact,
                            teacher_topk_post_lengths=lens, utt_id=UTT_IDS)
        _, ref, _ = model(speech.clone(), lengths, text, tl, teacher_post=dense,
                          teacher_post_lengths=lens, utt_id=UTT_IDS)
    for key in ("loss", "loss_ctc", "loss_kd", "loss_guided_ctc"):
        assert float(stats[key]) == pytest.approx(float(ref[key]), rel=1e-4, abs=1e-4), key
    assert float(stats["loss_kd"]) > 0 and float(stats["loss_guided_ctc"]) > 0


@pytest.mark.parametrize("peaky", [False, True])
def test_topk_to_dense_batch_expands_as_the_numpy_reader(peaky):
    _, compact, dense, lengths = _batch(5, peaky=peaky)
    ids, values, leftover, vocab_size = unpack_topk_batch(compact)
    expanded = kd_loss.topk_to_dense_batch(ids, values, leftover, lengths, vocab_size)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(expanded[i, :n], dense[i, :n], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(expanded).all()  # padding frames too


def test_kd_over_words_cannot_move_the_blank():
    """``exclude_token``: the KL of the distributions restricted to the other tokens; it neither
    depends on nor pushes the student's (or the teacher's) blank score."""
    student_logits, _, teacher, lengths = _batch(8)
    student_logits.requires_grad_(True)
    kd = frame_kd_loss(student_logits, teacher, lengths, temperature=2.0, exclude_token=0)
    kd.sum().backward()
    assert float(student_logits.grad[..., 0].abs().max()) == 0.0
    assert float(student_logits.grad[..., 1:].abs().max()) > 0.0
    # by hand: both distributions over tokens 1..V-1, softened
    s = torch.log_softmax(student_logits.detach()[..., 1:] / 2.0, -1)
    t = torch.log_softmax(teacher[..., 1:] / 2.0, -1)
    frame_kl = (t.exp() * (t - s)).sum(-1)
    for i, n in enumerate(lengths.tolist()):
        assert float(kd.detach()[i]) == pytest.approx(float(frame_kl[i, :n].sum()), rel=1e-5)
    louder_blank = teacher.clone()
    louder_blank[..., 0] += 5.0  # any teacher blank mass: the same word distribution
    torch.testing.assert_close(
        frame_kd_loss(student_logits.detach(), louder_blank, lengths, 2.0, exclude_token=0), kd.detach())
    # with the blank: the loss does push the student's blank
    student_logits.grad = None
    frame_kd_loss(student_logits, teacher, lengths, temperature=2.0).sum().backward()
    assert float(student_logits.grad[..., 0].abs().max()) > 0.0


def test_student_refuses_mismatched_topk_posteriors(student, feat_dim):
    from espnet_oracle.asr.kd_student_model import FrameMismatchError

    speech, lengths, text, tl = speech_batch(feat_dim)
    _, lens = _encode(student, speech, lengths)
    compact = torch.zeros(3, int(lens.max()), 10)
    compact[..., 4:8] = -1.4  # four near-equal tokens
    compact[..., 8] = -5.0
    compact[..., 9] = V
    bad = lens.clone()
    bad[2] += 1
    with pytest.raises(FrameMismatchError, match="spk2-utt-c"):
        student(speech.clone(), lengths, text, tl, teacher_topk_post=compact,
                teacher_topk_post_lengths=bad, utt_id=UTT_IDS)
    other_vocab = compact.clone()
    other_vocab[..., 9] = V + 5
    with pytest.raises(FrameMismatchError, match=f"{V + 5} classes"):
        student(speech.clone(), lengths, text, tl, teacher_topk_post=other_vocab,
                teacher_topk_post_lengths=lens, utt_id=UTT_IDS)
    with pytest.raises(ValueError, match="both dense"):
        student(speech.clone(), lengths, text, tl, teacher_topk_post=compact, teacher_topk_post_lengths=lens,
                teacher_post=torch.zeros(3, int(lens.max()), V), teacher_post_lengths=lens)
