"""export_student: a KD student's inference config that stock ESPnet packs self-contained.

Fast: no model is built; the pipeline smoke test packs, unpacks and decodes a
trained student. Here ESPnet's own pack/unpack functions check that the
archive carries the global-MVN stats (and a BPE model) and that the unpacked
config names the unpacked copies, not files of the recipe dir.
"""

import shlex

import pytest
import yaml

from espnet_oracle.bin import export_student

STATS = "dump/fbank/train/feats_stats.npz"
BPE = "data/token_list/bpe/bpe.model"


def make_recipe(root, bpe=False):
    (root / "dump/fbank/train").mkdir(parents=True)
    (root / STATS).write_bytes(b"stats of the training features")
    exp = root / "exp" / "student_oraclekd_seed1"
    exp.mkdir(parents=True)
    (exp / "valid.loss.ave.pth").write_bytes(b"weights")
    config = {
        "model": "kd_student",
        "model_conf": {"ctc_weight": 1.0, "kd_weight": 0.5, "kd_temperature": 1.0, "kd_frames": "all"},
        "normalize": "global_mvn",
        "normalize_conf": {"stats_file": STATS},
        "token_type": "bpe" if bpe else "char",
        "bpemodel": BPE if bpe else None,
        "token_list": ["<blank>", "<unk>", "a", "<sos/eos>"],
        "train_data_path_and_name_and_type": [
            ["dump/fbank/train/feats.scp", "speech", "kaldi_ark"],
            ["exp/teacher_oracle/posteriors/train/post.scp", "teacher_post", "teacher_posterior"],
        ],
    }
    if bpe:
        (root / BPE).parent.mkdir(parents=True)
        (root / BPE).write_bytes(b"sentencepiece model")
    (exp / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return exp


def export(capsys, exp_dir):
    export_student.main(["--exp_dir", str(exp_dir)])
    out = capsys.readouterr().out
    command = [line.split("pack with: ", 1)[1] for line in out.splitlines() if "pack with: " in line]
    assert len(command) == 1, out
    return shlex.split(command[0])


def options(command):
    return [command[i + 1] for i, arg in enumerate(command) if arg == "--option"]


def test_inference_config_is_plain_espnet(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exp = make_recipe(tmp_path)
    export(capsys, "exp/student_oraclekd_seed1")
    config = yaml.safe_load((exp / "config.inference.yaml").read_text())
    assert config["model"] == "espnet"
    assert config["model_conf"] == {"ctc_weight": 1.0}
    assert [e[1] for e in config["train_data_path_and_name_and_type"]] == ["speech"]
    # the stats are copied next to the weights and named as pack stores them
    assert config["normalize_conf"]["stats_file"] == "exp/student_oraclekd_seed1/feats_stats.npz"
    assert (exp / "feats_stats.npz").read_bytes() == (tmp_path / STATS).read_bytes()


@pytest.mark.parametrize("bpe", [False, True])
def test_packed_model_unpacks_self_contained(tmp_path, monkeypatch, capsys, bpe):
    from espnet2.main_funcs.pack_funcs import pack, unpack

    recipe = tmp_path / "recipe"
    recipe.mkdir()
    monkeypatch.chdir(recipe)
    make_recipe(recipe, bpe=bpe)
    command = export(capsys, "exp/student_oraclekd_seed1")
    assert command[:4] == ["python", "-m", "espnet2.bin.pack", "asr"]
    assert len(options(command)) == (2 if bpe else 1)
    # the printed command, run through stock ESPnet's pack
    pack(files={"asr_model_file": command[command.index("--asr_model_file") + 1]},
         yaml_files={"asr_train_config": command[command.index("--asr_train_config") + 1]},
         option=options(command), outpath=str(tmp_path / "student.zip"))

    # unpack elsewhere, the recipe dir gone
    (recipe / STATS).unlink()
    recipe.rename(tmp_path / "gone")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    files = unpack(tmp_path / "student.zip", "model")
    config = yaml.safe_load(open(files["asr_train_config"], encoding="utf-8"))
    stats = config["normalize_conf"]["stats_file"]
    assert stats == "model/exp/student_oraclekd_seed1/feats_stats.npz"
    assert open(stats, "rb").read() == b"stats of the training features"
    if bpe:
        assert open(config["bpemodel"], "rb").read() == b"sentencepiece model"
    assert open(files["asr_model_file"], "rb").read() == b"weights"


def test_rerun_keeps_the_copy_when_the_features_are_gone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exp = make_recipe(tmp_path)
    export(capsys, "exp/student_oraclekd_seed1")
    before = (exp / "config.inference.yaml").read_bytes()
    (tmp_path / STATS).unlink()
    export(capsys, "exp/student_oraclekd_seed1")
    assert (exp / "config.inference.yaml").read_bytes() == before
    assert (exp / "feats_stats.npz").is_file()


def test_missing_stats_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_recipe(tmp_path)
    (tmp_path / STATS).unlink()
    with pytest.raises(SystemExit, match="feats_stats.npz"):
        export_student.main(["--exp_dir", "exp/student_oraclekd_seed1"])


def test_exp_dir_outside_the_cwd_is_named_absolutely(tmp_path, monkeypatch, capsys):
    exp = make_recipe(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = yaml.safe_load((exp / "config.yaml").read_text())
    config["normalize_conf"]["stats_file"] = str(tmp_path / STATS)
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    export_student.main(["--exp_dir", str(exp)])
    assert "outside the working directory" in capsys.readouterr().err
    config = yaml.safe_load((exp / "config.inference.yaml").read_text())
    assert config["normalize_conf"]["stats_file"] == str((exp / "feats_stats.npz").resolve())
