"""Tests of the FSDD connected-digit data preparation (local/data.sh, local/prepare_fsdd_digits.py)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "local"))
import prepare_fsdd_digits as P  # noqa: E402

REAL_FSDD = Path(os.environ.get("FSDD") or "/work/shared/data/fsdd")
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
SMALL = {"train": 20, "dev": 20, "test": 20, "test_unseen": 20}
FAKE_TAKES = (0, 5, 10, 11)  # one take each for test/dev, two for train


def make_fake_fsdd(root: Path, takes=FAKE_TAKES) -> Path:
    """A tiny FSDD look-alike: short tones, 8 kHz 16-bit mono, all speakers x digits x `takes`."""
    rec = root / "recordings"
    rec.mkdir(parents=True)
    rng = np.random.default_rng(123)
    for si, spk in enumerate(SPEAKERS):
        for d in range(10):
            for t in takes:
                n = int(8000 * rng.uniform(0.12, 0.2))
                tt = np.arange(n) / 8000
                x = 0.3 * np.sin(2 * np.pi * (200 + 60 * d + 15 * si) * tt) * np.hanning(n)
                x += 0.003 * rng.standard_normal(n)
                sf.write(str(rec / f"{d}_{spk}_{t}.wav"), x, 8000, subtype="PCM_16")
    return root


def read_table(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def fake_fsdd(tmp_path_factory) -> Path:
    return make_fake_fsdd(tmp_path_factory.mktemp("fake_fsdd"))


@pytest.fixture(scope="module", params=["fake", "real"])
def prepped(request, tmp_path_factory):
    """(fsdd, data_dir) of a small prepared corpus, from the fake and the real FSDD."""
    if request.param == "real":
        if not (REAL_FSDD / "recordings").is_dir():
            pytest.skip(f"real FSDD not found at {REAL_FSDD}")
        fsdd = REAL_FSDD
    else:
        fsdd = request.getfixturevalue("fake_fsdd")
    data = tmp_path_factory.mktemp(f"prep_{request.param}") / "data"
    P.prepare(str(fsdd), str(data), seed=7, sizes=SMALL, progress=False)
    return fsdd, data


# --------------------------------------------------------------------------- data dirs
def test_files_share_sorted_ids(prepped):
    _, data = prepped
    assert sorted(p.name for p in data.iterdir()) == sorted(P.SETS)  # no temp dirs left
    for name in P.SETS:
        d = data / name
        ids = [r[0] for r in read_table(d / "text")]
        assert len(ids) == SMALL[name] and ids == sorted(ids) and len(set(ids)) == len(ids)
        for f in P.DATA_FILES:
            rows = read_table(d / f)
            if f == "spk2utt":
                assert [r[0] for r in rows] == sorted({r[0] for r in rows})
                utts = [u for r in rows for u in r[1:]]
                assert sorted(utts) == ids
                continue
            col = [r[0] for r in rows]
            assert col == sorted(col), f
            if f == "word_align":
                assert sorted(set(col)) == ids
            else:
                assert col == ids, f
        for u, spk in read_table(d / "utt2spk"):
            assert re.fullmatch(rf"{spk}-{name}-\d{{5}}", u)
        assert sorted(p.stem for p in (d / "wav").iterdir()) == ids
        for u, path in read_table(d / "wav.scp"):
            assert path == f"{data}/{name}/wav/{u}.wav" and Path(path).is_file()
        assert {r[1] for r in read_table(d / "utt2noise")} <= {"clean", *P.NOISE_TYPES}
        for (u, noise), (_, snr) in zip(read_table(d / "utt2noise"), read_table(d / "utt2snr")):
            assert (noise == "clean") == (snr == "clean")
            assert snr == "clean" or int(snr) in P.SNRS
        n_clean = sum(r[1] == "clean" for r in read_table(d / "utt2noise"))
        assert n_clean == round(SMALL[name] / 5)


def test_word_align_matches_audio_and_text(prepped):
    _, data = prepped
    for name in P.SETS:
        d = data / name
        text = {r[0]: r[1:] for r in read_table(d / "text")}
        dur = {u: float(t) for u, t in read_table(d / "utt2dur")}
        align: dict[str, list] = {}
        for u, k, w, s, e in read_table(d / "word_align"):
            assert len(s.split(".")[1]) >= 3 and len(e.split(".")[1]) >= 3
            align.setdefault(u, []).append((int(k), w, float(s), float(e)))
        for u, path in read_table(d / "wav.scp"):
            info = sf.info(path)
            assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
            assert abs(info.frames / 16000 - dur[u]) < 1e-4
            spans = align[u]
            assert [k for k, *_ in spans] == list(range(len(spans)))
            assert [w for _, w, _, _ in spans] == text[u]
            assert 1 <= len(spans) <= 7 and all(w in P.WORDS for w in text[u])
            prev_end = 0.0
            for _, _, s, e in spans:
                assert prev_end <= s < e
                prev_end = e
            assert spans[0][2] >= 0.09 and prev_end <= dur[u] - 0.09


def test_splits_are_disjoint(prepped):
    """No training recording reaches an evaluation set; babble is never the target's own voice."""
    _, data = prepped
    speech, babble = {}, {}
    for name in P.SETS:
        d = data / name
        spk = dict(read_table(d / "utt2spk"))
        text = {r[0]: r[1:] for r in read_table(d / "text")}
        speech[name], babble[name] = set(), set()
        for u, *recs in read_table(d / "utt2recordings"):
            assert len(recs) == len(text[u])
            for r, w in zip(recs, text[u]):
                digit, speaker, take = r.split("_")
                assert speaker == spk[u] and P.WORDS[int(digit)] == w
                if name == "test_unseen":
                    assert speaker == "yweweler"
                else:
                    assert speaker != "yweweler" and int(take) in P.SEEN_TAKES[name]
            speech[name].update(recs)
        n_babble = 0
        for u, *bab in read_table(d / "utt2babble"):
            if bab != ["-"]:
                n_babble += 1
                babble[name].update(bab)
                for b in bab:
                    _, speaker, take = b.split("_")
                    assert speaker != spk[u] and speaker != "yweweler"  # other speakers only
                    # the unseen speaker's babble: other speakers' *test* takes (evaluation only)
                    pool = "test" if name == "test_unseen" else name
                    assert int(take) in P.SEEN_TAKES[pool]
        assert n_babble > 0, name
    for i, a in enumerate(P.SETS):
        for b in P.SETS[i + 1:]:
            assert not speech[a] & speech[b], (a, b)
    assert not (speech["train"] | babble["train"]) & set().union(*(speech[n] | babble[n] for n in P.SETS[1:]))
    for name in ("train", "dev", "test"):
        assert "yweweler" not in {r[1] for r in read_table(data / name / "utt2spk")}


def test_babble_any_and_snr_options(fake_fsdd, tmp_path):
    """``--babble_speakers any`` keeps the old design (own voice allowed); ``--snrs`` sets the SNRs."""
    data = tmp_path / "data"
    P.prepare(str(fake_fsdd), str(data), seed=3, sizes={**SMALL, "train": 0, "dev": 0, "test": 0},
              progress=False, snrs=(10, 5), babble_speakers="any")
    bab = [b for _, *bs in read_table(data / "test_unseen" / "utt2babble") if bs != ["-"] for b in bs]
    assert bab and all(b.split("_")[1] == "yweweler" for b in bab)
    assert {v for _, v in read_table(data / "test_unseen" / "utt2snr")} == {"clean", "10", "5"}
    with pytest.raises(P.DataPrepError, match="babble_speakers"):
        P.prepare(str(fake_fsdd), str(tmp_path / "x"), sizes=SMALL, progress=False, babble_speakers="own")


def test_snr_and_components(prepped):
    fsdd, data = prepped
    n_mixed = 0
    for name in P.SETS:
        d = data / name
        plans, bank = P.load_plans(str(fsdd), name, SMALL[name], seed=7)
        assert [p.utt_id for p in plans] == [r[0] for r in read_table(d / "text")]
        snr = dict(read_table(d / "utt2snr"))
        noise = dict(read_table(d / "utt2noise"))
        align: dict[str, list] = {}
        for u, _, _, s, e in read_table(d / "word_align"):
            align.setdefault(u, []).append((round(float(s) * 16000), round(float(e) * 16000)))
        for p in plans:
            c = P.render_utterance(p, bank)
            wav, _ = sf.read(str(d / "wav" / f"{p.utt_id}.wav"), dtype="float64")
            assert len(wav) == p.num_samples
            np.testing.assert_allclose(c["mix"], c["speech"] + c["noise"], atol=1e-12)
            assert np.max(np.abs(wav - c["mix"])) <= 0.5 / 32768 + 1e-9
            assert np.max(np.abs(c["mix"])) <= P.PEAK_LIMIT + 1e-9
            assert noise[p.utt_id] == p.noise
            if p.noise == "clean":
                assert snr[p.utt_id] == "clean" and not np.any(c["noise"])
                continue
            n_mixed += 1
            target = float(snr[p.utt_id])
            m = c["active"]
            measured = 10 * np.log10(np.sum(c["speech"][m] ** 2) / np.sum(c["noise"][m] ** 2))
            assert abs(measured - target) < 0.5
            # the same over the spans as written in word_align, with the noise taken from the file
            m2 = np.zeros(len(wav), dtype=bool)
            for s, e in align[p.utt_id]:
                m2[s:e] = True
            est_noise = wav - c["speech"]
            measured2 = 10 * np.log10(np.sum(c["speech"][m2] ** 2) / np.sum(est_noise[m2] ** 2))
            assert abs(measured2 - target) < 0.5
    assert n_mixed >= 60


def test_pink_noise_spectrum():
    from scipy.signal import welch

    x = P.pink_noise(np.random.default_rng(0), 2**17)
    f, pxx = welch(x, fs=16000, nperseg=4096)
    sel = (f > 50) & (f < 7000)
    slope = np.polyfit(np.log10(f[sel]), np.log10(pxx[sel]), 1)[0]
    assert -1.2 < slope < -0.8


# --------------------------------------------------------------------------- determinism / resume
def test_determinism(fake_fsdd, tmp_path, monkeypatch):
    digests = []
    for sub, seed in (("a", 3), ("b", 3), ("c", 4)):
        (tmp_path / sub).mkdir()
        monkeypatch.chdir(tmp_path / sub)
        P.prepare(str(fake_fsdd), "data", seed=seed, sizes=SMALL, progress=False)
        digests.append(tree_digest(tmp_path / sub / "data"))
    assert digests[0] == digests[1]
    for name in P.SETS:
        for f in ("text", "word_align", "utt2babble"):
            assert digests[0][f"{name}/{f}"] != digests[2][f"{name}/{f}"]
    # set sizes do not influence other sets
    (tmp_path / "d").mkdir()
    monkeypatch.chdir(tmp_path / "d")
    P.prepare(str(fake_fsdd), "data", seed=3, sizes={**SMALL, "train": 7}, progress=False)
    d = tree_digest(tmp_path / "d" / "data")
    for k, v in digests[0].items():
        if not k.startswith("train/"):
            assert d[k] == v, k


def test_interrupted_run_resumes(fake_fsdd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert P.prepare(str(fake_fsdd), "data", seed=5, sizes=SMALL, progress=False) == list(P.SETS)
    ref = tree_digest(tmp_path / "data")
    # interrupted while building dev: a partial temp dir, no final dir
    shutil.rmtree("data/dev")
    tmp = Path("data/.dev.tmp")
    (tmp / "wav").mkdir(parents=True)
    (tmp / "text").write_text("george-dev-00000 ONE\n")
    shutil.copy(next(Path("data/test/wav").iterdir()), tmp / "wav" / "george-dev-00000.wav")
    # and a stale temp dir next to a complete set, and a final dir without marker
    shutil.copytree("data/test", "data/.test.tmp")
    (Path("data/test_unseen/.done")).unlink()
    mtime = Path("data/train/text").stat().st_mtime_ns
    assert P.prepare(str(fake_fsdd), "data", seed=5, sizes=SMALL, progress=False) == ["dev", "test_unseen"]
    assert tree_digest(tmp_path / "data") == ref
    assert sorted(p.name for p in Path("data").iterdir()) == sorted(P.SETS)
    assert Path("data/train/text").stat().st_mtime_ns == mtime  # complete sets are not rewritten
    # different options rebuild the set
    assert P.prepare(str(fake_fsdd), "data", seed=5, sizes={**SMALL, "dev": 5}, progress=False) == ["dev"]
    assert len(read_table(Path("data/dev/text"))) == 5


# --------------------------------------------------------------------------- bad input
def _corpus_copy(tmp_path) -> Path:
    return make_fake_fsdd(tmp_path / "fsdd")


def _expect_error(fsdd, tmp_path, needle):
    with pytest.raises(P.DataPrepError) as ei:
        P.prepare(str(fsdd), str(tmp_path / "data"), sizes=SMALL, progress=False)
    assert str(needle) in str(ei.value)
    assert not (tmp_path / "data" / "train").exists()
    return str(ei.value)


def test_missing_corpus(tmp_path):
    _expect_error(tmp_path / "nope", tmp_path, tmp_path / "nope")
    (tmp_path / "empty" / "recordings").mkdir(parents=True)
    _expect_error(tmp_path / "empty", tmp_path, tmp_path / "empty")


def test_corrupt_wav(tmp_path):
    fsdd = _corpus_copy(tmp_path)
    bad = fsdd / "recordings" / "3_lucas_11.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 3)
    _expect_error(fsdd, tmp_path, bad)


def test_empty_wav(tmp_path):
    fsdd = _corpus_copy(tmp_path)
    bad = fsdd / "recordings" / "4_theo_5.wav"
    sf.write(str(bad), np.zeros(0), 8000, subtype="PCM_16")
    assert "empty" in _expect_error(fsdd, tmp_path, bad)
    bad.write_bytes(b"")
    _expect_error(fsdd, tmp_path, bad)


def test_wrong_sample_rate(tmp_path):
    fsdd = _corpus_copy(tmp_path)
    bad = fsdd / "recordings" / "7_yweweler_0.wav"
    sf.write(str(bad), 0.1 * np.ones(3000), 16000, subtype="PCM_16")
    assert "16000" in _expect_error(fsdd, tmp_path, bad)


def test_bad_name_is_skipped_with_warning(tmp_path, capsys):
    fsdd = _corpus_copy(tmp_path)
    odd = fsdd / "recordings" / "notes_about_takes.wav"
    shutil.copy(fsdd / "recordings" / "1_george_0.wav", odd)
    with pytest.warns(UserWarning, match=re.escape(str(odd))):
        P.prepare(str(fsdd), str(tmp_path / "data"), sizes={"train": 3, "dev": 3, "test": 3, "test_unseen": 3},
                  progress=False)
    assert (tmp_path / "data" / "test_unseen" / ".done").is_file()
    # CLI: errors are reported, not raised
    assert P.main(["--fsdd", str(tmp_path / "missing"), "--data_dir", str(tmp_path / "d2"), "--no_progress"]) == 1
    assert str(tmp_path / "missing") in capsys.readouterr().err


# --------------------------------------------------------------------------- local/data.sh
def test_data_sh(fake_fsdd, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("FSDD", "FSDD_URL", "PYTHON")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    script = str(REPO / "local" / "data.sh")
    sizes = ["--num_train", "4", "--num_dev", "3", "--num_test", "3", "--num_test_unseen", "2"]
    # no corpus given: downloads the (here: local) archive, unpacks it, prepares the data
    archive = tmp_path / "fsdd.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(fake_fsdd, arcname="free-spoken-digit-dataset-abc")
    work = tmp_path / "recipe"
    work.mkdir()
    r = subprocess.run(["bash", script, "--seed", "1", *sizes], cwd=work, capture_output=True, text=True,
                       env={**env, "FSDD_URL": archive.as_uri()}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (work / "downloads" / "free-spoken-digit-dataset-abc" / "recordings").is_dir()
    assert len(read_table(work / "data" / "test_unseen" / "text")) == 2
    assert read_table(work / "data" / "dev" / "wav.scp")[0][1].startswith("data/dev/wav/")
    # download failure: non-zero, says how to point FSDD at a local copy
    work2 = tmp_path / "offline"
    work2.mkdir()
    r = subprocess.run(["bash", script, *sizes], cwd=work2, capture_output=True, text=True,
                       env={**env, "FSDD_URL": (tmp_path / "missing.tar.gz").as_uri()}, timeout=120)
    assert r.returncode != 0 and "FSDD=/path/to/fsdd" in r.stderr
    assert not list((work2 / "downloads").glob("free-spoken-digit-dataset*"))
    # FSDD from db.sh pointing to a missing folder: error names it
    (work2 / "db.sh").write_text(f"FSDD=${{FSDD:-{tmp_path}/gone}}\n")
    r = subprocess.run(["bash", script], cwd=work2, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and f"{tmp_path}/gone" in r.stderr
