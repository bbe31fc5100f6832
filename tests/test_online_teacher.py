"""Frame-level KD from an online teacher (issue 10): the KD student runs a frozen teacher in its step.

Tiny random teachers (conventional conformer, Oracle Teacher, and one with another subsampling) are
saved like trained ESPnet experiments; the student with ``online_teacher_*`` must give exactly the
loss it gives with that teacher's posteriors passed as ``teacher_post`` (computed by the posterior
dump's own teacher forward), in training mode (SpecAugment, dropout), without the teacher in its
state. Everything runs in one process; ``espnet2.tasks.asr`` is imported once (module fixture).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "f", "g", "h", "<sos/eos>"]
V = len(TOKENS)
FEAT_DIM = 40  # the recipe configs' input_size
UTT_IDS = ["spk1-utt-a", "spk1-utt-b", "spk2-utt-c"]
SHRINK = {
    "train_teacher_conventional.yaml": [
        "--encoder_conf", "output_size=16", "--encoder_conf", "attention_heads=2",
        "--encoder_conf", "linear_units=32", "--encoder_conf", "num_blocks=1",
    ],
    "train_teacher_oracle.yaml": [
        "--encoder_conf", "source_encoder_conf.output_size=16",
        "--encoder_conf", "source_encoder_conf.attention_heads=2",
        "--encoder_conf", "source_encoder_conf.linear_units=32",
        "--encoder_conf", "source_encoder_conf.num_blocks=1",
        "--encoder_conf", "fusion_attention_heads=2", "--encoder_conf", "fusion_linear_units=32",
    ],
    "train_student.yaml": [
        "--encoder_conf", "output_size=16", "--encoder_conf", "attention_heads=2",
        "--encoder_conf", "linear_units=32", "--encoder_conf", "num_blocks=1",
    ],
}


@pytest.fixture(scope="module")
def stats_file(tmp_path_factory, write_mvn_stats):
    """Global-MVN stats far from mean 0 / variance 1: normalizing twice would show."""
    rng = np.random.default_rng(0)
    return write_mvn_stats(tmp_path_factory.mktemp("stats") / "feats_stats.npz", FEAT_DIM,
                           mean=rng.normal(2.0, 1.0, FEAT_DIM),
                           var=rng.uniform(1.5, 3.0, FEAT_DIM) ** 2)


def _args(task, config, token_file, stats_file, out, *extra):
    return task.get_parser().parse_args([
        "--config", str(REPO / "conf" / config), "--token_list", str(token_file),
        "--normalize_conf", f"stats_file={stats_file}", "--output_dir", str(out), *SHRINK[config], *extra,
    ])


@pytest.fixture(scope="module")
def teachers(task, token_file, stats_file, tmp_path_factory):
    """name -> (config.yaml, valid.loss.ave.pth) of tiny random teachers laid out like trained ones."""
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    out = {}
    for name, config, extra in (
        ("conventional", "train_teacher_conventional.yaml", ()),
        ("oracle", "train_teacher_oracle.yaml", ()),
        # x6 subsampling: other frame counts than the student's x4
        ("conv2d6", "train_teacher_conventional.yaml", ("--encoder_conf", "input_layer=conv2d6")),
    ):
        exp = tmp_path_factory.mktemp(f"teacher_{name}")
        args = _args(task, config, token_file, stats_file, exp, *extra)
        torch.manual_seed(0)
        model = task.build_model(args)
        with torch.no_grad():  # peaky posteriors, so that the teacher's choices matter
            model.ctc.ctc_lo.weight.mul_(8.0)
        with open(exp / "config.yaml", "w", encoding="utf-8") as f:
            yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
        torch.save(model.state_dict(), exp / "valid.loss.ave.pth")
        out[name] = (exp / "config.yaml", exp / "valid.loss.ave.pth")
    return out


@pytest.fixture(scope="module")
def build_student(task, token_file, stats_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("student")

    def _build(teacher=None, *extra):
        online = []
        if teacher is not None:
            online = ["--model_conf", f"online_teacher_config={teacher[0]}",
                      "--model_conf", f"online_teacher_model_file={teacher[1]}"]
        args = _args(task, "train_student.yaml", token_file, stats_file, out, "--model", "kd_student",
                     "--model_conf", "kd_weight=0.5", *online, *extra)
        torch.manual_seed(1)
        return task.build_model(args)

    return _build


def speech_batch(seed=10, lengths=(96, 70, 81)):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    speech = torch.zeros(len(lengths), int(lengths.max()), FEAT_DIM)
    for i, n in enumerate(lengths.tolist()):
        speech[i, :n] = torch.randn(n, FEAT_DIM, generator=g) * 2.0 + 2.0
    tl = torch.tensor([5, 3, 4])[: len(lengths)]
    text = torch.full((len(lengths), int(tl.max())), -1)
    for i, n in enumerate(tl.tolist()):
        text[i, :n] = torch.randint(2, V - 1, (n,), generator=g)
    return speech, lengths, text, tl


def dumped_posteriors(teacher_dir: Path, speech, lengths, text, tl):
    """The teacher's posteriors as stage 7 computes them (its loader and teacher forward), dense."""
    from espnet_oracle.utils.inference import Utterance, ctc_log_probs, load_model

    teacher, _ = load_model(teacher_dir)
    utterances = [Utterance(UTT_IDS[i], speech[i, : int(lengths[i])].numpy(), "", text[i, : int(tl[i])].numpy())
                  for i in range(len(lengths))]
    post, post_lengths, _ = ctc_log_probs(teacher, utterances)
    return post, post_lengths


@pytest.mark.parametrize("name", ["conventional", "oracle"])
def test_online_teacher_equals_its_posteriors_given_densely(name, teachers, build_student):
    config, model_file = teachers[name]
    online = build_student(teachers[name], "--model_conf", "kd_frames=teacher_nonblank")
    stored = build_student(None, "--model_conf", "kd_frames=teacher_nonblank")
    stored.load_state_dict(online.state_dict())  # (b) loads as a plain student: no teacher keys
    speech, lengths, text, tl = speech_batch()
    post, post_lengths = dumped_posteriors(config.parent, speech, lengths, text, tl)
    assert bool(((post.argmax(-1) != 0) & (torch.arange(post.shape[1]) < post_lengths[:, None])).any())

    # training mode: the student's SpecAugment and dropout are on, and must not reach the teacher
    online.train()
    stored.train()
    assert online.specaug is not None
    torch.manual_seed(5)
    loss, stats, weight = online(speech.clone(), lengths, text, tl, utt_id=UTT_IDS)
    torch.manual_seed(5)
    ref_loss, ref_stats, ref_weight = stored(speech.clone(), lengths, text, tl, teacher_post=post,
                                             teacher_post_lengths=post_lengths, utt_id=UTT_IDS)
    assert float(stats["loss_kd"]) > 0 and int(weight) == int(ref_weight) == 3
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    assert set(stats) == set(ref_stats)
    for key in stats:
        torch.testing.assert_close(stats[key], ref_stats[key], atol=1e-6, rtol=1e-6, msg=key)

    # the teacher: frozen, in eval mode although the student trains, and fed the batch's text
    teacher = online.online_teacher(torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    got, got_lengths = online.online_teacher_posteriors(speech, lengths, text, tl, UTT_IDS)
    torch.testing.assert_close(got, post, atol=1e-6, rtol=0)
    assert got_lengths.tolist() == post_lengths.tolist()
    other, _ = online.online_teacher_posteriors(speech, lengths, text.roll(1, dims=0), tl.roll(1), UTT_IDS)
    assert (name == "oracle") == (not torch.allclose(other, got))

    # gradients reach the student only; (b) the teacher is in no state, parameter or module list
    loss.backward()
    assert float(online.ctc.ctc_lo.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert list(online.state_dict()) == list(stored.state_dict())
    assert sum(p.numel() for p in online.parameters()) == sum(p.numel() for p in stored.parameters())
    assert all(m is not teacher for m in online.modules())
    state = online.state_dict()
    assert not any(k.startswith(("online", "_online", "teacher")) for k in state)


def test_export_drops_the_online_teacher():
    from espnet_oracle.bin.export_student import plain_config

    config = plain_config({"model": "kd_student", "model_conf": {
        "ctc_weight": 1.0, "kd_weight": 0.5, "online_teacher_config": "exp/teacher_oracle/config.yaml",
        "online_teacher_model_file": "exp/teacher_oracle/valid.loss.ave.pth"}})
    assert config["model"] == "espnet" and config["model_conf"] == {"ctc_weight": 1.0}


def test_token_list_mismatch_and_bad_teachers_are_refused(teachers, build_student, tmp_path):
    config, model_file = teachers["conventional"]
    other = yaml.safe_load(config.read_text(encoding="utf-8"))
    other["token_list"] = other["token_list"][:3] + ["z"] + other["token_list"][4:]
    other_config = tmp_path / "config.yaml"
    other_config.write_text(yaml.safe_dump(other), encoding="utf-8")
    with pytest.raises(ValueError, match="token list") as info:
        build_student((other_config, model_file))
    assert str(other_config) in str(info.value) and str(model_file) in str(info.value)
    assert "index 3" in str(info.value)
    with pytest.raises(FileNotFoundError, match="no_such.pth"):
        build_student((config, tmp_path / "no_such.pth"))
    with pytest.raises(ValueError, match="both online_teacher_config and online_teacher_model_file"):
        build_student(None, "--model_conf", f"online_teacher_config={config}")


def test_stored_and_online_posteriors_together_are_refused(teachers, build_student):
    online = build_student(teachers["conventional"]).eval()
    speech, lengths, text, tl = speech_batch()
    post = torch.log_softmax(torch.randn(3, 23, V), -1)
    with pytest.raises(ValueError, match="both stored teacher posteriors"):
        online(speech.clone(), lengths, text, tl, teacher_post=post,
               teacher_post_lengths=torch.tensor([23, 16, 19]), utt_id=UTT_IDS)


def test_online_teacher_of_another_frame_rate_is_refused(teachers, build_student):
    from espnet_oracle.asr.kd_student_model import FrameMismatchError

    online = build_student(teachers["conv2d6"]).eval()
    speech, lengths, text, tl = speech_batch()
    with pytest.raises(FrameMismatchError, match="utterance spk1-utt-a: teacher posteriors have 15 frames, "
                                                 "the student's encoder output 23"):
        online(speech.clone(), lengths, text, tl, utt_id=UTT_IDS)


# ---- names, stamps, pipeline ----


def test_online_students_have_their_own_names():
    from espnet_oracle.bin.make_results import group_label
    from espnet_oracle.utils.systems import parse_student_dir, student_dir, student_group

    name = student_dir("oraclekd", 2, 0.5, 1.0, "teacher_nonblank", online_teacher="true")
    assert name == "student_oraclekd_a0.5_t1_nonblank_online_seed2"
    assert name != student_dir("oraclekd", 2, 0.5, 1.0, "teacher_nonblank")
    info = parse_student_dir(name)
    assert info["online"] is True and info["group"] == name[: -len("_seed2")] and info["frames"] == "nonblank"
    assert parse_student_dir("student_oraclekd_a0.5_t1_nonblank_seed2")["online"] is False
    assert student_dir("nokd", 1, online_teacher=True) == "student_nokd_seed1"  # no teacher: same students
    assert parse_student_dir("student_avgkd_a0.5_t1_all_online_seed1") is None
    with pytest.raises(ValueError, match="convkd and oraclekd"):
        student_group("avgkd", 0.5, 1, "all", online_teacher=True)
    assert "online teacher" in group_label(name[: -len("_seed2")], "oraclekd")


def test_make_results_lists_online_students(tmp_path):
    from espnet_oracle.bin.make_results import student_groups

    for name in ("student_nokd_seed1", "student_convkd_a0.5_t1_all_seed1", "student_convkd_a0.5_t1_all_online_seed1",
                 "student_oraclekd_a0.5_t1_all_online_seed1"):
        (tmp_path / name).mkdir()
    current = dict(kd_weight="0.5", kd_temperature="1.0", kd_frames="all", guided_ctc_weight="1.0",
                   seq_kd_weight="1.0", seq_kd_nbest="1", self_distill_kd_weight="1.0", online_teacher="true")
    groups = [g for g, _, _ in student_groups(tmp_path, ["1"], current)]
    # this run's (online) groups first, the dump-based one after
    assert groups == ["student_nokd", "student_convkd_a0.5_t1_all_online", "student_oraclekd_a0.5_t1_all_online",
                      "student_convkd_a0.5_t1_all"]


def test_retrained_teacher_makes_the_online_student_stale(tmp_path, monkeypatch):
    """stage 8's stamp fingerprints the teacher files named in --model_conf."""
    from espnet_oracle.bin.train_dir import prepare

    monkeypatch.chdir(tmp_path)
    teacher = tmp_path / "exp" / "teacher_oracle"
    teacher.mkdir(parents=True)
    (teacher / "config.yaml").write_text("model: oracle_teacher\n")
    (teacher / "valid.loss.ave.pth").write_bytes(b"weights 1")
    (tmp_path / "conf.yaml").write_text("max_epoch: 1\n")
    options = ["--model", "kd_student",
               "--model_conf", "online_teacher_config=exp/teacher_oracle/config.yaml",
               "--model_conf", "online_teacher_model_file=exp/teacher_oracle/valid.loss.ave.pth"]
    student = tmp_path / "exp" / "student_oraclekd_a0.5_t1_all_online_seed1"
    assert prepare(student, "conf.yaml", options) == "train"
    (student / ".done").touch()
    assert prepare(student, "conf.yaml", options) == "done"
    (teacher / "valid.loss.ave.pth").write_bytes(b"weights 2")  # the teacher was retrained
    assert prepare(student, "conf.yaml", options) == "train"
    assert list((tmp_path / "exp").glob("student_oraclekd_a0.5_t1_all_online_seed1.stale-*"))


def test_pipeline_refuses_online_teacher_for_other_kd_systems(tmp_path):
    """run.sh stops before stage 0 (cheap: no stage runs)."""
    for name in ("run.sh", "conf", "local", "db.sh"):
        (tmp_path / name).symlink_to(REPO / name)
    result = subprocess.run([str(tmp_path / "run.sh"), "--online_teacher", "true", "--student_systems", "nokd avgkd"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--online_teacher true trains only the frame-level KD systems convkd and oraclekd" in result.stderr
    assert "avgkd needs stored teacher outputs" in result.stderr
    assert "stage 0" not in result.stdout and not (tmp_path / "data").exists()
    result = subprocess.run([str(tmp_path / "run.sh"), "--online_teacher", "yes"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "--online_teacher must be true or false" in result.stderr
