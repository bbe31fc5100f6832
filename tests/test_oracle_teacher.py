"""Oracle Teacher encoder and model: shapes, masking, gradients, anti-copy options,
configs built through the task, and the training / inference entry points.

Everything runs in one process on tiny models (d = 32, one block);
``espnet2.tasks.asr`` is imported once (module-scoped fixture).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import yaml

from espnet_oracle.asr.length_masked_cer import registered_class

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "f", "g", "h", "<sos/eos>"]
V = len(TOKENS)
FEAT_DIM = 20  # encoder-level tests; models built from conf/*.yaml read their own (args.input_size)

TINY_TRANSFORMER = dict(
    output_size=32,
    attention_heads=4,
    linear_units=64,
    num_blocks=1,
    dropout_rate=0.1,
    positional_dropout_rate=0.1,
    attention_dropout_rate=0.0,
    input_layer="conv2d",
    normalize_before=True,
)
TINY_CONFORMER = dict(
    output_size=32,
    attention_heads=4,
    linear_units=64,
    num_blocks=1,
    input_layer="conv2d",
    rel_pos_type="latest",
    pos_enc_layer_type="rel_pos",
    selfattention_layer_type="rel_selfattn",
    macaron_style=True,
    use_cnn_module=True,
    cnn_module_kernel=5,
)
# command-line overrides that shrink the Oracle Teacher YAML to d=32, one block
TINY_ORACLE_ARGS = [
    "--encoder_conf", "source_encoder_conf.output_size=32",
    "--encoder_conf", "source_encoder_conf.linear_units=64",
    "--encoder_conf", "source_encoder_conf.num_blocks=1",
    "--encoder_conf", "fusion_linear_units=64",
]


def conv2d_frames(t: int) -> int:
    """Output frames of ESPnet's Conv2dSubsampling (x4): two kernel-3 stride-2 convs."""
    return ((t - 1) // 2 - 1) // 2


# `task` and `token_file` (from TOKENS): tests/conftest.py


@pytest.fixture(scope="module")
def build(task, token_file, tmp_path_factory):
    """build(yaml_name, *extra_args) -> (model, args), through OracleASRTask."""
    out = tmp_path_factory.mktemp("out")

    def _build(yaml_name, *extra):
        parser = task.get_parser()
        args = parser.parse_args(
            [
                "--config", str(CONF / yaml_name),
                "--token_list", str(token_file),
                "--normalize", "utterance_mvn",
                "--output_dir", str(out),
                *extra,
            ]
        )
        return task.build_model(args), args

    return _build


def make_encoder(task, source="transformer", conf=TINY_TRANSFORMER, **kwargs):
    from espnet_oracle.asr.encoder.oracle_teacher_encoder import OracleTeacherEncoder

    kwargs.setdefault("num_fusion_blocks", 2)
    kwargs.setdefault("fusion_attention_heads", 4)
    kwargs.setdefault("fusion_linear_units", 64)
    return OracleTeacherEncoder(
        input_size=FEAT_DIM,
        vocab_size=V,
        source_encoder=source,
        source_encoder_conf=dict(conf),
        **kwargs,
    )


def make_text(lengths, generator, low=2, high=V - 1):
    """(B, L) ids in [low, high), padding -1 beyond each length."""
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    text = torch.full((len(lengths), max(1, int(lengths.max()))), -1, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        text[i, :n] = torch.randint(low, high, (n,), generator=generator)
    return text, lengths


def make_feats(lengths, dim, generator):
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    xs = torch.zeros(len(lengths), int(lengths.max()), dim)
    for i, n in enumerate(lengths.tolist()):
        xs[i, :n] = torch.randn(n, dim, generator=generator)
    return xs, lengths


def ctc_collapse(sequence, blank=0):
    out, previous = [], None
    for token in sequence:
        if token != previous and token != blank:
            out.append(token)
        previous = token
    return out


# ---------------------------------------------------------------------------
# encoder: shapes and lengths


@pytest.mark.parametrize(
    "source,conf", [("transformer", TINY_TRANSFORMER), ("conformer", TINY_CONFORMER)]
)
def test_encoder_shapes_and_lengths(task, source, conf):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    enc = make_encoder(task, source, conf).eval()
    assert enc.output_size() == conf["output_size"] == 32
    ilens = [70, 51, 33]
    xs, ilens = make_feats(ilens, FEAT_DIM, g)
    text, tlens = make_text([5, 2, 3], g)
    with torch.no_grad():
        fused, olens, state = enc(xs, ilens, text=text, text_lengths=tlens)
        _, source_lens, _ = enc.source_encoder(xs, ilens)
        full = enc.encode_with_target(xs, ilens, text, tlens)
    assert state is None
    assert fused.shape == (3, int(olens.max()), enc.output_size())
    assert olens.tolist() == source_lens.tolist()
    # the longest utterance has no padding: its length is the plain conv2d count
    assert int(olens[0]) == conv2d_frames(70)
    # the NamedTuple keeps the source output (same shape) and per-block attention
    assert full.source.shape == fused.shape
    assert torch.equal(full.lengths, olens)
    assert len(full.attention) == 2
    for weights in full.attention:
        assert weights.shape == (3, 4, fused.size(1), text.size(1))
    assert torch.isfinite(fused).all()


# ESPnet's Conv2dSubsampling subsamples the *batch* mask (``x_mask[:, :, :-2:2][:, :, :-2:2]``),
# so an utterance shorter than the batch maximum gets 1-2 extra frames computed from the
# padding, and the real frames attend to them: lengths and values depend on the batch.
ESPNET_CONV2D_BATCH_DEPENDENCE = (
    "ESPnet Conv2dSubsampling derives output lengths from the padded batch mask: an "
    "utterance of 41 frames gets 9 frames alone but 11 when batched with a 77-frame one "
    "(ceil(ceil(T/2)/2) vs ((T-1)//2-1)//2), and its real frames attend to the 2 extra "
    "padding-derived frames. OracleTeacherEncoder.encode_with_target passes these "
    "batch-dependent lengths/masks through unchanged."
)


def _short_and_long(g):
    short_x = torch.randn(1, 41, FEAT_DIM, generator=g)
    short_t = torch.tensor([[3, 4, 4]])
    long_x = torch.randn(1, 77, FEAT_DIM, generator=g)
    long_t = torch.tensor([[2, 5, 6, 7, 8, 9]])
    return short_x, short_t, long_x, long_t


def test_encoder_target_batching_invariance(task):
    """Same audio length, longer transcript in the batch: the short transcript's output is unchanged."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    enc = make_encoder(task, num_target_layers=1, num_post_fusion_layers=1).eval()
    short_x, short_t, _, long_t = _short_and_long(g)
    other_x = torch.randn(1, 41, FEAT_DIM, generator=g)
    xs = torch.cat([short_x, other_x])
    text = torch.full((2, 6), -1)
    text[0, :3] = short_t[0]
    text[1] = long_t[0]
    with torch.no_grad():
        alone, alone_lens, _ = enc(short_x, torch.tensor([41]), text=short_t,
                                   text_lengths=torch.tensor([3]))
        batch, batch_lens, _ = enc(xs, torch.tensor([41, 41]), text=text,
                                   text_lengths=torch.tensor([3, 6]))
    assert batch_lens.tolist() == [int(alone_lens[0])] * 2
    torch.testing.assert_close(batch[0], alone[0], atol=1e-5, rtol=0)


def test_encoder_padding_invariance(task):
    """An utterance alone == the same utterance batched with a longer one (eval)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    enc = make_encoder(task, num_target_layers=1, num_post_fusion_layers=1).eval()
    short_x, short_t, long_x, long_t = _short_and_long(g)
    xs = torch.zeros(2, 77, FEAT_DIM)
    xs[0, :41] = short_x[0]
    xs[1] = long_x[0]
    text = torch.full((2, 6), -1)
    text[0, :3] = short_t[0]
    text[1] = long_t[0]
    with torch.no_grad():
        alone, alone_lens, _ = enc(short_x, torch.tensor([41]), text=short_t,
                                   text_lengths=torch.tensor([3]))
        batch, batch_lens, _ = enc(xs, torch.tensor([41, 77]), text=text,
                                   text_lengths=torch.tensor([3, 6]))
        long_alone, _, _ = enc(long_x, torch.tensor([77]), text=long_t,
                               text_lengths=torch.tensor([6]))
    # the longest utterance of the batch is not affected
    torch.testing.assert_close(batch[1], long_alone[0], atol=1e-5, rtol=0)
    n = int(alone_lens[0])
    assert n == conv2d_frames(41)
    assert int(batch_lens[0]) == n  # fails: 11 != 9
    torch.testing.assert_close(batch[0, :n], alone[0, :n], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pad_value", [-1, 3])
def test_target_padding_is_masked(task, pad_value):
    """Extra target columns beyond text_lengths (padding -1, or even real ids) change nothing."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    enc = make_encoder(task, num_target_layers=1).eval()
    xs, ilens = make_feats([60, 45], FEAT_DIM, g)
    text, tlens = make_text([4, 2], g)
    padded = torch.cat([text, torch.full((2, 5), -1)], dim=1)
    if pad_value != -1:
        pad = torch.arange(padded.size(1))[None, :] >= tlens[:, None]
        padded = padded.masked_fill(pad, pad_value)
    with torch.no_grad():
        ref = enc.encode_with_target(xs, ilens, text, tlens)
        out = enc.encode_with_target(xs, ilens, padded, tlens)
    torch.testing.assert_close(out.fused, ref.fused, atol=1e-6, rtol=0)
    # padded target positions get no attention at all
    for weights in out.attention:
        assert float(weights[0, :, :, 4:].abs().max()) == 0.0
        assert float(weights[1, :, :, 2:].abs().max()) == 0.0


def test_encoder_rejects_oracle_source(task):
    with pytest.raises(ValueError, match="oracle_teacher"):
        make_encoder(task, source="oracle_teacher", conf={})


# ---------------------------------------------------------------------------
# model through the task: gradients, errors, aux CTC


def speech_batch(feat_dim, seed=4):
    """Features of the model's input size (``args.input_size`` of the config it was built from)."""
    g = torch.Generator().manual_seed(seed)
    speech, lengths = make_feats([90, 64, 75], feat_dim, g)
    text, tlens = make_text([6, 3, 4], g)
    return speech, lengths, text, tlens


def encoder_input_size(model, args):
    """What the encoder reads: the preencoder's output if the config has one, else the features."""
    return model.preencoder.output_size() if model.preencoder is not None else args.input_size


@pytest.fixture(scope="module")
def tiny_oracle(build):
    """(model, args) of the Oracle Teacher YAML shrunk to d=32, one block."""
    torch.manual_seed(0)
    return build("train_teacher_oracle.yaml", *TINY_ORACLE_ARGS)


def test_gradients_reach_source_and_target_sides(tiny_oracle, monkeypatch):
    model, args = tiny_oracle
    model.train()
    model.zero_grad()
    # the recipe's config drops 30 % of target tokens; off here, so that the mask token's
    # embedding row must get no gradient (the dropout path has its own test below)
    monkeypatch.setattr(model.encoder, "target_token_dropout", 0.0)  # restored after the test
    speech, lengths, text, tlens = speech_batch(args.input_size)
    loss, stats, weight = model(speech, lengths, text, tlens)
    assert torch.isfinite(loss)
    loss.backward()
    enc = model.encoder

    def grad_norm(module):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), type(module).__name__
        return sum(float(g.abs().sum()) for g in grads)

    assert grad_norm(enc.source_encoder.embed) > 0  # conv2d subsampling
    assert grad_norm(enc.source_encoder.encoders) > 0
    # the first layer on the features: the preencoder if the config has one, else the
    # source encoder's input layer (conv2d subsampling: its first convolution)
    assert (model.preencoder is None) == (args.preencoder is None)
    if model.preencoder is not None:
        assert grad_norm(model.preencoder) > 0
    else:
        first = next(m for m in enc.source_encoder.embed.modules()
                     if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
        assert grad_norm(first) > 0
    # rows of the tokens used in the batch get a gradient
    emb_grad = enc.target_embedding.weight.grad
    used = sorted(set(text[text >= 0].tolist()))
    assert all(float(emb_grad[t].abs().sum()) > 0 for t in used)
    assert float(emb_grad[enc.mask_id].abs().sum()) == 0  # no token dropout: the mask token never occurs
    for block in enc.fusion_blocks:
        assert grad_norm(block) > 0
        for name in ("linear_q", "linear_k", "linear_v", "linear_out"):
            assert grad_norm(getattr(block.cross_attention, name)) > 0, name
    assert grad_norm(model.ctc) > 0
    model.zero_grad()
    model.eval()


def test_forward_without_text_raises(task, tiny_oracle):
    model, args = tiny_oracle
    enc = model.encoder
    xs = torch.randn(1, 40, encoder_input_size(model, args))
    with pytest.raises(ValueError, match="transcript"):
        enc(xs, torch.tensor([40]))
    with pytest.raises(ValueError, match="transcript"):
        enc(xs, torch.tensor([40]), text=torch.tensor([[2]]))  # lengths missing
    speech, lengths, _, _ = speech_batch(args.input_size)
    with pytest.raises(ValueError, match="transcript"):
        model.encode(speech, lengths)


def test_model_encode_with_text(tiny_oracle):
    model, args = tiny_oracle
    model.eval()
    speech, lengths, text, tlens = speech_batch(args.input_size)
    with torch.no_grad():
        out, olens = model.encode(speech, lengths, text, tlens)
    assert out.shape == (3, int(olens.max()), 32)
    assert int(olens[0]) == conv2d_frames(90)


def test_aux_source_ctc_weight(build):
    torch.manual_seed(0)
    plain, _ = build("train_teacher_oracle.yaml", *TINY_ORACLE_ARGS)
    aux, args = build(
        "train_teacher_oracle.yaml", *TINY_ORACLE_ARGS,
        "--model_conf", "aux_source_ctc_weight=0.3",
    )
    assert args.model_conf["aux_source_ctc_weight"] == 0.3
    aux.load_state_dict(plain.state_dict())
    plain.eval()
    aux.eval()
    speech, lengths, text, tlens = speech_batch(args.input_size)
    with torch.no_grad():
        loss_p, stats_p, _ = plain(speech.clone(), lengths, text, tlens)
        loss_a, stats_a, _ = aux(speech.clone(), lengths, text, tlens)
    assert "loss_source_ctc" not in stats_p
    assert "loss_source_ctc" in stats_a and "cer_source_ctc" in stats_a
    torch.testing.assert_close(stats_a["loss_ctc"], stats_p["loss_ctc"], rtol=1e-5, atol=1e-5)
    expected = 0.7 * stats_a["loss_ctc"] + 0.3 * stats_a["loss_source_ctc"]
    torch.testing.assert_close(loss_a, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats_a["loss"], loss_a)
    # the source-only CTC reads the source encoder's output through the same CTC layer
    with torch.no_grad():
        out = aux.encode_with_target(speech.clone(), lengths, text, tlens)
        direct, _ = aux._calc_ctc_loss(out.source, out.lengths, text, tlens)
    assert float(stats_a["loss_source_ctc"]) == pytest.approx(float(direct), rel=1e-5)


def test_model_rejects_bad_options(build):
    with pytest.raises(ValueError, match="aux_source_ctc_weight"):
        build("train_teacher_oracle.yaml", *TINY_ORACLE_ARGS,
              "--model_conf", "aux_source_ctc_weight=1.0")
    with pytest.raises(ValueError, match="ctc_weight"):
        build("train_teacher_oracle.yaml", *TINY_ORACLE_ARGS, "--model_conf", "ctc_weight=0.5")


# ---------------------------------------------------------------------------
# anti-copy options


@pytest.mark.parametrize("max_repeat,blank_prob", [(3, 0.3), (1, 0.0), (4, 1.0)])
def test_expand_like_ctc_collapses_back(task, max_repeat, blank_prob):
    random.seed(1234)
    enc = make_encoder(task, target_ctc_expansion=True, expansion_max_repeat=max_repeat,
                       expansion_blank_prob=blank_prob)
    g = torch.Generator().manual_seed(5)
    for trial in range(30):
        lengths = torch.randint(0, 9, (4,), generator=g)
        lengths[0] = 8
        text = torch.full((4, 8), -1)
        for i, n in enumerate(lengths.tolist()):
            # few distinct ids: many identical neighbours
            text[i, :n] = torch.randint(2, 4 if trial % 2 else V - 1, (n,), generator=g)
        if trial == 0:
            text[1, :4] = 5  # a run of identical tokens
            lengths[1] = 4
            text[1, 4:] = -1
        expanded, exp_lens = enc.expand_like_ctc(text, lengths)
        assert expanded.shape[0] == 4 and exp_lens.shape == (4,)
        assert expanded.size(1) == max(1, int(exp_lens.max()))
        for i in range(4):
            n, m = int(lengths[i]), int(exp_lens[i])
            original = text[i, :n].tolist()
            row = expanded[i].tolist()
            assert all(t == -1 for t in row[m:]), "padding must be -1"
            assert m >= n
            assert set(row[:m]) <= set(original) | {enc.blank_id}
            assert ctc_collapse(row[:m], enc.blank_id) == original, (original, row[:m])
            if blank_prob == 0.0 and max_repeat == 1:
                # blanks only where neighbours are identical
                repeats = sum(a == b for a, b in zip(original, original[1:]))
                assert m == n + repeats


def test_ctc_expansion_same_form_in_training_and_evaluation(task):
    """Evaluation (probes, posterior dump) feeds the kind of input the teacher trained on:
    an expanded sequence drawn from the same distribution, fixed per target in evaluation."""
    enc = make_encoder(task, target_ctc_expansion=True, expansion_blank_prob=0.3)
    seen = []
    hook = enc.target_embedding.register_forward_hook(
        lambda module, inputs, output: seen.append(inputs[0].clone())
    )
    g = torch.Generator().manual_seed(6)
    text, tlens = make_text([8] * 64, g)

    def expanded_lengths(mode):
        enc.train(mode == "train")
        enc.embed_target(text, tlens)
        ids = seen.pop()
        return ids, ids.size(1)

    try:
        random.seed(0)
        train_ids, train_width = expanded_lengths("train")
        eval_ids, eval_width = expanded_lengths("eval")
        again_ids, _ = expanded_lengths("eval")
    finally:
        hook.remove()
    # both modes expand (longer than the target), with blanks, and collapse back to it
    for ids, mode in ((train_ids, "train"), (eval_ids, "eval")):
        assert ids.size(1) > text.size(1), mode
        rows = ids.tolist()
        for i in range(text.size(0)):
            collapsed = ctc_collapse([t for t in rows[i]], enc.blank_id)
            # embedded padding is id 0 (= blank), so collapsing drops it too
            assert collapsed == text[i, : int(tlens[i])].tolist(), mode
    # the same distribution: mean number of (repeated) tokens agrees within sampling error
    nonblank_train = float((train_ids != 0).sum(dim=1).float().mean())
    nonblank_eval = float((eval_ids != 0).sum(dim=1).float().mean())
    assert abs(nonblank_train - nonblank_eval) < 0.15 * nonblank_train
    # evaluation is deterministic per target
    torch.testing.assert_close(eval_ids, again_ids, atol=0, rtol=0)


def test_ctc_expansion_evaluation_output_is_reproducible(task):
    torch.manual_seed(0)
    enc = make_encoder(task, target_ctc_expansion=True).eval()
    g = torch.Generator().manual_seed(6)
    xs, ilens = make_feats([50, 40], FEAT_DIM, g)
    text, tlens = make_text([4, 3], g)
    with torch.no_grad():
        first = enc.encode_with_target(xs, ilens, text, tlens)
        random.seed(99)  # the global random state must not matter in evaluation
        second = enc.encode_with_target(xs, ilens, text, tlens)
    torch.testing.assert_close(first.fused, second.fused, atol=0, rtol=0)
    assert first.attention[0].size(-1) > text.size(1), "evaluation attends the expanded target"


def test_target_positions_have_their_intended_weight(task):
    """Positions must be a sizeable part of the target embedding (~0.7 of the token part's RMS),
    not the ~1 % left when the embedding is scaled by sqrt(D) twice."""
    torch.manual_seed(0)
    enc = make_encoder(task, target_positional_encoding=True, num_fusion_blocks=1).eval()
    bag = make_encoder(task, num_fusion_blocks=1).eval()
    bag.load_state_dict(enc.state_dict())
    g = torch.Generator().manual_seed(9)
    text, tlens = make_text([30, 30], g)
    with torch.no_grad():
        with_positions, _ = enc.embed_target(text, tlens)
        tokens_only, _ = bag.embed_target(text, tlens)
    token_rms = float(tokens_only.pow(2).mean().sqrt())
    position_rms = float((with_positions - tokens_only).pow(2).mean().sqrt())
    ratio = position_rms / token_rms
    assert 0.5 < ratio < 1.0, f"positions are {ratio:.3f} of the token part"
    # and the position part is exactly ESPnet's sinusoidal table
    pe = enc.target_positional_encoding.pe[0, : text.size(1)]
    torch.testing.assert_close(with_positions - tokens_only, pe.expand_as(tokens_only),
                               atol=1e-5, rtol=0)


def test_token_dropout_only_real_tokens_and_only_in_training(task):
    torch.manual_seed(0)
    enc = make_encoder(task, target_token_dropout=0.5)
    seen = []
    hook = enc.target_embedding.register_forward_hook(
        lambda module, inputs, output: seen.append(inputs[0].clone())
    )
    g = torch.Generator().manual_seed(7)
    text, tlens = make_text([12, 5, 9, 1], g)
    pad = torch.arange(text.size(1))[None, :] >= tlens[:, None]
    try:
        enc.train()
        dropped_total = 0
        for _ in range(5):
            enc.embed_target(text, tlens)
            ids = seen.pop()
            dropped = ids == enc.mask_id
            assert not (dropped & pad).any(), "padding must never become the mask token"
            kept = ~dropped & ~pad
            assert torch.equal(ids[kept], text[kept])
            assert (ids[pad] == 0).all()
            dropped_total += int(dropped.sum())
        assert 0 < dropped_total < 5 * int(tlens.sum())
        enc.eval()
        for _ in range(3):
            enc.embed_target(text, tlens)
            ids = seen.pop()
            assert not (ids == enc.mask_id).any()
            assert torch.equal(ids[~pad], text[~pad])
    finally:
        hook.remove()


def test_encoder_option_validation(task):
    with pytest.raises(ValueError, match="target_token_dropout"):
        make_encoder(task, target_token_dropout=1.0)
    with pytest.raises(ValueError, match="expansion_max_repeat"):
        make_encoder(task, expansion_max_repeat=0)


def test_target_positional_encoding_changes_output(task):
    """With positions the target order matters; without them the target is a bag."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(8)
    xs, ilens = make_feats([50], FEAT_DIM, g)
    text = torch.tensor([[2, 3, 4, 5]])
    rev = torch.tensor([[5, 4, 3, 2]])
    tl = torch.tensor([4])
    bag = make_encoder(task).eval()
    pos = make_encoder(task, target_positional_encoding=True).eval()
    pos.load_state_dict(bag.state_dict())
    with torch.no_grad():
        a, _, _ = bag(xs, ilens, text=text, text_lengths=tl)
        b, _, _ = bag(xs, ilens, text=rev, text_lengths=tl)
        c, _, _ = pos(xs, ilens, text=text, text_lengths=tl)
        d, _, _ = pos(xs, ilens, text=rev, text_lengths=tl)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert float((c - d).abs().max()) > 1e-3


# ---------------------------------------------------------------------------
# configs through the task


def _yaml(name):
    return yaml.safe_load((CONF / name).read_text(encoding="utf-8"))


def test_teacher_yamls_build_through_task(build):
    from espnet2.tasks import asr as espnet_asr

    oracle, oracle_args = build("train_teacher_oracle.yaml")
    conventional, conv_args = build("train_teacher_conventional.yaml")
    for model, args, name in [
        (oracle, oracle_args, "train_teacher_oracle.yaml"),
        (conventional, conv_args, "train_teacher_conventional.yaml"),
    ]:
        cfg = _yaml(name)
        assert args.model == cfg["model"] and args.encoder == cfg["encoder"]
        assert registered_class(model) is espnet_asr.model_choices.get_class(cfg["model"])
        assert type(model.encoder) is espnet_asr.encoder_choices.get_class(cfg["encoder"])
        assert model.vocab_size == V
        assert model.decoder is None and model.ctc_weight == 1.0
    assert type(oracle).__name__ == "OracleTeacherModel"
    assert type(oracle.encoder).__name__ == "OracleTeacherEncoder"
    assert type(conventional).__name__ == "ESPnetASRModel"
    # the task injects the vocabulary size (saved in config.yaml with encoder_conf)
    assert oracle_args.encoder_conf["vocab_size"] == V
    assert "vocab_size" not in conv_args.encoder_conf
    assert oracle.encoder.vocab_size == V
    assert oracle.encoder.target_embedding.num_embeddings == V + 1  # + mask token
    # the Oracle Teacher's source encoder is the conventional teacher's encoder
    oracle_cfg, conv_cfg = _yaml("train_teacher_oracle.yaml"), _yaml("train_teacher_conventional.yaml")
    assert oracle_cfg["encoder_conf"]["source_encoder"] == conv_cfg["encoder"]
    assert oracle_cfg["encoder_conf"]["source_encoder_conf"] == conv_cfg["encoder_conf"]
    src = {k: v.shape for k, v in oracle.encoder.source_encoder.state_dict().items()}
    ref = {k: v.shape for k, v in conventional.encoder.state_dict().items()}
    assert src == ref
    assert oracle.encoder.output_size() == conventional.encoder.output_size()


def test_oracle_model_with_plain_encoder_raises(build):
    with pytest.raises(TypeError, match="oracle_teacher"):
        build("train_teacher_conventional.yaml", "--model", "oracle_teacher")


# ---------------------------------------------------------------------------
# entry points


def test_asr_train_parser(tmp_path):
    from espnet_oracle.bin import asr_train

    parser = asr_train.get_parser()
    args = parser.parse_args(
        [
            "--config", str(CONF / "train_teacher_oracle.yaml"),
            "--output_dir", str(tmp_path / "exp"),
            "--ngpu", "0",
            "--max_epoch", "2",
            "--token_list", "tokens.txt",
            "--train_data_path_and_name_and_type", "dump/train/feats.scp,speech,kaldi_ark",
            "--train_data_path_and_name_and_type", "dump/train/text,text,text",
            "--valid_data_path_and_name_and_type", "dump/dev/feats.scp,speech,kaldi_ark",
            "--train_shape_file", "stats/train/speech_shape",
            "--valid_shape_file", "stats/dev/speech_shape",
            "--normalize_conf", "stats_file=stats/feats_stats.npz",
        ]
    )
    assert args.output_dir == str(tmp_path / "exp")
    assert args.ngpu == 0 and args.max_epoch == 2
    assert args.train_data_path_and_name_and_type == [
        ("dump/train/feats.scp", "speech", "kaldi_ark"),
        ("dump/train/text", "text", "text"),
    ]
    assert args.valid_data_path_and_name_and_type == [("dump/dev/feats.scp", "speech", "kaldi_ark")]
    assert args.train_shape_file == ["stats/train/speech_shape"]
    assert args.model == "oracle_teacher" and args.encoder == "oracle_teacher"
    assert args.normalize_conf == {"stats_file": "stats/feats_stats.npz"}
    assert callable(asr_train.main)


def test_asr_inference_parser():
    from espnet_oracle.bin import asr_inference

    parser = asr_inference.get_parser()
    args = parser.parse_args(
        [
            "--asr_train_config", "exp/student/config.yaml",
            "--asr_model_file", "exp/student/valid.loss.ave.pth",
            "--output_dir", "exp/student/decode",
            "--data_path_and_name_and_type", "dump/test/feats.scp,speech,kaldi_ark",
        ]
    )
    assert args.asr_train_config == "exp/student/config.yaml"
    assert args.asr_model_file == "exp/student/valid.loss.ave.pth"
    assert args.output_dir == "exp/student/decode"
    assert args.data_path_and_name_and_type == [("dump/test/feats.scp", "speech", "kaldi_ark")]
    assert callable(asr_inference.main)
    # importing the inference entry point registers the plugins
    from espnet2.tasks import asr as espnet_asr

    assert espnet_asr.model_choices.get_class("kd_student").__name__ == "KDStudentModel"
