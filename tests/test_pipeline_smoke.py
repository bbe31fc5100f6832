"""End-to-end smoke run of run.sh stages 0-10 on a tiny subset of the real corpus.

One run of the whole pipeline (tiny data, 1-epoch models, one student seed)
checks that the stages connect: every stage's outputs exist, the Oracle Teacher
probe table and RESULTS.md are written, a student decodes through stock ESPnet
Speech2Text, and a re-run of finished stages changes nothing. Numbers from
such a run mean nothing; the benchmark and RESULTS.md runs use full sizes.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# run.sh runs in a temporary recipe dir: a relative FSDD path must not depend on the cwd
FSDD = Path(os.environ.get("FSDD", ROOT.parent / "shared" / "data" / "fsdd")).resolve()

pytestmark = pytest.mark.skipif(
    not (FSDD / "recordings").is_dir(), reason=f"FSDD corpus not found at {FSDD}"
)

TINY = [
    "--data_opts", "--num_train 48 --num_dev 12 --num_test 12 --num_test_unseen 12",
    "--teacher_train_opts", "--max_epoch 1 --batch_size 16",
    "--student_train_opts", "--max_epoch 1 --batch_size 16",
    "--seeds", "1",
    "--probe_sets", "dev",
    "--beam_size", "2",
]
# student dir names carry the KD settings (defaults: weight 0.5, temperature 1, all frames)
STUDENTS = ("student_nokd_seed1", "student_convkd_a0.5_t1_all_seed1", "student_oraclekd_a0.5_t1_all_seed1")


def run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FSDD=str(FSDD))
    result = subprocess.run(
        [str(ROOT / "run.sh"), *args], cwd=recipe, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise AssertionError(
            f"run.sh {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A recipe dir laid out like egs/<corpus>/: links to the top-level conf/ and local/."""
    recipe = tmp_path_factory.mktemp("recipe")
    for name in ("conf", "local", "db.sh", "cmd.sh"):
        (recipe / name).symlink_to(ROOT / name)
    result = run(recipe, *TINY)
    return recipe, result


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_stage_prints_its_number(recipe):
    _, result = recipe
    for stage in range(11):
        assert f"stage {stage}:" in result.stdout, f"stage {stage} did not announce itself"


def test_stages_0_to_3_outputs(recipe):
    recipe, _ = recipe
    for name in ("train", "dev", "test", "test_unseen"):
        data = recipe / "data" / name
        for f in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2snr", "utt2noise", "word_align"):
            assert (data / f).is_file(), f"missing {data / f}"
        assert (recipe / "dump" / "fbank" / name / "feats.scp").is_file()
    assert (recipe / "dump" / "fbank" / "train" / "feats_stats.npz").is_file()
    tokens = (recipe / "data" / "token_list" / "char" / "tokens.txt").read_text().split("\n")
    assert tokens[0] == "<blank>" and tokens[1] == "<unk>"


def test_teachers_and_probe(recipe):
    recipe, _ = recipe
    for teacher in ("teacher_conventional", "teacher_oracle"):
        assert (recipe / "exp" / teacher / "valid.loss.ave.pth").is_file()
        curve = (recipe / "exp" / teacher / "cer_curve.tsv").read_text().splitlines()
        assert curve[0].split("\t")[:2] == ["epoch", "dev_cer"] and len(curve) == 2
    summary = (recipe / "exp" / "teacher_eval" / "summary.tsv").read_text()
    for needle in ("true_transcript", "other_transcript", "copy_rate", "zeroed_source", "time_to_cer"):
        assert needle in summary
    assert list((recipe / "exp" / "teacher_eval").glob("attention_*.png"))


def test_posteriors_students_decode_results(recipe):
    recipe, _ = recipe
    exp = recipe / "exp"
    for teacher in ("teacher_conventional", "teacher_oracle"):
        for name in ("train", "dev"):
            assert (exp / teacher / "posteriors" / name / "post.scp").is_file()
    for name in STUDENTS:
        student = exp / name
        assert (student / "config.inference.yaml").is_file()
        for name in ("dev", "test", "test_unseen"):
            for mode in ("greedy", "beam"):
                assert (student / f"decode_{name}_{mode}" / "scores.json").is_file()
    assert (exp / "teacher_oracle" / "decode_test_greedy" / "ORACLE").is_file()
    assert list((exp / "plots").glob("posteriorgram_*.png"))
    results = (recipe / "RESULTS.md").read_text()
    assert "student, KD from Oracle Teacher" in results and "Wall time per stage" in results


def test_student_decodes_with_stock_speech2text(recipe, monkeypatch):
    recipe, _ = recipe
    monkeypatch.chdir(recipe)  # paths in scp files are relative to the recipe dir, as in Kaldi
    import kaldiio
    import torch
    from espnet2.bin.asr_inference import Speech2Text

    student = recipe / "exp" / "student_oraclekd_a0.5_t1_all_seed1"
    # stock ESPnet: no espnet_oracle import is needed to build this model
    speech2text = Speech2Text(
        asr_train_config=str(student / "config.inference.yaml"),
        asr_model_file=str(student / "valid.loss.ave.pth"),
        ctc_weight=1.0, beam_size=2, device="cpu",
    )
    assert type(speech2text.asr_model).__name__ == "ESPnetASRModel"
    feats = kaldiio.load_scp(str(recipe / "dump" / "fbank" / "test" / "feats.scp"))
    utt = sorted(feats.keys())[0]
    results = speech2text(torch.from_numpy(feats[utt]))
    assert isinstance(results[0][0], str)


def test_student_packs_with_stock_espnet(recipe, tmp_path):
    recipe, _ = recipe
    student = recipe / "exp" / "student_convkd_a0.5_t1_all_seed1"
    out = tmp_path / "student.zip"
    result = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.pack", "asr",
         "--asr_train_config", str(student / "config.inference.yaml"),
         "--asr_model_file", str(student / "valid.loss.ave.pth"),
         "--outpath", str(out)],
        cwd=recipe, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.is_file() and out.stat().st_size > 0


def test_rerun_is_idempotent(recipe):
    recipe, _ = recipe
    watched = [
        recipe / "data" / "train" / "text",
        recipe / "dump" / "fbank" / "train" / "feats.scp",
        recipe / "exp" / "teacher_oracle" / "valid.loss.ave.pth",
        recipe / "exp" / "teacher_oracle" / "posteriors" / "train" / "post.scp",
        recipe / "exp" / "student_nokd_seed1" / "decode_test_greedy" / "text",
    ]
    before = {p: digest(p) for p in watched}
    result = run(recipe, *TINY, "--stage", "1", "--stop_stage", "9")
    assert "already trained; skipping" in result.stdout
    assert {p: digest(p) for p in watched} == before


def test_missing_input_is_named(tmp_path):
    for name in ("conf", "local", "db.sh", "cmd.sh"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = dict(os.environ, FSDD=str(FSDD))
    result = subprocess.run(
        [str(ROOT / "run.sh"), "--stage", "4", "--stop_stage", "4"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "tokens.txt" in result.stderr and "stage 3" in result.stderr
