"""LibriSpeech recipes' data side on a LibriSpeech-layout fixture built from FSDD recordings:
download (file:// URL, checksums), Kaldi data dirs, speed perturbation (the pipeline's), local/data.sh of
both recipes, BPE units. No ESPnet model is built here (fast)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "egs" / "librispeech_100" / "local"
FSDD = Path(os.environ.get("FSDD_FIXTURE", "/work/shared/data/fsdd"))
sys.path.insert(0, str(LOCAL))

import librispeech_download as dl  # noqa: E402
import librispeech_prep as prep  # noqa: E402
import make_librispeech_fixture as fixture  # noqa: E402

from espnet_oracle.bin import speed_perturb as sp  # noqa: E402
from espnet_oracle.utils.datadir import read_kaldi_map, validate_data_dir  # noqa: E402

pytestmark = pytest.mark.skipif(
    not any((FSDD / "recordings").glob("*.wav")) and not any(FSDD.glob("*.wav")),
    reason=f"FSDD recordings not found at {FSDD} (set FSDD_FIXTURE)",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """<root>/LibriSpeech/<part>/... for every part, plus tarballs/ and their checksum table."""
    root = tmp_path_factory.mktemp("ls_fixture")
    counts = fixture.build(FSDD, root, tarballs=True)
    return root, counts


def env():
    e = dict(os.environ)
    e["PYTHON"] = sys.executable
    e.pop("LIBRISPEECH", None)
    e.pop("LIBRISPEECH_URL", None)
    return e


# --------------------------------------------------------------------------- data dirs
def test_prepare_writes_sorted_validated_kaldi_dirs(corpus, tmp_path):
    root, counts = corpus
    part_dir = root / "LibriSpeech" / "train-clean-100"
    out = tmp_path / "train_clean_100"
    assert prep.prepare(part_dir, out) == counts["train-clean-100"]
    utts = validate_data_dir(out, optional=("utt2dur",))
    assert utts == sorted(utts) and len(utts) == counts["train-clean-100"]
    # C-locale order, not numeric: speaker 103 sorts before 19
    assert utts[0].startswith("103-1240-") and utts[-1].startswith("19-227-")
    wav, text = read_kaldi_map(out / "wav.scp"), read_kaldi_map(out / "text")
    utt2spk, utt2dur = read_kaldi_map(out / "utt2spk"), read_kaldi_map(out / "utt2dur")
    for utt in utts:
        spk, chapter, _ = utt.split("-")
        assert utt2spk[utt] == f"{spk}-{chapter}"          # Kaldi/ESPnet: speaker-chapter
        path = Path(wav[utt])
        assert path.is_absolute() and path.suffix == ".flac" and path.name == f"{utt}.flac"
        info = soundfile.info(str(path))
        assert info.samplerate == 16000 and abs(float(utt2dur[utt]) - info.frames / 16000) < 1e-3
        trans = dict(
            line.split(" ", 1) for line in
            (path.parent / f"{spk}-{chapter}.trans.txt").read_text().splitlines()
        )
        assert text[utt] == trans[utt] and text[utt].isupper()
    spk2utt = read_kaldi_map(out / "spk2utt")
    assert list(spk2utt) == sorted(spk2utt)
    # second run: up to date, files untouched
    mtime = (out / "wav.scp").stat().st_mtime_ns
    prep.prepare(part_dir, out)
    assert (out / "wav.scp").stat().st_mtime_ns == mtime


def test_prepare_names_the_broken_file(corpus, tmp_path):
    root, _ = corpus
    part = tmp_path / "LibriSpeech" / "dev-clean"
    shutil.copytree(root / "LibriSpeech" / "dev-clean", part)
    chapter = part / "84" / "121123"
    trans = chapter / "84-121123.trans.txt"

    (chapter / "84-121123-0001.flac").rename(tmp_path / "aside.flac")
    with pytest.raises(prep.LayoutError, match=r"84-121123\.trans\.txt: utterance 84-121123-0001 has no audio"):
        prep.scan_part(part)
    (tmp_path / "aside.flac").rename(chapter / "84-121123-0001.flac")

    shutil.copy(chapter / "84-121123-0001.flac", chapter / "84-121123-0009.flac")
    with pytest.raises(prep.LayoutError, match=r"84-121123-0009\.flac: no transcript line in .*84-121123\.trans\.txt"):
        prep.scan_part(part)
    (chapter / "84-121123-0009.flac").unlink()

    original = trans.read_text()
    trans.write_text(original + "99-1-0000 WRONG CHAPTER\n")
    with pytest.raises(prep.LayoutError, match=r"trans\.txt:3: utterance id '99-1-0000' does not start with 84-121123-"):
        prep.scan_part(part)
    trans.unlink()
    with pytest.raises(prep.LayoutError, match=r"84-121123\.trans\.txt: missing"):
        prep.scan_part(part)
    trans.write_text(original)
    assert len(prep.scan_part(part)[0]) == 4
    with pytest.raises(prep.LayoutError, match="no such folder"):
        prep.scan_part(tmp_path / "LibriSpeech" / "nope")


def test_combine_dev_sets(corpus, tmp_path):
    root, counts = corpus
    for part in ("dev-clean", "dev-other"):
        prep.prepare(root / "LibriSpeech" / part, tmp_path / part.replace("-", "_"))
    n = prep.combine(tmp_path / "dev", [tmp_path / "dev_clean", tmp_path / "dev_other"])
    assert n == counts["dev-clean"] + counts["dev-other"]
    assert len(validate_data_dir(tmp_path / "dev", optional=("utt2dur",))) == n
    with pytest.raises(prep.DataDirError, match="also in another input"):
        prep.combine(tmp_path / "dev2", [tmp_path / "dev_clean", tmp_path / "dev_clean"])


# --------------------------------------------------------------------------- download
def test_download_from_file_url_with_checksums(corpus, tmp_path):
    root, _ = corpus
    table = dl.read_checksums(root / "tarballs" / "checksums.tsv")
    url = (root / "tarballs").as_uri()
    dest = tmp_path / "dl"
    dest.mkdir()
    assert dl.fetch_part(dest, "dev-other", url, table) == "downloaded"
    assert (dest / "LibriSpeech" / "dev-other" / ".complete").exists()
    assert (dest / "dev-other.tar.gz").exists()
    assert len(prep.scan_part(dest / "LibriSpeech" / "dev-other")[0]) == 2
    # present: nothing is fetched again (the source may be gone)
    assert dl.fetch_part(dest, "dev-other", "file:///nonexistent", table) == "present"
    # a tarball already in place is verified and extracted without downloading
    shutil.copy(root / "tarballs" / "test-clean.tar.gz", dest)
    assert dl.fetch_part(dest, "test-clean", "file:///nonexistent", table) == "verified"
    # an extracted tree put there by the user is used as it is
    shutil.copytree(root / "LibriSpeech" / "test-other", dest / "LibriSpeech" / "test-other")
    assert dl.fetch_part(dest, "test-other", "file:///nonexistent", table) == "tree"


def test_download_refuses_wrong_checksum(corpus, tmp_path):
    root, _ = corpus
    table = dl.read_checksums(root / "tarballs" / "checksums.tsv")
    url = (root / "tarballs").as_uri()
    bad = {part: dict(v) for part, v in table.items()}
    bad["dev-clean"]["md5"] = "0" * 32
    with pytest.raises(dl.DownloadError, match=r"dev-clean: the archive downloaded from .* does not match .*md5"):
        dl.fetch_part(tmp_path, "dev-clean", url, bad)
    assert (tmp_path / "dev-clean.tar.gz.bad-checksum").exists()   # kept aside ...
    assert not (tmp_path / "dev-clean.tar.gz").exists()             # ... never used
    assert not (tmp_path / "LibriSpeech" / "dev-clean").exists()    # nothing extracted
    # a corrupt tarball already in place is set aside and fetched again
    (tmp_path / "dev-clean.tar.gz").write_bytes(b"not a tarball")
    assert dl.fetch_part(tmp_path, "dev-clean", url, table) == "downloaded"
    assert (tmp_path / "LibriSpeech" / "dev-clean" / ".complete").exists()
    # the command line: exit status 1 and a message
    bad_table = tmp_path / "bad.tsv"
    lines = (root / "tarballs" / "checksums.tsv").read_text().splitlines()
    bad_table.write_text("\n".join(
        line.replace(line.split("\t")[3], "f" * 64) if line.startswith("dev-other") else line
        for line in lines) + "\n")
    assert dl.main(["--root", str(tmp_path), "--parts", "dev-other", "--base_url", url,
                    "--checksums", str(bad_table)]) == 1


def test_download_offline_says_where_to_put_the_data(corpus, tmp_path):
    root, _ = corpus
    table = dl.read_checksums(root / "tarballs" / "checksums.tsv")
    with pytest.raises(dl.DownloadError) as err:
        dl.fetch_part(tmp_path, "test-clean", "http://127.0.0.1:9/resources/12", table)
    message = str(err.value)
    assert "cannot download http://127.0.0.1:9/resources/12/test-clean.tar.gz" in message
    assert str(tmp_path / "test-clean.tar.gz") in message
    assert str(tmp_path / "LibriSpeech" / "test-clean") in message and "LIBRISPEECH" in message
    assert not list(tmp_path.glob("*.part"))


def test_official_checksum_table_is_complete():
    table = dl.read_checksums(dl.DEFAULT_CHECKSUMS)
    assert set(table) == set(dl.ALL_PARTS)
    for part, row in table.items():
        assert len(row["md5"]) == 32 and len(row["sha256"]) == 64 and int(row["bytes"]) > 10**8, part
    assert table["dev-clean"]["md5"] == "42e2234ba48799c1f50f24a7926300a1"


# --------------------------------------------------------------------------- speed perturbation
def test_speed_perturbation(corpus, tmp_path):
    from espnet_oracle.bin import make_features
    from espnet_oracle.bin.make_features import read_pipe

    root, counts = corpus
    src = tmp_path / "dev_clean"
    prep.prepare(root / "LibriSpeech" / "dev-clean", src)
    n = counts["dev-clean"]
    files = tmp_path / "dev_clean_sp"
    assert sp.perturb_dir(src, files, ["0.9", "1.0", "1.1"], tmp_path / "audio", nj=1) == 3 * n
    utts = validate_data_dir(files, optional=("utt2dur",))
    assert sum(u.startswith("sp0.9-") for u in utts) == n and sum(u.startswith("sp1.1-") for u in utts) == n
    wav, utt2spk = read_kaldi_map(files / "wav.scp"), read_kaldi_map(files / "utt2spk")
    text, dur = read_kaldi_map(files / "text"), read_kaldi_map(files / "utt2dur")
    original = read_kaldi_map(src / "wav.scp")
    utt = next(iter(original))
    assert wav[utt] == original[utt] and utt2spk["sp0.9-" + utt] == "sp0.9-" + utt2spk[utt]
    assert text["sp1.1-" + utt] == text[utt]
    n0 = soundfile.info(original[utt]).frames
    for f in ("0.9", "1.1"):
        data, rate = soundfile.read(wav[f"sp{f}-{utt}"], dtype="int16")
        assert rate == 16000 and abs(len(data) - n0 / float(f)) <= 1
        assert abs(float(dur[f"sp{f}-{utt}"]) - len(data) / 16000) < 1e-3
    assert sp.main(["--in_dir", str(src), "--out_dir", str(files), "--audio_dir", str(tmp_path / "audio"),
                    "--nj", "1"]) == 0                                  # the same options: up to date
    # ESPnet's raw-audio reader (feats_type raw) takes the perturbed wav.scp
    from espnet2.fileio.sound_scp import SoundScpReader

    reader = SoundScpReader(str(files / "wav.scp"), dtype="float32")
    rate, array = reader["sp0.9-" + utt]
    assert rate == 16000 and array.ndim == 1
    # a `command |` entry, read by the features stage (make_features); raw writes its audio out,
    # as ESPnet's raw reader runs no pipes
    from_file, _ = soundfile.read(wav["sp1.1-" + utt], dtype="int16")
    soundfile.write(tmp_path / "x.wav", from_file, 16000, subtype="PCM_16")
    pipes = tmp_path / "pipe"
    (pipes / "wav.scp").parent.mkdir()
    (pipes / "wav.scp").write_text(f"a {original[utt]}\nb cat {tmp_path / 'x.wav'} |\n")
    (pipes / "text").write_text("a A\nb B\n")
    (pipes / "utt2spk").write_text("a s\nb s\n")
    rate, piped = read_pipe(read_kaldi_map(pipes / "wav.scp")["b"])
    assert rate == 16000 and piped.shape == (len(from_file), 1)
    np.testing.assert_array_equal(np.round(piped[:, 0] * 32768).astype(np.int16), from_file)
    make_features.main(["--feats_type", "raw", "--wav_scp", str(pipes / "wav.scp"), "--out_dir",
                        str(tmp_path / "raw_pipe"), "--fs", "16000"])
    raw = read_kaldi_map(tmp_path / "raw_pipe" / "wav.1.scp")
    assert raw["a"] == original[utt] and not raw["b"].endswith("|")
    written, _ = soundfile.read(raw["b"], dtype="int16")
    np.testing.assert_array_equal(written, from_file)
    with pytest.raises(ValueError, match="out of range"):
        sp.parse_factors("0.9 3.0")
    assert sp.parse_factors("0.9,1.0,1.1") == ["0.9", "1.0", "1.1"]
    with pytest.raises(ValueError, match="is a pipe"):
        sp.perturb_dir(pipes, tmp_path / "pipe_sp", ["0.9", "1.0"], tmp_path / "audio")



def test_speed_perturbation_keeps_any_sample_rate(tmp_path):
    """8 kHz (FSDD-like) and stereo audio: same rate and channels out, duration / factor."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for utt, (rate, shape) in {"a": (8000, (8000,)), "b": (22050, (11025, 2))}.items():
        soundfile.write(tmp_path / f"{utt}.wav", rng.uniform(-0.5, 0.5, shape), rate, subtype="PCM_16")
    (data / "wav.scp").write_text(f"a {tmp_path / 'a.wav'}\nb {tmp_path / 'b.wav'}\n")
    (data / "text").write_text("a ONE\nb TWO\n")
    (data / "utt2spk").write_text("a s\nb s\n")
    assert sp.perturb_dir(data, tmp_path / "sp", ["0.9", "1.0"], tmp_path / "audio") == 4
    wav = read_kaldi_map(tmp_path / "sp" / "wav.scp")
    out, rate = soundfile.read(wav["sp0.9-a"], dtype="int16")
    assert rate == 8000 and out.ndim == 1 and abs(len(out) - 8000 / 0.9) <= 1
    out, rate = soundfile.read(wav["sp0.9-b"], dtype="int16")
    assert rate == 22050 and out.shape[1] == 2 and abs(len(out) - 11025 / 0.9) <= 1


# --------------------------------------------------------------------------- local/data.sh
def test_data_sh_100h_end_to_end(corpus, tmp_path):
    root, counts = corpus
    recipe = tmp_path / "librispeech_100"
    recipe.mkdir()
    (recipe / "db.sh").write_text(f"LIBRISPEECH=${{LIBRISPEECH:-{tmp_path / 'corpus'}}}\n")
    cmd = [str(LOCAL / "data.sh"), "--base_url", (root / "tarballs").as_uri(),
           "--checksums", str(root / "tarballs" / "checksums.tsv"), "--seed", "0", "--data_dir", "data"]
    done = subprocess.run(cmd, cwd=recipe, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    data = recipe / "data"
    for name in ("train_clean_100", "dev_clean", "dev_other", "test_clean", "test_other", "dev"):
        validate_data_dir(data / name, optional=("utt2dur",))
    assert len(read_kaldi_map(data / "dev" / "text")) == counts["dev-clean"] + counts["dev-other"]
    assert not (data / "train_clean_360").exists()       # the 100 h recipe needs no other train part
    assert "train-clean-360" not in done.stderr
    # speed perturbation is the pipeline's stage 1 (run.sh --speed_perturb_factors), not data.sh's
    assert not (data / "train_clean_100_sp").exists()
    done = subprocess.run(cmd + ["--speed_perturb_factors", "0.9,1.0,1.1"], cwd=recipe, env=env(),
                          capture_output=True, text=True)
    assert done.returncode != 0 and "unknown option --speed_perturb_factors" in done.stderr
    # wrong checksum through the shell script: refused, exit status != 0
    bad = tmp_path / "bad.tsv"
    rows = [line.split("\t") for line in (root / "tarballs" / "checksums.tsv").read_text().splitlines()]
    bad.write_text("".join("\t".join(r[:2] + ["0" * 32] + r[3:]) + "\n" for r in rows))
    shutil.rmtree(tmp_path / "corpus")
    done = subprocess.run(cmd[:3] + ["--checksums", str(bad), "--stop_stage", "1"], cwd=recipe,
                          env=env(), capture_output=True, text=True)
    assert done.returncode != 0 and "REFUSED" in done.stderr and "download/verification failed" in done.stderr


def test_data_sh_960h_reuses_the_100h_scripts(corpus, tmp_path):
    root, counts = corpus
    recipe = tmp_path / "librispeech"
    recipe.mkdir()
    (recipe / "local").symlink_to(REPO / "egs" / "librispeech" / "local")
    e = env()
    e["LIBRISPEECH"] = str(root)   # an extracted LibriSpeech/ tree, no network
    done = subprocess.run([str(REPO / "egs" / "librispeech" / "local" / "data.sh"), "--base_url",
                           "http://127.0.0.1:9/unused"], cwd=recipe, env=e, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    train = recipe / "data" / "train_960"
    validate_data_dir(train, optional=("utt2dur",))
    assert len(read_kaldi_map(train / "text")) == sum(
        counts[p] for p in ("train-clean-100", "train-clean-360", "train-other-500"))
    # offline and nothing there: the error names where to put the data
    e["LIBRISPEECH"] = str(tmp_path / "empty")
    done = subprocess.run([str(REPO / "egs" / "librispeech" / "local" / "data.sh"), "--base_url",
                           "http://127.0.0.1:9/resources/12", "--stop_stage", "1"],
                          cwd=recipe, env=e, capture_output=True, text=True)
    assert done.returncode != 0 and "put the archive at" in done.stderr


# --------------------------------------------------------------------------- BPE units
@pytest.mark.parametrize("bpemode", ["unigram", "bpe"])
def test_bpe_units_on_fixture_text(corpus, tmp_path, bpemode):
    """Both sentencepiece model types (the pipeline's --bpemode) on the fixture text, read back by
    ESPnet's tokenizer; the whole stage 3 runs in test_librispeech_run.py."""
    import sentencepiece as spm
    from espnet2.text.build_tokenizer import build_tokenizer

    root, _ = corpus
    out = tmp_path / "train"
    prep.prepare(root / "LibriSpeech" / "train-clean-100", out)
    text = read_kaldi_map(out / "text")
    lines = tmp_path / "text.txt"
    lines.write_text("\n".join(text.values()) + "\n")
    nbpe = 24
    spm.SentencePieceTrainer.train(input=str(lines), model_prefix=str(tmp_path / "m"), vocab_size=nbpe,
                                   model_type=bpemode, character_coverage=1.0, hard_vocab_limit=False,
                                   minloglevel=2)
    model = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    assert 10 < model.get_piece_size() <= nbpe
    tokenizer = build_tokenizer("bpe", bpemodel=str(tmp_path / "m.model"))
    for line in text.values():
        pieces = tokenizer.text2tokens(line)
        assert pieces and model.unk_id() not in model.piece_to_id(pieces)
        assert tokenizer.tokens2text(pieces) == line
    assert model.decode(model.encode("SEVEN ONE")) == "SEVEN ONE"


def test_fixture_tarballs_match_their_table(corpus):
    root, _ = corpus
    for part, row in dl.read_checksums(root / "tarballs" / "checksums.tsv").items():
        data = (root / "tarballs" / f"{part}.tar.gz").read_bytes()
        assert hashlib.md5(data).hexdigest() == row["md5"] and len(data) == int(row["bytes"])
