"""Teacher-posterior storage: the top-k leftover mass (issue 7 item 4) and
stamped, never-stale dumps (issue 7 item 5).

The top-k tests are numpy only. The dump tests build one tiny conventional CTC
teacher through the task (d = 16, one block) and run ``dump_posteriors.main``
in-process on three short fake utterances.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import yaml

from espnet_oracle.utils.posteriors import (
    LAYOUT,
    TeacherPosteriorReader,
    features_fingerprint,
    topk_pack,
    topk_to_dense,
    topk_unpack,
    write_meta,
)

# ---------------------------------------------------------------------------
# item 4: top-k expansion against dense float32 storage, with a stated KL bound

V_BIG = 32
F16_REL = 2.0**-11  # float16 round-to-nearest: relative error of a normal number
F16_SUB = 2.0**-25  # half the float16 subnormal spacing: absolute error below 2**-14
F32_REL = 2.0**-24  # float32 rounding (stored leftover, float32 output)


def _lse(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=axis, keepdims=True)
    return np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m


def _softened(log_p, tau):
    z = np.asarray(log_p, dtype=np.float64) / tau
    return z - _lse(z)


def _kl(ref, other, tau):
    """Per frame KL(softmax(ref/tau) || softmax(other/tau)), float64."""
    p, q = _softened(ref, tau), _softened(other, tau)
    return (np.exp(p) * (p - q)).sum(axis=1)


def _peaky(top1, frames=6, vocab=V_BIG, span=60.0, seed=0):
    """Frames whose top token has log-prob ``top1``; the tail spans ``span`` nats
    (~26 orders of magnitude) and holds the rest of the mass, 1 - exp(top1)."""
    rng = np.random.default_rng(seed)
    tail = -rng.uniform(0.0, span, size=(frames, vocab - 1))
    tail += math.log(-math.expm1(top1)) - _lse(tail)
    x = np.concatenate([np.full((frames, 1), top1), tail], axis=1)
    for row in x:
        rng.shuffle(row)
    return x.astype(np.float32)


def _flat(frames=6, vocab=V_BIG, seed=1):
    z = np.random.default_rng(seed).standard_normal((frames, vocab)) * 0.5
    return (z - _lse(z)).astype(np.float32)


CASES = {
    "peaky_1e-3": lambda: _peaky(-1e-3, seed=2),
    "peaky_1e-6": lambda: _peaky(-1e-6, seed=3),
    "peaky_1e-9": lambda: _peaky(-1e-9, seed=4),
    "flat": _flat,
}


def _kl_bound(ref, k, tau):
    """Per-frame bound on KL(softmax(ref/tau) || softmax(expanded/tau)), float64.

    ``ideal`` is what top-k storage aims at: the exact top-k log-probs, and the
    exact leftover mass L spread evenly over the other V - k tokens. The bound is

        KL(P || I) + sum_i |P_i - I_i| g_i + 1/2 exp(max g) sum_i I_i g_i**2

    with P, I the softened reference and ideal, and g_i >= |expanded_i - ideal_i| / tau
    (log domain). It follows from KL(P||Q) = KL(P||I) + KL(I||Q) - sum (P_i - I_i) d_i,
    d = log Q - log I, and KL(I||Q) <= 1/2 exp(max|g|) E_I[g**2] (second-order
    bound on log E_I[exp(g)] - E_I[g]).
    KL(P || I) is the unavoidable cost of keeping k tokens (the tail's shape is
    lost); the rest is storage rounding: a float16 log-prob x is off by at most
    2**-11 |x| (2**-25 below the normal range), the renormalisation of the top k
    shifts them by at most c = log sum_S w_i exp(u_i) (w: their exact shares),
    and float32 rounding of the stored leftover and of the output adds 2**-24 |.|.
    """
    x = np.asarray(ref, dtype=np.float64)
    x = x - _lse(x)
    frames, vocab = x.shape
    order = np.argsort(-x, axis=1, kind="stable")
    top, rest = order[:, :k], order[:, k:]
    leftover = _lse(np.take_along_axis(x, rest, axis=1))  # (frames, 1)
    ideal = np.repeat(leftover - math.log(vocab - k), vocab, axis=1)
    np.put_along_axis(ideal, top, np.take_along_axis(x, top, axis=1), axis=1)
    x_top = np.take_along_axis(x, top, axis=1)
    u = F16_REL * np.abs(x_top) + F16_SUB
    w = np.exp(x_top - _lse(x_top))
    shift = np.log((w * np.exp(u)).sum(axis=1, keepdims=True))
    eps_left = 2 * F32_REL * np.abs(leftover) * (1 + 1 / max(-math.expm1(float(leftover.max())), 1e-300))
    g = np.repeat(eps_left, vocab, axis=1)
    np.put_along_axis(g, top, u + shift + eps_left, axis=1)
    g = (g + 2 * F32_REL * np.abs(ideal)) / tau
    p, i = np.exp(_softened(x, tau)), np.exp(_softened(ideal, tau))
    truncation = _kl(x, ideal, tau)
    rounding = (np.abs(p - i) * g).sum(axis=1) + 0.5 * np.exp(g.max(axis=1)) * (i * g**2).sum(axis=1)
    return truncation + rounding


def _old_topk_to_dense(ids, values, vocab_size, min_remainder=1e-8):
    """Layout-1 expansion (before the fix), kept to show the bound catches it:
    the leftover rebuilt as 1 - sum(exp(float16 top-k values)), floored at 1e-8."""
    kept = np.exp(values.astype(np.float64))
    total = kept.sum(axis=1, keepdims=True)
    kept = np.where(total > 1.0, kept / total, kept)
    remainder = np.maximum(1.0 - kept.sum(axis=1, keepdims=True), min_remainder)
    dense = np.repeat(remainder / max(vocab_size - ids.shape[1], 1), vocab_size, axis=1)
    np.put_along_axis(dense, ids, kept, axis=1)
    dense /= dense.sum(axis=1, keepdims=True)
    return np.log(dense).astype(np.float32)


@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("k", [4, 8])
@pytest.mark.parametrize("case", sorted(CASES))
def test_topk_expansion_within_kl_bound_of_dense(case, k, tau):
    ref = CASES[case]()
    expanded = topk_to_dense(*topk_unpack(topk_pack(ref, k)), V_BIG)
    assert expanded.dtype == np.float32 and np.isfinite(expanded).all()
    np.testing.assert_allclose(np.exp(expanded.astype(np.float64)).sum(axis=1), 1.0, atol=1e-6)
    kl = _kl(ref, expanded, tau)
    bound = _kl_bound(ref, k, tau)
    assert np.all(kl <= bound), (kl, bound)


@pytest.mark.parametrize("case", ["peaky_1e-6", "peaky_1e-9"])
def test_old_leftover_reconstruction_violates_the_bound_at_tau_2(case):
    """The same check fails for the layout-1 formula: the test catches the bug."""
    ref, k = CASES[case](), 8
    ids, values, _ = topk_unpack(topk_pack(ref, k))
    old = _old_topk_to_dense(ids, values, V_BIG)
    kl, bound = _kl(ref, old, 2.0), _kl_bound(ref, k, 2.0)
    assert np.all(kl > 5 * bound), (kl, bound)  # 11x (1e-6) and 660x (1e-9) at least
    new = topk_to_dense(*topk_unpack(topk_pack(ref, k)), V_BIG)
    assert np.all(_kl(ref, new, 2.0) <= bound)


@pytest.mark.parametrize("case", sorted(CASES))
def test_topk_leftover_mass_preserved_exactly(case):
    ref, k = CASES[case](), 4
    x = ref.astype(np.float64) - _lse(ref)
    ids, values, leftover = topk_unpack(topk_pack(ref, k))
    assert leftover.dtype == np.float32
    others = np.ones(ref.shape, dtype=bool)
    np.put_along_axis(others, ids, False, axis=1)
    exact = _lse(np.where(others, x, -np.inf))[:, 0]
    np.testing.assert_allclose(leftover, exact, rtol=1e-6)
    dense = topk_to_dense(ids, values, leftover, V_BIG).astype(np.float64)
    got = _lse(np.where(others, dense, -np.inf))[:, 0]
    np.testing.assert_allclose(got, exact, rtol=1e-6)
    # spread evenly
    rest = dense[others].reshape(len(ref), V_BIG - k)
    np.testing.assert_allclose(rest, rest[:, :1].repeat(V_BIG - k, axis=1), rtol=1e-6)


def test_topk_layout_and_bytes_per_frame():
    ref, k = _flat(), 8
    packed = topk_pack(ref, k)
    assert packed.dtype == np.uint16 and packed.shape == (len(ref), 2 * k + 2)
    assert packed[0].nbytes == 4 * k + 4
    # k >= V: nothing left over, the frame is the (float16-rounded) dense one
    ids, values, leftover = topk_unpack(topk_pack(ref, V_BIG + 3))
    assert ids.shape == (len(ref), V_BIG) and np.all(np.isneginf(leftover))
    dense = topk_to_dense(ids, values, leftover, V_BIG)
    assert np.isfinite(dense).all()
    np.testing.assert_allclose(np.exp(dense.astype(np.float64)).sum(axis=1), 1.0, atol=1e-6)


def test_reader_refuses_old_layout(tmp_path):
    (tmp_path / "post.scp").write_text("")
    (tmp_path / "meta.json").write_text(json.dumps(dict(format="topk", k=4, vocab_size=V_BIG)))
    with pytest.raises(ValueError, match="layout 1.*re-run stage 7"):
        TeacherPosteriorReader(str(tmp_path / "post.scp"))
    write_meta(str(tmp_path), format="topk", k=4, vocab_size=V_BIG)
    assert json.loads((tmp_path / "meta.json").read_text())["layout"] == LAYOUT
    assert len(TeacherPosteriorReader(str(tmp_path / "post.scp"))) == 0


# ---------------------------------------------------------------------------
# item 5: stamped dumps — a new model, other options or other features re-dump,
# and check_posteriors refuses posteriors of old features

REPO = Path(__file__).resolve().parents[1]
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "f", "g", "h", "<sos/eos>"]
TEXTS = {"utt1": "abc", "utt2": "bad", "utt3": "hedge"}


def _input_size(exp_dir: Path) -> int:
    """The feature dimension of the model trained in ``exp_dir`` (its config.yaml)."""
    return int(yaml.safe_load((exp_dir / "config.yaml").read_text(encoding="utf-8"))["input_size"])


# features that no model reads (fingerprints, stamps): any dimension
UNREAD_FEAT_DIM = 8


def _write_feats(feats_dir: Path, seed: int, dim: int) -> None:
    """feats.scp + ark + text of three utterances of ``dim`` bins (the same ids for every seed)."""
    feats_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    feats = {utt: rng.standard_normal((40 + 8 * i, dim)).astype(np.float32)
             for i, utt in enumerate(sorted(TEXTS))}
    kaldiio.save_ark(str(feats_dir / "feats.ark"), feats, scp=str(feats_dir / "feats.scp"))
    (feats_dir / "text").write_text("".join(f"{u} {t}\n" for u, t in TEXTS.items()), encoding="utf-8")


def _dump(teacher_dir, feats_dir, out_dir, *extra):
    from espnet_oracle.bin import dump_posteriors

    dump_posteriors.main(["--exp_dir", str(teacher_dir), "--feats_dir", str(feats_dir),
                          "--out_dir", str(out_dir), "--shard_size", "2", *extra])


def _arrays(out_dir: Path) -> dict:
    return {utt: np.array(a) for utt, a in kaldiio.load_scp(str(out_dir / "post.scp")).items()}


def _shard_mtimes(out_dir: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted((out_dir / "data").glob("post.*"))}


def _replace_model(teacher_dir: Path, seed: int) -> None:
    import torch

    path = teacher_dir / "valid.loss.ave.pth"
    state = torch.load(path)
    g = torch.Generator().manual_seed(seed)
    for value in state.values():
        if value.is_floating_point():
            value += 0.1 * torch.randn(value.shape, generator=g)
    torch.save(state, path)


def _check(out_dir: Path, feats_dir: Path, token_file: Path):
    from espnet_oracle.bin.check_posteriors import check

    check(out_dir / "post.scp", feats_dir / "feats.scp", token_file)


def test_dump_is_stamped_and_redumps_on_a_new_model_or_options(teacher_dir, token_file, tmp_path, capsys):
    feats, out = tmp_path / "feats", tmp_path / "post" / "train"
    _write_feats(feats, seed=0, dim=_input_size(teacher_dir))
    _dump(teacher_dir, feats, out, "--topk", "4")
    meta = json.loads((out / "meta.json").read_text())
    stamp = meta["stamp"]
    assert meta["layout"] == LAYOUT and stamp["k"] == 4 and stamp["format"] == "topk"
    assert stamp["features_sha256"] == features_fingerprint(feats / "feats.scp")
    shards = sorted((out / "data").glob("post.*.json"))
    assert len(shards) == 2 and all(json.loads(p.read_text())["stamp"] == stamp for p in shards)
    first = _arrays(out)
    assert sorted(first) == sorted(TEXTS) and all(a.shape[1] == 2 * 4 + 2 for a in first.values())
    _check(out, feats, token_file)

    # same stamp: nothing is redone
    before = _shard_mtimes(out)
    capsys.readouterr()
    _dump(teacher_dir, feats, out, "--topk", "4")
    assert "up to date" in capsys.readouterr().out
    assert _shard_mtimes(out) == before

    # an interrupted dump of the same stamp reuses the finished shards only
    (out / ".done").unlink()
    (out / "data" / "post.2.scp").unlink()
    _dump(teacher_dir, feats, out, "--topk", "4")
    after = _shard_mtimes(out)
    assert after["post.1.ark"] == before["post.1.ark"] and after["post.2.ark"] != before["post.2.ark"]
    assert {u: a.tolist() for u, a in _arrays(out).items()} == {u: a.tolist() for u, a in first.items()}

    # another model file (same path, other weights): re-dumped, and said why
    _replace_model(teacher_dir, seed=1)
    capsys.readouterr()
    _dump(teacher_dir, feats, out, "--topk", "4")
    said = capsys.readouterr().out
    assert "re-dumping" in said and "teacher model" in said
    new = json.loads((out / "meta.json").read_text())["stamp"]
    assert new["teacher_model_sha256"] != stamp["teacher_model_sha256"]
    assert all(not np.array_equal(first[u], a) for u, a in _arrays(out).items())
    assert all(json.loads(p.read_text())["stamp"] == new for p in (out / "data").glob("post.*.json"))

    # other k, then another format: re-dumped
    _dump(teacher_dir, feats, out, "--topk", "2")
    assert "k: 4 -> 2" in capsys.readouterr().out
    assert all(a.shape[1] == 2 * 2 + 2 for a in _arrays(out).values())
    _dump(teacher_dir, feats, out, "--format", "dense")
    assert "format: topk -> dense" in capsys.readouterr().out
    assert all(a.shape[1] == len(TOKENS) and a.dtype == np.float16 for a in _arrays(out).values())
    _check(out, feats, token_file)


def test_regenerated_features_are_refused_then_redumped(teacher_dir, token_file, tmp_path, capsys):
    from espnet_oracle.bin import check_posteriors

    feats, out = tmp_path / "feats", tmp_path / "post" / "dev"
    _write_feats(feats, seed=0, dim=_input_size(teacher_dir))
    _dump(teacher_dir, feats, out, "--topk", "4")
    _check(out, feats, token_file)
    old = _arrays(out)

    # stage 2 rerun: same ids, same file names, other values
    _write_feats(feats, seed=1, dim=_input_size(teacher_dir))
    argv = ["--post_scp", str(out / "post.scp"), "--feats_scp", str(feats / "feats.scp"),
            "--token_list", str(token_file)]
    with pytest.raises(SystemExit) as info:
        check_posteriors.main(argv)
    message = str(info.value.code)
    assert "'dev'" in message and "stale" in message and "features" in message
    assert "re-run stage 7" in message
    # other transcripts with the same features are refused too
    _dump(teacher_dir, feats, out, "--topk", "4")
    assert "features" in capsys.readouterr().out
    (feats / "text").write_text("utt1 abd\nutt2 bad\nutt3 hedge\n", encoding="utf-8")
    with pytest.raises(ValueError, match="transcripts"):
        _check(out, feats, token_file)
    (feats / "text").write_text("".join(f"{u} {t}\n" for u, t in TEXTS.items()), encoding="utf-8")

    # the re-dump (above) made posteriors of the new features: accepted
    check_posteriors.main(argv)
    assert all(not np.array_equal(old[u], a) for u, a in _arrays(out).items())

    # a teacher retrained after the dump is refused as well
    _replace_model(teacher_dir, seed=2)
    with pytest.raises(ValueError, match="teacher model"):
        _check(out, feats, token_file)


def _dumped_dev_set(teacher_dir: Path, tmp_path: Path):
    """(feats dir, posterior dir) of three utterances dumped with top-4 storage."""
    feats, out = tmp_path / "feats", tmp_path / "post" / "dev"
    _write_feats(feats, seed=0, dim=_input_size(teacher_dir))
    _dump(teacher_dir, feats, out, "--topk", "4")
    return feats, out


def test_check_refuses_a_reordered_token_list_and_lost_lines(teacher_dir, token_file, tmp_path):
    feats, out = _dumped_dev_set(teacher_dir, tmp_path)
    _check(out, feats, token_file)
    tokens = token_file.read_text(encoding="utf-8").splitlines()
    reordered = tmp_path / "reordered.txt"  # same size, two tokens swapped
    reordered.write_text("\n".join(tokens[:2] + [tokens[3], tokens[2]] + tokens[4:]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="another token list"):
        _check(out, feats, reordered)
    # posteriors that lost an utterance or their frame counts (the stamps still agree)
    scp = out / "post.scp"
    full = scp.read_text(encoding="utf-8")
    scp.write_text("".join(full.splitlines(keepends=True)[1:]), encoding="utf-8")
    with pytest.raises(ValueError, match="1 utterance\\(s\\) of .*have no teacher posteriors.*utt1"):
        _check(out, feats, token_file)
    scp.write_text(full, encoding="utf-8")
    (out / "utt2num_frames").unlink()
    with pytest.raises(ValueError, match="lacks frame counts of 3"):
        _check(out, feats, token_file)


def test_interrupted_redump_leaves_no_set_that_looks_complete(teacher_dir, token_file, tmp_path, monkeypatch):
    feats, out = _dumped_dev_set(teacher_dir, tmp_path)
    unlink = Path.unlink

    def interrupted(path, *args, **kwargs):
        if path.parent.name == "data" and path.name.startswith("post."):
            raise KeyboardInterrupt  # killed while the old shards are being removed
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _dump(teacher_dir, feats, out, "--topk", "2")  # other options: a re-dump
    assert not (out / ".done").exists() and not (out / "post.scp").exists()
    monkeypatch.setattr(Path, "unlink", unlink)
    _dump(teacher_dir, feats, out, "--topk", "2")
    assert all(a.shape[1] == 2 * 2 + 2 for a in _arrays(out).values())
    _check(out, feats, token_file)


def test_check_refuses_unstamped_posteriors(tmp_path, token_file):
    feats = tmp_path / "feats"
    _write_feats(feats, seed=0, dim=UNREAD_FEAT_DIM)
    out = tmp_path / "post"
    out.mkdir()
    (out / "post.scp").write_text("")
    write_meta(str(out), format="topk", k=4, vocab_size=len(TOKENS))
    with pytest.raises(ValueError, match="no stamp.*re-run stage 7"):
        _check(out, feats, token_file)
    (out / "meta.json").write_text(json.dumps(dict(format="topk", k=4, vocab_size=len(TOKENS))))
    with pytest.raises(ValueError, match="layout 1"):
        _check(out, feats, token_file)


def test_features_fingerprint_ignores_the_directory(tmp_path):
    a, b = tmp_path / "a" / "train", tmp_path / "b" / "train"
    _write_feats(a, seed=0, dim=UNREAD_FEAT_DIM)
    _write_feats(b, seed=0, dim=UNREAD_FEAT_DIM)
    assert features_fingerprint(a / "feats.scp") == features_fingerprint(b / "feats.scp")
    _write_feats(b, seed=3, dim=UNREAD_FEAT_DIM)
    assert features_fingerprint(a / "feats.scp") != features_fingerprint(b / "feats.scp")
