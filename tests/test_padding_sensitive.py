"""Conformer outputs do not depend on their batch.

ESPnet's conformer convolution module runs a depthwise convolution over time without
masking the padded frames, so in a batch an utterance's encoder output depends on the
padding after it (i.e. on the longest utterance that shares its batch). The recipe's
teachers are conformers (conf/train_teacher_*.yaml). Every model the task builds masks the
padding before those convolutions (``asr/encoder/conformer_padding_mask.py``), so one padded
forward gives each utterance its lone output. A conformer without the mask is reported by
``utils.inference.padding_sensitive`` and ``encode_batch`` then encodes each utterance alone.
Transformer encoders mask padding in attention and stay batched.

Tiny models built through the task from the recipe's own configs (shrunk on the command
line); the feature dimension is each config's ``input_size``.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from espnet_oracle.utils import inference
from espnet_oracle.utils.inference import Utterance, encode_batch, padding_sensitive

REPO = Path(__file__).resolve().parents[1]
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "<sos/eos>"]
ATOL = 1e-5
SHORT, LONG = 41, 400  # input frames: the short one is padded by ~90 % in a batch with the long one

SHRINK = {
    "train_teacher_conventional.yaml": [
        "--encoder_conf", "output_size=32", "--encoder_conf", "linear_units=64",
        "--encoder_conf", "num_blocks=1",
    ],
    "train_teacher_oracle.yaml": [
        "--encoder_conf", "source_encoder_conf.output_size=32",
        "--encoder_conf", "source_encoder_conf.linear_units=64",
        "--encoder_conf", "source_encoder_conf.num_blocks=1",
        "--encoder_conf", "fusion_linear_units=64",
    ],
    "train_student.yaml": [
        "--encoder_conf", "output_size=16", "--encoder_conf", "attention_heads=2",
        "--encoder_conf", "linear_units=32", "--encoder_conf", "num_blocks=1",
    ],
}


@pytest.fixture(scope="module")
def stats_file(tmp_path_factory, write_mvn_stats):
    """Global-MVN stats (as the pipeline's stage 3 writes them) of any dimension asked for."""
    root = tmp_path_factory.mktemp("stats")

    def _stats(dim):
        path = root / f"feats_stats_{dim}.npz"
        if not path.exists():
            rng = np.random.default_rng(dim)
            write_mvn_stats(path, dim, mean=rng.normal(5.0, 2.0, dim),
                            var=rng.uniform(1.0, 3.0, dim) ** 2)
        return path

    return _stats


@pytest.fixture(scope="module")
def build(task, token_file, tmp_path_factory, stats_file):
    """build(config) -> (model, args): shrunk, in eval mode, with the hook load_model installs."""
    from espnet_oracle.asr.encoder.exact_subsampling_lengths import install_exact_subsampling_lengths

    from unittest import mock

    out = tmp_path_factory.mktemp("out")
    built = {}

    def _build(config, padding_mask=True):
        if (config, padding_mask) not in built:
            args = task.get_parser().parse_args([
                "--config", str(REPO / "conf" / config), "--token_list", str(token_file),
                "--output_dir", str(out), *SHRINK[config],
            ])
            assert args.normalize == "global_mvn", config  # stats_file: passed by the pipeline
            args.normalize_conf = dict(args.normalize_conf or {}, stats_file=str(stats_file(args.input_size)))
            torch.manual_seed(0)
            if padding_mask:
                model = task.build_model(args)
            else:  # the conformer as ESPnet builds it: its convolutions read the padding
                with mock.patch("espnet_oracle.tasks.oracle_asr.install_conformer_padding_mask", lambda m: 0):
                    model = task.build_model(args)
            install_exact_subsampling_lengths(model)
            # BatchNorm in eval mode uses its running statistics: give them non-trivial values
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
            built[config, padding_mask] = (model.eval(), args)
        return built[config, padding_mask]

    return _build


def utterances(feat_dim, seed=0):
    """A short and a much longer utterance (features around the stats' scale, a transcript each)."""
    rng = np.random.default_rng(seed)
    short = Utterance("utt-short", rng.normal(5.0, 2.0, (SHORT, feat_dim)).astype(np.float32), "a b c",
                      np.array([2, 3, 4]))
    long = Utterance("utt-long", rng.normal(5.0, 2.0, (LONG, feat_dim)).astype(np.float32), "d e a b c d",
                     np.array([5, 6, 2, 3, 4, 5]))
    return short, long


def conv2d_frames(t: int) -> int:
    return ((t - 1) // 2 - 1) // 2


def short_in_batch_vs_alone(model, args, **kwargs):
    """(short utterance's frames in a batch with the long one, its frames alone, batch output)."""
    short, long = utterances(args.input_size)
    alone, alone_lens, alone_att = encode_batch(model, [short], **kwargs)
    batch, batch_lens, batch_att = encode_batch(model, [long, short], **kwargs)
    n = conv2d_frames(SHORT)
    assert alone_lens.tolist() == [n] and batch_lens.tolist() == [conv2d_frames(LONG), n]
    assert alone.shape[1] == n and batch.shape[1] == conv2d_frames(LONG)
    return batch[1, :n], alone[0], (batch, batch_att, alone_att)


TEACHERS = ["train_teacher_conventional.yaml", "train_teacher_oracle.yaml"]


@pytest.mark.parametrize("config", TEACHERS)
def test_conformer_teacher_output_does_not_depend_on_its_batch(build, config):
    from espnet.nets.pytorch_backend.conformer.convolution import ConvolutionModule

    model, args = build(config)
    # the recipe's teachers are conformers (for the Oracle Teacher: its source encoder)
    assert any(isinstance(m, ConvolutionModule) for m in model.modules()), config
    assert not padding_sensitive(model)  # its layers mask the padding: one padded forward

    in_batch, alone, (batch, _, _) = short_in_batch_vs_alone(model, args)
    torch.testing.assert_close(in_batch, alone, atol=ATOL, rtol=0)
    # the long utterance is unaffected either way
    long_alone, _, _ = encode_batch(model, [utterances(args.input_size)[1]])
    torch.testing.assert_close(batch[0], long_alone[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("config", TEACHERS)
def test_unmasked_conformer_is_encoded_one_at_a_time(build, config, monkeypatch):
    model, args = build(config, padding_mask=False)
    assert padding_sensitive(model)
    in_batch, alone, (batch, _, _) = short_in_batch_vs_alone(model, args)
    torch.testing.assert_close(in_batch, alone, atol=ATOL, rtol=0)
    assert float(batch[1, alone.shape[0]:].abs().max()) == 0.0  # frames past its length: zero
    masked, _ = build(config)
    masked_alone, _, _ = encode_batch(masked, [utterances(args.input_size)[0]])
    torch.testing.assert_close(masked_alone, alone[None], atol=ATOL, rtol=0)  # the mask changes no lone output

    # the test can fail: in one padded forward, the unmasked convolutions change the short utterance
    monkeypatch.setattr(inference, "padding_sensitive", lambda model: False)
    padded, alone_again, _ = short_in_batch_vs_alone(model, args)
    torch.testing.assert_close(alone_again, alone, atol=0, rtol=0)  # a batch of one is unchanged
    difference = float((padded - alone).abs().max())
    assert difference > 100 * ATOL, f"{config}: padding changed the output by only {difference:.2e}"


@pytest.mark.parametrize("padding_mask", [False, True])
def test_oracle_teacher_attention_and_zero_source(build, padding_mask):
    """Batched or one at a time (unmasked), the cross-attention and ``zero_source`` come out right."""
    model, args = build("train_teacher_oracle.yaml", padding_mask)
    n = conv2d_frames(SHORT)
    in_batch, alone, (batch, batch_att, alone_att) = short_in_batch_vs_alone(model, args,
                                                                            return_attention=True)
    torch.testing.assert_close(in_batch, alone, atol=ATOL, rtol=0)
    assert batch_att.shape == (2, alone_att.shape[1], conv2d_frames(LONG), 6)
    torch.testing.assert_close(batch_att[1, :, :n, :3], alone_att[0], atol=ATOL, rtol=0)
    assert float(batch_att[1, :, :, 3:].abs().max()) == 0.0  # no weight on the target's padding
    if not padding_mask:  # reassembled one at a time: nothing past the short utterance's frames
        assert float(batch_att[1, :, n:].abs().max()) == 0.0
    in_batch, alone, _ = short_in_batch_vs_alone(model, args, zero_source=True)
    torch.testing.assert_close(in_batch, alone, atol=ATOL, rtol=0)


def test_transformer_student_is_not_padding_sensitive(build):
    """The students (transformers) stay batched, and batching does not change their output."""
    model, args = build("train_student.yaml")
    assert args.encoder == "transformer"
    assert not padding_sensitive(model)
    in_batch, alone, _ = short_in_batch_vs_alone(model, args)
    torch.testing.assert_close(in_batch, alone, atol=ATOL, rtol=0)
