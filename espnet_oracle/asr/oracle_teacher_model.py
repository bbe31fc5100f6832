"""Oracle Teacher: a pure-CTC ESPnet model whose encoder also reads the transcript."""

from typing import Dict, Optional, Tuple

import torch
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.torch_utils.device_funcs import force_gatherable
from typeguard import typechecked

from espnet_oracle.asr.encoder.oracle_teacher_encoder import (
    MISSING_TARGET,
    OracleEncoderOutput,
    OracleTeacherEncoder,
)


def encoder_input(
    model: ESPnetASRModel, speech: torch.Tensor, speech_lengths: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """What an ESPnet model's encoder reads: features -> (specaug in training)
    -> normalize -> preencoder, as ``ESPnetASRModel.encode`` does before its encoder.

    Args:
        speech: (B, T, F) or (B, S) waveform; speech_lengths: (B,).

    Returns:
        (B, T, D) features and (B,) lengths.
    """
    feats, feats_lengths = model._extract_feats(speech, speech_lengths)
    if model.specaug is not None and model.training:
        feats, feats_lengths = model.specaug(feats, feats_lengths)
    if model.normalize is not None:
        feats, feats_lengths = model.normalize(feats, feats_lengths)
    if model.preencoder is not None:
        feats, feats_lengths = model.preencoder(feats, feats_lengths)
    return feats, feats_lengths


class OracleTeacherModel(ESPnetASRModel):
    """CTC model ``P(frame labels | x, y)`` for knowledge distillation.

    Same loss and stats conventions as ESPnet's CTC model (``loss``, ``loss_ctc``,
    ``cer_ctc`` on dev). ``aux_source_ctc_weight`` > 0 adds a CTC loss on the
    source encoder's output (before the target is fused), through the same CTC
    layer: the source path alone must then explain the audio, which keeps the
    fused output tied to acoustic evidence (anti-copy strategy "aux CTC").
    """

    @typechecked
    def __init__(self, *args, aux_source_ctc_weight: float = 0.0, **kwargs):
        kwargs.setdefault("ctc_weight", 1.0)
        if kwargs["ctc_weight"] != 1.0:
            raise ValueError("OracleTeacherModel is pure CTC: ctc_weight must be 1.0")
        super().__init__(*args, **kwargs)
        if not isinstance(self.encoder, OracleTeacherEncoder):
            raise TypeError(
                "model: oracle_teacher needs encoder: oracle_teacher, "
                f"got {type(self.encoder).__name__}"
            )
        if self.decoder is not None:
            raise ValueError("model: oracle_teacher is CTC-only; set decoder: null")
        if not 0.0 <= aux_source_ctc_weight < 1.0:
            raise ValueError(f"aux_source_ctc_weight must be in [0, 1): {aux_source_ctc_weight}")
        self.aux_source_ctc_weight = aux_source_ctc_weight

    def encode_with_target(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
    ) -> OracleEncoderOutput:
        """Features -> (specaug) -> normalize -> Oracle Teacher encoder.

        Args:
            speech: (B, T, F) or (B, S) waveform; speech_lengths: (B,).
            text: (B, L) target ids, padding -1; text_lengths: (B,).
        """
        feats, feats_lengths = encoder_input(self, speech, speech_lengths)
        return self.encoder.encode_with_target(feats, feats_lengths, text, text_lengths)

    def encode(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: Optional[torch.Tensor] = None,
        text_lengths: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (B, T', D) fused frames and (B,) lengths; the target is required."""
        if text is None or text_lengths is None:
            # stock ESPnet decoders call encode(speech, lengths)
            raise ValueError(MISSING_TARGET)
        output = self.encode_with_target(speech, speech_lengths, text, text_lengths)
        return output.fused, output.lengths

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """CTC loss of the fused frames (+ optional source-only CTC).

        Args:
            speech: (B, T, F); speech_lengths: (B,); text: (B, L); text_lengths: (B,).
        """
        text = text[:, : text_lengths.max()]
        batch_size = speech.shape[0]
        output = self.encode_with_target(speech, speech_lengths, text, text_lengths)
        loss_ctc, cer_ctc = self._calc_ctc_loss(
            output.fused, output.lengths, text, text_lengths
        )
        stats = dict(loss_ctc=loss_ctc.detach(), cer_ctc=cer_ctc)
        loss = loss_ctc
        if self.aux_source_ctc_weight > 0:
            loss_source, cer_source = self._calc_ctc_loss(
                output.source, output.lengths, text, text_lengths
            )
            loss = (
                1 - self.aux_source_ctc_weight
            ) * loss_ctc + self.aux_source_ctc_weight * loss_source
            stats["loss_source_ctc"] = loss_source.detach()
            stats["cer_source_ctc"] = cer_source
        stats["loss"] = loss.detach()
        loss, stats, weight = force_gatherable((loss, stats, batch_size), loss.device)
        return loss, stats, weight
