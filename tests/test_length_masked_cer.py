"""Validation cer_ctc reads only each utterance's own frames (asr/length_masked_cer.py).

ESPnet scores the CTC argmax over the whole padded batch, so tokens a model emits on the padding
after a short utterance count as insertions. A model whose CTC layer reads its encoder frames as
one-hot tokens gets frames that spell each transcript exactly, and a non-blank token on every
padded frame: built by the task its cer_ctc is 0; built without the patch it is not (ESPnet's own
behaviour, so the test can fail).
"""

import copy
import pickle
from pathlib import Path
from unittest import mock

import pytest
import torch

from espnet_oracle.asr.length_masked_cer import registered_class

REPO = Path(__file__).resolve().parents[1]
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "<sos/eos>"]
A, B, C, D = 2, 3, 4, 5


@pytest.fixture(scope="module")
def build(task, token_file, tmp_path_factory, write_mvn_stats):
    stats = write_mvn_stats(tmp_path_factory.mktemp("stats") / "feats_stats.npz", 40)

    def _build(patched: bool):
        args = task.get_parser().parse_args([
            "--config", str(REPO / "conf" / "train_student.yaml"), "--token_list", str(token_file),
            "--output_dir", str(tmp_path_factory.mktemp("out")),
            "--encoder_conf", "output_size=16", "--encoder_conf", "attention_heads=2",
            "--encoder_conf", "linear_units=32", "--encoder_conf", "num_blocks=1",
        ])
        args.normalize_conf = dict(args.normalize_conf or {}, stats_file=str(stats))
        if patched:
            model = task.build_model(args)
        else:
            with mock.patch("espnet_oracle.tasks.oracle_asr.install_length_masked_cer", lambda m: False):
                model = task.build_model(args)
        with torch.no_grad():  # the CTC layer reads frame d as token d
            model.ctc.ctc_lo.weight.zero_()
            model.ctc.ctc_lo.bias.zero_()
            for token in range(len(TOKENS)):
                model.ctc.ctc_lo.weight[token, token] = 10.0
        return model.eval()

    return _build


def one_hot(tokens, dim=16):
    frames = torch.zeros(len(tokens), dim)
    frames[torch.arange(len(tokens)), torch.tensor(tokens)] = 1.0
    return frames


def batch():
    """Two utterances: 'a b' in 4 frames then 6 padded frames emitting 'c', and 'd a e b d' in 10 frames."""
    short = one_hot([A, 0, B, 0] + [C] * 6)
    long = one_hot([D, 0, A, 0, 6, 0, B, B, 0, D])
    encoder_out = torch.stack([short, long])
    lengths = torch.tensor([4, 10])
    ys_pad = torch.tensor([[A, B, -1, -1, -1], [D, A, 6, B, D]])
    return encoder_out, lengths, ys_pad, torch.tensor([2, 5])


def test_cer_ctc_ignores_padded_frames(build):
    model = build(patched=True)
    _, cer = model._calc_ctc_loss(*batch())
    assert cer == 0.0
    # the online teacher is deep-copied to other devices; DataParallel replicates the module
    # (its replicas must not score through the original); pickle must find the class
    # (torch's replicate() makes each replica with this, then moves parameters: GPU-only)
    replica = model._replicate_for_data_parallel()
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model)), replica):
        assert other is not model and other._calc_ctc_loss(*batch())[1] == 0.0
        assert "_calc_ctc_loss" not in vars(other)  # the class scores, not a method bound to the original
    assert type(model).__name__ == registered_class(model).__name__ == "ESPnetASRModel"  # as ESPnet prints it
    # ctc.argmax used anywhere else still sees every frame
    assert model.ctc.argmax(batch()[0])[0, 4:].tolist() == [C] * 6


def test_espnet_scores_the_padding_without_the_patch(build):
    model = build(patched=False)
    _, cer = model._calc_ctc_loss(*batch())
    assert cer == pytest.approx(1 / 7)  # one inserted 'c' over 7 reference characters
