"""Resumable training, stamps against stale reuse, and student dir names (issue 7, items 6 and 7).

The unit tests need no corpus. ``test_interrupted_training_resumes`` trains a
tiny teacher on a few FSDD utterances, kills the stage after epoch 1, reruns it
and checks that it finishes every epoch with a complete training curve.
"""

import datetime
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from espnet_oracle.bin.train_dir import prepare
from espnet_oracle.bin.training_curve import curve_from_reporter, format_curve
from espnet_oracle.utils.stamps import decode_stamp, differences, file_fingerprint, read_stamp
from espnet_oracle.utils.systems import parse_student_dir, student_dir, student_group

ROOT = Path(__file__).resolve().parents[1]
FSDD = Path(os.environ.get("FSDD", ROOT.parent / "shared" / "data" / "fsdd")).resolve()


# ---- student dir names ----


def test_student_dir_names_carry_the_kd_settings():
    assert student_dir("nokd", 1, 0.5, 1.0, "all") == "student_nokd_seed1"
    assert student_dir("oraclekd", 1, "0.5", "1.0", "all") == "student_oraclekd_a0.5_t1_all_seed1"
    assert student_dir("convkd", 3, 0.9, 2, "teacher_nonblank") == "student_convkd_a0.9_t2_nonblank_seed3"
    assert student_dir("oraclekd", 1, 0.5 * 0.4 / 0.7, 1, "all") == "student_oraclekd_a0.2857_t1_all_seed1"
    # other frames -> another dir
    assert student_dir("oraclekd", 1, 0.5, 1, "all") != student_dir("oraclekd", 1, 0.5, 1, "teacher_nonblank")
    assert student_dir("oraclekd", 1, 0.5, 1, "teacher_nonblank_renorm") == "student_oraclekd_a0.5_t1_renorm_seed1"
    assert student_dir("convkd", 2, 0.5, 2, "teacher_nonblank_words") == "student_convkd_a0.5_t2_words_seed2"
    assert parse_student_dir("student_convkd_a0.5_t2_words_seed2")["frames"] == "words"
    info = parse_student_dir("student_oraclekd_a0.5_t1_nonblank_seed2")
    assert info == dict(system="oraclekd", alpha="0.5", tau="1", frames="nonblank", shift=0, online=False, seed=2,
                        group="student_oraclekd_a0.5_t1_nonblank")
    assert parse_student_dir("student_nokd_seed1")["alpha"] is None
    assert parse_student_dir("student_oraclekd_a0.5_t1_all_seed1.stale-20250101-000000") is None
    assert student_group("oraclekd", 0.5, 1.0, "all") == "student_oraclekd_a0.5_t1_all"
    with pytest.raises(ValueError):
        student_dir("oraclekd", 1, 0.5, 1, "some_frames")


def test_kd_variant_dir_names_carry_their_settings():
    """The KD variants (issue 12): each name carries what makes the system, and parses back."""
    settings = dict(guided_ctc_weight=0.5, seq_kd_weight="1.0", seq_kd_nbest=4, self_distill_kd_weight=2)
    names = {system: student_dir(system, 1, 0.5, 1.0, "teacher_nonblank", **settings) for system in (
        "avgkd", "convguided", "oracleguided", "convkdguided", "oraclekdguided", "convseqkd", "oracleseqkd",
        "selfdistill")}
    assert names == {
        "avgkd": "student_avgkd_a0.5_t1_nonblank_seed1",
        "convguided": "student_convguided_g0.5_seed1",
        "oracleguided": "student_oracleguided_g0.5_seed1",
        "convkdguided": "student_convkdguided_a0.5_t1_nonblank_g0.5_seed1",
        "oraclekdguided": "student_oraclekdguided_a0.5_t1_nonblank_g0.5_seed1",
        "convseqkd": "student_convseqkd_s1_n4_seed1",
        "oracleseqkd": "student_oracleseqkd_s1_n4_seed1",
        "selfdistill": "student_selfdistill_k2_t1_nonblank_seed1",
    }
    for system, name in names.items():
        info = parse_student_dir(name)
        assert info["system"] == system and info["seed"] == 1 and info["group"] == name[:-len("_seed1")]
    assert parse_student_dir(names["oraclekdguided"])["guided"] == "0.5"
    assert parse_student_dir(names["convseqkd"])["nbest"] == "4"
    assert parse_student_dir(names["selfdistill"])["sd_frames"] == "nonblank"
    # another setting -> another dir; a name with a setting its system does not carry is no student dir
    assert student_dir("convseqkd", 1, seq_kd_weight=1, seq_kd_nbest=1) != names["convseqkd"]
    assert parse_student_dir("student_convkd_a0.5_t1_all_g1_seed1") is None
    assert parse_student_dir("student_convguided_seed1") is None
    with pytest.raises(ValueError, match="needs guided_ctc_weight"):
        student_dir("convguided", 1)
    with pytest.raises(ValueError, match="guided_ctc_weight > 0"):
        student_dir("convguided", 1, guided_ctc_weight=0)
    with pytest.raises(ValueError, match="seq_kd_nbest"):
        student_dir("oracleseqkd", 1, seq_kd_weight=1, seq_kd_nbest=0)


def test_unknown_student_system_is_refused(tmp_path):
    """run.sh names the known systems before it runs any stage."""
    for name in ("run.sh", "conf", "local", "db.sh"):
        (tmp_path / name).symlink_to(ROOT / name)
    result = subprocess.run([str(tmp_path / "run.sh"), "--student_systems", "nokd guidedkd"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "unknown student system 'guidedkd'" in result.stderr
    assert "convguided" in result.stderr and "selfdistill" in result.stderr  # the known ones
    assert "stage 0" not in result.stdout and not (tmp_path / "data").exists()


def test_run_sh_and_python_agree_on_student_dir_names():
    """run.sh takes its names from the same helper (python -m espnet_oracle.utils.systems)."""
    result = subprocess.run(
        ["python", "-m", "espnet_oracle.utils.systems", "--systems", "nokd oraclekd", "--seeds", "1 2",
         "--kd_weight", "0.5", "--kd_temperature", "1.0", "--kd_frames", "teacher_nonblank"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    assert result.stdout.split() == [
        "student_nokd_seed1", "student_nokd_seed2",
        "student_oraclekd_a0.5_t1_nonblank_seed1", "student_oraclekd_a0.5_t1_nonblank_seed2",
    ]
    run_sh = (ROOT / "scripts" / "oracle_asr.sh").read_text()
    assert "student_${s}_seed" not in run_sh and "espnet_oracle.utils.systems" in run_sh


# ---- training stamps ----


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """A recipe-like dir with a config, a token list and a feats.scp pointing into an ark."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf.yaml").write_text("max_epoch: 3\n")
    (tmp_path / "tokens.txt").write_text("<blank>\n<unk>\na\n")
    feats = tmp_path / "dump" / "train"
    (feats / "data").mkdir(parents=True)
    (feats / "data" / "feats.1.ark").write_bytes(b"0123456789")
    (feats / "feats.scp").write_text("utt1 dump/train/data/feats.1.ark:0\nutt2 dump/train/data/feats.1.ark:5\n")
    options = ["--token_list", "tokens.txt", "--seed", "1",
               "--train_data_path_and_name_and_type", "dump/train/feats.scp,speech,kaldi_ark"]
    return tmp_path, options


def test_train_dir_new_done_resume(inputs):
    root, options = inputs
    exp = root / "exp" / "m"
    assert prepare(exp, "conf.yaml", options) == "train"
    stamp = read_stamp(exp / "stamp.json")
    assert stamp["options"] == options and set(stamp["inputs"]) == {"tokens.txt", "dump/train/feats.scp"}
    assert prepare(exp, "conf.yaml", options) == "train"  # nothing trained yet: same dir, no move
    (exp / "checkpoint.pth").write_bytes(b"x")
    assert prepare(exp, "conf.yaml", options) == "resume"
    (exp / ".done").touch()
    assert prepare(exp, "conf.yaml", options + ["--output_dir", "elsewhere"]) == "done"
    assert not list(exp.parent.glob("m.stale-*"))


@pytest.mark.parametrize("change", ["config", "option", "token_list", "features_regenerated", "no_stamp"])
def test_train_dir_moves_a_differently_made_dir_aside(inputs, change, capsys):
    root, options = inputs
    exp = root / "exp" / "m"
    assert prepare(exp, "conf.yaml", options) == "train"
    (exp / "checkpoint.pth").write_bytes(b"old work")
    (exp / ".done").touch()
    if change == "config":
        (root / "conf.yaml").write_text("max_epoch: 4\n")
    elif change == "option":
        options = options[:-2] + ["--train_data_path_and_name_and_type", "dump/train/feats.scp,speech,kaldi_ark",
                                  "--model_conf", "kd_frames=teacher_nonblank"]
    elif change == "token_list":
        (root / "tokens.txt").write_text("<blank>\n<unk>\nb\n")
    elif change == "features_regenerated":  # same ids, same scp text, new archive
        ark = root / "dump" / "train" / "data" / "feats.1.ark"
        ark.write_bytes(b"9876543210")
        os.utime(ark, ns=(time.time_ns(), time.time_ns() + 10**9))
    elif change == "no_stamp":
        (exp / "stamp.json").unlink()
    assert prepare(exp, "conf.yaml", options) == "train"
    stale = list(exp.parent.glob("m.stale-*"))
    assert len(stale) == 1 and (stale[0] / "checkpoint.pth").read_bytes() == b"old work"  # nothing deleted
    assert not (exp / ".done").exists() and (exp / "stamp.json").exists()
    message = capsys.readouterr().err
    assert "moved it aside" in message and str(stale[0]) in message


def test_differences_name_what_changed():
    old = {"kind": "train", "config_sha256": "a", "options": ["--x", "1"], "inputs": {"f": {"sha256": "1"}}}
    new = {"kind": "train", "config_sha256": "b", "options": ["--x", "2"], "inputs": {"f": {"sha256": "2"}}}
    reasons = " ".join(differences(old, new))
    assert "config_sha256 changed" in reasons and "options changed" in reasons and "input f changed" in reasons
    assert differences(new, json.loads(json.dumps(new))) == []
    assert "no stamp" in differences(None, new)[0]


def test_a_number_spelled_another_way_is_the_same_option():
    """A sweep's --kd_temperature 1 and run.sh's default 1.0 train the same student: no retraining."""
    old = {"kind": "train", "options": ["--model_conf", "kd_temperature=1.0", "--model_conf", "kd_frames=all"]}
    same = {"kind": "train", "options": ["--model_conf", "kd_temperature=1", "--model_conf", "kd_frames=all"]}
    other = {"kind": "train", "options": ["--model_conf", "kd_temperature=2", "--model_conf", "kd_frames=all"]}
    assert differences(old, same) == []
    assert differences(old, other) == ["options changed (removed kd_temperature=1.0; added kd_temperature=2)"]


def test_file_fingerprint_sees_stamps_beside_it(tmp_path):
    scp = tmp_path / "post.scp"
    scp.write_text("u1 ark:0\n")
    before = file_fingerprint(scp)
    (tmp_path / "meta.json").write_text('{"model": "a"}')
    assert file_fingerprint(scp) != before


# ---- decode stamps ----


def test_decode_stamp_changes_with_model_features_and_options(tmp_path):
    from espnet_oracle.bin.decode import stale_reasons

    model = tmp_path / "exp" / "sys"
    model.mkdir(parents=True)
    (model / "valid.loss.ave.pth").write_bytes(b"model 1")
    (model / "config.yaml").write_text("a: 1\n")
    feats = tmp_path / "dump" / "test"
    feats.mkdir(parents=True)
    (feats / "feats.scp").write_text("u1 /nonexistent.ark:0\n")
    (feats / "text").write_text("u1 one\n")
    stamp = decode_stamp(model, feats, "beam", 4)
    out = model / "decode_test_beam"
    assert stale_reasons(out, stamp) is None  # nothing there
    out.mkdir()
    (out / ".done").touch()  # an old, unstamped decode dir
    assert "no stamp" in stale_reasons(out, stamp)[0]
    (out / ".done").write_text(json.dumps(stamp))
    assert stale_reasons(out, stamp) == []
    assert stale_reasons(out, decode_stamp(model, feats, "beam", 8))  # beam size
    (model / "valid.loss.ave.pth").write_bytes(b"model 2")
    assert any("model_sha256" in r for r in stale_reasons(out, decode_stamp(model, feats, "beam", 4)))
    assert decode_stamp(model, feats, "greedy", 4)["beam_size"] is None
    greedy = model / "decode_test_greedy"  # greedy dir of an older version: no frame_offset_ms
    greedy.mkdir()
    (greedy / "ctc_frames").write_text("u1 3\n")
    (greedy / ".done").write_text(json.dumps(decode_stamp(model, feats, "greedy", 4)))
    assert "frame_offset_ms" in stale_reasons(greedy, decode_stamp(model, feats, "greedy", 4))[0]
    (greedy / "frame_offset_ms").write_text("42.5\n")
    assert stale_reasons(greedy, decode_stamp(model, feats, "greedy", 4)) == []
    # another checkpoint (--student_inference_model valid.loss.best.pth): the decode is redone
    (model / "valid.loss.best.pth").write_bytes(b"model at its best epoch")
    best = decode_stamp(model, feats, "greedy", 4, "valid.loss.best.pth")
    assert any("model_sha256" in r for r in stale_reasons(greedy, best))


def test_a_named_checkpoint_that_is_missing_is_refused(tmp_path):
    from espnet_oracle.utils.inference import model_file

    (tmp_path / "valid.loss.ave.pth").write_bytes(b"m")
    assert model_file(tmp_path) == tmp_path / "valid.loss.ave.pth"
    with pytest.raises(FileNotFoundError, match="no valid.loss.best.pth"):
        model_file(tmp_path, "valid.loss.best.pth")


# ---- training curve from ESPnet's reporter state ----


def test_curve_from_reporter_state():
    def epoch(loss, cer, seconds):
        return {
            "train": {"loss": loss + 1, "time": datetime.timedelta(seconds=seconds), "total_count": 10},
            "valid": {"loss": loss, "cer_ctc": cer, "time": datetime.timedelta(seconds=1)},
        }

    state = {"epoch": 3, "stats": {1: epoch(3.0, 0.5, 10), 2: epoch(2.0, 0.3, 12), 3: epoch(1.0, 0.2, 11)}}
    rows = curve_from_reporter(state)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["wall_seconds"] for r in rows] == [11.0, 24.0, 36.0]
    assert rows[1]["dev_cer"] == pytest.approx(30.0) and rows[2]["train_loss"] == 2.0
    assert format_curve(rows).splitlines()[0] == "epoch\tdev_cer\tdev_loss\ttrain_loss\twall_seconds"
    with pytest.raises(ValueError, match="misses epochs"):
        curve_from_reporter({"epoch": 3, "stats": {1: epoch(1, 1, 1), 3: epoch(1, 1, 1)}})


# ---- interrupted training resumes (real, tiny) ----


def run_sh(recipe: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, FSDD=str(FSDD))
    return subprocess.run([str(ROOT / "run.sh"), *args], cwd=recipe, env=env,
                          capture_output=True, text=True, **kwargs)


def pids_in_group(pgid: int):
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD corpus not found at {FSDD}")
def test_interrupted_training_resumes(tmp_path):
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    for name in ("conf", "local", "db.sh", "cmd.sh"):
        (recipe / name).symlink_to(ROOT / name)
    data = ["--local_data_opts", "--num_train 16 --num_dev 4 --num_test 2 --num_test_unseen 2"]
    result = run_sh(recipe, "--stage", "1", "--stop_stage", "3", *data, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    train = ["--stage", "4", "--stop_stage", "4", "--nj", "1",
             "--teacher_train_opts", "--max_epoch 3 --batch_size 8"]
    exp = recipe / "exp" / "teacher_conventional"

    # first attempt: killed (its whole process group, like Ctrl-C) once epoch 1 is saved
    proc = subprocess.Popen([str(ROOT / "run.sh"), *train], cwd=recipe, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, FSDD=str(FSDD)))
    end = time.time() + 600
    while not (exp / "1epoch.pth").exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.time() < end, "epoch 1 never finished"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    time.sleep(1)
    assert not pids_in_group(proc.pid)
    assert not (exp / ".done").exists() and not (exp / "3epoch.pth").exists()
    assert (exp / "checkpoint.pth").exists()

    # rerun: resumes and finishes every epoch
    result = run_sh(recipe, *train, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "resuming the unfinished training" in result.stdout
    assert (exp / ".done").exists() and (exp / "3epoch.pth").exists()
    curve = [line.split("\t") for line in (exp / "cer_curve.tsv").read_text().splitlines()]
    assert curve[0] == ["epoch", "dev_cer", "dev_loss", "train_loss", "wall_seconds"]
    assert [int(row[0]) for row in curve[1:]] == [1, 2, 3]
    wall = [float(row[4]) for row in curve[1:]]
    assert all(0 < a < b for a, b in zip(wall, wall[1:])), wall
    assert all(0.0 <= float(row[1]) <= 1000.0 for row in curve[1:])
    log = (exp / "train.log").read_text()
    assert log.count("# ==== attempt started") == 2  # appended, not truncated
    assert "The training was resumed" in log

    # a third run reuses it; other options train anew beside the old dir
    result = run_sh(recipe, *train, timeout=600)
    assert result.returncode == 0 and "already trained; skipping" in result.stdout
