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
import types

import torch
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask

_lengths = threading.local()


def _masked_argmax(ctc, hs_pad: torch.Tensor) -> torch.Tensor:
    best = type(ctc).argmax(ctc, hs_pad)  # (B, T')
    lengths = getattr(_lengths, "value", None)
    if lengths is not None and lengths.dim() == 1 and lengths.shape[0] == best.shape[0]:
        padded = make_pad_mask(lengths.cpu(), maxlen=best.shape[1]).to(best.device)
        best = best.masked_fill(padded, ctc._cer_blank_id)
    return best


def _masked_calc_ctc_loss(model, encoder_out, encoder_out_lens, ys_pad, ys_pad_lens):
    _lengths.value = encoder_out_lens
    try:
        return type(model)._calc_ctc_loss(model, encoder_out, encoder_out_lens, ys_pad, ys_pad_lens)
    finally:
        _lengths.value = None


def install_length_masked_cer(model: torch.nn.Module) -> bool:
    """Patch ``model`` (an ``ESPnetASRModel``); idempotent, survives ``copy.deepcopy`` (bound
    methods). False when it has no CTC error path."""
    ctc = getattr(model, "ctc", None)
    if not hasattr(type(model), "_calc_ctc_loss") or ctc is None or not hasattr(type(ctc), "argmax"):
        return False
    object.__setattr__(ctc, "_cer_blank_id", getattr(model, "blank_id", 0))
    object.__setattr__(ctc, "argmax", types.MethodType(_masked_argmax, ctc))
    object.__setattr__(model, "_calc_ctc_loss", types.MethodType(_masked_calc_ctc_loss, model))
    return True
