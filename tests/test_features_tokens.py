"""Stage 2 tool (espnet_oracle.bin.make_features) and the trimmed data-dir helpers."""

from __future__ import annotations

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from espnet_oracle.bin import make_features
from espnet_oracle.utils.datadir import (DataDirError, read_kaldi_map, set_transcripts, validate_data_dir,
                                        write_kaldi_map)


def make_wavs(tmp_path, rate, n=3):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(rate // 2 + 137 * i)).astype(np.float32), rate, subtype="PCM_16")
        lines.append(f"u{i} {path}\n")
    (tmp_path / "wav.scp").write_text("".join(lines))
    return tmp_path / "wav.scp"


def run_jobs(scp, out, nj, **opts):
    extra = [a for k, v in opts.items() for a in (f"--{k}", str(v))]
    for j in range(1, nj + 1):
        make_features.main(["--wav_scp", str(scp), "--out_dir", str(out), "--job", str(j), "--nj", str(nj), *extra])


@pytest.mark.parametrize("rate", [16000, 8000])
def test_fbank_is_kaldi_compatible_and_resampled(tmp_path, rate):
    scp = make_wavs(tmp_path, rate)
    out = tmp_path / "dump"
    run_jobs(scp, out, nj=2, fs=16000, n_mels=40)
    feats = {}
    for j in (1, 2):
        feats.update({u: m for u, m in kaldiio.load_scp(str(out / f"feats.{j}.scp")).items()})
        for utt, shape in read_kaldi_map(out / f"feats_shape.{j}").items():
            assert tuple(map(int, shape.split(","))) == feats[utt].shape
    assert sorted(feats) == ["u0", "u1", "u2"]
    data, sr = sf.read(tmp_path / "u1.wav", dtype="float32")
    wav = torch.from_numpy(data)[None]
    if sr != 16000:
        wav = torchaudio.functional.resample(wav, sr, 16000)
    expected = torchaudio.compliance.kaldi.fbank(wav * 32768, num_mel_bins=40, sample_frequency=16000, dither=0.0)
    np.testing.assert_allclose(feats["u1"], expected.numpy(), rtol=1e-4, atol=1e-3)
    assert feats["u1"].shape[0] == 1 + (len(wav[0]) - 400) // 160


def test_raw_keeps_or_resamples(tmp_path):
    scp = make_wavs(tmp_path, 8000, n=2)
    run_jobs(scp, tmp_path / "same", nj=1, feats_type="raw", fs=8000)
    assert (tmp_path / "same" / "wav.1.scp").read_text() == scp.read_text()  # at --fs: not copied
    run_jobs(scp, tmp_path / "up", nj=1, feats_type="raw", fs=16000)
    for utt, path in read_kaldi_map(tmp_path / "up" / "wav.1.scp").items():
        data, sr = sf.read(path)
        assert sr == 16000 and abs(len(data) - 2 * sf.info(str(tmp_path / f"{utt}.wav")).frames) <= 2


def test_datadir_helpers(tmp_path):
    d = tmp_path / "data"
    write_kaldi_map(d / "text", {"b": "TWO", "a": "ONE"})
    write_kaldi_map(d / "wav.scp", {"a": "a.wav", "b": "b.wav"})
    write_kaldi_map(d / "utt2spk", {"a": "s", "b": "s"})
    assert validate_data_dir(d) == ["a", "b"]
    (d / "utt2spk").write_text("a s\n")
    with pytest.raises(DataDirError, match="differ"):
        validate_data_dir(d)
    (d / "text").write_text("a ONE\na TWO\n")
    with pytest.raises(DataDirError, match="repeated key"):
        read_kaldi_map(d / "text")


def test_set_transcripts_follow_the_scp_and_refuse_a_short_text(tmp_path):
    d = tmp_path / "dump"
    with pytest.raises(FileNotFoundError, match="feats.scp not found"):
        set_transcripts(d)
    d.mkdir()
    (d / "wav.scp").write_text("b b.wav\na a.wav\n")
    (d / "text").write_text("a ONE\nb TWO\nc THREE\n")
    assert list(set_transcripts(d).items()) == [("a", "ONE"), ("b", "TWO")]
    (d / "feats.scp").write_text("a x.ark:1\nz x.ark:9\n")  # feats.scp wins over wav.scp
    with pytest.raises(DataDirError, match=r"text lacks utterances of feats.scp: \['z'\]"):
        set_transcripts(d)
