"""egs/espeak_sentences data preparation without espeak-ng: a fake synthesiser (``--synth_cmd``)
and a small text file (``--text_file``), so CI exercises the logic: determinism (also across
``--nj``), disjoint sentences between sets, unseen voices only in test_unseen, valid sorted Kaldi
dirs, resampling to --fs, noise at the drawn SNR, the skip of a finished set, clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "espeak_sentences"
sys.path.insert(0, str(RECIPE / "local"))
import synth_sentences as ss  # noqa: E402

from espnet_oracle.utils.datadir import read_kaldi_map, validate_data_dir  # noqa: E402

# Writes a 22.05 kHz wav (as espeak-ng does): a tone per word, its pitch from -p, its length from -s
# (plain Python: no numpy import per call).
FAKE_SYNTH = r'''#!/usr/bin/env python3
import array, math, sys, wave
a = sys.argv[1:]
opt = {a[i]: a[i + 1] for i in range(0, len(a) - 1, 2) if a[i].startswith("-")}
text = a[-1]
assert text == text.lower() and opt["-v"].count("+") == 1, a
sr, wpm, amp = 22050, int(opt["-s"]), int(opt["-a"]) / 200 * 32767
word = int(sr * 60 / wpm)
x = array.array("h")
for w in text.split():
    f = 100 + 3 * int(opt["-p"]) + 10 * len(w)
    x.extend(int(amp * math.sin(2 * math.pi * f * n / sr)) for n in range(word))
x.extend([0] * (sr // 10))
with wave.open(opt["-w"], "wb") as out:
    out.setnchannels(1); out.setsampwidth(2); out.setframerate(sr); out.writeframes(x.tobytes())
'''

SIZES = {"train": 8, "dev": 3, "test": 3, "test_unseen": 3}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("espeak_inputs")
    synth = tmp / "fake_synth.py"
    synth.write_text(FAKE_SYNTH)
    synth.chmod(0o755)
    words = "the cat sat on a mat while dogs ran past quickly and birds sang songs all day long".split()
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=rng.integers(4, 12))) + "." for _ in range(60)]
    lines += ["He owns 3 cars.", "Too short.", "It's John's, isn't it - maybe; who knows?", "  "]
    text = tmp / "sentences.txt"
    text.write_text("\n".join(lines) + "\n")
    return {"synth": f"{sys.executable} {synth}", "text": str(text)}


def _prepare(workdir, inputs, nj=1, seed=3, **kw):
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        return ss.prepare("data", seed, dict(SIZES), inputs["text"], synth_cmd=inputs["synth"], nj=nj,
                          fs=16000, **kw)
    finally:
        os.chdir(cwd)


def test_normalise():
    assert ss.normalise("It's John's, isn't it - maybe; who knows?") == "IT'S JOHN'S ISN'T IT MAYBE WHO KNOWS"
    assert ss.normalise("'quoted' words") == "QUOTED WORDS"
    assert ss.normalise("He owns 3 cars.") is None
    assert ss.normalise("café au lait") is None


def test_prepare_sets(tmp_path, inputs):
    built = _prepare(tmp_path, inputs, nj=2)
    assert built == list(ss.SETS)
    data = tmp_path / "data"
    texts = {}
    for name, n in SIZES.items():
        d = data / name
        ids = validate_data_dir(d, optional=("utt2dur", "utt2snr", "utt2noise", "utt2synth"))
        assert len(ids) == n
        ids2 = validate_data_dir(d, required=("wav.scp", "text", "utt2spk", "utt2dur", "utt2snr", "utt2noise",
                                              "utt2synth"))
        assert ids2 == ids
        utt2spk = read_kaldi_map(d / "utt2spk")
        spk2utt = read_kaldi_map(d / "spk2utt")
        assert list(spk2utt) == sorted(spk2utt)
        assert sorted(u for us in spk2utt.values() for u in us.split()) == ids
        assert all(u.startswith(utt2spk[u] + "-") for u in ids)  # speaker prefix: sorting keeps voices together
        text = read_kaldi_map(d / "text")
        for t in text.values():
            assert 5 <= len(t.split()) <= 20 and all(c.isupper() or c in "' " for c in t)
        texts[name] = set(text.values())
        assert len(texts[name]) == n
        for u, path in read_kaldi_map(d / "wav.scp").items():
            x, sr = sf.read(tmp_path / path, dtype="int16")
            assert sr == 16000 and x.ndim == 1
            assert abs(len(x) / sr - float(read_kaldi_map(d / "utt2dur")[u])) < 1e-3
        synth = read_kaldi_map(d / "utt2synth")
        variants = {v.split()[0].split("+")[1] for v in synth.values()}
        if name == "test_unseen":
            assert variants <= set(ss.DEFAULT_UNSEEN)
        else:
            assert not variants & set(ss.DEFAULT_UNSEEN)
        snr = read_kaldi_map(d / "utt2snr")
        noise = read_kaldi_map(d / "utt2noise")
        assert all((snr[u] == "clean") == (noise[u] == "none") for u in ids)
        assert json.loads((d / ".done").read_text())["set"] == name
    names = list(SIZES)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not texts[a] & texts[b], (a, b)
    # a second call is a no-op; nj does not change a byte; another seed does
    assert _prepare(tmp_path, inputs, nj=2) == []
    other = tmp_path / "nj1"
    other.mkdir()
    _prepare(other, inputs, nj=1)
    for name in SIZES:
        for f in ("wav.scp", "text", "utt2spk", "utt2snr", "utt2synth"):
            assert (data / name / f).read_text() == (other / "data" / name / f).read_text()
        for u, path in read_kaldi_map(data / name / "wav.scp").items():
            assert (tmp_path / path).read_bytes() == (other / path).read_bytes()
    seed4 = tmp_path / "seed4"
    seed4.mkdir()
    _prepare(seed4, inputs, seed=4)
    assert (seed4 / "data/train/text").read_text() != (data / "train/text").read_text()


def test_noise_at_snr():
    rng = np.random.default_rng(0)
    fs = 16000
    speech = np.concatenate([np.zeros(fs // 2), 0.3 * np.sin(np.arange(fs) * 0.2), np.zeros(fs // 2)])
    for kind in ss.NOISES:
        n = ss.coloured_noise(kind, len(speech), rng)
        assert abs(np.mean(n ** 2) - 1.0) < 1e-6
    assert abs(10 * np.log10(ss.speech_power(speech, fs) / (0.3 ** 2 / 2))) < 0.1  # pauses not counted
    plan = {"snr": 10, "noise": "pink", "noise_seed": 1}
    p_speech = ss.speech_power(speech, fs)
    noise = ss.coloured_noise(plan["noise"], len(speech), np.random.default_rng(1)) * np.sqrt(p_speech / 10)
    assert abs(10 * np.log10(p_speech / np.mean(noise ** 2)) - 10) < 1e-6


def test_errors(tmp_path, inputs):
    with pytest.raises(ss.DataPrepError, match="sentences"):
        ss.prepare(str(tmp_path / "d"), 1, {"train": 1000}, inputs["text"], synth_cmd=inputs["synth"])
    with pytest.raises(ss.DataPrepError, match="not found"):
        ss.prepare(str(tmp_path / "d"), 1, dict(SIZES), inputs["text"], synth_cmd="no-such-synthesiser-xyz")
    with pytest.raises(ss.DataPrepError, match="unknown voice variant"):
        ss.voice_pool("train", ["m99"])
    with pytest.raises(ss.DataPrepError, match="wordnet-base"):
        ss.load_sentences(None, 5, 20, wordnet_dir=str(tmp_path / "no_wordnet"))
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\necho broken voice >&2\nexit 3\n")
    failing.chmod(0o755)
    with pytest.raises(ss.DataPrepError, match="broken voice"):
        ss.prepare(str(tmp_path / "d"), 1, dict(SIZES), inputs["text"], synth_cmd=str(failing))


def test_data_sh_with_own_synth(tmp_path, inputs):
    """local/data.sh with --synth_cmd and --text_file installs nothing and forwards every option."""
    r = subprocess.run([str(RECIPE / "local" / "data.sh"), "--synth_cmd", inputs["synth"], "--text_file",
                        inputs["text"], "--num_train", "3", "--num_dev", "1", "--num_test", "1",
                        "--num_test_unseen", "1"],
                       cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    assert len(read_kaldi_map(tmp_path / "data/train/text")) == 3
    assert "install_espeak" not in r.stderr
    r = subprocess.run([sys.executable, str(RECIPE / "local" / "synth_sentences.py"), "--synth_cmd", "no-such-synth-xyz"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and "install espeak-ng" in r.stderr
