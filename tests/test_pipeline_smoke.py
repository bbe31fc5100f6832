"""End-to-end smoke run of run.sh stages 0-10 on a tiny subset of the real corpus.

One run of the whole pipeline (tiny data, 1-epoch models, one student seed)
checks that the stages connect and that what they write is consistent: every
decode covers exactly its set, score files add up (and agree with an
independent edit distance), the teacher probe table, posterior statistics,
RESULTS.md and the stage times hold the values they should; the students
decode through stock ESPnet ``Speech2Text`` exactly as the recipe decodes them,
also after ``espnet2.bin.pack`` and unpacking elsewhere; a re-run of finished
stages changes nothing. The numbers themselves mean nothing (1-epoch models);
the benchmark and RESULTS.md runs use full sizes.

``ESPNET_ORACLE_SMOKE_DIR=<dir>`` runs the pipeline in ``<dir>`` and keeps it;
a later run with the same dir reuses the finished pipeline (to iterate on these
tests without the several-minute run). Remove the dir after changing the code.
"""

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from itertools import groupby
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# run.sh runs in a temporary recipe dir: a relative FSDD path must not depend on the cwd
FSDD = Path(os.environ.get("FSDD", ROOT.parent / "shared" / "data" / "fsdd")).resolve()

pytestmark = pytest.mark.skipif(
    not (FSDD / "recordings").is_dir(), reason=f"FSDD corpus not found at {FSDD}"
)

SIZES = {"train": 48, "dev": 12, "test": 12, "test_unseen": 12}
BEAM = 2
TINY = [
    "--local_data_opts", " ".join(f"--num_{name} {n}" for name, n in SIZES.items()),
    "--teacher_train_opts", "--max_epoch 1 --batch_size 16",
    "--student_train_opts", "--max_epoch 1 --batch_size 16",
    "--seeds", "1",
    "--probe_sets", "dev",
    "--beam_size", str(BEAM),
]
DECODE_SETS = ("dev", "test", "test_unseen")
PROBE_SETS = ("dev",)
TEACHERS = ("teacher_conventional", "teacher_oracle")
STUDENTS = ("nokd", "convkd", "oraclekd")
MODES = ("greedy", "beam")
NUMBER = re.compile(r"^-?\d+(\.\d+)?( ± \d+(\.\d+)?)?$")


def run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FSDD=str(FSDD))
    result = subprocess.run(
        [str(recipe / "run.sh"), *args], cwd=recipe, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise AssertionError(
            f"run.sh {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A recipe dir laid out like egs/<corpus>/ after a full run; returns (dir, run.sh stdout)."""
    keep = os.environ.get("ESPNET_ORACLE_SMOKE_DIR")
    recipe = Path(keep).resolve() if keep else tmp_path_factory.mktemp("recipe")
    recipe.mkdir(parents=True, exist_ok=True)
    log = recipe / "smoke_run.stdout"
    if keep and log.is_file():
        return recipe, log.read_text(encoding="utf-8")
    for name in ("run.sh", "conf", "local", "db.sh"):
        if not (recipe / name).is_symlink():
            (recipe / name).symlink_to(ROOT / name)
    stdout = run(recipe, *TINY).stdout
    log.write_text(stdout, encoding="utf-8")
    return recipe, stdout


# --------------------------------------------------------------------------- #
# helpers                                                                      #
# --------------------------------------------------------------------------- #
def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_map(path: Path) -> dict:
    """Kaldi-style ``key value...`` lines; asserts every key appears once."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        key, _, value = line.partition(" ")
        assert key not in out, f"{path}: {key} appears twice"
        out[key] = value.strip()
    return out


def set_ids(recipe: Path, name: str) -> set:
    return set(read_map(recipe / "data" / name / "text"))


def teacher_config(recipe: Path) -> dict:
    return yaml.safe_load((recipe / "exp" / "teacher_conventional" / "config.yaml").read_text())


def train_set(recipe: Path) -> str:
    """The set the models trained on, from the conventional teacher's config: run.sh's data/train,
    speed-perturbed to data/train_sp (its --speed_perturb_factors)."""
    speech = [p for p, name, _ in teacher_config(recipe)["train_data_path_and_name_and_type"] if name == "speech"]
    assert len(speech) == 1, speech
    return Path(speech[0]).parent.name


def speed_factors(stdout: str) -> list:
    """The factors stage 1 perturbed the training set with (it logs them)."""
    found = re.findall(r"speed perturbation \(([^)]*)\) -> data/(\S+)", stdout)
    assert len(found) == 1, found
    return found[0][0].split()


def set_size(name: str, stdout: str) -> int:
    """SIZES; the speed-perturbed training set holds one copy of data/train per factor."""
    return SIZES[name] if name in SIZES else len(speed_factors(stdout)) * SIZES["train"]


def student_dir(exp: Path, system: str) -> Path:
    """The seed-1 dir of a student system, whatever settings its name carries."""
    dirs = sorted(set(exp.glob(f"student_{system}_seed1")) | set(exp.glob(f"student_{system}_*seed1")))
    assert len(dirs) == 1, f"expected one seed-1 dir of {system} in {exp}, found {dirs}"
    return dirs[0]


def systems(exp: Path) -> list:
    return [exp / t for t in TEACHERS] + [student_dir(exp, s) for s in STUDENTS]


def edit_distance(ref: list, hyp: list) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def floats(text: str) -> float:
    value = float(text)
    assert not math.isinf(value), text
    return value


# --------------------------------------------------------------------------- #
# stages 0-3                                                                   #
# --------------------------------------------------------------------------- #
def test_every_stage_prints_its_number(recipe):
    _, stdout = recipe
    for stage in range(11):
        assert f"stage {stage}:" in stdout, f"stage {stage} did not announce itself"


def test_stages_0_to_3_outputs(recipe):
    recipe, stdout = recipe
    trained_on = train_set(recipe)
    for name, size in SIZES.items():
        data = recipe / "data" / name
        for f in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2snr", "utt2noise", "word_align"):
            assert (data / f).is_file(), f"missing {data / f}"
        ids = set_ids(recipe, name)
        assert len(ids) == size
        for f in ("wav.scp", "utt2spk", "utt2snr", "utt2noise"):
            assert set(read_map(data / f)) == ids, f"{data / f} does not cover {data / 'text'}"
    # speed perturbation (run.sh's default): the models train on data/train_sp, data/train and
    # its sp<f>- copies with the same transcripts
    factors = speed_factors(stdout)
    assert trained_on == "train_sp" and "1.0" in factors and len(factors) > 1, (trained_on, factors)
    train, sp = read_map(recipe / "data" / "train" / "text"), read_map(recipe / "data" / trained_on / "text")
    copies = {f"sp{f}-{utt}": text for f in factors if float(f) != 1.0 for utt, text in train.items()}
    assert sp == {**train, **copies}
    for f in ("wav.scp", "utt2spk", "spk2utt"):
        assert (recipe / "data" / trained_on / f).is_file(), f"missing data/{trained_on}/{f}"
    assert set(read_map(recipe / "data" / trained_on / "wav.scp")) == set(sp)
    # the training set and the sets decoded are dumped (data/train itself is not trained on), one
    # feature vector of the configs' input_size (run.sh: --n_mels) per 10 ms
    dims = {yaml.safe_load(f.read_text())["input_size"] for f in (recipe / "conf").glob("train_*.yaml")}
    assert len(dims) == 1, dims
    for name in [trained_on] + [n for n in SIZES if n != "train"]:
        ids = set_ids(recipe, name)
        dump = recipe / "dump" / "fbank" / name
        assert set(read_map(dump / "feats.scp")) == ids, name
        assert set(read_map(dump / "text")) == ids, name
        shapes = read_map(dump / "feats_shape")
        assert set(shapes) == ids and all(v.split(",")[1] == str(*dims) for v in shapes.values()), name
    # factor f: 1/f of the original length (frames of 10 ms, 25 ms windows: +-2 frames)
    shapes = read_map(recipe / "dump" / "fbank" / trained_on / "feats_shape")
    frames = {u: int(v.split(",")[0]) for u, v in shapes.items()}
    for f in factors:
        for utt in train:
            n = frames[utt if float(f) == 1.0 else f"sp{f}-{utt}"]
            assert abs(n - ((frames[utt] + 1.5) / float(f) - 1.5)) <= 2, (f, utt, n, frames[utt])
    assert (recipe / "dump" / "fbank" / trained_on / "feats_stats.npz").is_file()
    config = teacher_config(recipe)
    tokens = (recipe / "data" / "token_list" / config["token_type"] / "tokens.txt").read_text().split()
    assert tokens[0] == "<blank>" and tokens[1] == "<unk>" and tokens[-1] == "<sos/eos>"
    assert tokens == config["token_list"]
    if config["token_type"] == "word":  # run.sh's default: every word of the training set, once
        words = {w for text in sp.values() for w in text.split()}
        assert sorted(tokens[2:-1]) == sorted(words)


def test_stage_times_cover_every_stage(recipe):
    recipe, _ = recipe
    stages = set()
    for line in (recipe / "exp" / "stage_times.tsv").read_text().splitlines():
        stage, name, seconds = line.split("\t")
        assert name and int(seconds) >= 0, line
        stages.update(int(s) for s in stage.split("+"))
    assert stages == set(range(11))


# --------------------------------------------------------------------------- #
# stages 4-7                                                                   #
# --------------------------------------------------------------------------- #
def test_teachers_train(recipe):
    recipe, _ = recipe
    for teacher in TEACHERS:
        assert (recipe / "exp" / teacher / "valid.loss.ave.pth").is_file()
        curve = (recipe / "exp" / teacher / "cer_curve.tsv").read_text().splitlines()
        assert curve[0].split("\t")[:2] == ["epoch", "dev_cer"] and len(curve) == 2
        epoch, dev_cer = curve[1].split("\t")[:2]
        assert int(float(epoch)) == 1 and 0 <= floats(dev_cer)
    assert list((recipe / "exp" / "teacher_eval").glob("attention_*.png"))


def test_teacher_eval_summary(recipe):
    recipe, _ = recipe
    exp = recipe / "exp"
    lines = (exp / "teacher_eval" / "summary.tsv").read_text().splitlines()
    assert lines[0] == "system\tset\tprobe\tmetric\tvalue"
    table = {}
    for line in lines[1:]:
        system, set_name, probe, metric, value = line.split("\t")
        assert (system, set_name, probe, metric) not in table, line
        table[system, set_name, probe, metric] = float(value)
    rates = ("cer", "wer", "n_utts")
    expected = {}
    for set_name in DECODE_SETS:
        expected[("teacher_conventional", set_name, "audio_only")] = rates
        expected[("teacher_oracle", set_name, "true_transcript")] = rates
        if set_name in PROBE_SETS:
            expected[("teacher_oracle", set_name, "other_transcript")] = rates + (
                "cer_vs_fed", "copy_rate", "truth_rate")
            expected[("teacher_oracle", set_name, "zeroed_source")] = rates
            expected[("teacher_conventional", set_name, "other_transcript_chance")] = rates + (
                "follow_rate", "fed_vs_truth_cer")
    speed = ("target_dev_cer", "conventional_epoch", "conventional_seconds", "oracle_epoch",
             "oracle_seconds", "oracle_best_dev_cer", "ratio")
    expected[("teacher_oracle", "dev", "time_to_cer")] = speed
    for key, metrics in expected.items():
        for metric in metrics:
            assert (*key, metric) in table, f"summary.tsv lacks {key} {metric}"
    # the copy probes run on the probe sets only (more probes there are welcome)
    probed = {(s, set_name, p) for s, set_name, p, _ in table}
    for set_name in set(DECODE_SETS) - set(PROBE_SETS):
        rows = {key for key in probed if key[1] == set_name}
        assert rows == {key for key in expected if key[1] == set_name}, f"{set_name}: {rows}"

    for (system, set_name, probe, metric), value in table.items():
        where = f"{system} {set_name} {probe} {metric} = {value}"
        if probe == "time_to_cer":
            continue
        if metric == "follow_rate" and math.isnan(value):
            # undefined when no output token sits on either side (a 1-epoch teacher may emit none)
            sides = [table[(system, set_name, probe, m)] for m in ("follow_fed_tokens", "follow_truth_tokens")]
            assert sides == [0, 0], where
            continue
        assert math.isfinite(value), where
        if metric == "n_utts":
            assert value == SIZES[set_name], where
        elif metric.endswith("_rate"):
            assert 0 <= value <= 1, where
        else:
            assert value >= 0, where
    for set_name in PROBE_SETS:
        key = ("teacher_oracle", set_name, "other_transcript")
        # fed a transcript that differs from the truth, an output cannot equal both
        assert table[(*key, "copy_rate")] + table[(*key, "truth_rate")] <= 1

    # stage 6 decodes like stage 9 / scores like stage 10 (summary.tsv rounds to 4 decimals)
    for set_name in DECODE_SETS:
        for system, probe in (("teacher_conventional", "audio_only"), ("teacher_oracle", "true_transcript")):
            scores = json.loads((exp / system / f"decode_{set_name}_greedy" / "scores.json").read_text())
            for metric in ("cer", "wer"):
                assert table[(system, set_name, probe, metric)] == pytest.approx(scores[metric], abs=1e-3), \
                    f"{system} {set_name}: teacher_eval {metric} differs from stage 9/10"

    # time to CER: the conventional teacher's curve gives the target, which it reaches
    speed = {m: table[("teacher_oracle", "dev", "time_to_cer", m)] for m in speed}
    curves = {t: [line.split("\t") for line in (exp / t / "cer_curve.tsv").read_text().splitlines()[1:]]
              for t in TEACHERS}
    assert speed["target_dev_cer"] == pytest.approx(
        min(float(row[1]) for row in curves["teacher_conventional"]), abs=1e-3)
    assert speed["oracle_best_dev_cer"] == pytest.approx(
        min(float(row[1]) for row in curves["teacher_oracle"]), abs=1e-3)
    assert speed["conventional_epoch"] == 1 and speed["conventional_seconds"] >= 0
    reached = speed["oracle_best_dev_cer"] <= speed["target_dev_cer"] + 1e-9
    for metric in ("oracle_epoch", "oracle_seconds", "ratio"):
        assert math.isfinite(speed[metric]) == reached, (metric, speed)


def test_posterior_dumps(recipe):
    recipe, stdout = recipe
    for teacher in TEACHERS:
        for name in (train_set(recipe), "dev"):  # the students' training and validation sets
            out = recipe / "exp" / teacher / "posteriors" / name
            ids = set_ids(recipe, name)
            assert set(read_map(out / "post.scp")) == ids
            frames = {u: int(n) for u, n in read_map(out / "utt2num_frames").items()}
            assert set(frames) == ids
            # conv2d (x4) subsampling of every utterance's own feature frames
            shape = read_map(recipe / "dump" / "fbank" / name / "feats_shape")
            for utt, n in frames.items():
                feature_frames = int(shape[utt].split(",")[0])
                assert n == ((feature_frames - 1) // 2 - 1) // 2 > 0, (utt, n, feature_frames)
            stats = json.loads((out / "stats.json").read_text())
            assert stats["utterances"] == len(ids) == set_size(name, stdout)
            assert stats["frames"] == sum(frames.values())
            assert stats["bytes"] > 0
            assert stats["bytes_per_frame"] == pytest.approx(stats["bytes"] / stats["frames"])


# --------------------------------------------------------------------------- #
# stages 8-10                                                                  #
# --------------------------------------------------------------------------- #
def test_decodes_cover_each_set(recipe):
    recipe, _ = recipe
    exp = recipe / "exp"
    for system in systems(exp):
        for name in DECODE_SETS:
            ids = set_ids(recipe, name)
            for mode in MODES:
                d = system / f"decode_{name}_{mode}"
                where = f"{d.relative_to(recipe)}"
                assert set(read_map(d / "text")) == ids, f"{where}/text does not cover {name}"
                tokens = read_map(d / "token")
                assert set(tokens) == ids, f"{where}/token does not cover {name}"
                assert (d / "mode").read_text().strip() == mode
                assert (d / "ORACLE").exists() == (system.name == "teacher_oracle"), where
                if mode == "greedy":
                    frames = read_map(d / "ctc_frames")
                    assert set(frames) == ids, f"{where}/ctc_frames does not cover {name}"
                    for utt in ids:
                        assert len(frames[utt].split()) == len(tokens[utt].split()), (where, utt)
                    assert float((d / "frame_shift_ms").read_text()) == 40.0
                    assert float((d / "frame_offset_ms").read_text()) == 42.5  # conv2d on 10 ms fbank


UTT_LINE = re.compile(r"^(\S+)\terrors=(\d+) n=(\d+)\tref=(.*)\thyp=(.*)$")


def check_result_txt(path: Path, unit: str, refs: dict, hyps: dict) -> dict:
    """Per-utterance lines of score_*/result.txt: exact edit distances; returns {utt: (errors, n)}."""
    per_utt = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        m = UTT_LINE.match(line)
        assert m, f"{path}: {line!r}"
        utt, errors, n = m.group(1), int(m.group(2)), int(m.group(3))
        ref, hyp = refs[utt].split(), hyps[utt].split()
        assert m.group(4).split() == ref and m.group(5).split() == hyp
        if unit == "char":
            ref, hyp = list("".join(ref)), list("".join(hyp))
        assert n == len(ref) and errors == edit_distance(ref, hyp), (path, utt)
        per_utt[utt] = (errors, n)
    assert set(per_utt) == set(refs), f"{path}: per-utterance lines do not cover the set"
    return per_utt


def check_trn(d: Path, refs: dict, hyps: dict) -> None:
    """sclite trn files: ``WORDS (uttid)``, one line per utterance."""
    for name, table in (("ref.trn", refs), ("hyp.trn", hyps)):
        lines = (d / name).read_text(encoding="utf-8").splitlines()
        parsed = {line.rsplit("(", 1)[1].rstrip(")"): line.rsplit("(", 1)[0].split() for line in lines}
        assert parsed == {u: t.split() for u, t in table.items()}, d / name


def test_scores_add_up(recipe):
    recipe, _ = recipe
    for system in systems(recipe / "exp"):
        for name in DECODE_SETS:
            data = recipe / "data" / name
            refs = read_map(data / "text")
            utt2snr, utt2noise = read_map(data / "utt2snr"), read_map(data / "utt2noise")
            for mode in MODES:
                d = system / f"decode_{name}_{mode}"
                hyps = read_map(d / "text")
                check_trn(d, refs, hyps)
                scores = json.loads((d / "scores.json").read_text())
                assert scores["n_utts"] == SIZES[name]
                words = check_result_txt(d / "score_wer" / "result.txt", "word", refs, hyps)
                chars = check_result_txt(d / "score_cer" / "result.txt", "char", refs, hyps)
                for key, per_utt in (("wer", words), ("cer", chars)):
                    errors, n = (sum(v[i] for v in per_utt.values()) for i in (0, 1))
                    assert scores[key] == pytest.approx(100.0 * errors / n)
                assert scores["ser"] == pytest.approx(100.0 * sum(v[0] > 0 for v in words.values()) / len(words))

                # per-condition WER: each row from the per-utterance counts of its utterances
                rows = [line.split("\t") for line in (d / "score_conditions.tsv").read_text().splitlines()]
                assert rows[0] == ["condition", "n_utts", "n_words", "WER"]
                seen = set()
                for condition, n_utts, n_words, wer in rows[1:]:
                    keys = dict(part.split("=") for part in condition.split(",")) if condition != "all" else {}
                    utts = [u for u in refs if all({"snr": utt2snr, "noise": utt2noise}[k][u] == v
                                                   for k, v in keys.items())]
                    assert int(n_utts) == len(utts) > 0, (d, condition)
                    assert int(n_words) == sum(words[u][1] for u in utts), (d, condition)
                    errors = sum(words[u][0] for u in utts)
                    assert float(wer) == pytest.approx(100.0 * errors / int(n_words), abs=0.006), (d, condition)
                    seen.add(condition)
                # every SNR and noise condition of the set has its row
                assert {f"snr={v}" for v in utt2snr.values()} <= seen
                assert {f"noise={v}" for v in utt2noise.values()} <= seen
                assert scores["wer_by_condition"]["snr"].keys() == {v for v in utt2snr.values()}


def test_results_md(recipe):
    recipe, _ = recipe
    exp = recipe / "exp"
    results = (recipe / "RESULTS.md").read_text()
    assert "Wall time per stage" in results
    table = results.split("## Systems", 1)[1].split("\n### ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in table.splitlines() if line.startswith("|")]
    header, rows = rows[0], rows[2:]
    labels = {
        "teacher_conventional": "conventional teacher",
        "teacher_oracle": "Oracle Teacher",
        "nokd": "student, no KD",
        "convkd": "student, KD from conventional teacher",
        "oraclekd": "student, KD from Oracle Teacher",
    }
    for key, label in labels.items():
        matching = [r for r in rows if r[0].startswith(label)]
        assert len(matching) == 1, f"RESULTS.md: no single row for {label!r}"
        row = dict(zip(header, matching[0]))
        system = exp / key if key in TEACHERS else student_dir(exp, key)
        for name in DECODE_SETS:
            scores = json.loads((system / f"decode_{name}_greedy" / "scores.json").read_text())
            for metric in ("WER", "CER"):
                cell = row[f"{name} {metric}"]
                assert NUMBER.match(cell), f"RESULTS.md {label}: {name} {metric} = {cell!r}"
                # one seed: the cell is the score itself
                assert cell == f"{scores[metric.lower()]:.2f}", (label, name, metric)
        assert NUMBER.match(row["train time (s)"]), (label, row)
        assert re.match(r"^\d+\.\d+ M$", row["params"]), (label, row)
    # the beam-search table: one numeric row per system
    beam = results.split("### CTC prefix beam search", 1)[1].split("\n### ", 1)[0]
    beam_rows = [[c.strip() for c in line.strip().strip("|").split("|")]
                 for line in beam.splitlines() if line.startswith("|")][2:]
    for label in labels.values():
        matching = [r for r in beam_rows if r[0].startswith(label)]
        assert len(matching) == 1 and all(NUMBER.match(c) for c in matching[0][1:]), (label, beam_rows)


def test_students_export_and_plots(recipe):
    recipe, _ = recipe
    exp = recipe / "exp"
    for system in STUDENTS:
        config = yaml.safe_load((student_dir(exp, system) / "config.inference.yaml").read_text())
        assert config["model"] == "espnet"
        assert not any(k.startswith("kd_") for k in config.get("model_conf") or {})
        if system != "nokd":  # the recipe's KD setting: KL over the non-blank tokens (run.sh)
            training = yaml.safe_load((student_dir(exp, system) / "config.yaml").read_text())
            assert training["model_conf"]["kd_frames"] == "teacher_nonblank_words", system
            assert student_dir(exp, system).name.endswith("_t1_words_seed1"), system
    assert list((exp / "plots").glob("posteriorgram_*.png"))


# --------------------------------------------------------------------------- #
# stock ESPnet                                                                 #
# --------------------------------------------------------------------------- #
def load_features(recipe: Path, name: str) -> dict:
    import kaldiio

    # paths in scp files are relative to the recipe dir, as in Kaldi
    cwd = os.getcwd()
    os.chdir(recipe)
    try:
        feats = kaldiio.load_scp(str(Path("dump") / "fbank" / name / "feats.scp"))
        return {utt: feats[utt] for utt in sorted(feats.keys())}
    finally:
        os.chdir(cwd)


def stock_decode(speech2text, feats: dict) -> tuple:
    """Greedy CTC (best path of the stock model) and Speech2Text's CTC beam search, as word lists."""
    import torch

    model = speech2text.asr_model
    greedy, beam = {}, {}
    for utt, array in feats.items():
        with torch.no_grad():
            x = torch.from_numpy(array.copy())[None]
            enc, _ = model.encode(x, torch.tensor([x.shape[1]]))
            best = model.ctc.argmax(enc)[0].tolist()
        ids = [t for t, _ in groupby(best) if t != model.blank_id]
        greedy[utt] = speech2text.tokenizer.tokens2text(speech2text.converter.ids2tokens(ids)).split()
        text = speech2text(torch.from_numpy(array.copy()))[0][0]
        beam[utt] = text.split()
    return greedy, beam


def recipe_decode(system: Path, name: str, mode: str) -> dict:
    return {u: t.split() for u, t in read_map(system / f"decode_{name}_{mode}" / "text").items()}


def test_students_decode_with_stock_speech2text(recipe):
    recipe, _ = recipe
    from espnet2.bin.asr_inference import Speech2Text

    feats = {name: load_features(recipe, name) for name in DECODE_SETS}
    cwd = os.getcwd()
    os.chdir(recipe)  # config.inference.yaml names its files relative to the recipe dir
    try:
        for system in STUDENTS:
            student = student_dir(recipe / "exp", system)
            # stock ESPnet: no espnet_oracle import is needed to build this model
            speech2text = Speech2Text(
                asr_train_config=str(student / "config.inference.yaml"),
                asr_model_file=str(student / "valid.loss.ave.pth"),
                ctc_weight=1.0, beam_size=BEAM, device="cpu",
            )
            assert type(speech2text.asr_model).__name__ == "ESPnetASRModel"
            for name in DECODE_SETS:
                greedy, beam = stock_decode(speech2text, feats[name])
                assert len(greedy) == SIZES[name]
                assert greedy == recipe_decode(student, name, "greedy"), f"{student.name} {name} greedy"
                assert beam == recipe_decode(student, name, "beam"), f"{student.name} {name} beam"
    finally:
        os.chdir(cwd)


def test_student_packs_with_stock_espnet(recipe, tmp_path, monkeypatch):
    """Pack from the recipe dir, unpack in another dir with the recipe dir gone, decode there."""
    recipe, _ = recipe
    from espnet2.bin.asr_inference import Speech2Text
    from espnet2.main_funcs.pack_funcs import unpack

    student = student_dir(recipe / "exp", "oraclekd")
    config = yaml.safe_load((student / "config.inference.yaml").read_text())
    stats = config["normalize_conf"]["stats_file"]
    # the exp dir holds what the model needs, named relative to the recipe dir (as pack stores it)
    assert not os.path.isabs(stats) and (recipe / stats).resolve().parent == student.resolve()
    extra = [stats] + ([config["bpemodel"]] if config.get("bpemodel") else [])
    rel = student.relative_to(recipe)
    archive = tmp_path / "student.zip"
    result = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.pack", "asr",
         "--asr_train_config", str(rel / "config.inference.yaml"),
         "--asr_model_file", str(rel / "valid.loss.ave.pth"),
         *[a for f in extra for a in ("--option", f)],
         "--outpath", str(archive)],
        cwd=recipe, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    feats = load_features(recipe, "test")
    expected = recipe_decode(student, "test", "beam")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    hidden = recipe.with_name(recipe.name + ".hidden")
    recipe.rename(hidden)  # nothing of the recipe dir may be needed from here on
    try:
        files = unpack(archive, "unpacked")
        unpacked = yaml.safe_load(Path(files["asr_train_config"]).read_text())
        assert Path(unpacked["normalize_conf"]["stats_file"]).resolve().is_relative_to(elsewhere.resolve())
        speech2text = Speech2Text(
            asr_train_config=files["asr_train_config"], asr_model_file=files["asr_model_file"],
            ctc_weight=1.0, beam_size=BEAM, device="cpu",
        )
        _, beam = stock_decode(speech2text, feats)
    finally:
        hidden.rename(recipe)
    assert beam == expected


def test_rerun_is_idempotent(recipe):
    recipe, _ = recipe
    trained_on = train_set(recipe)
    watched = [
        recipe / "data" / "train" / "text",
        recipe / "data" / trained_on / "text",
        recipe / "data" / trained_on / "wav.scp",
        recipe / "dump" / "fbank" / trained_on / "feats.scp",
        recipe / "exp" / "teacher_oracle" / "valid.loss.ave.pth",
        recipe / "exp" / "teacher_oracle" / "posteriors" / trained_on / "post.scp",
        student_dir(recipe / "exp", "nokd") / "decode_test_greedy" / "text",
        student_dir(recipe / "exp", "oraclekd") / "config.inference.yaml",
    ]
    before = {p: digest(p) for p in watched}
    result = run(recipe, *TINY, "--stage", "1", "--stop_stage", "9")
    assert "already trained; skipping" in result.stdout
    assert {p: digest(p) for p in watched} == before


VARIANTS = ("avgkd", "convguided", "oracleguided", "convkdguided", "oraclekdguided", "convseqkd", "oracleseqkd",
            "selfdistill")


def test_blank_bias_check_at_zero_is_stage_9(recipe, tmp_path, monkeypatch, load_script):
    """local/blank_bias_check.py decodes each student at blank bias 0 exactly as stage 9's greedy
    decode scored it, and at a huge bias deletes every word."""
    recipe, _ = recipe
    check = load_script(ROOT / "local" / "blank_bias_check.py")
    monkeypatch.chdir(recipe)
    systems = [f"{s}={student_dir(recipe / 'exp', s)}" for s in STUDENTS]
    assert check.main(["--out", str(tmp_path), "--biases", "0 1000",
                       *[arg for system in systems for arg in ("--system", system)]]) == 0
    rows = [line.split("\t") for line in (tmp_path / "bias.tsv").read_text().splitlines()[1:]]
    assert len(rows) == len(STUDENTS) * len(DECODE_SETS) * 2
    for name, model, set_name, bias, words, errors, _, deletions, insertions in rows:
        header = (Path(model) / f"decode_{set_name}_greedy" / "score_wer" / "result.txt").read_text().splitlines()[0]
        expected_errors, expected_words = re.search(r"errors (\d+) / (\d+) reference words", header).groups()
        assert words == expected_words, (model, set_name)
        if bias == "0":
            assert errors == expected_errors, (model, set_name, header)
        else:
            assert deletions == words == errors and insertions == "0", (model, set_name, bias)
    assert (tmp_path / "summary.md").read_text().count("\n| ") >= len(STUDENTS)


def test_kd_variant_systems(recipe):
    """Every KD variant of issue 12 through run.sh (stages 7-10, 1 epoch, greedy, one test set) on the
    smoke run's teachers, in its own exp dir with the teachers linked, as local/variant_sweep.sh runs
    them: the teacher outputs stage 7 makes for them, the options each student is trained with, its
    decodes and scores, the self-distillation's export, the KD-variants table; a rerun reuses them."""
    recipe, _ = recipe
    exp = recipe / "exp_variants"
    exp.mkdir(exist_ok=True)
    reference = student_dir(recipe / "exp", "convkd")  # conventional KD, what the variants are compared with
    for source in [recipe / "exp" / t for t in TEACHERS] + [reference]:
        if not (exp / source.name).is_symlink():
            (exp / source.name).symlink_to(source)
    options = (*TINY, "--exp", "exp_variants", "--student_systems", " ".join(VARIANTS), "--seq_kd_nbest", "2",
               "--guided_ctc_weight", "0.5", "--test_sets", "test", "--decode_modes", "greedy",
               "--results", "RESULTS_variants.md")
    run(recipe, *options, "--stage", "7", "--stop_stage", "10")
    trained_on = train_set(recipe)
    # stage 7: the averaged posteriors, the teachers' 2-best hypotheses of the train and valid sets
    for name in (trained_on, "dev"):
        ids = set_ids(recipe, name)
        assert set(read_map(exp / "teacher_average" / "posteriors" / name / "post.scp")) == ids
        for teacher in TEACHERS:
            hyps = read_map(exp / teacher / f"seqkd_nbest2_{name}_beam" / "teacher_hyp.txt")
            assert set(hyps) == ids, (teacher, name)
            assert all(1 <= len(h.split("|")) <= 2 for h in hyps.values()), (teacher, name)
    assert (exp / "teacher_oracle" / f"seqkd_nbest2_{trained_on}_beam" / "ORACLE").exists()  # transcript fed
    dirs = {system: student_dir(exp, system) for system in VARIANTS}
    assert dirs["convguided"].name == "student_convguided_g0.5_seed1"
    assert dirs["oracleseqkd"].name == "student_oracleseqkd_s1_n2_seed1"
    assert dirs["selfdistill"].name == "student_selfdistill_k1_t1_words_seed1"
    for system, d in dirs.items():
        config = yaml.safe_load((d / "config.yaml").read_text())
        conf = config["model_conf"]
        data = {name: path for path, name, _ in config["train_data_path_and_name_and_type"]}
        if system == "selfdistill":
            assert config["model"] == "oracle_self_distill" and conf["kd_frames"] == "teacher_nonblank_words"
            assert set(data) == {"speech", "text"}
            plain = yaml.safe_load((d / "config.inference.yaml").read_text())
            assert plain["model"] == "espnet" and plain["encoder"] == "transformer" and (d / "inference.pth").is_file()
        else:
            assert config["model"] == "kd_student"
            assert conf.get("guided_ctc_weight", 0.0) == (0.5 if "guided" in system else 0.0), system
            assert conf.get("seq_kd_weight", 0.0) == (1.0 if "seqkd" in system else 0.0), system
            frame_kd = system in ("avgkd", "convkdguided", "oraclekdguided")
            assert conf["kd_weight"] == (0.5 if frame_kd else 0.0), system
            assert ("teacher_hyp" in data) == system.endswith("seqkd")
            assert ("teacher_topk_post" in data) != system.endswith("seqkd")  # top-k dumps stay top-k
            if system == "avgkd":
                assert "teacher_average" in data["teacher_topk_post"]
            assert yaml.safe_load((d / "config.inference.yaml").read_text())["model"] == "espnet"
        for name in ("dev", "test"):
            decode = d / f"decode_{name}_greedy"
            assert set(read_map(decode / "text")) == set_ids(recipe, name), decode
            assert json.loads((decode / "scores.json").read_text())["n_utts"] == SIZES[name]
        assert (d / "cer_curve.tsv").is_file()
    # the exported self-distillation model is a stock ESPnet model decoding as the recipe did
    from espnet2.bin.asr_inference import Speech2Text

    feats = load_features(recipe, "test")
    cwd = os.getcwd()
    os.chdir(recipe)
    try:
        d = dirs["selfdistill"]
        speech2text = Speech2Text(asr_train_config=str(d / "config.inference.yaml"),
                                  asr_model_file=str(d / "inference.pth"), ctc_weight=1.0, beam_size=BEAM,
                                  device="cpu")
        assert type(speech2text.asr_model).__name__ == "ESPnetASRModel"
        greedy, _ = stock_decode(speech2text, dict(list(feats.items())[:4]))
        expected = recipe_decode(d, "test", "greedy")
        assert greedy == {u: expected[u] for u in greedy}
    finally:
        os.chdir(cwd)
    # the table: a row per variant, ΔWER against the linked conventional-KD student
    results = (recipe / "RESULTS_variants.md").read_text()
    table = results.split("## KD variants", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[2].strip().strip("`").removesuffix("_seed*"): line
            for line in table.splitlines() if line.startswith("| ") and "_seed*`" in line}
    assert set(rows) == {d.name.removesuffix("_seed1") for d in [*dirs.values(), reference]}
    assert "(reference)" in rows[reference.name.removesuffix("_seed1")]
    delta = r"\| (\*\*)?[-+]\d+\.\d\d(\*\*)? \[[-+]\d+\.\d\d, [-+]\d+\.\d\d\], p "
    assert re.search(delta, rows["student_oracleguided_g0.5"]), rows["student_oracleguided_g0.5"]
    assert rows["student_selfdistill_k1_t1_words"].rstrip().endswith("(one stage) |")
    assert re.search(r"\d+ \+ \d+ \+ \d+ = \*\*\d+\*\* \|$", rows["student_oracleseqkd_s1_n2"].rstrip())
    # a rerun reuses every variant (same options, same inputs)
    rerun = run(recipe, *options, "--stage", "8", "--stop_stage", "8").stdout
    assert rerun.count("already trained; skipping") == len(VARIANTS), rerun


def test_missing_input_is_named(tmp_path):
    for name in ("run.sh", "conf", "local", "db.sh"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = dict(os.environ, FSDD=str(FSDD))
    result = subprocess.run(
        [str(tmp_path / "run.sh"), "--stage", "4", "--stop_stage", "4"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "tokens.txt" in result.stderr and "stage 3" in result.stderr


def test_students_learn_from_moved_posteriors(recipe):
    """run.sh --oracle_kd_shift_frames (stage 8, its own exp dir with the teachers linked): the Oracle
    Teacher's KD student is trained with the move in its model_conf and dir name, from the unmoved
    dump; the conventional teacher's students and the exported inference config are as without it."""
    recipe, _ = recipe
    exp = recipe / "exp_shift"
    exp.mkdir(exist_ok=True)
    for teacher in TEACHERS:
        if not (exp / teacher).is_symlink():
            (exp / teacher).symlink_to(recipe / "exp" / teacher)
    run(recipe, *TINY, "--exp", "exp_shift", "--student_systems", "oraclekd", "--oracle_kd_shift_frames", "-1",
        "--conv_kd_shift_frames", "2", "--stage", "8", "--stop_stage", "8")
    moved = student_dir(exp, "oraclekd")
    assert moved.name == student_dir(recipe / "exp", "oraclekd").name.replace("_seed1", "_shift-1_seed1")
    config = yaml.safe_load((moved / "config.yaml").read_text())
    assert config["model_conf"]["kd_shift_frames"] == -1
    posteriors = {name: path for path, name, _ in config["train_data_path_and_name_and_type"]}["teacher_topk_post"]
    assert Path(posteriors).parent.parent == Path("exp_shift/teacher_oracle/posteriors")  # the stage-7 dump
    inference = yaml.safe_load((moved / "config.inference.yaml").read_text())
    assert inference["model"] == "espnet" and "kd_shift_frames" not in inference.get("model_conf", {})
    result = subprocess.run([str(recipe / "run.sh"), *TINY, "--exp", "exp_shift", "--student_systems", "avgkd",
                             "--oracle_kd_shift_frames", "1", "--stage", "8", "--stop_stage", "8"],
                            cwd=recipe, env=dict(os.environ, FSDD=str(FSDD)), capture_output=True, text=True)
    assert result.returncode != 0 and "avgkd averages both teachers' unmoved posteriors" in result.stderr


def test_auto_move_from_teacher_onsets(recipe):
    """run.sh --oracle_kd_shift_frames auto: the move comes from the teachers' greedy decodes of dev
    (reused, since their stamps hold), scored for spike timing. Here those decodes are rewritten so that
    the conventional teacher fires on every word's first frame (frame 2 at the earliest) and the Oracle
    Teacher 2 frames earlier: the move is +2, and the Oracle-KD student is trained with it (name, model_conf)."""
    import shutil

    recipe, _ = recipe
    exp = recipe / "exp_auto"
    exp.mkdir(exist_ok=True)
    for teacher, early in zip(TEACHERS, (0, 2)):
        if not (exp / teacher).is_dir():  # a copy: its decode dirs are rewritten below
            shutil.copytree(recipe / "exp" / teacher, exp / teacher)
        decode = exp / teacher / "decode_dev_greedy"
        assert (decode / ".done").is_file()  # decoded by the fixture's stage 9: the auto step reuses it
        shift_ms = float((decode / "frame_shift_ms").read_text())
        offset_ms = float((decode / "frame_offset_ms").read_text())
        words = {}
        for line in (recipe / "data" / "dev" / "word_align").read_text().splitlines():
            utt, _, word, start, _ = line.split()
            words.setdefault(utt, []).append((word, max(round((1000 * float(start) - offset_ms) / shift_ms), 2)))
        fields = {"text": lambda w: w[0], "token": lambda w: w[0], "ctc_frames": lambda w: str(w[1] - early)}
        for name, field in fields.items():
            (decode / name).write_text("".join(f"{utt} {' '.join(map(field, ws))}\n"
                                               for utt, ws in sorted(words.items())))
    result = run(recipe, *TINY, "--exp", "exp_auto", "--student_systems", "oraclekd",
                 "--oracle_kd_shift_frames", "auto", "--stage", "8", "--stop_stage", "8")
    move = json.loads((exp / "oracle_kd_shift_frames.json").read_text())
    assert move["move_frames"] == 2 and "--oracle_kd_shift_frames auto: 2" in result.stdout
    assert math.isclose(move["conventional_onset_ms"] - move["oracle_onset_ms"], 2 * move["frame_shift_ms"])
    student = student_dir(exp, "oraclekd")
    assert student.name == student_dir(recipe / "exp", "oraclekd").name.replace("_seed1", "_shift2_seed1")
    assert yaml.safe_load((student / "config.yaml").read_text())["model_conf"]["kd_shift_frames"] == 2
    # stages 9-10 on their own find the moved student again, and RESULTS.md says where the move came from
    run(recipe, *TINY, "--exp", "exp_auto", "--student_systems", "oraclekd", "--oracle_kd_shift_frames", "auto",
        "--stage", "9", "--stop_stage", "10", "--decode_modes", "greedy", "--results", "exp_auto/RESULTS.md")
    assert (student / "decode_test_greedy" / "scores.json").is_file()
    results = (exp / "RESULTS.md").read_text()
    assert "teacher posteriors moved +2 frames" in results
    assert "give the Oracle Teacher's posteriors the move of +2 frames (`--oracle_kd_shift_frames auto`)" in results
