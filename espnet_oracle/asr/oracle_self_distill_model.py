"""One-stage oracle self-distillation: an oracle path teaches the source-only path in one run."""

from typing import Dict, Optional, Tuple

import torch
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.torch_utils.device_funcs import force_gatherable
from typeguard import typechecked

from espnet_oracle.asr.encoder.oracle_teacher_encoder import (
    OracleEncoderOutput,
    OracleTeacherEncoder,
)
from espnet_oracle.asr.kd_loss import frame_kd_loss
from espnet_oracle.asr.kd_student_model import KD_FRAME_CHOICES, SPIKE_FRAME_CHOICES
from espnet_oracle.asr.oracle_teacher_model import encoder_input


class OracleSelfDistillModel(ESPnetASRModel):
    """Source-only CTC path and oracle (source + target) CTC path, trained jointly.

    In the spirit of EM-Network (Yoon et al., 2023), the one-stage follow-up of
    the Oracle Teacher: instead of training an Oracle Teacher, dumping its
    posteriors and training a student on them, one model has

    - a source-only path: ``encoder.source_encoder`` (any ESPnet encoder) ->
      CTC; this is the model used at inference;
    - an oracle path: the same source frames, fused with the target by the
      Oracle Teacher's cross-attention blocks -> the same CTC layer,

    and learns

        loss = w_src * CTC(source path) + w_oracle * CTC(oracle path)
             + w_kd * tau^2 * sum_t KL(sg(p_oracle^tau(t)) || p_source^tau(t))

    with ``sg`` stop-gradient (the oracle path is the teacher: the KL moves only
    the source path) and the KL summed over each utterance's frames chosen by
    ``kd_frames`` and averaged over the batch (as KDStudentModel and ESPnet's
    CTC loss normalise).

    The encoder is an ``OracleTeacherEncoder`` (``encoder: oracle_teacher``,
    configured exactly as for the Oracle Teacher); one ``encode_with_target``
    call runs the source encoder once and returns both its output (``source``)
    and the fused frames (``fused``), so both paths share the source encoder's
    forward pass, its dropout and SpecAug masks. The two paths share the CTC
    layer, as the Oracle Teacher's ``aux_source_ctc_weight`` does. At inference
    only the source path exists (``encode`` ignores any target), so
    ``espnet_oracle.bin.export_self_distill`` turns the trained model into a
    plain ``model: espnet`` with the source encoder as its encoder: same
    parameter names after renaming ``encoder.source_encoder.*`` to ``encoder.*``.

    Not an ``OracleTeacherModel`` subclass on purpose: the tools treat those as
    models that must be fed the transcript (``utils.inference.is_oracle``); this
    one is decoded like any student.

    Args:
        source_ctc_weight: w_src >= 0.
        oracle_ctc_weight: w_oracle >= 0.
        kd_weight: w_kd >= 0 (w_src + w_kd must be > 0: the source path must learn).
        kd_temperature: tau > 0.
        kd_frames: ``all``, ``teacher_nonblank``, ``teacher_nonblank_renorm`` or
            ``teacher_nonblank_words`` (as in KDStudentModel, with the oracle path as the teacher).
    """

    @typechecked
    def __init__(
        self,
        *args,
        source_ctc_weight: float = 1.0,
        oracle_ctc_weight: float = 1.0,
        kd_weight: float = 1.0,
        kd_temperature: float = 1.0,
        kd_frames: str = "all",
        **kwargs,
    ):
        kwargs.setdefault("ctc_weight", 1.0)
        if kwargs["ctc_weight"] != 1.0:
            raise ValueError("OracleSelfDistillModel is pure CTC: ctc_weight must be 1.0")
        super().__init__(*args, **kwargs)
        if not isinstance(self.encoder, OracleTeacherEncoder):
            raise TypeError(
                "model: oracle_self_distill needs encoder: oracle_teacher, "
                f"got {type(self.encoder).__name__}"
            )
        if self.decoder is not None:
            raise ValueError("model: oracle_self_distill is CTC-only; set decoder: null")
        for name, value in (("source_ctc_weight", source_ctc_weight),
                            ("oracle_ctc_weight", oracle_ctc_weight), ("kd_weight", kd_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0: {value}")
        if source_ctc_weight + kd_weight <= 0:
            raise ValueError("source_ctc_weight + kd_weight must be > 0: the source path is the model")
        if kd_temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0: {kd_temperature}")
        if kd_frames not in KD_FRAME_CHOICES:
            raise ValueError(f"kd_frames must be one of {KD_FRAME_CHOICES}: {kd_frames!r}")
        self.source_ctc_weight = source_ctc_weight
        self.oracle_ctc_weight = oracle_ctc_weight
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        self.kd_frames = kd_frames

    def encode_with_target(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
    ) -> OracleEncoderOutput:
        """Both paths from one source-encoder pass.

        Args:
            speech: (B, T, F); speech_lengths: (B,); text: (B, L) ids, padding -1;
            text_lengths: (B,).

        Returns:
            ``OracleEncoderOutput``: ``source`` (B, T', D) source-only frames,
            ``fused`` (B, T', D) oracle frames, ``lengths`` (B,).
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
        """The source-only path (what inference uses; a target, if given, is ignored).

        Returns (B, T', D) source-encoder frames and (B,) lengths.
        """
        feats, feats_lengths = encoder_input(self, speech, speech_lengths)
        out, lengths, _ = self.encoder.source_encoder(feats, feats_lengths)
        if isinstance(out, tuple):  # intermediate CTC outputs are not used here
            out = out[0]
        return out, lengths

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """Joint loss of both paths (see the class docstring).

        Args:
            speech: (B, T, F); speech_lengths: (B,); text: (B, L); text_lengths: (B,).

        Stats: ``loss_ctc`` / ``cer_ctc`` of the source path (the model used at
        inference), ``loss_oracle_ctc`` / ``cer_oracle_ctc`` of the oracle path,
        ``loss_kd`` (tau^2 included).
        """
        text = text[:, : text_lengths.max()]
        batch_size = speech.shape[0]
        output = self.encode_with_target(speech, speech_lengths, text, text_lengths)
        loss_source, cer_source = self._calc_ctc_loss(
            output.source, output.lengths, text, text_lengths
        )
        loss_oracle, cer_oracle = self._calc_ctc_loss(
            output.fused, output.lengths, text, text_lengths
        )
        teacher = self.ctc.log_softmax(output.fused).detach()  # stop-gradient
        frame_mask = None
        if self.kd_frames in SPIKE_FRAME_CHOICES:
            frame_mask = teacher.argmax(dim=-1) != self.blank_id
        kd_per_utt = frame_kd_loss(
            self.ctc.ctc_lo(output.source), teacher, output.lengths, self.kd_temperature,
            frame_mask, renormalize=self.kd_frames == "teacher_nonblank_renorm",
            exclude_token=self.blank_id if self.kd_frames == "teacher_nonblank_words" else None,
        )
        loss_kd = kd_per_utt.sum() / batch_size * self.kd_temperature**2
        loss = (
            self.source_ctc_weight * loss_source
            + self.oracle_ctc_weight * loss_oracle
            + self.kd_weight * loss_kd
        )
        stats = dict(
            loss=loss.detach(),
            loss_ctc=loss_source.detach(),
            cer_ctc=cer_source,
            loss_oracle_ctc=loss_oracle.detach(),
            cer_oracle_ctc=cer_oracle,
            loss_kd=loss_kd.detach(),
        )
        loss, stats, weight = force_gatherable((loss, stats, batch_size), loss.device)
        return loss, stats, weight
