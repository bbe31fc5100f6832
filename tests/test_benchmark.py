"""The KD-step benchmark times every step on unmodified input.

ESPnet's SpecAugment and global MVN work in place on a batch that does not
require grad; a benchmark that hands the same tensor to every step times later
steps on input that earlier steps already masked and normalised.
"""

from pathlib import Path

import pytest
import torch
import yaml

from espnet_oracle.bin import benchmark

STUDENT_YAML = Path(__file__).resolve().parents[1] / "conf" / "train_student.yaml"
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "<sos/eos>"]
TINY_STUDENT_ARGS = ["--encoder_conf", "output_size=16", "--encoder_conf", "attention_heads=2",
                     "--encoder_conf", "linear_units=32", "--encoder_conf", "num_blocks=1"]
# the student's feature dimension, as its config says (the stats file is written before the build)
FEAT_DIM = yaml.safe_load(STUDENT_YAML.read_text(encoding="utf-8"))["input_size"]


@pytest.fixture(scope="module")
def stats_file(tmp_path_factory, write_mvn_stats):
    """Global-MVN stats far from the data's own, so normalising visibly changes the input."""
    return write_mvn_stats(tmp_path_factory.mktemp("stats") / "feats_stats.npz", FEAT_DIM,
                           mean=3.0, var=2.0**2)


def test_every_step_gets_an_unmodified_copy(task, token_file, stats_file):
    torch.manual_seed(0)
    model = benchmark.build(str(STUDENT_YAML), str(token_file), str(stats_file), "espnet",
                            TINY_STUDENT_ARGS)
    assert type(model.normalize).__name__ == "GlobalMVN"
    assert model.normalize.mean.shape == (FEAT_DIM,)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([60, 45])
    speech = torch.zeros(2, 60, FEAT_DIM)
    for i, n in enumerate(lengths.tolist()):
        speech[i, :n] = 10.0 + torch.randn(n, FEAT_DIM, generator=g)
    text = torch.tensor([[2, 3, 4], [3, 2, -1]])
    batch = dict(speech=speech, speech_lengths=lengths, text=text, text_lengths=torch.tensor([3, 2]))
    original = {k: v.clone() for k, v in batch.items()}

    handed = []  # (the tensor the model got, a copy of it as it arrived)
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: handed.append((kwargs["speech"], kwargs["speech"].clone())),
        with_kwargs=True,
    )
    try:
        for _ in range(3):
            seconds = benchmark.timed_step(model, optimizer, batch)
            assert seconds > 0
    finally:
        hook.remove()

    for key, value in original.items():
        torch.testing.assert_close(batch[key], value, rtol=0, atol=0, msg=f"batch[{key!r}] modified")
    assert len(handed) == 3
    for given, as_received in handed:
        assert given is not batch["speech"]
        torch.testing.assert_close(as_received, original["speech"], rtol=0, atol=0)
    # The copies are needed: ESPnet did change the tensor it was handed.
    assert not torch.equal(handed[0][0], original["speech"])
