"""Shared inference helpers: load a trained model, batch a feature set, run CTC.
Why it exists: the model loading, batching and CTC steps that stages 6, 7, 9 and 10 share, in one place
(for the Oracle Teacher with a transcript fed in).
"""

import argparse
import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import kaldiio
import numpy as np
import torch
import torch.nn.functional as F
from espnet.nets.pytorch_backend.nets_utils import pad_list

from espnet_oracle.utils.datadir import model_file, read_kaldi_map, set_transcripts, speech_scp

# ESPnet's CTC-only models call a deprecated autocast API on every forward: it says nothing about our runs.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"espnet2\..*")

# Features are 10 ms frames (stage 2); the encoders subsample them.
FEATURE_SHIFT_MS = 10.0
# Kaldi fbank (torchaudio.compliance.kaldi.fbank, snip_edges): frame i spans [10 i, 10 i + 25) ms
FBANK_CENTRE_MS = 12.5


def load_model(exp_dir: Path, device: str = "cpu", name: Optional[str] = None
               ) -> Tuple[torch.nn.Module, argparse.Namespace]:
    """Build the model of ``exp_dir`` from its config.yaml and averaged weights (or checkpoint ``name``)."""
    exp_dir = Path(exp_dir)
    config = exp_dir / "config.yaml"
    if not config.exists():
        raise FileNotFoundError(f"{config} not found: {exp_dir} is not a trained ESPnet experiment")
    return load_model_files(config, model_file(exp_dir, name), device)


def load_model_files(config, model_path, device: str = "cpu") -> Tuple[torch.nn.Module, argparse.Namespace]:
    """Build a model from a train config.yaml and a checkpoint, in eval mode, as every tool loads one
    (posterior dumps, decoding, probes, and the KD student's online teacher)."""
    from espnet_oracle.asr.encoder.exact_subsampling_lengths import (
        install_exact_subsampling_lengths,
    )
    from espnet_oracle.tasks.oracle_asr import OracleASRTask

    with quiet_model_build():
        model, args = OracleASRTask.build_model_from_file(Path(config), Path(model_path), device)
    # Batch-independent frame counts and outputs for dumping and decoding.
    install_exact_subsampling_lengths(model)
    model.eval()
    return model, args


@contextlib.contextmanager
def quiet_model_build():
    """ESPnet's build logs a warning for every CTC-only model (no decoder) on the root logger: raise
    the root level for a build only, so that a training run that loads a teacher keeps its log."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def is_oracle(model: torch.nn.Module) -> bool:
    from espnet_oracle.asr.oracle_teacher_model import OracleTeacherModel

    return isinstance(model, OracleTeacherModel)


@dataclass
class Utterance:
    utt_id: str
    feats: np.ndarray  # (T, F)
    text: str
    token_ids: np.ndarray  # (L,)


class FeatureSet:
    """A dump dir (feats.scp + text) with the model's own text preprocessing."""

    def __init__(self, feats_dir: Path, train_args: argparse.Namespace):
        from espnet_oracle.tasks.oracle_asr import OracleASRTask

        self.feats_dir = Path(feats_dir)
        scp = speech_scp(self.feats_dir)
        self.texts = set_transcripts(self.feats_dir)  # also refuses a set without features
        self.utt_ids = list(self.texts)
        # feats.scp: feature frames (10 ms); wav.scp (--feats_type raw): samples, the model's frontend
        # makes frames of hop_length samples
        self.raw = scp.name == "wav.scp"
        self.samples_per_frame, self.input_shift_ms = 1, FEATURE_SHIFT_MS
        self.input_centre_ms = FBANK_CENTRE_MS  # time of the centre of input frame 0
        if self.raw:
            from espnet2.fileio.sound_scp import SoundScpReader
            from humanfriendly import parse_size

            self.feats = SoundScpReader(str(scp), dtype="float32", always_2d=True)
            conf = getattr(train_args, "frontend_conf", None) or {}
            self.samples_per_frame = int(conf.get("hop_length", 128))
            fs = conf.get("fs", 16000)
            fs = parse_size(fs) if isinstance(fs, str) else int(fs)
            self.input_shift_ms = 1000.0 * self.samples_per_frame / fs
            # ESPnet's STFT frontend: center=True puts frame i's centre at sample i * hop
            self.input_centre_ms = 0.0 if conf.get("center", True) else 500.0 * int(conf.get("n_fft", 512)) / fs
        else:
            self.feats = kaldiio.load_scp(str(scp))
        shape = self.feats_dir / "feats_shape"
        self.lengths = {u: int(v.split(",")[0]) for u, v in read_kaldi_map(shape).items()} \
            if shape.exists() else {}
        self.preprocess = OracleASRTask.build_preprocess_fn(train_args, train=False)
        self.token_type = train_args.token_type

    def frame_shift_ms(self, utt: "Utterance", encoder_frames: int) -> float:
        """Encoder frame shift from one utterance's input and output lengths."""
        frames = utt.feats.shape[0] / self.samples_per_frame
        return self.input_shift_ms * max(1, round(frames / max(encoder_frames, 1)))

    def frame_offset_ms(self, model: torch.nn.Module) -> float:
        """Time of encoder frame 0: centre of its receptive field (see ``receptive_field_centre``)."""
        return self.input_centre_ms + receptive_field_centre(model) * self.input_shift_ms

    def token_ids(self, utt_id: str, text: Optional[str] = None) -> np.ndarray:
        text = self.texts[utt_id] if text is None else text
        return self.preprocess(utt_id, {"text": text})["text"]

    def get(self, utt_id: str, text: Optional[str] = None) -> Utterance:
        text = self.texts[utt_id] if text is None else text
        feats = self.feats[utt_id][1][:, 0] if self.raw else self.feats[utt_id]  # raw: (rate, wave), first channel
        return Utterance(utt_id, feats, text, self.token_ids(utt_id, text))

    def batches(self, batch_size: int, utt_ids: Optional[Sequence[str]] = None) -> Iterator[List[str]]:
        """Length-sorted batches of utterance ids (less padding, same results)."""
        ids = list(self.utt_ids if utt_ids is None else utt_ids)
        if self.lengths:
            ids.sort(key=lambda u: (-self.lengths.get(u, 0), u))
        for start in range(0, len(ids), batch_size):
            yield ids[start : start + batch_size]


def receptive_field_centre(model: torch.nn.Module) -> float:
    """Input frame at the centre of encoder frame 0's receptive field; frame t's is that + t * subsampling.

    Sums ``((kernel - 1) * dilation / 2 - padding) * (product of the earlier strides)`` along time over
    the convolutions and poolings of the encoder's input layer (``encoder.embed``, for the Oracle Teacher
    its source encoder's), in module order: ESPnet's conv2d gives 1 + 1 * 2 = 3 (t -> 4 t + 3), conv2d6
    5 (6 t + 5), conv2d8 7 (8 t + 7); a linear input layer 0. The CRNN encoder's 3x3 convolutions are
    padded (centred) and each of its 2x width poolings adds 0.5 * earlier strides: (S - 1) / 2.
    """
    from espnet_oracle.asr.encoder.crnn_encoder import CRNNEncoder

    encoder = getattr(model, "encoder", model)
    encoder = getattr(encoder, "source_encoder", encoder)  # Oracle Teacher: the audio side sets the time
    if isinstance(encoder, CRNNEncoder):
        return (encoder.width_subsampling - 1) / 2
    embed = getattr(encoder, "embed", None)
    centre, jump = 0.0, 1
    for m in embed.modules() if embed is not None else ():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.MaxPool1d, torch.nn.MaxPool2d)):
            k, s, p, d = (v[0] if isinstance(v, tuple) else v for v in (m.kernel_size, m.stride, m.padding,
                                                                           m.dilation))
            centre += ((k - 1) * d / 2 - p) * jump
            jump *= s
    return centre


def pad(arrays: Sequence[np.ndarray], value: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, T_max, ...) tensor of the first array's dtype, padded with ``value``, and (B,) lengths."""
    lengths = torch.tensor([a.shape[0] for a in arrays], dtype=torch.long)
    return pad_list([torch.tensor(a) for a in arrays], value), lengths


def padding_sensitive(model: torch.nn.Module) -> bool:
    """True when an utterance's encoder output depends on the padding after it in a batch.

    ESPnet's conformer convolution module and E-Branchformer's cgMLP run depthwise convolutions
    over time without masking the padded frames; transformer encoders mask padding in attention
    and are exact, and so are conformer layers hooked by
    :func:`~espnet_oracle.asr.encoder.conformer_padding_mask.install_conformer_padding_mask`
    (every model built by the task). Cached on the model.
    """
    cached = getattr(model, "_espnet_oracle_padding_sensitive", None)
    if cached is None:
        from espnet.nets.pytorch_backend.conformer.convolution import ConvolutionModule
        from espnet2.asr.layers.cgmlp import ConvolutionalSpatialGatingUnit

        cached = any(isinstance(m, ConvolutionalSpatialGatingUnit)
                     or (isinstance(m, ConvolutionModule) and not getattr(m, "_padding_masked", False))
                     for m in model.modules())
        object.__setattr__(model, "_espnet_oracle_padding_sensitive", cached)
    return cached


def padded_batch(model: torch.nn.Module, utterances: Sequence[Utterance], zero_source: bool = False):
    """(speech, speech_lengths, text, text_lengths, utt_ids) for :func:`encode_padded`; text (each
    utterance's ``token_ids``, padded with -1) only for the Oracle Teacher. ``zero_source``: the
    audio carries nothing."""
    speech, speech_lengths = pad([u.feats.astype(np.float32) for u in utterances], 0.0)
    if zero_source:  # features at the training mean (zero after MVN); raw input: silence
        speech = torch.zeros_like(speech) if speech.dim() == 2 else training_mean(model).expand_as(speech).clone()
    text = text_lengths = None
    if is_oracle(model):
        text, text_lengths = pad([np.asarray(u.token_ids, dtype=np.int64) for u in utterances], -1)
    return speech, speech_lengths, text, text_lengths, [u.utt_id for u in utterances]


@torch.no_grad()
def encode_batch(model: torch.nn.Module, utterances: Sequence[Utterance], zero_source: bool = False,
                 return_attention: bool = False):
    """Encoder frames (what the CTC layer reads) of a batch of utterances: (B, T', D) frames, (B,)
    lengths, attention (B, H, T', L) or None; see :func:`padded_batch` and :func:`encode_padded`."""
    return encode_padded(model, *padded_batch(model, utterances, zero_source), return_attention=return_attention)


@torch.no_grad()
def encode_padded(model: torch.nn.Module, speech: torch.Tensor, speech_lengths: torch.Tensor,
                  text: Optional[torch.Tensor] = None, text_lengths: Optional[torch.Tensor] = None,
                  utt_ids: Optional[Sequence[str]] = None, return_attention: bool = False):
    """Encoder frames of a padded batch: the one teacher forward of posterior dumps, decoding,
    probes and the KD student's online teacher.

    Args:
        speech: (B, T, F) features or (B, S) waveforms, zero-padded; speech_lengths: (B,).
            The model applies its own frontend and normalization (in eval mode: no
            SpecAugment). ESPnet's normalization works in place: ``speech`` may be changed.
        text: (B, L) token ids padded with -1, text_lengths: (B,): the transcript the
            Oracle Teacher is fed (required for it; other models ignore it).
        utt_ids: the B utterance ids, named in errors (e.g. too short for the subsampling).

    Returns (B, T', D) frames, (B,) lengths, and, if asked, the last fusion block's
    cross-attention (B, H, T', L) of the Oracle Teacher (else None). The batch is moved
    to the model's device. A padding-sensitive encoder (:func:`padding_sensitive`, e.g. a
    conformer) is run one utterance at a time, so that no output (posterior dumps, decodes,
    probes) depends on which other utterances share its batch.
    """
    from espnet_oracle.asr.encoder.exact_subsampling_lengths import utt_id_context

    oracle = is_oracle(model)
    if oracle and (text is None or text_lengths is None):
        from espnet_oracle.asr.encoder.oracle_teacher_encoder import MISSING_TARGET

        raise ValueError(MISSING_TARGET)
    if speech.size(0) > 1 and padding_sensitive(model):
        parts = []
        for i in range(speech.size(0)):
            one_text = one_text_lengths = None
            if oracle:
                one_text, one_text_lengths = text[i : i + 1, : int(text_lengths[i])], text_lengths[i : i + 1]
            parts.append(encode_padded(model, speech[i : i + 1, : int(speech_lengths[i])], speech_lengths[i : i + 1],
                                       one_text, one_text_lengths,
                                       [utt_ids[i]] if utt_ids is not None else None, return_attention))
        frames = pad_list([out[0] for out, _, _ in parts], 0.0)
        attention = None
        if all(a is not None for _, _, a in parts):  # (1, H, T'_i, L_i) -> (B, H, T', L), zero-padded
            frames_max, tokens_max = frames.shape[1], max(a.shape[-1] for _, _, a in parts)
            attention = torch.cat([F.pad(a, (0, tokens_max - a.shape[3], 0, frames_max - a.shape[2]))
                                   for _, _, a in parts])
        return frames, torch.cat([p[1] for p in parts]), attention

    device = next(model.parameters()).device  # a model on a GPU gets its batch there
    speech, speech_lengths = speech.to(device), speech_lengths.to(device)
    attention = None
    # an utterance too short for the subsampling is named in the error, not its batch position
    with utt_id_context(list(utt_ids) if utt_ids is not None else None):
        if oracle:
            text, text_lengths = text.to(device), text_lengths.to(device)
            output = model.encode_with_target(speech, speech_lengths, text, text_lengths)
            encoder_out, lengths = output.fused, output.lengths
            if return_attention and output.attention:
                attention = output.attention[-1]
        else:
            encoder_out, lengths = model.encode(speech, speech_lengths)
            if isinstance(encoder_out, tuple):
                encoder_out = encoder_out[0]
    return encoder_out, lengths, attention


@torch.no_grad()
def ctc_log_probs(model: torch.nn.Module, utterances: Sequence[Utterance], zero_source: bool = False,
                  return_attention: bool = False):
    """(B, T', V) CTC log-probs, (B,) lengths, attention of a batch of utterances (posterior
    dumps, probes, plots; see ``encode_batch``)."""
    return ctc_log_probs_padded(model, *padded_batch(model, utterances, zero_source),
                                return_attention=return_attention)


@torch.no_grad()
def ctc_log_probs_padded(model: torch.nn.Module, *batch, return_attention: bool = False):
    """(B, T', V) CTC log-probs, (B,) lengths, attention of a padded batch: the teacher forward
    of the posterior dump (through :func:`ctc_log_probs`) and of the KD student's online
    teacher. ``batch``: speech, speech_lengths[, text, text_lengths[, utt_ids]], the arguments
    of :func:`encode_padded`."""
    encoder_out, lengths, attention = encode_padded(model, *batch, return_attention=return_attention)
    return model.ctc.log_softmax(encoder_out), lengths, attention


def training_mean(model: torch.nn.Module) -> torch.Tensor:
    """(F,) the global-MVN mean: features that normalize to exactly zero."""
    normalize = getattr(model, "normalize", None)
    if normalize is None or not hasattr(normalize, "mean"):
        raise ValueError("zero_source needs a model with global_mvn normalization")
    return normalize.mean.detach().float().cpu()


def greedy_path(log_probs: torch.Tensor, blank_id: int) -> Tuple[List[int], List[int]]:
    """Collapse the best path of one utterance (T', V): emitted token ids, the first frame of each's run."""
    ids, runs = torch.unique_consecutive(log_probs.argmax(dim=-1), return_counts=True)
    keep = ids != blank_id
    return ids[keep].tolist(), (torch.cumsum(runs, 0) - runs)[keep].tolist()


def tokens_to_text(tokens: Sequence[str], token_type: str) -> str:
    """Token strings -> words, the way ESPnet's tokenizers join them."""
    if token_type == "char":
        return "".join(" " if t == "<space>" else t for t in tokens).strip()
    if token_type == "word":
        return " ".join(tokens)
    if token_type == "bpe":
        return "".join(tokens).replace("\u2581", " ").strip()
    raise ValueError(f"unknown token_type {token_type!r}")
