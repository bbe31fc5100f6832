"""End-to-end tiny run of the scene-text recipe egs/synth_words (stages 1-10).

A temporary recipe dir links egs/synth_words' run.sh, local/ and db.sh and holds tiny copies of its
configs (1 epoch, a few thousand parameters). Stage 1 renders 60/12/12/12 word images with the
DejaVu fonts only (skipped when they are not installed) and a word list written here; a 6-image
"benchmark" (folder + gt.txt, drawn here) comes in through STR_BENCHMARKS. Checks: image-column
features, decodes of every set, word accuracy and 1 - NED recomputed from the decode output,
RESULTS.md with all five systems and numeric cells, the CTC-spike pictures. The numbers mean
nothing (1-epoch models); the data pieces themselves are tested in test_str_data.py.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import editdistance
import pytest
import yaml

from espnet_oracle.utils.metrics import alnum_lower

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "synth_words"
DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
pytestmark = pytest.mark.skipif(
    not all((DEJAVU / f).is_file() for f in FONT_FILES),
    reason=f"DejaVu fonts ({', '.join(FONT_FILES)}) not in {DEJAVU} (Debian fonts-dejavu-core)")

SIZES = {"train": 60, "dev": 12, "test": 12, "test_unseen_fonts": 12}
BENCH = {"img_1.png": "Hello", "img_2.png": "world", "img_3.png": "B52", "img_4.png": "café",
         "img_5.png": "exit", "img_6.png": "stop!"}  # labels filtered to hello world b52 cafe exit stop
SETS = ("dev", "test", "test_unseen_fonts", "mini")
TEACHERS = ("teacher_conventional", "teacher_oracle")
STUDENTS = ("nokd", "convkd", "oraclekd")
WORDS = ("apple banana cherry dog elephant forest garden harbour island jungle kitten lemon mountain "
         "night ocean pepper quiet river stone tiger umbrella valley window yellow zebra Boston London "
         "Paris bridge candle doctor engine fabric guitar hammer insect jacket kettle ladder magnet "
         "needle orange pencil quartz rabbit saddle tunnel velvet wagon yogurt zipper anchor basket "
         "cactus dragon").split()
NUMBER = re.compile(r"^-?\d+(\.\d+)?( ± \d+(\.\d+)?)?$")


def tiny(config: dict) -> dict:
    enc = config["encoder_conf"].get("source_encoder_conf", config["encoder_conf"])
    enc.update(output_size=16, channels=[4, 8, 8, 16])
    if "num_fusion_blocks" in config["encoder_conf"]:
        config["encoder_conf"].update(num_fusion_blocks=1, fusion_linear_units=32, fusion_attention_heads=2)
    config.update(max_epoch=1, batch_size=16, keep_nbest_models=1)
    return config


def draw_word(text: str, path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(DEJAVU / "DejaVuSans.ttf"), 28)
    img = Image.new("RGB", (20 * len(text) + 16, 40), (240, 235, 220))
    ImageDraw.Draw(img).text((8, 4), text, font=font, fill=(20, 20, 60))
    img.save(path)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("str_recipe")
    r = tmp / "synth_words"
    r.mkdir()
    for name in ("run.sh", "local", "db.sh"):
        (r / name).symlink_to(RECIPE / name)
    (r / "conf").mkdir()
    for f in (RECIPE / "conf").glob("*.yaml"):
        (r / "conf" / f.name).write_text(yaml.safe_dump(tiny(yaml.safe_load(f.read_text()))))
    (tmp / "words").write_text("\n".join(WORDS) + "\n")
    bench = tmp / "bench"
    bench.mkdir()
    for name, label in BENCH.items():
        draw_word(label, bench / name)
    (bench / "gt.txt").write_text("".join(f"{n}\t{t}\n" for n, t in BENCH.items()), encoding="utf-8")

    data_opts = " ".join(f"--num_{k} {n}" for k, n in SIZES.items()) + (
        f" --font_dirs {DEJAVU} --word_list {tmp / 'words'} --train_fonts DejaVuSans,DejaVuSerif"
        " --unseen_fonts DejaVuSansMono --test_string_fraction 0.3")
    env = dict(os.environ, STR_BENCHMARKS=f"mini={bench}", STR_FEATURE_OPTS="")
    # --nj 1: nj 2 doubles stage 7's dump processes, each importing ESPnet (the smoke run keeps nj 2)
    result = subprocess.run(
        [str(r / "run.sh"), "--stage", "1", "--local_data_opts", data_opts, "--seeds", "1",
         "--decode_modes", "greedy", "--probe_sets", "dev", "--nj", "1"],
        cwd=r, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return r, result.stdout


def read_map(path: Path) -> dict:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        utt, _, value = line.partition(" ")
        out[utt] = value.strip()
    return out


def systems(exp: Path) -> list:
    return [exp / t for t in TEACHERS] + [next(exp.glob(f"student_{s}_*seed1")) for s in STUDENTS]


def test_stages_and_features(recipe):
    r, stdout = recipe
    for stage in range(1, 11):
        assert f"stage {stage}:" in stdout
    for name, n in dict(SIZES, mini=len(BENCH)).items():
        text = read_map(r / "data" / name / "text")
        assert len(text) == n and all(re.fullmatch(r"[a-z0-9]+", t) for t in text.values())
        feats = read_map(r / "dump" / "extracted" / name / "feats.scp")
        shapes = read_map(r / "dump" / "extracted" / name / "feats_shape")
        assert set(feats) == set(shapes) == set(text)
        for utt, shape in shapes.items():
            width, rows = map(int, shape.split(","))
            assert rows == 32 and 8 <= width <= 256  # one 32-pixel column per frame
    assert sorted(read_map(r / "data" / "mini" / "text").values()) == sorted(
        ["hello", "world", "b52", "cafe", "exit", "stop"])
    tokens = (r / "data" / "token_list" / "char" / "tokens.txt").read_text().split()
    assert set(tokens[2:-1]) <= set("abcdefghijklmnopqrstuvwxyz0123456789")


def test_decodes_and_str_metrics(recipe):
    r, _ = recipe
    for system in systems(r / "exp"):
        for name in SETS:
            d = system / f"decode_{name}_greedy"
            refs, hyps = read_map(r / "data" / name / "text"), read_map(d / "text")
            assert set(hyps) == set(refs), f"{d}: decoded ids differ from the set's"
            s = json.loads((d / "scores.json").read_text())
            # the STR metrics compare lower-cased alphanumerics (a 1-epoch model may write <unk>)
            refs = {u: alnum_lower(t) for u, t in refs.items()}
            hyps = {u: alnum_lower(t) for u, t in hyps.items()}
            correct = sum(hyps[u] == refs[u] for u in refs)
            sim = sum(1 - editdistance.eval(refs[u], hyps[u]) / max(len(refs[u]), len(hyps[u]), 1) for u in refs)
            assert s["word_accuracy"] == pytest.approx(100 * correct / len(refs))
            assert s["one_minus_ned"] == pytest.approx(100 * sim / len(refs))
            assert 0 <= s["word_accuracy"] <= s["one_minus_ned"] <= 100
            # one word per image: word accuracy = 100 - WER
            assert s["word_accuracy"] == pytest.approx(100 - s["wer"])


def test_results_md_and_pictures(recipe):
    r, _ = recipe
    results = (r / "RESULTS.md").read_text(encoding="utf-8")
    lines = results.splitlines()
    header = next(line for line in lines if line.startswith("| system | params"))
    for name in SETS:
        assert f"| {name} word acc | {name} 1−NED |" in header
    rows = [line for line in lines[lines.index(header) + 2:] if line.startswith("| ")]
    labels = ["conventional teacher", "Oracle Teacher", "student, no KD", "student, KD from conventional",
              "student, KD from Oracle"]
    for label in labels:
        row = next(line for line in rows if line.startswith(f"| {label}"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        numeric = cells[3:3 + 4 * len(SETS)]  # WER, CER, word acc, 1-NED per set
        assert all(NUMBER.match(c) for c in numeric), row
    assert "Copy probe" in results and "Time to reach" in results
    assert "oraclekd" in results and "Targets" in results
    assert "CTC prefix beam search" not in results  # --decode_modes greedy: no empty beam table
    pictures = sorted((r / "exp" / "plots").glob("spikes_*.png"))
    assert len(pictures) == 4 and all(p.stat().st_size > 5000 for p in pictures)
