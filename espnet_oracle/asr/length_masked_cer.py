"""Make ESPnet's validation ``cer_ctc`` read only each utterance's own frames.

ESPnet's ``ESPnetASRModel._calc_ctc_loss`` (espnet 202511) takes the CTC argmax over the whole
padded batch (``self.ctc.argmax(encoder_out)``, no lengths), so whatever a model emits on the
padded frames after a short utterance is scored as insertions. How much depends on the model:
on the scene-text recipe's `dev` set (2026-12-08) the conventional CRNN teacher scored 18.8 %
``cer_ctc`` against a CER of 6.3 % on its own frames, the Oracle Teacher 3.5 % against 2.9 %.
Time-to-accuracy (stage 6) compares the teachers' per-epoch dev CER, so that bias would favour
whichever model emits blank on padding.

:func:`install_length_masked_cer` patches one model instance: while its ``_calc_ctc_loss`` runs,
its CTC layer's ``argmax`` sets the frames past each utterance's length to the blank, which the
error calculator drops. Nothing else changes: losses, training, decoding and every other use of
``ctc.argmax`` (outside ``_calc_ctc_loss``) are as before.
"""

from __future__ import annotations

import threading

import torch
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask

_lengths = threading.local()


def install_length_masked_cer(model: torch.nn.Module) -> bool:
    """Patch ``model`` (an ``ESPnetASRModel``); idempotent. False when it has no CTC error path."""
    calc_ctc_loss = getattr(model, "_calc_ctc_loss", None)
    ctc = getattr(model, "ctc", None)
    if calc_ctc_loss is None or ctc is None or not hasattr(ctc, "argmax"):
        return False
    if getattr(model, "_cer_length_masked", False):
        return True
    blank_id = getattr(model, "blank_id", 0)
    ctc_argmax = ctc.argmax

    def argmax(hs_pad: torch.Tensor) -> torch.Tensor:
        best = ctc_argmax(hs_pad)  # (B, T')
        lengths = getattr(_lengths, "value", None)
        if lengths is not None and lengths.dim() == 1 and lengths.shape[0] == best.shape[0]:
            best = best.masked_fill(make_pad_mask(lengths.cpu(), maxlen=best.shape[1]).to(best.device), blank_id)
        return best

    def masked_calc_ctc_loss(encoder_out, encoder_out_lens, ys_pad, ys_pad_lens):
        _lengths.value = encoder_out_lens
        try:
            return calc_ctc_loss(encoder_out, encoder_out_lens, ys_pad, ys_pad_lens)
        finally:
            _lengths.value = None

    ctc.argmax = argmax
    model._calc_ctc_loss = masked_calc_ctc_loss
    object.__setattr__(model, "_cer_length_masked", True)
    return True
