"""Stage 2 (fbank + CMVN stats) and stage 3 (token lists, text shapes) on a tiny synthetic data dir."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from espnet_oracle.bin import compute_cmvn_stats, compute_fbank, make_token_list
from espnet_oracle.utils.datadir import (
    DataDirError,
    read_kaldi_map,
    split_keys,
    validate_data_dir,
    write_kaldi_map,
)

SR = 16000
WORDS = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE", "OH"]


def _num_frames(num_samples: int) -> int:
    # torchaudio kaldi fbank, snip_edges=True, 25 ms window / 10 ms shift at 16 kHz
    return 1 + (num_samples - 400) // 160


def _make_data_dir(root: Path, name: str, n_utts: int, seed: int, rate: int = SR) -> Path:
    """Kaldi data dir with synthetic 16-bit mono WAVs (paths relative to ``root``)."""
    rng = np.random.default_rng(seed)
    data_dir = root / "data" / name
    wav_dir = root / "wavs" / name
    data_dir.mkdir(parents=True)
    wav_dir.mkdir(parents=True)
    wav_scp, text, utt2spk, utt2dur = {}, {}, {}, {}
    for i in range(n_utts):
        spk = ["george", "jackson"][i % 2]
        utt = f"{spk}-{name}-{i:05d}"
        n = int(rng.integers(int(0.4 * rate), int(1.2 * rate)))
        t = np.arange(n) / rate
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t) + 0.05 * rng.standard_normal(n)
        path = wav_dir / f"{utt}.wav"
        sf.write(path, x.astype(np.float32), rate, subtype="PCM_16")
        wav_scp[utt] = os.path.relpath(path, root)
        text[utt] = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 5))))
        utt2spk[utt] = spk
        utt2dur[utt] = f"{n / rate:.4f}"
    write_kaldi_map(data_dir / "wav.scp", wav_scp)
    write_kaldi_map(data_dir / "text", text)
    write_kaldi_map(data_dir / "utt2spk", utt2spk)
    write_kaldi_map(data_dir / "utt2dur", utt2dur)
    return data_dir


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A recipe root with data/{train,dev} and dump/fbank/{train,dev} made with nj=1; cwd = root."""
    root = tmp_path_factory.mktemp("recipe")
    old_cwd = os.getcwd()
    os.chdir(root)
    try:
        _make_data_dir(root, "train", 10, seed=0)
        _make_data_dir(root, "dev", 4, seed=1)
        for name in ("train", "dev"):
            assert compute_fbank.main(["--data_dir", f"data/{name}", "--out_dir", f"dump/fbank/{name}"]) == 0
        yield root
    finally:
        os.chdir(old_cwd)


def _load_feats(scp: Path) -> dict[str, np.ndarray]:
    import kaldiio

    return {k: np.asarray(v) for k, v in kaldiio.load_scp(str(scp)).items()}


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# --------------------------------------------------------------------------- #
# datadir helpers                                                             #
# --------------------------------------------------------------------------- #
def test_read_kaldi_map_errors(tmp_path):
    p = tmp_path / "text"
    p.write_text("a ONE TWO\nb\n\nc  THREE \n")
    assert read_kaldi_map(p) == {"a": "ONE TWO", "b": "", "c": "THREE"}
    with pytest.raises(DataDirError, match=r"text:2: malformed"):
        read_kaldi_map(p, allow_empty_value=False)
    p.write_text("a ONE\nb TWO\na THREE\n")
    with pytest.raises(DataDirError, match=r"text:3: duplicate key 'a'"):
        read_kaldi_map(p)
    p.write_text("a ONE\n  TWO\n")
    with pytest.raises(DataDirError, match=r"text:2: malformed"):
        read_kaldi_map(p)


def test_split_keys():
    keys = [f"u{i}" for i in range(7)]
    chunks = split_keys(keys, 3)
    assert [len(c) for c in chunks] == [3, 2, 2]
    assert sum(chunks, []) == keys
    assert split_keys(keys[:1], 3) == [["u0"], [], []]


def test_validate_data_dir_errors(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    ids = [f"utt{i}" for i in range(8)]
    write_kaldi_map(d / "wav.scp", {u: f"{u}.wav" for u in ids})
    write_kaldi_map(d / "utt2spk", {u: "spk" for u in ids})
    write_kaldi_map(d / "text", {u: "ONE" for u in ids[:2] + ["zzz"]})  # 6 missing, 1 extra
    with pytest.raises(DataDirError) as err:
        validate_data_dir(d)
    msg = str(err.value)
    assert str(d) in msg and "wav.scp" in msg and "text" in msg
    assert "utt2, utt3, utt4, utt5, utt6" in msg and "1 more" in msg and "zzz" in msg

    write_kaldi_map(d / "text", {u: "ONE" for u in ids})
    assert validate_data_dir(d) == ids
    (d / "utt2spk").write_text("".join(f"{u} spk\n" for u in reversed(ids)))
    with pytest.raises(DataDirError, match="not sorted"):
        validate_data_dir(d)
    (d / "utt2spk").unlink()
    with pytest.raises(DataDirError, match="missing required file.*utt2spk"):
        validate_data_dir(d)
    # compute_fbank validates before doing anything
    with pytest.raises(DataDirError, match="utt2spk"):
        compute_fbank.main(["--data_dir", str(d), "--out_dir", str(tmp_path / "dump")])


# --------------------------------------------------------------------------- #
# Stage 2: features                                                           #
# --------------------------------------------------------------------------- #
def test_fbank_outputs(recipe):
    dump = recipe / "dump/fbank/train"
    wav_scp = read_kaldi_map(recipe / "data/train/wav.scp")
    feats = _load_feats(dump / "feats.scp")
    assert list(feats) == sorted(wav_scp)
    shapes = read_kaldi_map(dump / "feats_shape")
    frames = read_kaldi_map(dump / "utt2num_frames")
    for utt, path in wav_scp.items():
        n = sf.info(path).frames
        assert feats[utt].shape == (_num_frames(n), 80)
        assert feats[utt].dtype == np.float32 and np.isfinite(feats[utt]).all()
        assert shapes[utt] == f"{_num_frames(n)},80"
        assert frames[utt] == str(_num_frames(n))
    # scp paths are relative to the recipe root, as given on the command line
    assert all(v.startswith("dump/fbank/train/data/feats.1.ark:") for v in read_kaldi_map(dump / "feats.scp").values())
    # the dump dir is self-contained
    for name in ("text", "utt2spk", "utt2dur"):
        assert (dump / name).read_bytes() == (recipe / "data/train" / name).read_bytes()
    spk2utt = read_kaldi_map(dump / "spk2utt")
    assert sorted(spk2utt) == ["george", "jackson"]
    assert sorted(sum((v.split() for v in spk2utt.values()), [])) == sorted(wav_scp)


def test_fbank_parallel_jobs_and_idempotence(recipe):
    ref = _load_feats(recipe / "dump/fbank/train/feats.scp")

    # --nj 2 (worker processes) gives identical features
    assert compute_fbank.main(["--data_dir", "data/train", "--out_dir", "dump/nj2", "--nj", "2"]) == 0
    assert sorted(p.name for p in (recipe / "dump/nj2/data").glob("feats.*.ark")) == ["feats.1.ark", "feats.2.ark"]
    nj2 = _load_feats(recipe / "dump/nj2/feats.scp")
    assert list(nj2) == list(ref)
    for utt in ref:
        np.testing.assert_array_equal(nj2[utt], ref[utt])

    # --job/--num_jobs slices + --merge give the same too
    for j in (1, 2, 3):
        assert compute_fbank.main(["--data_dir", "data/train", "--out_dir", "dump/sliced", "--job", str(j), "--num_jobs", "3"]) == 0
    assert not (recipe / "dump/sliced/feats.scp").exists()
    assert compute_fbank.main(["--data_dir", "data/train", "--out_dir", "dump/sliced", "--merge", "--num_jobs", "3"]) == 0
    sliced = _load_feats(recipe / "dump/sliced/feats.scp")
    assert list(sliced) == list(ref)
    for utt in ref:
        np.testing.assert_array_equal(sliced[utt], ref[utt])
    assert read_kaldi_map(recipe / "dump/sliced/feats_shape") == read_kaldi_map(recipe / "dump/nj2/feats_shape")

    # re-running is a no-op: nothing rewritten, no duplicated lines
    dump = recipe / "dump/nj2"
    before = {p: p.stat().st_mtime_ns for p in dump.rglob("*") if p.is_file()}
    assert compute_fbank.main(["--data_dir", "data/train", "--out_dir", "dump/nj2", "--nj", "2"]) == 0
    assert {p: p.stat().st_mtime_ns for p in dump.rglob("*") if p.is_file()} == before
    assert len(_lines(dump / "feats.scp")) == len(ref)

    # a changed input invalidates; recomputing with 1 job removes the old slices
    text = recipe / "data/train/text"
    original = text.read_text()
    try:
        text.write_text(original.replace("\n", " ONE\n", 1))
        assert compute_fbank.main(["--data_dir", "data/train", "--out_dir", "dump/nj2"]) == 0
        assert (dump / "text").read_text() == text.read_text()
        assert sorted(p.name for p in (dump / "data").glob("feats.*")) == ["feats.1.ark", "feats.1.scp"]
        assert len(_lines(dump / "feats.scp")) == len(ref)
    finally:
        text.write_text(original)


def test_fbank_bad_audio(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = _make_data_dir(tmp_path, "bad", 3, seed=2)
    wav_scp = read_kaldi_map(d / "wav.scp")
    utts = sorted(wav_scp)
    bad = utts[1]
    x, _ = sf.read(wav_scp[bad])
    sf.write(wav_scp[bad], x[::2], 8000, subtype="PCM_16")
    with pytest.raises(compute_fbank.FeatureError, match=rf"utterance {bad}: .*8000 Hz, expected 16000"):
        compute_fbank.main(["--data_dir", str(d), "--out_dir", "dump/bad"])
    # same error when it happens inside a worker process
    with pytest.raises(compute_fbank.FeatureError, match=rf"utterance {bad}: .*8000 Hz"):
        compute_fbank.main(["--data_dir", str(d), "--out_dir", "dump/bad", "--nj", "2"])
    assert not (tmp_path / "dump/bad/feats.scp").exists() and not (tmp_path / "dump/bad/.done").exists()

    Path(wav_scp[bad]).write_bytes(b"not a wav file")
    with pytest.raises(compute_fbank.FeatureError, match=rf"utterance {bad}: cannot read audio"):
        compute_fbank.main(["--data_dir", str(d), "--out_dir", "dump/bad"])
    Path(wav_scp[bad]).unlink()
    with pytest.raises(compute_fbank.FeatureError, match=rf"utterance {bad}: cannot read audio"):
        compute_fbank.main(["--data_dir", str(d), "--out_dir", "dump/bad"])


# --------------------------------------------------------------------------- #
# CMVN stats                                                                  #
# --------------------------------------------------------------------------- #
def test_cmvn_stats_global_mvn(recipe):
    import torch
    from espnet2.layers.global_mvn import GlobalMVN

    out = recipe / "dump/fbank/train/feats_stats.npz"
    assert compute_cmvn_stats.main(["--feats_scp", "dump/fbank/train/feats.scp", "--out", str(out)]) == 0
    stats = np.load(out)
    assert sorted(stats.files) == ["count", "sum", "sum_square"]
    feats = _load_feats(recipe / "dump/fbank/train/feats.scp")
    allf = np.concatenate(list(feats.values())).astype(np.float64)
    assert int(stats["count"]) == allf.shape[0]
    np.testing.assert_allclose(stats["sum"], allf.sum(0), rtol=1e-6)

    mvn = GlobalMVN(out)
    lens = [f.shape[0] for f in feats.values()]
    batch = torch.zeros(len(lens), max(lens), 80)
    for i, f in enumerate(feats.values()):
        batch[i, : lens[i]] = torch.from_numpy(np.array(f))
    normed, _ = mvn(batch.clone(), torch.tensor(lens))
    frames = torch.cat([normed[i, : lens[i]] for i in range(len(lens))]).double()
    assert frames.mean(0).abs().max() < 1e-3
    assert (frames.std(0, unbiased=False) - 1).abs().max() < 1e-3


# --------------------------------------------------------------------------- #
# Stage 3: tokens                                                             #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("token_type", ["char", "word", "bpe"])
def test_token_lists_and_shapes(recipe, token_type):
    out = recipe / f"data/token_list/{token_type}/tokens.txt"
    argv = [
        "--text", "data/train/text", "--token_type", token_type, "--out", str(out), "--nbpe", "30",
        "--shape_data_dirs", "data/train", "data/dev",
        "--shape_out_dirs", "dump/fbank/train", "dump/fbank/dev",
    ]
    assert make_token_list.main(argv) == 0
    tokens = _lines(out)
    assert tokens[0] == "<blank>" and tokens[1] == "<unk>" and tokens[-1] == "<sos/eos>"
    assert len(tokens) == len(set(tokens))
    bpe_model = recipe / "data/token_list/bpe/bpe.model" if token_type == "bpe" else None
    if token_type == "bpe":
        assert bpe_model.is_file() and len(tokens) == 30

    tokenizer = make_token_list.build_tokenizer(token_type, bpemodel=bpe_model)
    train_text = read_kaldi_map(recipe / "data/train/text")
    train_tokens = [t for line in train_text.values() for t in tokenizer.text2tokens(line)]
    assert set(train_tokens) <= set(tokens)
    if token_type == "char":
        assert "<space>" in tokens and set("ONETWO") <= set(tokens)
    if token_type == "word":
        assert set(" ".join(train_text.values()).split()) == set(tokens[2:-1])
    if token_type in ("char", "word"):  # by descending frequency
        counts = [train_tokens.count(t) for t in tokens[2:-1]]
        assert counts == sorted(counts, reverse=True)

    for name in ("train", "dev"):
        shapes = read_kaldi_map(recipe / f"dump/fbank/{name}/text_shape.{token_type}")
        text = read_kaldi_map(recipe / f"data/{name}/text")
        assert list(shapes) == list(text)
        for utt, line in text.items():
            assert shapes[utt] == str(len(tokenizer.text2tokens(line)))

    # idempotent: second run rewrites nothing but the shape files, same content
    mtime = out.stat().st_mtime_ns
    shape_file = recipe / f"dump/fbank/train/text_shape.{token_type}"
    shape_before = shape_file.read_text()
    assert make_token_list.main(argv) == 0
    assert out.stat().st_mtime_ns == mtime and _lines(out) == tokens
    assert shape_file.read_text() == shape_before
