"""Distillation losses between CTC posteriors: frame-level KD, Guided CTC, sequence-level KD.

All three return per-utterance sums (B,); the caller averages over the batch, as
ESPnet's CTC loss does (``reduce=True``: summed over the utterance, averaged over
the batch), so the terms are on one scale. Frame-level KD also takes the teacher as
stored top-k frames (``frame_kd_loss_topk``), never expanded to (B, T', V).
"""

import math
from typing import List, Optional, Sequence, Tuple

import torch
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask


def valid_frames(lengths: torch.Tensor, maxlen: int) -> torch.Tensor:
    """(B, maxlen) bool, True on each utterance's first ``lengths[b]`` frames."""
    return ~make_pad_mask(lengths, maxlen=maxlen).to(lengths.device)


def shift_frames(frames: torch.Tensor, lengths: torch.Tensor, by: int) -> torch.Tensor:
    """(B, T', ...) frames moved ``by`` frames later (earlier if negative) inside each utterance.

    Output frame t of utterance b is input frame ``clamp(t - by, 0, lengths[b] - 1)``: the edge
    frame is repeated where the move opens a gap, frames moved past the end are dropped and each
    utterance keeps its frame count. Used to move a teacher's spikes in time (KD students learn
    the teacher's timing; README Results, "Moving the teachers' posteriors in time").
    """
    if by == 0:
        return frames
    batch, maxlen = frames.shape[:2]
    time = torch.arange(maxlen, device=frames.device)[None]
    last = (lengths.to(frames.device).clamp(min=1, max=maxlen) - 1)[:, None]
    index = torch.minimum((time - by).clamp(min=0), last)  # (B, T')
    index = index.view(batch, maxlen, *[1] * (frames.dim() - 2)).expand_as(frames)
    return frames.gather(1, index)


def frame_kd_loss(
    student_logits: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    lengths: torch.Tensor,
    temperature: float = 1.0,
    frame_mask: Optional[torch.Tensor] = None,
    renormalize: bool = False,
    exclude_token: Optional[int] = None,
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
        renormalize: with ``frame_mask``, scale utterance b's sum by
            ``n_b / m_b`` (n_b valid frames, m_b valid frames selected by the
            mask), so the utterance keeps the KD weight of all its n_b frames,
            spread over the selected ones; 0 for an utterance with m_b = 0.
        exclude_token: a token id (the blank) to leave out: the KL is then between
            both distributions restricted to the other tokens and renormalised, so it
            says which token, not whether to emit one.

    Returns:
        (B,) per-utterance KL sums (not multiplied by tau^2).
    """
    if student_logits.shape != teacher_log_probs.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher "
            f"{tuple(teacher_log_probs.shape)} posteriors differ in shape"
        )
    if exclude_token is not None:
        keep = torch.arange(student_logits.size(-1), device=student_logits.device) != exclude_token
        student_logits, teacher_log_probs = student_logits[..., keep], teacher_log_probs[..., keep]
    student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = torch.log_softmax(teacher_log_probs.float() / temperature, dim=-1)
    kl = (teacher.exp() * (teacher - student)).sum(dim=-1)  # (B, T')
    return sum_frames(kl, valid_frames(lengths, kl.size(1)).to(kl.device), frame_mask, renormalize)


def sum_frames(
    kl: torch.Tensor, valid: torch.Tensor, frame_mask: Optional[torch.Tensor], renormalize: bool
) -> torch.Tensor:
    """(B, T') frame KL -> (B,) sums over the valid frames ``frame_mask`` selects (see frame_kd_loss)."""
    selected = valid if frame_mask is None else valid & frame_mask
    per_utt = kl.masked_fill(~selected, 0.0).sum(dim=1)
    if renormalize and frame_mask is not None:
        n = valid.sum(dim=1).to(per_utt.dtype)
        m = selected.sum(dim=1).to(per_utt.dtype)
        per_utt = torch.where(m > 0, per_utt * n / m.clamp(min=1), torch.zeros_like(per_utt))
    return per_utt


# as utils.posteriors.LOG_LEFTOVER_FLOOR (that module is numpy-only; tests pin the two equal)
LOG_LEFTOVER_FLOOR = -1.0e4


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate near 0 and for very negative x."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def unpack_topk_batch(packed: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(B, T', 2k + 2) batch of the ``teacher_topk_posterior`` data type -> its parts.

    Returns (B, T', k) long token ids (most likely first), (B, T', k) float
    log-probs, (B, T') float leftover log-mass, and the vocabulary size.
    """
    if packed.dtype not in (torch.float32, torch.float64):  # float16 would round ids > 2048
        raise ValueError(f"top-k teacher posteriors must be float32 (--train_dtype), got {packed.dtype}")
    width = packed.size(-1)
    if width < 4 or width % 2:
        raise ValueError(f"top-k teacher posteriors of width {width} are not (frames, 2k + 2)")
    k = (width - 2) // 2
    vocab_size = int(packed[..., -1].max())
    return packed[..., :k].long(), packed[..., k : 2 * k].float(), packed[..., 2 * k].float(), vocab_size


def _topk_log_probs(
    teacher_values: torch.Tensor, teacher_leftover: torch.Tensor, valid: torch.Tensor, vocab_size: int
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The teacher's (B, T', k) log-probs at its top-k ids and (B, T', 1) log-prob of each other
    token (None when k = V), as ``utils.posteriors.topk_to_dense`` expands stored frames: the top k
    renormalised to 1 - leftover, the leftover spread evenly over the other V - k tokens. Padding
    frames (``valid`` False) get a harmless distribution, so no inf/NaN reaches a gradient."""
    others = vocab_size - teacher_values.size(-1)
    values = teacher_values.float().masked_fill(~valid.unsqueeze(-1), 0.0)
    top = values - torch.logsumexp(values, dim=-1, keepdim=True)
    if others == 0:
        return top, None
    left = teacher_leftover.float().masked_fill(~valid, LOG_LEFTOVER_FLOOR).clamp(min=LOG_LEFTOVER_FLOOR)
    left = left.unsqueeze(-1)  # (B, T', 1)
    return top + _log1mexp(left), left - math.log(others)


def topk_to_dense_batch(
    teacher_ids: torch.Tensor, teacher_values: torch.Tensor, teacher_leftover: torch.Tensor,
    lengths: torch.Tensor, vocab_size: int,
) -> torch.Tensor:
    """(B, T', V) teacher log-probs of stored top-k frames, as ``utils.posteriors.topk_to_dense``
    expands them (for the losses that need all V)."""
    valid = valid_frames(lengths, teacher_ids.size(1)).to(teacher_values.device)
    top, rest = _topk_log_probs(teacher_values, teacher_leftover, valid, vocab_size)
    dense = torch.zeros(*teacher_ids.shape[:2], vocab_size, device=top.device)
    if rest is not None:
        dense = dense + rest
    return dense.scatter(-1, teacher_ids, top)


def frame_kd_loss_topk(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_values: torch.Tensor,
    teacher_leftover: torch.Tensor,
    lengths: torch.Tensor,
    temperature: float = 1.0,
    frame_mask: Optional[torch.Tensor] = None,
    renormalize: bool = False,
) -> torch.Tensor:
    """``frame_kd_loss`` to stored top-k teacher frames, in closed form.

    The teacher distribution is the one ``utils.posteriors.topk_to_dense`` expands
    (top-k renormalised to ``1 - leftover``, the leftover spread evenly over the
    other V - k tokens); the KL to it needs the student's log-probs only at the k
    ids and their sum over the vocabulary, so the (B, T', V) teacher tensor is
    never built: the data loader moves 8k + 8 bytes a frame (float32) instead of 4V.

    Args:
        student_logits: (B, T', V) unnormalized student scores.
        teacher_ids: (B, T', k) token ids; teacher_values: (B, T', k) their log-probs;
        teacher_leftover: (B, T') log of the mass outside the top k.
        lengths, temperature, frame_mask, renormalize: as ``frame_kd_loss``.

    Returns:
        (B,) per-utterance KL sums (not multiplied by tau^2).
    """
    batch, frames, vocab_size = student_logits.shape
    if teacher_ids.shape[:2] != (batch, frames) or teacher_values.shape != teacher_ids.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and top-k teacher {tuple(teacher_ids.shape)} "
            "posteriors differ in shape"
        )
    k = teacher_ids.size(-1)
    others = vocab_size - k
    valid = valid_frames(lengths, frames).to(student_logits.device)
    top, rest = _topk_log_probs(teacher_values, teacher_leftover, valid, vocab_size)
    top = top / temperature
    if others > 0:
        rest = rest / temperature
        total = torch.logsumexp(torch.cat([top, rest + math.log(others)], dim=-1), dim=-1, keepdim=True)
    else:
        total = torch.logsumexp(top, dim=-1, keepdim=True)
    top = top - total  # the softened teacher's log-probs
    student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    student_top = student.gather(-1, teacher_ids)
    kl = (top.exp() * (top - student_top)).sum(dim=-1)  # (B, T')
    if others > 0:
        rest = (rest - total).squeeze(-1)  # each other token's softened log-prob
        student_rest = student.sum(dim=-1) - student_top.sum(dim=-1)
        kl = kl + rest.exp() * (others * rest - student_rest)
    return sum_frames(kl, valid, frame_mask, renormalize)


def best_spikes(
    best: torch.Tensor, lengths: torch.Tensor, blank_id: int = 0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The teacher's spikes: valid frames whose most likely token is not blank.

    Args:
        best: (B, T') the teacher's most likely token per frame; lengths: (B,).

    Returns:
        ``best`` and (B, T') bool, True on valid frames where ``best`` is not ``blank_id``.
    """
    spikes = (best != blank_id) & valid_frames(lengths, best.size(1)).to(best.device)
    return best, spikes


def guided_ctc_loss(
    student_logits: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    lengths: torch.Tensor,
    blank_id: int = 0,
) -> torch.Tensor:
    """Guided CTC (Kurata & Audhkhasi, Interspeech 2019), probability form.

    "Guiding CTC posterior spike timings for improved posterior fusion and
    knowledge distillation": a 0/1 mask M (T', V) has M[t, k] = 1 where k is the
    teacher's most likely token at frame t and k is not blank (the teacher's
    spikes), and the guided model minimises ``-sum_t sum_k M[t, k] y[t, k]``
    with y its own softmax output, pulling its spikes to the teacher's frames.
    Here the term is written ``sum_t sum_k M[t, k] (1 - y[t, k])``: the same
    gradient (it differs by the constant ``sum M``, the number of spike frames),
    but >= 0 and 0 when the student puts all mass on the teacher's spike token.
    Probability, not log-probability, as in the paper: bounded per frame (<= 1),
    so a frame the student cannot fit does not dominate.

    Args:
        student_logits: (B, T', V) unnormalized student scores (temperature 1).
        teacher_log_probs: (B, T', V) teacher log-probabilities (or scores: only
            their argmax is used).
        lengths: (B,) valid frames; padding frames never count.
        blank_id: the CTC blank, never a spike.

    Returns:
        (B,) per-utterance sums over the teacher's spike frames.
    """
    if student_logits.shape != teacher_log_probs.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher "
            f"{tuple(teacher_log_probs.shape)} posteriors differ in shape"
        )
    return guided_ctc_loss_best(student_logits, teacher_log_probs.argmax(dim=-1), lengths, blank_id)


def guided_ctc_loss_best(
    student_logits: torch.Tensor, teacher_best: torch.Tensor, lengths: torch.Tensor, blank_id: int = 0
) -> torch.Tensor:
    """``guided_ctc_loss`` from the teacher's (B, T') most likely tokens (e.g. top-k ids[..., 0])."""
    best, spikes = best_spikes(teacher_best, lengths, blank_id)
    prob = torch.softmax(student_logits.float(), dim=-1)
    guided = prob.gather(-1, best.unsqueeze(-1)).squeeze(-1)  # (B, T') y[t, k_t]
    return (1.0 - guided).masked_fill(~spikes, 0.0).sum(dim=1)


def weighted_ctc_loss(
    student_logits: torch.Tensor,
    lengths: torch.Tensor,
    nbest: Sequence[Sequence[Tuple[float, Sequence[int]]]],
    blank_id: int = 0,
) -> torch.Tensor:
    """Sequence-level KD: ``sum_n w_n * CTC(student, y_n)`` per utterance.

    ``y_n`` are the teacher's hypotheses (1-best: one with weight 1; N-best:
    several, weighted). Each CTC term is ``-log P(y_n | x)`` summed over the
    utterance's frames, as ESPnet's builtin CTC computes it (torch's CTC loss,
    ``zero_infinity=True``: a hypothesis too long for the utterance's frames
    counts 0, not inf). Hypotheses of weight 0 are skipped.

    Args:
        student_logits: (B, T', V) unnormalized student scores.
        lengths: (B,) valid frames.
        nbest: per utterance, a list of (weight, token ids) — ids without blank.
        blank_id: the CTC blank.

    Returns:
        (B,) per-utterance weighted CTC sums.
    """
    batch = student_logits.size(0)
    if len(nbest) != batch:
        raise ValueError(f"{len(nbest)} hypothesis lists for a batch of {batch}")
    rows: List[int] = []
    weights: List[float] = []
    targets: List[int] = []
    target_lengths: List[int] = []
    for b, hyps in enumerate(nbest):
        for weight, ids in hyps:
            if weight == 0:
                continue
            rows.append(b)
            weights.append(float(weight))
            targets.extend(int(i) for i in ids)
            target_lengths.append(len(ids))
    device = student_logits.device
    out = torch.zeros(batch, device=device, dtype=torch.float32)
    if not rows:
        return out + 0.0 * student_logits.sum()  # keep the graph (e.g. for DDP)
    index = torch.tensor(rows, device=device)
    log_probs = torch.log_softmax(student_logits.float(), dim=-1).index_select(0, index)
    per_hyp = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1),  # (T', N, V)
        torch.tensor(targets, dtype=torch.long, device=device),
        lengths.to(device).index_select(0, index),
        torch.tensor(target_lengths, dtype=torch.long, device=device),
        blank=blank_id,
        reduction="none",
        zero_infinity=True,
    )
    return out.index_add(0, index, per_hyp * torch.tensor(weights, device=device))
