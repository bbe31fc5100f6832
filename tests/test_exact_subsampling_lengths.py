"""The per-utterance frame-count hook: every system gets it, it is thread-safe, and
utterances too short for the subsampling are named in a clear error."""

import threading
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "<sos/eos>"]
TINY = [
    "--encoder_conf", "output_size=16",
    "--encoder_conf", "linear_units=32",
    "--encoder_conf", "num_blocks=1",
    "--specaug", "none",
]
# the conventional teacher (conf/train_teacher_conventional.yaml) shrunk the same way
TINY_TEACHER = ["--encoder_conf", "output_size=16", "--encoder_conf", "num_blocks=1"]


@pytest.fixture(scope="module")
def build(task, token_file, tmp_path_factory):
    """build(config, *extra) -> (model, args); ``args.input_size`` is the model's feature dim."""
    out = tmp_path_factory.mktemp("out")

    def _build(config, *extra):
        args = task.get_parser().parse_args(
            ["--config", str(REPO / "conf" / config), "--token_list", str(token_file),
             "--normalize", "utterance_mvn", "--output_dir", str(out), *extra]
        )
        torch.manual_seed(0)
        return task.build_model(args).eval(), args

    return _build


def conv2d_frames(t: int) -> int:
    return ((t - 1) // 2 - 1) // 2


def batch(lengths, feat_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    speech = torch.zeros(len(lengths), int(lengths.max()), feat_dim)
    for i, n in enumerate(lengths.tolist()):
        speech[i, :n] = torch.randn(n, feat_dim, generator=g)
    return speech, lengths


def test_plain_models_get_the_hook(build):
    """The conventional teacher and the no-KD students (model: espnet) count frames like the KD ones."""
    for config, extra in (("train_teacher_conventional.yaml", TINY_TEACHER),
                          ("train_student.yaml", TINY)):
        model, args = build(config, *extra)
        speech, lengths = batch([96, 70, 81], args.input_size)
        with torch.no_grad():
            _, batched = model.encode(speech.clone(), lengths)
        assert batched.tolist() == [conv2d_frames(n) for n in lengths.tolist()], config


def test_too_short_utterance_is_named(build):
    model, args = build("train_student.yaml", *TINY)
    speech, lengths = batch([60, 5, 40], args.input_size)
    text = torch.tensor([[2, 3], [2, -1], [4, -1]])
    text_lengths = torch.tensor([2, 1, 1])
    from espnet_oracle.asr.encoder.exact_subsampling_lengths import TooShortForSubsamplingError

    with pytest.raises(TooShortForSubsamplingError, match=r"utterance spk-short: 5 input frames"):
        model(speech, lengths, text, text_lengths, utt_id=["spk-long", "spk-short", "spk-mid"])
    # without utterance ids (e.g. a direct encode) the batch position is named instead
    with pytest.raises(TooShortForSubsamplingError, match="batch item 1"):
        model.encode(speech.clone(), lengths)


def test_hook_is_thread_safe(build):
    """Two threads (as DataParallel replicas) share the hook: while one measures a new length,
    the other's batch must still get exact lengths (a shared 'busy' flag skipped it)."""
    model, args = build("train_student.yaml", *TINY)
    embed = model.encoder.embed
    original_forward = embed.forward
    other_done = threading.Event()
    probing = threading.Event()
    slow_length = 77

    def forward(x, mask):
        if x.size(0) == 1 and x.size(1) == slow_length:  # thread A's length probe
            probing.set()
            other_done.wait(timeout=20)
        return original_forward(x, mask)

    embed.forward = forward
    results = {}

    def run(name, lengths):
        speech, lens = batch(lengths, args.input_size)
        with torch.no_grad():
            _, out = model.encode(speech, lens)
        results[name] = out.tolist()

    try:
        a = threading.Thread(target=run, args=("a", [slow_length, 50]))
        a.start()
        assert probing.wait(timeout=20)
        run("b", [64, 41, 33])  # thread B runs entirely while A is inside its probe
        other_done.set()
        a.join(timeout=30)
    finally:
        other_done.set()
        del embed.forward
    assert results["b"] == [conv2d_frames(n) for n in (64, 41, 33)]
    assert results["a"] == [conv2d_frames(n) for n in (slow_length, 50)]


@pytest.mark.parametrize("config,extra", [("train_student.yaml", TINY),
                                          ("train_teacher_conventional.yaml", TINY_TEACHER)])
def test_too_short_utterance_is_named_when_dumping_or_decoding(build, config, extra):
    """Stage 6/7/9 encode length-sorted batches through utils.inference: the error must name
    the utterance there too, not a position in a batch the user never sees (also when a
    padding-sensitive encoder, e.g. the conformer teacher, is run one utterance at a time)."""
    import numpy as np

    from espnet_oracle.asr.encoder.exact_subsampling_lengths import TooShortForSubsamplingError
    from espnet_oracle.utils.inference import Utterance, encode_batch

    model, args = build(config, *extra)
    speech, lengths = batch([60, 5, 40], args.input_size)
    utterances = [Utterance(u, speech[i, :n].numpy(), "a", np.array([2]))
                  for i, (u, n) in enumerate(zip(["spk-long", "spk-short", "spk-mid"], lengths.tolist()))]
    with pytest.raises(TooShortForSubsamplingError, match=r"utterance spk-short: 5 input frames"):
        encode_batch(model, utterances)
    # a batch of too-short utterances only (ESPnet's encoder refuses it as a whole): named too
    shorter = Utterance("spk-shorter", speech[1, :4].numpy(), "a", np.array([2]))
    with pytest.raises(TooShortForSubsamplingError, match=r"spk-short\b.* 5 input frames"):
        encode_batch(model, [utterances[1], shorter])
    with pytest.raises(TooShortForSubsamplingError, match=r"utterance spk-shorter: 4 input frames"):
        encode_batch(model, [shorter])
    # the ids do not outlive the call
    from espnet_oracle.asr.encoder.exact_subsampling_lengths import current_utt_ids

    assert current_utt_ids() is None


def test_out_of_memory_in_the_probe_is_raised_not_cached_as_too_short():
    from espnet_oracle.asr.encoder.exact_subsampling_lengths import ExactSubsamplingLengths

    class Embed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fail = None

        def forward(self, x, mask):
            if self.fail is not None:
                raise self.fail
            return x[:, ::2], mask[:, :, ::2]

    hook, embed, x = ExactSubsamplingLengths(), Embed(), torch.zeros(1, 8, 3)
    embed.fail = torch.OutOfMemoryError("CUDA out of memory")
    with pytest.raises(torch.OutOfMemoryError):
        hook.output_length(embed, 8, x)
    embed.fail = None
    assert hook.output_length(embed, 8, x) == 4  # nothing wrong was cached
    embed.fail = RuntimeError("Kernel size can't be greater than actual input size")
    assert hook.output_length(embed, 3, x) == 0  # too short: a property of the length
