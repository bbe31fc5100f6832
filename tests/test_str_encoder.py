"""CRNN encoder for scene-text images (``encoder: crnn``): shapes, exact lengths, masks,
padding invariance, masked batch norm, and the recipe's YAML configs built through
``OracleASRTask`` (conventional teacher, Oracle Teacher with ``source_encoder: crnn``,
student). Tiny models, one process; ``espnet2.tasks.asr`` is imported once.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch

from espnet_oracle.asr.encoder.crnn_encoder import CRNNEncoder, register
from espnet_oracle.asr.encoder.masked_batch_norm import MaskedBatchNorm2d

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "egs" / "synth_words" / "conf"
TOKENS = ["<blank>", "<unk>"] + list(string.digits + string.ascii_lowercase) + ["<sos/eos>"]
V = len(TOKENS)
TINY = dict(output_size=16, channels=[4, 8, 8, 8], linear_units=32, attention_heads=2)
# command-line overrides that shrink the recipe's CRNNs (the YAMLs' real sizes are timed in local/step_time.py)
TINY_TEACHER_ARGS = ["--encoder_conf", "channels=[4,8,8,8]", "--encoder_conf", "output_size=16"]
TINY_ORACLE_ARGS = [
    "--encoder_conf", "source_encoder_conf.channels=[4,8,8,8]",
    "--encoder_conf", "source_encoder_conf.output_size=16",
    "--encoder_conf", "fusion_attention_heads=2",
    "--encoder_conf", "fusion_linear_units=32",
]


def images(widths, channels=1, generator=None, pad_to=None):
    """(B, W, 32*C) random column features, zero beyond each width, and (B,) widths."""
    widths = torch.as_tensor(widths, dtype=torch.long)
    w = int(pad_to or widths.max())
    xs = torch.zeros(len(widths), w, 32 * channels)
    for i, n in enumerate(widths.tolist()):
        xs[i, :n] = torch.rand(n, 32 * channels, generator=generator)
    return xs, widths


def trained_norm_stats(enc, generator):
    """A few training forwards, so the batch-norm running statistics are not the identity."""
    enc.train()
    with torch.no_grad():
        for _ in range(3):
            enc(*images([90, 70, 50], generator=generator))
    return enc.eval()


@pytest.mark.parametrize("block", ["vgg", "resnet"])
@pytest.mark.parametrize("sequence_model", ["none", "blstm", "transformer"])
def test_shapes_lengths_masks(block, sequence_model):
    enc = CRNNEncoder(32, block=block, sequence_model=sequence_model, **TINY)
    assert enc.output_size() == 16
    xs, ilens = images([103, 64, 9, 4])
    out, olens, states = enc(xs, ilens)
    assert states is None
    assert olens.tolist() == [25, 16, 2, 1]  # floor(W / 4), per image
    assert out.shape == (4, 25, 16)
    for i, n in enumerate(olens.tolist()):
        assert torch.all(out[i, n:] == 0)
        assert torch.all(out[i, :n].abs().sum(-1) > 0)
    # a batch padded wider than its widest image: same lengths, output trimmed to the longest
    wide, _ = images([103, 64, 9, 4], pad_to=150)
    wide[:, :103] = xs
    out2, olens2, _ = enc.eval()(wide, ilens)
    assert out2.shape == (4, 25, 16) and torch.equal(olens2, olens)


@pytest.mark.parametrize("block", ["vgg", "resnet"])
@pytest.mark.parametrize("sequence_model", ["none", "blstm", "transformer"])
def test_padding_invariance_eval(block, sequence_model):
    g = torch.Generator().manual_seed(0)
    enc = trained_norm_stats(CRNNEncoder(32, block=block, sequence_model=sequence_model, **TINY), g)
    xs, ilens = images([121, 77, 41, 13], generator=g, pad_to=140)
    with torch.no_grad():
        batch, olens, _ = enc(xs, ilens)
        for i, w in enumerate(ilens.tolist()):
            alone, alone_len, _ = enc(xs[i : i + 1, :w], ilens[i : i + 1])
            assert alone_len.item() == olens[i].item()
            torch.testing.assert_close(batch[i, : olens[i]], alone[0], rtol=1e-5, atol=1e-5)


def test_padding_invariance_training_mode():
    """Batch statistics over valid columns only: the amount of padding does not matter."""
    g = torch.Generator().manual_seed(1)
    enc = CRNNEncoder(32, dropout_rate=0.0, **TINY).train()
    xs, ilens = images([90, 61, 33], generator=g)
    wide = torch.zeros(3, 131, 32)
    wide[:, :90] = xs
    out, olens, _ = enc(xs, ilens)
    stats = enc.units[0][0].norm.running_mean.clone()
    out_wide, _, _ = enc(wide, ilens)
    torch.testing.assert_close(out_wide, out, rtol=1e-5, atol=1e-5)
    # the second call saw the same valid statistics: the running mean moved towards the same value
    assert enc.units[0][0].norm.num_batches_tracked.item() == 2
    assert not torch.equal(stats, torch.zeros_like(stats))


def test_masked_batch_norm_matches_batch_norm_without_padding():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 8, 20, generator=g) * 2 + 1
    ref, ours = torch.nn.BatchNorm2d(3), MaskedBatchNorm2d(3)
    for m in (ref, ours):
        m.weight.data = torch.tensor([0.5, 1.5, -1.0])
        m.bias.data = torch.tensor([0.1, 0.0, -0.3])
    full = torch.ones(4, 1, 1, 20)
    torch.testing.assert_close(ours(x, full), ref(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-4, atol=1e-6)
    ref.eval(), ours.eval()
    torch.testing.assert_close(ours(x, full), ref(x), rtol=1e-4, atol=1e-5)
    # with padding: statistics of the valid part only, zeros at padded columns
    mask = torch.ones(4, 1, 1, 20)
    mask[1:, ..., 12:] = 0
    padded = x * mask + 100.0 * (1 - mask)  # garbage in the padding must not matter
    ours.train()
    out = ours(padded, mask)
    assert torch.all(out[1:, ..., 12:] == 0)
    # per channel, every valid value: (C, positions)
    valid = torch.cat([x[0].flatten(1)] + [x[i, :, :, :12].flatten(1) for i in range(1, 4)], dim=1)
    mean, var = valid.mean(1), valid.var(1, unbiased=False)
    expected0 = (x[0, 0] - mean[0]) / torch.sqrt(var[0] + ours.eps) * 0.5 + 0.1
    torch.testing.assert_close(out[0, 0], expected0, rtol=1e-4, atol=1e-4)


def test_rgb_input_and_width_subsampling_options():
    enc = CRNNEncoder(96, width_subsampling=8, sequence_model="none", **TINY)
    out, olens, _ = enc(*images([100, 35], channels=3))
    assert olens.tolist() == [12, 4] and out.shape == (2, 12, 16)
    enc1 = CRNNEncoder(32, width_subsampling=1, **TINY)
    assert enc1(*images([10, 7]))[1].tolist() == [10, 7]


def test_configuration_errors():
    with pytest.raises(ValueError, match="multiple of input_height"):
        CRNNEncoder(40, **TINY)
    with pytest.raises(ValueError, match="divisible by 64"):
        CRNNEncoder(32, output_size=16, channels=[4, 4, 4, 4, 4, 4])
    with pytest.raises(ValueError, match="power of 2"):
        CRNNEncoder(32, width_subsampling=3, **TINY)
    with pytest.raises(ValueError, match="even output_size"):
        CRNNEncoder(32, output_size=15, channels=[4, 8])
    enc = CRNNEncoder(32, **TINY)
    with pytest.raises(ValueError, match="batch item 1: an image 3 columns wide gives no frame"):
        enc(*images([40, 3]))
    with pytest.raises(ValueError, match="frames of 32 values"):
        enc(torch.zeros(1, 20, 96), torch.tensor([20]))


# --------------------------------------------------------------------------- #
# Through the task: registry, YAML, Oracle Teacher source encoder              #
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def build(task, token_file, tmp_path_factory):
    """build(yaml_name, *extra_args) -> (model, args), through OracleASRTask."""
    register()  # what register_plugins() will do once the lead adds the line
    register()  # idempotent
    out = tmp_path_factory.mktemp("out")

    def _build(yaml_name, *extra):
        args = task.get_parser().parse_args([
            "--config", str(CONF / yaml_name), "--token_list", str(token_file),
            "--normalize", "utterance_mvn", "--output_dir", str(out), *extra,
        ])
        return task.build_model(args), args

    return _build


def make_batch(widths, generator):
    xs, ilens = images(widths, generator=generator)
    lens = torch.tensor([max(1, w // 12) for w in widths])
    text = torch.full((len(widths), int(lens.max())), -1, dtype=torch.long)
    for i, n in enumerate(lens.tolist()):
        text[i, :n] = torch.randint(2, V - 1, (n,), generator=generator)
    return xs, ilens, text, lens


def test_registered_in_espnet_encoder_choices(build):
    from espnet2.tasks.asr import encoder_choices

    assert encoder_choices.get_class("crnn") is CRNNEncoder


def test_recipe_yamls_build_and_train_through_task(build):
    from espnet_oracle.asr.encoder.oracle_teacher_encoder import OracleTeacherEncoder

    g = torch.Generator().manual_seed(3)
    teacher, _ = build("train_teacher_conventional.yaml", *TINY_TEACHER_ARGS)
    oracle, _ = build("train_teacher_oracle.yaml", *TINY_ORACLE_ARGS)
    student, _ = build("train_student.yaml", "--encoder_conf", "channels=[2,4,4,4]",
                       "--encoder_conf", "output_size=8")
    assert isinstance(teacher.encoder, CRNNEncoder) and isinstance(student.encoder, CRNNEncoder)
    assert isinstance(oracle.encoder, OracleTeacherEncoder)
    assert isinstance(oracle.encoder.source_encoder, CRNNEncoder)
    xs, ilens, text, lens = make_batch([110, 95, 60], g)
    for model in (teacher, oracle, student):
        model.train()
        loss, stats, _ = model(speech=xs, speech_lengths=ilens, text=text, text_lengths=lens)
        assert torch.isfinite(loss)
        loss.backward()
        grads = [p.grad for p in model.encoder.parameters() if p.requires_grad]
        assert all(gr is not None for gr in grads)
    # same frame rate everywhere (KD stores one teacher posterior per student frame)
    for model in (teacher, oracle, student):
        model.eval()
    with torch.no_grad():
        t_len = teacher.encode(xs, ilens)[1]
        s_len = student.encode(xs, ilens)[1]
        o_out = oracle.encoder(xs, ilens, text=text, text_lengths=lens)
    assert t_len.tolist() == s_len.tolist() == o_out[1].tolist() == [27, 23, 15]
    assert o_out[0].shape == (3, 27, 16)


def test_recipe_yaml_sizes(build):
    """The real sizes: the student is clearly smaller; teacher and Oracle source encoder identical."""
    teacher, targs = build("train_teacher_conventional.yaml")
    oracle, oargs = build("train_teacher_oracle.yaml")
    student, _ = build("train_student.yaml")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(student) * 3 < count(teacher)
    source = dict(oargs.encoder_conf["source_encoder_conf"])
    assert source == targs.encoder_conf
    assert count(oracle.encoder.source_encoder) == count(teacher.encoder)
