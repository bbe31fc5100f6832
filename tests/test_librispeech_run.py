"""egs/librispeech_100/run.sh --stop_stage 3 (stages 0-3 of scripts/oracle_asr.sh with --feats_type raw)
on a LibriSpeech-layout fixture tree (local/make_librispeech_fixture.py, FSDD recordings), found
through LIBRISPEECH as db.sh reads it. The recipe is run as it is, from a temporary copy of egs/,
with the real configs; only the fixture's sizes are passed (a tiny --nbpe, --nj 1).

Checked by value: data dirs (sorted ids, the same in every file, speed-perturbed copies), the raw
dump (wav.scp entries 16 kHz audio of the data dir's utterances), ESPnet's collect_stats shape files
(samples of every utterance) and global stats (80 mels, frame count = sum of STFT frames, finite
mean/var), the token list (<blank> <unk> ... <sos/eos>, pieces of the BPE model) and the
sentencepiece unigram model (encodes every fixture transcript without <unk>). A second run finds
everything up to date. The 960 h recipe's run.sh is run through stage 1 (its set names exist).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO = Path(__file__).resolve().parents[1]
FSDD = Path(os.environ.get("FSDD_FIXTURE", "/work/shared/data/fsdd"))
sys.path.insert(0, str(REPO / "egs" / "librispeech_100" / "local"))

import make_librispeech_fixture as fixture  # noqa: E402

from espnet_oracle.utils.datadir import read_kaldi_map, validate_data_dir  # noqa: E402

pytestmark = pytest.mark.skipif(
    not any((FSDD / "recordings").glob("*.wav")) and not any(FSDD.glob("*.wav")),
    reason=f"FSDD recordings not found at {FSDD} (set FSDD_FIXTURE)",
)

TRAIN, VALID = "train_clean_100_sp", "dev"
TESTS = ["dev_clean", "dev_other", "test_clean", "test_other"]
NBPE = 20
HOP, FS = 160, 16000   # conf: frontend default, hop_length 160, raw 16 kHz


def copy_egs(tmp: Path) -> Path:
    """tmp/egs/<recipe> for both LibriSpeech recipes (the 960 h local/data.sh calls ../../librispeech_100)."""
    skip = shutil.ignore_patterns("data", "dump", "exp", "downloads", "wheelhouse", "RESULTS.md")
    for name in ("librispeech_100", "librispeech"):
        shutil.copytree(REPO / "egs" / name, tmp / "egs" / name, ignore=skip)
    return tmp / "egs"


def run(recipe: Path, corpus: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LIBRISPEECH=str(corpus), ESPNET_ORACLE_ROOT=str(REPO))
    env.pop("LIBRISPEECH_URL", None)
    done = subprocess.run(["./run.sh", *args], cwd=recipe, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ls_run")
    counts = fixture.build(FSDD, tmp / "corpus")
    egs = copy_egs(tmp)
    r = egs / "librispeech_100"
    done = run(r, tmp / "corpus", "--stop_stage", "3", "--nbpe", str(NBPE), "--nj", "1")
    return r, counts, done, tmp


def keys(path: Path) -> list:
    return list(read_kaldi_map(path))


def test_recipe_options_reach_the_pipeline(recipe):
    r, _, done, _ = recipe
    for stage in range(4):
        assert f"stage {stage}:" in done.stdout
    assert "stage 4:" not in done.stdout
    command = (r / "exp" / "commands.log").read_text()
    for option in ("--feats_type raw", "--fs 16000", "--train_set train_clean_100", f"--valid_set {VALID}",
                   "--speed_perturb_factors 0.9 1.0 1.1", "--token_type bpe", "--nbpe 5000", "--bpemode unigram"):
        assert option in command
    # the pipeline's stage 1 perturbs (local/data.sh has no speed perturbation of its own)
    assert f"speed perturbation (0.9 1.0 1.1) -> data/{TRAIN}" in done.stdout
    times = [line.split("\t")[0] for line in (r / "exp" / "stage_times.tsv").read_text().splitlines()]
    assert times == ["0", "1", "2", "3"]


def test_data_dirs(recipe):
    r, counts, _, _ = recipe
    n = {"train_clean_100": counts["train-clean-100"], "dev_clean": counts["dev-clean"],
         "dev_other": counts["dev-other"], "test_clean": counts["test-clean"], "test_other": counts["test-other"]}
    n[VALID] = n["dev_clean"] + n["dev_other"]
    n[TRAIN] = 3 * n["train_clean_100"]
    for name, count in n.items():
        d = r / "data" / name
        utts = validate_data_dir(d, optional=("utt2dur",))
        assert len(utts) == count and utts == sorted(utts), name
        for f in ("wav.scp", "text", "utt2spk"):
            assert keys(d / f) == utts, (name, f)
        utt2spk = read_kaldi_map(d / "utt2spk")
        spk2utt = {s: u.split() for s, u in read_kaldi_map(d / "spk2utt").items()}
        assert sorted(u for us in spk2utt.values() for u in us) == utts
        assert all(utt2spk[u] == s for s, us in spk2utt.items() for u in us)
        assert all(u.startswith(utt2spk[u] + "-") for u in utts)       # speaker = [sp<f>-]reader-chapter
    sp = read_kaldi_map(r / "data" / TRAIN / "text")
    base = read_kaldi_map(r / "data" / "train_clean_100" / "text")
    assert {u for u in sp if not u.startswith("sp")} == set(base)
    for f in ("0.9", "1.1"):
        assert all(sp[f"sp{f}-{u}"] == t for u, t in base.items())
    audio = (r / "data" / TRAIN / "audio").resolve()     # the pipeline's stage 1 writes the perturbed flac there
    assert all(Path(p).is_relative_to(audio) for u, p in read_kaldi_map(r / "data" / TRAIN / "wav.scp").items()
               if u.startswith("sp"))
    dev = read_kaldi_map(r / "data" / VALID / "text")
    assert dev == {**read_kaldi_map(r / "data" / "dev_clean" / "text"), **read_kaldi_map(r / "data" / "dev_other" / "text")}


def test_raw_dump_and_shapes(recipe):
    r, _, _, _ = recipe
    for name in [TRAIN, VALID, *TESTS]:
        dump = r / "dump" / "raw" / name
        utts = keys(r / "data" / name / "wav.scp")
        assert keys(dump / "wav.scp") == utts, name
        assert read_kaldi_map(dump / "text") == read_kaldi_map(r / "data" / name / "text")
        # 16 kHz audio as it is: the dump points at the corpus/perturbed flac files, no copies
        assert read_kaldi_map(dump / "wav.scp") == read_kaldi_map(r / "data" / name / "wav.scp")
        samples = {u: soundfile.info(p).frames for u, p in read_kaldi_map(dump / "wav.scp").items()}
        assert all(soundfile.info(p).samplerate == FS for p in read_kaldi_map(dump / "wav.scp").values())
        if name not in (TRAIN, VALID):
            continue
        shape = {u: v for u, v in read_kaldi_map(dump / "feats_shape").items()}
        assert set(shape) == set(utts), name                    # every utterance, nothing else
        assert all(int(shape[u]) == samples[u] for u in utts)   # raw: speech shape = samples
        assert all(0.2 * FS < samples[u] < 20 * FS for u in utts)
    # speed perturbation changes the length by 1/f
    sh = read_kaldi_map(r / "dump" / "raw" / TRAIN / "feats_shape")
    u = next(k for k in sh if not k.startswith("sp"))
    assert abs(int(sh[f"sp0.9-{u}"]) - int(sh[u]) / 0.9) <= 1 and abs(int(sh[f"sp1.1-{u}"]) - int(sh[u]) / 1.1) <= 1


def test_global_stats(recipe):
    r, _, _, _ = recipe
    stats = np.load(r / "dump" / "raw" / TRAIN / "feats_stats.npz")
    assert stats["sum"].shape == (80,) and stats["sum_square"].shape == (80,)
    shape = read_kaldi_map(r / "dump" / "raw" / TRAIN / "feats_shape")
    assert int(stats["count"]) == sum(int(n) // HOP + 1 for n in shape.values())   # STFT frames (center=True)
    mean = stats["sum"] / stats["count"]
    var = stats["sum_square"] / stats["count"] - mean ** 2
    assert np.isfinite(mean).all() and np.isfinite(var).all() and (var > 1e-3).all()
    assert -30 < mean.min() and mean.max() < 30                 # log-mel magnitudes
    assert (r / "dump" / "raw" / "stats" / ".done").exists()


def test_bpe_units_and_token_list(recipe):
    import sentencepiece as spm

    r, _, _, _ = recipe
    tdir = r / "data" / "token_list" / "bpe"
    tokens = (tdir / "tokens.txt").read_text().split("\n")[:-1]
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert len(set(tokens)) == len(tokens) and 10 < len(tokens) <= NBPE + 3
    assert "model_type: UNIGRAM" in (tdir / "spm_train.log").read_text()
    model = spm.SentencePieceProcessor(model_file=str(tdir / "bpe.model"))
    assert all(model.piece_to_id(t) != model.unk_id() for t in tokens[2:-1])
    used = set()
    for name in [TRAIN, VALID, *TESTS]:
        for line in read_kaldi_map(r / "data" / name / "text").values():
            ids = model.encode(line)
            assert model.unk_id() not in ids and model.decode(ids) == line
            used |= set(model.id_to_piece(ids))
    assert used <= set(tokens)
    # ESPnet's text_shape (tokens per utterance through the recipe's preprocessor) = pieces of the model
    text = read_kaldi_map(r / "data" / TRAIN / "text")
    for utt, n in read_kaldi_map(r / "dump" / "raw" / "stats" / "train" / "text_shape").items():
        assert int(n) == len(model.encode(text[utt]))


def test_second_run_is_up_to_date(recipe):
    r, _, _, tmp = recipe
    stats = r / "dump" / "raw" / TRAIN / "feats_stats.npz"
    before = stats.stat().st_mtime_ns
    done = run(r, tmp / "corpus", "--stage", "2", "--stop_stage", "3", "--nbpe", str(NBPE), "--nj", "1")
    assert done.stdout.count(": up to date") == 2 + len(TESTS)
    assert stats.stat().st_mtime_ns == before


def test_960h_run_sh_names_the_sets_its_data_sh_writes(recipe):
    _, counts, _, tmp = recipe
    r = tmp / "egs" / "librispeech"
    run(r, tmp / "corpus", "--stage", "1", "--stop_stage", "1", "--nj", "1")
    command = (r / "exp" / "commands.log").read_text()
    assert "--train_set train_960 " in command and "--feats_type raw" in command
    assert "--speed_perturb_factors 0.9 1.0 1.1" in command
    train = sum(counts[p] for p in ("train-clean-100", "train-clean-360", "train-other-500"))
    assert len(validate_data_dir(r / "data" / "train_960_sp", optional=("utt2dur",))) == 3 * train
    for name in [VALID, *TESTS]:
        validate_data_dir(r / "data" / name, optional=("utt2dur",))
