"""CTC student trained with frame-level knowledge distillation from teacher posteriors."""

import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import yaml
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.torch_utils.device_funcs import force_gatherable
from typeguard import typechecked

from espnet_oracle.asr.encoder.exact_subsampling_lengths import (
    install_exact_subsampling_lengths,
)
from espnet_oracle.asr.kd_loss import (
    frame_kd_loss,
    frame_kd_loss_topk,
    guided_ctc_loss_best,
    shift_frames,
    topk_to_dense_batch,
    unpack_topk_batch,
    weighted_ctc_loss,
)
from espnet_oracle.utils import inference
from espnet_oracle.utils.teacher_hyps import unpack_batch

KD_FRAME_CHOICES = ("all", "teacher_nonblank", "teacher_nonblank_renorm", "teacher_nonblank_words")
#: the choices that distil only on the teacher's spikes (frames whose teacher argmax is not blank)
SPIKE_FRAME_CHOICES = ("teacher_nonblank", "teacher_nonblank_renorm", "teacher_nonblank_words")
# guards building / copying an online teacher (DataParallel runs replicas in threads)
_ONLINE_TEACHER_LOCK = threading.Lock()


class FrameMismatchError(ValueError):
    """Stored teacher posteriors do not line up with the student's frames."""


def config_token_list(config_path) -> List[str]:
    """The token list of a train config.yaml (ESPnet saves the list; a path to a file is read too)."""
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    tokens = config.get("token_list")
    if isinstance(tokens, str):
        with open(tokens, encoding="utf-8") as f:
            tokens = [line.rstrip() for line in f]
    if not isinstance(tokens, list):
        raise ValueError(f"{config_path} has no token_list: not an ESPnet train config")
    return [str(t) for t in tokens]


class KDStudentModel(ESPnetASRModel):
    """ESPnet CTC model trained with knowledge distillation from a teacher.

    loss = (1 - a) * CTC(y)                          a = kd_weight
         + a * tau^2 * KD                            tau = kd_temperature
         + g * GuidedCTC                             g = guided_ctc_weight
         + s * sum_n w_n CTC(y_teacher_n)            s = seq_kd_weight

    Every term is summed over an utterance's valid frames and averaged over the
    batch, the normalization of ESPnet's CTC loss (``reduce=True``), so the
    weights trade terms of comparable scale. ``kd_weight`` interpolates CTC and
    frame KD as before; the other two are added on top (0 = off).

    - KD: ``sum_t KL(p_teacher^tau(t) || p_student^tau(t))`` over the frames
      chosen by ``kd_frames``, from the stored posteriors ``teacher_post`` (dense) or
      ``teacher_topk_post`` (top-k, ``kd_loss.frame_kd_loss_topk``) or,
      with ``online_teacher_config``/``online_teacher_model_file``, from a
      frozen teacher run inside each step (see below).
    - GuidedCTC (Kurata & Audhkhasi, Interspeech 2019, see
      ``kd_loss.guided_ctc_loss``): ``sum_t M_t (1 - p_student(k_t | t))`` over
      the teacher's spike frames t (teacher argmax k_t not blank), from the same
      ``teacher_post``. "Frame-level KD + Guided CTC" is ``kd_weight`` > 0 and
      ``guided_ctc_weight`` > 0.
    - Sequence-level KD: CTC of the student towards the teacher's hypotheses
      ``teacher_hyp`` (data type ``teacher_hyps``: 1-best with weight 1, or a
      weighted N-best), see ``kd_loss.weighted_ctc_loss``.

    Teacher posteriors are needed when ``kd_weight`` or ``guided_ctc_weight`` is
    > 0, teacher hypotheses when ``seq_kd_weight`` is > 0; given anyway, their
    terms are computed for the stats. The student has no parameters beyond a
    plain ESPnet CTC model: at inference it *is* ``model: espnet``
    (``espnet_oracle.bin.export_student`` writes that config).

    Online teacher (``online_teacher_config`` + ``online_teacher_model_file``: a
    teacher's train config.yaml and checkpoint, e.g. ``exp/teacher_oracle/config.yaml``
    and ``exp/teacher_oracle/valid.loss.ave.pth``; ``model: espnet`` or
    ``model: oracle_teacher``): instead of stored posteriors, each forward runs the
    frozen teacher on the batch's unaugmented ``speech`` under ``torch.no_grad()``,
    through the same function as the posterior dump
    (``utils.inference.ctc_log_probs_padded``); the Oracle Teacher is fed the batch's
    ``text``. No dump storage, but every step (training and validation) also pays a
    teacher forward. The teacher's token list must equal the student's (checked when
    the student is built, from the teacher's config). The teacher is built on first
    use (so loading the trained student for decoding never builds it), in eval mode
    with ``requires_grad`` off, and is held outside torch's module registry: it is in
    neither ``state_dict()`` nor ``parameters()`` (so not in the optimizer or the
    checkpoint), and it is moved to the device of each batch it sees (one copy per
    device). Its posteriors are exact and dense (float32), whereas stored dumps are by
    default top-k (k = 8) float16 with the exact leftover mass (``post_format topk``),
    so an online student and a dump-based one see slightly different targets.

    Args:
        kd_weight: alpha in [0, 1].
        kd_temperature: tau > 0.
        kd_frames: which frames the KL is summed over:
            ``all``: every valid frame;
            ``teacher_nonblank``: only valid frames whose teacher argmax is not
            blank (the KD term then weighs less, in proportion to the share of
            blank frames);
            ``teacher_nonblank_renorm``: the same frames, the utterance's sum
            scaled by n_b / m_b (n_b valid frames, m_b of them selected), so each
            utterance keeps the KD weight of ``all``; an utterance without a
            teacher spike (m_b = 0) contributes 0;
            ``teacher_nonblank_words``: the frames of ``teacher_nonblank``, the KL
            between both distributions over the non-blank tokens only
            (renormalised): which word, not whether to emit one, so the KD term
            cannot move the student's blank/non-blank balance (top-k posteriors are
            expanded to (B, T', V) for it).
        guided_ctc_weight: g >= 0.
        seq_kd_weight: s >= 0.
        kd_shift_frames: move the teacher posteriors this many frames later (earlier if
            negative) inside each utterance before KD and Guided CTC use them
            (``kd_loss.shift_frames``; 0: as stored or computed online). The move keeps
            each utterance's frame count, which is checked as always.
        kd_shift_tolerance: S >= 0. With S > 0 each utterance's KD term is the lowest of
            its KD terms to the teacher moved by ``kd_shift_frames + s`` for s in -S..S
            (chosen per utterance and step): the student keeps its own timing within S
            frames and learns from the teacher which token, not when (README Results,
            "Timing-tolerant KD"). Guided CTC uses the teacher moved by ``kd_shift_frames``
            only. The stat ``kd_shift_chosen`` is the batch's mean chosen s.
        online_teacher_config: the online teacher's train config.yaml (with
            ``online_teacher_model_file``; None: posteriors come from the data).
        online_teacher_model_file: the online teacher's checkpoint (.pth).
    """

    @typechecked
    def __init__(
        self,
        *args,
        kd_weight: float = 0.5,
        kd_temperature: float = 1.0,
        kd_frames: str = "all",
        guided_ctc_weight: float = 0.0,
        seq_kd_weight: float = 0.0,
        kd_shift_frames: int = 0,
        kd_shift_tolerance: int = 0,
        online_teacher_config: Optional[str] = None,
        online_teacher_model_file: Optional[str] = None,
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
        if guided_ctc_weight < 0:
            raise ValueError(f"guided_ctc_weight must be >= 0: {guided_ctc_weight}")
        if seq_kd_weight < 0:
            raise ValueError(f"seq_kd_weight must be >= 0: {seq_kd_weight}")
        if kd_shift_tolerance < 0:
            raise ValueError(f"kd_shift_tolerance must be >= 0: {kd_shift_tolerance}")
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
        self.guided_ctc_weight = guided_ctc_weight
        self.seq_kd_weight = seq_kd_weight
        self.kd_shift_frames = kd_shift_frames
        self.kd_shift_tolerance = kd_shift_tolerance
        if (online_teacher_config is None) != (online_teacher_model_file is None):
            raise ValueError(
                "an online teacher needs both online_teacher_config and online_teacher_model_file "
                f"(got config {online_teacher_config!r}, model file {online_teacher_model_file!r})"
            )
        self.online_teacher_config = online_teacher_config
        self.online_teacher_model_file = online_teacher_model_file
        if online_teacher_config is not None:
            self._check_online_teacher()
        # device -> the built teacher; set with object.__setattr__ so that torch does not
        # register it as a submodule (no state_dict keys, parameters or optimizer entries)
        object.__setattr__(self, "_online_teachers", {})

    def _check_online_teacher(self) -> None:
        """Refuse missing files and a teacher whose token list is not the student's."""
        config, model_file = self.online_teacher_config, self.online_teacher_model_file
        for path, what in ((config, "online_teacher_config"), (model_file, "online_teacher_model_file")):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{what}: {path} not found (train the teacher first)")
        teacher_tokens = config_token_list(config)
        if teacher_tokens != list(self.token_list):
            first = next((i for i, (a, b) in enumerate(zip(teacher_tokens, self.token_list)) if a != b),
                         min(len(teacher_tokens), len(self.token_list)))
            raise ValueError(
                f"online teacher {config} + {model_file}: its token list ({len(teacher_tokens)} tokens) "
                f"differs from the student's ({len(self.token_list)} tokens) first at index {first}: "
                "teacher and student must share one token list"
            )

    def online_teacher(self, device: torch.device) -> torch.nn.Module:
        """The frozen online teacher on ``device`` (built on first use; see the class docstring)."""
        key = str(device)
        teacher = self._online_teachers.get(key)
        if teacher is not None:
            return teacher
        with _ONLINE_TEACHER_LOCK:
            if key not in self._online_teachers:
                if self._online_teachers:  # another device already has one: copy it
                    import copy

                    teacher = copy.deepcopy(next(iter(self._online_teachers.values()))).to(device)
                else:
                    # building initializes (then overwrites) weights: keep the student's random
                    # stream (SpecAugment, dropout) that of a run with stored posteriors
                    with torch.random.fork_rng(devices=[]):
                        teacher, _ = inference.load_model_files(
                            self.online_teacher_config, self.online_teacher_model_file
                        )
                    teacher.requires_grad_(False)
                    teacher = teacher.eval().to(device)
                self._online_teachers[key] = teacher
            return self._online_teachers[key]

    @torch.no_grad()
    def online_teacher_posteriors(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        utt_id: Optional[List[str]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The online teacher's (B, T', V) CTC log-posteriors and (B,) frame counts.

        Args:
            speech: (B, T, F) unaugmented input, as the data loader gives it (copied: the
                teacher's normalization works in place); speech_lengths: (B,).
            text: (B, L) token ids padded with -1; text_lengths: (B,) (fed to an Oracle
                Teacher, ignored by a conventional one).
        """
        teacher = self.online_teacher(speech.device)
        log_probs, lengths, _ = inference.ctc_log_probs_padded(
            teacher, speech.clone(), speech_lengths, text, text_lengths, utt_id
        )
        return log_probs.float(), lengths

    def check_frames(
        self,
        encoder_out_lens: torch.Tensor,
        teacher_post_lengths: torch.Tensor,
        teacher_vocab_size: int,
        utt_id: Optional[List[str]],
    ) -> None:
        """Refuse posteriors whose frame counts or vocabulary differ from the student's."""
        if teacher_vocab_size != self.vocab_size:
            names = ", ".join(utt_id[:3]) if utt_id is not None else "this batch"
            raise FrameMismatchError(
                f"utterances {names}: teacher posteriors have {teacher_vocab_size} classes, the "
                f"student {self.vocab_size}: teacher and student must share one token list"
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

    def frame_kd(
        self, student_logits: torch.Tensor, teacher_post: torch.Tensor, lengths: torch.Tensor, topk: bool
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B,) KD sums (``kd_frames``, ``kd_temperature``) of (B, T', V) student scores to one
        batch of teacher posteriors (dense log-probs, or top-k rows when ``topk``), and the teacher's
        (B, T') best token per frame."""
        if topk:
            ids, values, leftover, teacher_vocab_size = unpack_topk_batch(teacher_post)
            # the teacher's top-1 token (its spread leftover is smaller); on a float16 tie it may
            # differ from the expanded frame's first-index argmax, and is the truer one
            teacher_best = ids[..., 0]
        else:
            teacher_best = teacher_post.argmax(dim=-1)
        frame_mask = None
        if self.kd_frames in SPIKE_FRAME_CHOICES:
            frame_mask = teacher_best != self.blank_id
        options = dict(temperature=self.kd_temperature, frame_mask=frame_mask,
                       renormalize=self.kd_frames == "teacher_nonblank_renorm")
        if self.kd_frames == "teacher_nonblank_words":
            if topk:
                teacher_post = topk_to_dense_batch(ids, values, leftover, lengths, teacher_vocab_size)
            kd_per_utt = frame_kd_loss(student_logits, teacher_post, lengths, exclude_token=self.blank_id, **options)
        elif topk:
            kd_per_utt = frame_kd_loss_topk(student_logits, ids, values, leftover, lengths, **options)
        else:
            kd_per_utt = frame_kd_loss(student_logits, teacher_post, lengths, **options)
        return kd_per_utt, teacher_best

    def teacher_hypotheses(
        self,
        teacher_hyp: torch.Tensor,
        teacher_hyp_lengths: torch.Tensor,
        utt_id: Optional[List[str]],
    ) -> List[List[Tuple[float, List[int]]]]:
        """Unpack the batch's teacher hypotheses; refuse ids the student cannot emit."""
        nbest = unpack_batch(teacher_hyp, teacher_hyp_lengths)
        for i, hyps in enumerate(nbest):
            for _, ids in hyps:
                bad = [t for t in ids if t >= self.vocab_size or t == self.blank_id]
                if bad:
                    name = utt_id[i] if utt_id is not None else f"batch item {i}"
                    raise ValueError(
                        f"utterance {name}: teacher hypothesis has token id {bad[0]}, which "
                        f"is blank or outside the student's {self.vocab_size} tokens: "
                        "teacher and student must share one token list"
                    )
        return nbest

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        teacher_post: Optional[torch.Tensor] = None,
        teacher_post_lengths: Optional[torch.Tensor] = None,
        teacher_topk_post: Optional[torch.Tensor] = None,
        teacher_topk_post_lengths: Optional[torch.Tensor] = None,
        teacher_hyp: Optional[torch.Tensor] = None,
        teacher_hyp_lengths: Optional[torch.Tensor] = None,
        utt_id: Optional[List[str]] = None,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """CTC + frame KD + Guided CTC + sequence-level KD (see the class docstring).

        Args:
            speech: (B, T, F); speech_lengths: (B,); text: (B, L); text_lengths: (B,).
            teacher_post: (B, T', V) teacher log-probs; teacher_post_lengths: (B,).
                Not with an online teacher, which computes them from ``speech`` (and,
                for the Oracle Teacher, ``text``) here.
            teacher_topk_post: (B, T', 2k + 2) the same stored as top-k (data type
                ``teacher_topk_posterior``), instead of ``teacher_post``;
                teacher_topk_post_lengths: (B,).
            teacher_hyp: (B, P) packed teacher hypotheses (``teacher_hyps`` data
                type); teacher_hyp_lengths: (B,).
            utt_id: utterance ids (ESPnet's trainer passes them), used in errors.
        """
        if teacher_topk_post is not None and teacher_post is not None:
            raise ValueError(
                "model: kd_student got teacher posteriors both dense (teacher_post) and top-k "
                "(teacher_topk_post): give one"
            )
        topk = teacher_topk_post is not None and teacher_topk_post_lengths is not None
        if topk:
            teacher_post, teacher_post_lengths = teacher_topk_post, teacher_topk_post_lengths
        has_post = teacher_post is not None and teacher_post_lengths is not None
        online = self.online_teacher_config is not None
        if online and (teacher_post is not None or teacher_post_lengths is not None):
            raise ValueError(
                "model: kd_student got both stored teacher posteriors (teacher_post or teacher_topk_post) "
                f"and an online teacher ({self.online_teacher_config}): give one (drop the posterior "
                "data entries or the online_teacher_* model_conf)"
            )
        if (self.kd_weight > 0 or self.guided_ctc_weight > 0) and not (has_post or online):
            raise ValueError(
                "model: kd_student needs teacher posteriors (kd_weight or guided_ctc_weight "
                "> 0): add --train_data_path_and_name_and_type "
                "<post.scp>,teacher_topk_post,teacher_topk_posterior (top-k dumps) or "
                "<post.scp>,teacher_post,teacher_posterior (and the same for --valid_...)"
            )
        has_hyp = teacher_hyp is not None and teacher_hyp_lengths is not None
        if self.seq_kd_weight > 0 and not has_hyp:
            raise ValueError(
                "model: kd_student needs teacher hypotheses (seq_kd_weight > 0): add "
                "--train_data_path_and_name_and_type <teacher_hyp.txt>,teacher_hyp,teacher_hyps "
                "(and the same for --valid_...)"
            )
        text = text[:, : text_lengths.max()]
        batch_size = speech.shape[0]
        if online:  # before the student's encode, whose SpecAug and normalization must not reach it
            teacher_post, teacher_post_lengths = self.online_teacher_posteriors(
                speech, speech_lengths, text, text_lengths, utt_id
            )
            has_post = True
        encoder_out, encoder_out_lens = self.encode(speech, speech_lengths)
        if isinstance(encoder_out, tuple):
            encoder_out = encoder_out[0]

        loss_ctc, cer_ctc = self._calc_ctc_loss(encoder_out, encoder_out_lens, text, text_lengths)
        loss = (1.0 - self.kd_weight) * loss_ctc
        stats = dict(loss_ctc=loss_ctc.detach(), cer_ctc=cer_ctc)
        student_logits = self.ctc.ctc_lo(encoder_out)
        if has_post:
            teacher_post = teacher_post[:, : encoder_out.size(1)]
            teacher_vocab_size = unpack_topk_batch(teacher_post)[3] if topk else teacher_post.size(-1)
            self.check_frames(encoder_out_lens, teacher_post_lengths, teacher_vocab_size, utt_id)
            # moves stay within each utterance's stored frames (just checked); a top-k frame moves as one row
            kd_per_utt, teacher_best = self.frame_kd(
                student_logits, shift_frames(teacher_post, teacher_post_lengths, self.kd_shift_frames),
                encoder_out_lens, topk)
            if self.kd_shift_tolerance:
                offsets = [s for s in range(-self.kd_shift_tolerance, self.kd_shift_tolerance + 1) if s]
                tries = [kd_per_utt] + [
                    self.frame_kd(student_logits,
                                  shift_frames(teacher_post, teacher_post_lengths, self.kd_shift_frames + s),
                                  encoder_out_lens, topk)[0]
                    for s in offsets
                ]
                kd_per_utt, chosen = torch.stack(tries).min(dim=0)  # (B,): lowest KD term per utterance
                # indexed on the batch's device: no host sync in the training step
                moves = torch.tensor([0] + offsets, dtype=torch.float, device=chosen.device)
                stats["kd_shift_chosen"] = moves[chosen].mean()
            loss_kd = kd_per_utt.sum() / batch_size * self.kd_temperature**2
            loss = loss + self.kd_weight * loss_kd
            stats["loss_kd"] = loss_kd.detach()
            guided = guided_ctc_loss_best(student_logits, teacher_best, encoder_out_lens, self.blank_id)
            loss_guided = guided.sum() / batch_size
            loss = loss + self.guided_ctc_weight * loss_guided
            stats["loss_guided_ctc"] = loss_guided.detach()
        if has_hyp:
            nbest = self.teacher_hypotheses(teacher_hyp, teacher_hyp_lengths, utt_id)
            seq = weighted_ctc_loss(student_logits, encoder_out_lens, nbest, self.blank_id)
            loss_seq_kd = seq.sum() / batch_size
            loss = loss + self.seq_kd_weight * loss_seq_kd
            stats["loss_seq_kd"] = loss_seq_kd.detach()
        stats["loss"] = loss.detach()
        loss, stats, weight = force_gatherable((loss, stats, batch_size), loss.device)
        return loss, stats, weight
