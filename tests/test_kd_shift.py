"""Moving a teacher's posteriors in time (model_conf ``kd_shift_frames``; run.sh
``--conv_kd_shift_frames`` / ``--oracle_kd_shift_frames``): rows move inside each utterance, the
student trained with a move sees exactly the targets of a dump moved beforehand (dense and top-k,
KD and Guided CTC), and the student dir names carry the move."""

from __future__ import annotations

import pytest
import torch

from espnet_oracle.asr.kd_loss import shift_frames
from espnet_oracle.utils.systems import parse_student_dir, student_dir

from test_kd import (  # noqa: F401  (fixtures: build, student, student_and_args, feat_dim; TOKENS for conftest)
    TOKENS,
    UTT_IDS,
    V,
    _encode,
    build,
    feat_dim,
    speech_batch,
    student,
    student_and_args,
)
from test_kd_topk import _stored


@pytest.mark.parametrize("by,first,second", [
    (1, [0, 0, 1, 2, 3], [0, 0, 1]),
    (-2, [2, 3, 4, 4, 4], [2, 2, 2]),
    (9, [0, 0, 0, 0, 0], [0, 0, 0]),
    (-9, [4, 4, 4, 4, 4], [2, 2, 2]),
    (0, [0, 1, 2, 3, 4], [0, 1, 2]),
])
def test_rows_move_inside_each_utterance(by, first, second):
    frames = torch.arange(5.0)[None, :, None].repeat(2, 1, 3)  # (2, 5, 3): row t holds t
    frames[1, 3:] = -1.0  # padding of the 3-frame utterance: never moved into its frames
    moved = shift_frames(frames, torch.tensor([5, 3]), by)
    assert moved.shape == frames.shape
    assert moved[0, :, 0].tolist() == first and moved[1, :3, 0].tolist() == second
    assert (moved[..., 0] == moved[..., 2]).all()  # a frame moves as one row


def _moved_by_hand(frames: torch.Tensor, lengths: torch.Tensor, by: int) -> torch.Tensor:
    """What a dump moved beforehand holds: each utterance's frames rolled, edge frame repeated."""
    out = frames.clone()
    for i, n in enumerate(lengths.tolist()):
        rows = frames[i, :n]
        if by > 0:
            out[i, :n] = torch.cat([rows[:1].repeat(by, *[1] * (rows.dim() - 1)), rows[: n - by]])
        else:
            out[i, :n] = torch.cat([rows[-by:], rows[-1:].repeat(-by, *[1] * (rows.dim() - 1))])
    return out


def _kd_stats(model, batch, name, posteriors, lens):
    """The stats of one no-grad forward of a KD student on ``batch`` with the teacher data ``name``."""
    speech, lengths, text, tl = batch
    with torch.no_grad():
        return model(speech.clone(), lengths, text, tl, utt_id=UTT_IDS[: len(lengths)],
                     **{name: posteriors, f"{name}_lengths": lens})[1]


@pytest.mark.parametrize("stored", ["dense", "topk"])
@pytest.mark.parametrize("by", [1, -1])
def test_student_sees_the_moved_targets(build, student, feat_dim, stored, by):
    options = ("--model", "kd_student", "--model_conf", "kd_weight=0.5", "--model_conf",
               "kd_frames=teacher_nonblank_words", "--model_conf", "guided_ctc_weight=0.5")
    unmoved = build(*options)[0].eval()
    moving = build(*options, "--model_conf", f"kd_shift_frames={by}")[0].eval()
    assert moving.kd_shift_frames == by
    unmoved.load_state_dict(student.state_dict())
    moving.load_state_dict(student.state_dict())
    speech, lengths, text, tl = speech_batch(feat_dim)
    _, lens = _encode(unmoved, speech, lengths)
    g = torch.Generator().manual_seed(5)
    teacher = torch.log_softmax(torch.randn(3, int(lens.max()), V, generator=g) * 3, -1)
    teacher[:, ::2, 0] += 6.0  # blank frames between spikes, so that a move changes the targets
    compact, dense = _stored(torch.log_softmax(teacher, -1), lens, k=4)
    post = compact if stored == "topk" else dense
    name = "teacher_topk_post" if stored == "topk" else "teacher_post"

    def stats(model, posteriors):
        return _kd_stats(model, (speech, lengths, text, tl), name, posteriors, lens)

    moved = stats(moving, post)
    by_hand = stats(unmoved, _moved_by_hand(post, lens, by))
    as_stored = stats(unmoved, post)
    for key in ("loss", "loss_kd", "loss_guided_ctc"):
        assert float(moved[key]) == pytest.approx(float(by_hand[key]), rel=1e-6, abs=1e-6), key
        assert abs(float(moved[key]) - float(as_stored[key])) > 1e-3, key  # the move is not a no-op


def test_student_dirs_carry_the_move():
    name = student_dir("oraclekd", 1, 0.5, 1.0, "teacher_nonblank_words", oracle_kd_shift_frames="1",
                       conv_kd_shift_frames="-1")
    assert name == "student_oraclekd_a0.5_t1_words_shift1_seed1"
    assert parse_student_dir(name)["shift"] == 1
    assert student_dir("convguided", 2, guided_ctc_weight=1, conv_kd_shift_frames=-1) == \
        "student_convguided_g1_shift-1_seed2"
    # a move of 0, or of the other teacher, leaves the name (and so the trained students) as before
    assert student_dir("convkd", 1, 0.5, 1.0, "all", oracle_kd_shift_frames=2) == "student_convkd_a0.5_t1_all_seed1"
    assert parse_student_dir("student_convkd_a0.5_t1_all_seed1")["shift"] == 0
    assert student_dir("nokd", 1, conv_kd_shift_frames=3) == "student_nokd_seed1"
    # names no run makes: a move on a system without teacher posteriors, a move of 0
    assert parse_student_dir("student_convseqkd_s1_n1_shift1_seed1") is None
    assert parse_student_dir("student_oraclekd_a0.5_t1_all_shift0_seed1") is None
    from espnet_oracle.bin.make_results import group_label

    assert group_label("student_oraclekd_a0.5_t1_words_shift1", "oraclekd").endswith(
        "frames words; teacher posteriors moved +1 frame)")
    assert "moved -2 frames" in group_label("student_convkd_a0.5_t1_all_shift-2", "convkd")
    with pytest.raises(ValueError, match="avgkd averages both teachers' unmoved posteriors"):
        student_dir("avgkd", 1, 0.5, 1.0, "all", oracle_kd_shift_frames=1)
    with pytest.raises(ValueError, match="whole number of frames: '-0'"):
        student_dir("oraclekd", 1, 0.5, 1.0, "all", oracle_kd_shift_frames="-0")  # run.sh would pass -0 on
    with pytest.raises(ValueError, match="whole number of frames: '1.5'"):
        student_dir("oraclekd", 1, 0.5, 1.0, "all", oracle_kd_shift_frames="1.5")
    with pytest.raises(ValueError, match="auto is for oracle_kd_shift_frames only"):
        student_dir("convkd", 1, 0.5, 1.0, "all", conv_kd_shift_frames="auto")


@pytest.mark.parametrize("stored", ["dense", "topk"])
def test_tolerant_student_takes_each_utterances_best_move(build, student, feat_dim, stored):
    """kd_shift_tolerance: per utterance, the lowest KD term over the teacher moved by -S..S frames."""
    options = ("--model", "kd_student", "--model_conf", "kd_weight=0.5", "--model_conf", "kd_frames=all")
    unmoved = build(*options)[0].eval()
    tolerant = build(*options, "--model_conf", "kd_shift_tolerance=1")[0].eval()
    unmoved.load_state_dict(student.state_dict())
    tolerant.load_state_dict(student.state_dict())
    speech, lengths, text, tl = speech_batch(feat_dim)
    enc, lens = _encode(unmoved, speech, lengths)
    with torch.no_grad():
        own = torch.log_softmax(unmoved.ctc.ctc_lo(enc), -1)
    own = torch.log_softmax(own * 4, -1)  # sharper than the student's: the moves' KD terms differ more
    # utterances 0 and 1: the student's own posteriors one frame late (moving them back fits best);
    # utterance 2: as the student has them (no move fits best)
    teacher = _moved_by_hand(own, lens, 1)
    teacher[2] = own[2]
    compact, dense = _stored(teacher, lens, k=V)  # k = V: the stored top-k rows are exact
    post = compact if stored == "topk" else dense
    name = "teacher_topk_post" if stored == "topk" else "teacher_post"

    def stats(model, posteriors):
        return _kd_stats(model, (speech, lengths, text, tl), name, posteriors, lens)

    tolerant_stats = stats(tolerant, post)
    assert float(tolerant_stats["kd_shift_chosen"]) == pytest.approx(-2 / 3)
    assert float(tolerant_stats["loss_kd"]) < float(stats(unmoved, post)["loss_kd"]) - 0.5
    # its KD term is the per-utterance minimum of the three moved teachers' (each scored alone)
    best = 0.0
    for i in range(3):
        one = (speech[i : i + 1, : lengths[i]], lengths[i : i + 1], text[i : i + 1, : tl[i]], tl[i : i + 1])
        rows = post[i : i + 1, : lens[i]]
        best += min(float(_kd_stats(unmoved, one, name, _moved_by_hand(rows, lens[i : i + 1], by) if by else rows,
                                    lens[i : i + 1])["loss_kd"]) for by in (-1, 0, 1))
    assert float(tolerant_stats["loss_kd"]) == pytest.approx(best / 3, rel=1e-4)


def test_tolerance_must_not_be_negative(build):
    with pytest.raises(ValueError, match="kd_shift_tolerance must be >= 0"):
        build("--model", "kd_student", "--model_conf", "kd_shift_tolerance=-1")


def _teacher_decode(path, onset_ms, shift_ms=40.0):
    path.mkdir()
    (path / "scores.json").write_text(f'{{"mean_onset_offset_ms": {"null" if onset_ms is None else onset_ms}}}')
    (path / "frame_shift_ms").write_text(str(shift_ms))
    return path


@pytest.mark.parametrize("conventional,oracle,move", [
    (151.9, 103.4, 1),   # the digits recipe's seed-0 teachers (README Finding 4)
    (143.5, 217.5, -2),  # the nicolas fold's
    (100.0, 40.0, 2),    # 1.5 frames: half rounds away from zero
    (200.0, 100.0, 3),   # 2.5 frames (Python's round() would give 2)
    (100.0, 200.0, -3),
    (40.0, 100.0, -2),
    (100.0, 110.0, 0),
])
def test_onset_move_rounds_the_teachers_onset_difference(tmp_path, conventional, oracle, move):
    from espnet_oracle.bin.onset_move import onset_move

    result = onset_move(_teacher_decode(tmp_path / "c", conventional), _teacher_decode(tmp_path / "o", oracle))
    assert result["move_frames"] == move
    assert (result["conventional_onset_ms"], result["oracle_onset_ms"]) == (conventional, oracle)


def test_onset_move_refuses_missing_onsets_and_unequal_frames(tmp_path):
    from espnet_oracle.bin.onset_move import onset_move

    with pytest.raises(ValueError, match=r"o/scores.json: no word onsets .*word_align"):
        onset_move(_teacher_decode(tmp_path / "c", 120.0), _teacher_decode(tmp_path / "o", None))
    with pytest.raises(ValueError, match=r"cannot read .*c3/scores.json"):
        onset_move(tmp_path / "c3", _teacher_decode(tmp_path / "o3", 80.0))
    with pytest.raises(ValueError, match="frame shifts differ"):
        onset_move(_teacher_decode(tmp_path / "c2", 120.0), _teacher_decode(tmp_path / "o2", 80.0, shift_ms=20.0))
