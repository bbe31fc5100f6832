"""Make ESPnet's validation ``cer_ctc`` read only each utterance's own frames.

ESPnet's ``ESPnetASRModel._calc_ctc_loss`` (espnet 202511) takes the CTC argmax over the whole
padded batch (``self.ctc.argmax(encoder_out)``, no lengths), so whatever a model emits on the
padded frames after a short utterance is scored as insertions. How much depends on the model:
on the scene-text recipe's `dev` set (2026-12-08) the conventional CRNN teacher scored 18.8 %
``cer_ctc`` against a CER of 6.3 % on its own frames, the Oracle Teacher 3.5 % against 2.9 %.
Time-to-accuracy (stage 6) compares the teachers' per-epoch dev CER, so that bias would favour
whichever model emits blank on padding.

:func:`install_length_masked_cer` moves one model into a subclass of its own class whose
``_calc_ctc_loss`` sets the frames past each utterance's length to the blank before scoring (the
error calculator drops blanks). A class, not a patched instance, so that DataParallel replicas,
deep copies and pickles carry it. Losses, training, parameters and decoding are unchanged.
"""

from __future__ import annotations

import torch
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask

_MASKED: dict = {}  # registered class -> its length-masked subclass


class LengthMaskedCERMixin:
    """``_calc_ctc_loss`` of an ``ESPnetASRModel`` with the validation CER on own frames only."""

    def _calc_ctc_loss(self, encoder_out, encoder_out_lens, ys_pad, ys_pad_lens):
        loss_ctc = self.ctc(encoder_out, encoder_out_lens, ys_pad, ys_pad_lens)
        cer_ctc = None
        if not self.training and self.error_calculator is not None:
            best = self.ctc.argmax(encoder_out).data  # (B, T')
            padded = make_pad_mask(encoder_out_lens.cpu(), maxlen=best.size(1)).to(best.device)
            best = best.masked_fill(padded, self.blank_id)
            cer_ctc = self.error_calculator(best.cpu(), ys_pad.cpu(), is_ctc=True)
        return loss_ctc, cer_ctc


def _masked_class(cls: type) -> type:
    """The subclass of ``cls`` with the mixin, one per class. It keeps ``cls``'s name (ESPnet's
    logs print the model as before) and lives in this module's namespace, where pickle finds it."""
    masked = _MASKED.get(cls)
    if masked is None:
        masked = type(cls.__name__, (LengthMaskedCERMixin, cls), {"__module__": __name__, "__qualname__": cls.__name__})
        _MASKED[cls] = globals()[cls.__name__] = masked
    return masked


def install_length_masked_cer(model: torch.nn.Module) -> bool:
    """Move ``model`` (an ``ESPnetASRModel``) into its length-masked subclass; idempotent.
    False when it has no CTC error path."""
    if isinstance(model, LengthMaskedCERMixin):
        return True
    if not hasattr(type(model), "_calc_ctc_loss") or not hasattr(model, "error_calculator") \
            or getattr(model, "ctc", None) is None:
        return False
    model.__class__ = _masked_class(type(model))
    return True


def registered_class(model: torch.nn.Module) -> type:
    """The model's class as registered (``model: espnet``, ``kd_student``, ...), under the mixin."""
    cls = type(model)
    return cls.__bases__[1] if issubclass(cls, LengthMaskedCERMixin) and cls is not LengthMaskedCERMixin else cls
