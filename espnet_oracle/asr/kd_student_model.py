"""CTC student trained with frame-level knowledge distillation from teacher posteriors."""

from typing import Dict, List, Optional, Tuple

import torch
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.torch_utils.device_funcs import force_gatherable
from typeguard import typechecked

from espnet_oracle.asr.encoder.exact_subsampling_lengths import (
    install_exact_subsampling_lengths,
)
from espnet_oracle.asr.kd_loss import frame_kd_loss

KD_FRAME_CHOICES = ("all", "teacher_nonblank")


class FrameMismatchError(ValueError):
    """Stored teacher posteriors do not line up with the student's frames."""


class KDStudentModel(ESPnetASRModel):
    """ESPnet CTC model with loss ``(1 - a) * CTC + a * tau^2 * KL(p_t^tau || p_s^tau)``.

    The KL term is summed over an utterance's valid frames and averaged over the
    batch, the same normalization as ESPnet's CTC loss (``reduce=True``), so
    ``kd_weight`` trades terms of equal scale. The student has no parameters
    beyond a plain ESPnet CTC model: at inference it *is* ``model: espnet``
    (``espnet_oracle.bin.export_student`` writes that config).

    Args:
        kd_weight: alpha in [0, 1].
        kd_temperature: tau > 0.
        kd_frames: ``all`` valid frames, or ``teacher_nonblank``: only frames whose
            teacher argmax is not blank.
    """

    @typechecked
    def __init__(
        self,
        *args,
        kd_weight: float = 0.5,
        kd_temperature: float = 1.0,
        kd_frames: str = "all",
        **kwargs,
    ):
        kwargs.setdefault("ctc_weight", 1.0)
        if kwargs["ctc_weight"] != 1.0:
            raise ValueError("KDStudentModel distils CTC posteriors: ctc_weight must be 1.0")
        super().__init__(*args, **kwargs)
        if not 0.0 <= kd_weight <= 1.0:
            raise ValueError(f"kd_weight must be in [0, 1]: {kd_weight}")
        if kd_temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0: {kd_temperature}")
        if kd_frames not in KD_FRAME_CHOICES:
            raise ValueError(f"kd_frames must be one of {KD_FRAME_CHOICES}: {kd_frames!r}")
        if self.decoder is not None:
            raise ValueError("model: kd_student is CTC-only; set decoder: null")
        if self.specaug is not None and getattr(self.specaug, "time_warp", None) is not None:
            raise ValueError(
                "SpecAug time warping moves frames in time, so the stored teacher "
                "posteriors would no longer match the student's frames: set "
                "specaug_conf.apply_time_warp: false (time/frequency masking is fine)"
            )
        # The stored posteriors have each utterance's exact frame count; without
        # this, ESPnet gives utterances shorter than the batch's longest 1-2 extra
        # frames made from padding.
        install_exact_subsampling_lengths(self.encoder)
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        self.kd_frames = kd_frames

    def check_frames(
        self,
        encoder_out_lens: torch.Tensor,
        teacher_post_lengths: torch.Tensor,
        teacher_post: torch.Tensor,
        utt_id: Optional[List[str]],
    ) -> None:
        """Refuse posteriors whose frame counts or vocabulary differ from the student's."""
        if teacher_post.size(-1) != self.vocab_size:
            raise FrameMismatchError(
                f"teacher posteriors have {teacher_post.size(-1)} classes, the student "
                f"{self.vocab_size}: teacher and student must share one token list"
            )
        mismatch = (encoder_out_lens != teacher_post_lengths).nonzero().flatten().tolist()
        if mismatch:
            i = mismatch[0]
            name = utt_id[i] if utt_id is not None else f"batch item {i}"
            raise FrameMismatchError(
                f"utterance {name}: teacher posteriors have "
                f"{int(teacher_post_lengths[i])} frames, the student's encoder output "
                f"{int(encoder_out_lens[i])} ({len(mismatch)} mismatched in this batch). "
                "Teacher and student must share the feature front-end and subsampling; "
                "posteriors are never truncated or padded to fit."
            )

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        teacher_post: Optional[torch.Tensor] = None,
        teacher_post_lengths: Optional[torch.Tensor] = None,
        utt_id: Optional[List[str]] = None,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """CTC + frame KD.

        Args:
            speech: (B, T, F); speech_lengths: (B,); text: (B, L); text_lengths: (B,).
            teacher_post: (B, T', V) teacher log-probs; teacher_post_lengths: (B,).
            utt_id: utterance ids (ESPnet's trainer passes them), used in errors.
        """
        if teacher_post is None or teacher_post_lengths is None:
            raise ValueError(
                "model: kd_student needs teacher posteriors: add "
                "--train_data_path_and_name_and_type <post.scp>,teacher_post,teacher_posterior "
                "(and the same for --valid_...)"
            )
        text = text[:, : text_lengths.max()]
        batch_size = speech.shape[0]
        encoder_out, encoder_out_lens = self.encode(speech, speech_lengths)
        if isinstance(encoder_out, tuple):
            encoder_out = encoder_out[0]
        self.check_frames(encoder_out_lens, teacher_post_lengths, teacher_post, utt_id)
        teacher_post = teacher_post[:, : encoder_out.size(1)]

        loss_ctc, cer_ctc = self._calc_ctc_loss(encoder_out, encoder_out_lens, text, text_lengths)
        frame_mask = None
        if self.kd_frames == "teacher_nonblank":
            frame_mask = teacher_post.argmax(dim=-1) != self.blank_id
        student_logits = self.ctc.ctc_lo(encoder_out)
        kd_per_utt = frame_kd_loss(
            student_logits, teacher_post, encoder_out_lens, self.kd_temperature, frame_mask
        )
        loss_kd = kd_per_utt.sum() / batch_size * self.kd_temperature**2
        loss = (1.0 - self.kd_weight) * loss_ctc + self.kd_weight * loss_kd

        stats = dict(
            loss=loss.detach(),
            loss_ctc=loss_ctc.detach(),
            loss_kd=loss_kd.detach(),
            cer_ctc=cer_ctc,
        )
        loss, stats, weight = force_gatherable((loss, stats, batch_size), loss.device)
        return loss, stats, weight
