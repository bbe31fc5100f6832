"""Frame-level knowledge-distillation loss between CTC posteriors."""

from typing import Optional

import torch
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask


def frame_kd_loss(
    student_logits: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    lengths: torch.Tensor,
    temperature: float = 1.0,
    frame_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``KL(p_teacher^tau || p_student^tau)`` summed over each utterance's frames.

    Summing over frames (not averaging) puts the term on the scale of ESPnet's
    CTC loss, which is a per-utterance sum of frame log-probabilities; the caller
    averages over the batch as ESPnet's CTC does.

    Args:
        student_logits: (B, T', V) unnormalized student scores.
        teacher_log_probs: (B, T', V) teacher log-probabilities (temperature 1).
        lengths: (B,) valid frames per utterance; frames beyond are padding.
        temperature: tau; both distributions are softened as ``softmax(z / tau)``.
        frame_mask: optional (B, T') bool, True for frames that count.

    Returns:
        (B,) per-utterance KL sums (not multiplied by tau^2).
    """
    if student_logits.shape != teacher_log_probs.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher "
            f"{tuple(teacher_log_probs.shape)} posteriors differ in shape"
        )
    student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = torch.log_softmax(teacher_log_probs.float() / temperature, dim=-1)
    kl = (teacher.exp() * (teacher - student)).sum(dim=-1)  # (B, T')
    valid = ~make_pad_mask(lengths, maxlen=kl.size(1)).to(kl.device)
    if frame_mask is not None:
        valid = valid & frame_mask
    return kl.masked_fill(~valid, 0.0).sum(dim=1)
