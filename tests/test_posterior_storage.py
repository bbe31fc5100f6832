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
