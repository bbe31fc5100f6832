"""Make an ESPnet encoder's subsampled lengths depend only on each utterance's own length.

ESPnet's Conv2dSubsampling derives the output mask by slicing the padded batch
mask, so in a batch every utterance shorter than the longest gets 1-2 more
output frames than when it is encoded alone, computed from padding, and the
self-attention layers attend to them. Frame-level KD needs one fixed frame count
per utterance (stored teacher posteriors vs the student's frames), so this hook
replaces that mask with ``arange(T') < L'(L)``, where ``L'(L)`` is the module's
own output length for a lone utterance of length L (measured once per length
and cached). Parameters and their names are unchanged: a model trained with the
hook loads and decodes as a stock ESPnet model.

The hook keeps no per-call state on itself (DataParallel replicas share hook
objects and run in threads): the length probe calls the module's ``forward``
directly, which does not re-enter hooks, and the utterance ids used in error
messages live in thread-local storage set by a forward pre-hook on the model.
"""

import contextlib
import threading
from typing import Dict, List, Optional, Sequence

import torch

# utterance ids of the batch the current thread is running (for error messages only)
_batch_context = threading.local()


class TooShortForSubsamplingError(ValueError):
    """An utterance has fewer input frames than the encoder's subsampling needs."""


def current_utt_ids() -> Optional[List[str]]:
    return getattr(_batch_context, "utt_ids", None)


class ExactSubsamplingLengths:
    """Forward hook for an encoder's ``embed`` (input layer) module."""

    def __init__(self):
        self.cache: Dict[int, int] = {}

    def output_length(self, module: torch.nn.Module, length: int, x: torch.Tensor) -> int:
        """Frames the module gives a lone utterance of ``length`` input frames (0 if too short)."""
        if length not in self.cache:
            with torch.no_grad():
                probe = x.new_zeros((1, length) + tuple(x.shape[2:]))
                mask = torch.ones(1, 1, length, dtype=torch.bool, device=x.device)
                try:
                    # forward(), not __call__: hooks (this one included) do not run again
                    _, out_mask = module.forward(probe, mask)
                    frames = int(out_mask.sum())
                except torch.OutOfMemoryError:  # not a property of the length: never cache it
                    raise
                except RuntimeError:  # e.g. a convolution kernel longer than the input
                    frames = 0
            self.cache[length] = frames
        return self.cache[length]

    def __call__(self, module, inputs, output):
        if len(inputs) < 2 or inputs[1] is None:
            return None
        x, in_mask = inputs[0], inputs[1]
        out, out_mask = output
        if out_mask is None:
            return None
        lengths = in_mask.reshape(in_mask.size(0), -1).sum(dim=-1).tolist()
        new_lengths = [self.output_length(module, int(n), x) for n in lengths]
        short = [i for i, n in enumerate(new_lengths) if n < 1]
        if short:
            i = short[0]
            utt_ids = current_utt_ids()
            name = (
                f"utterance {utt_ids[i]}" if utt_ids is not None and len(utt_ids) == len(lengths)
                else f"batch item {i}"
            )
            shortest_ok = next((n for n in sorted(self.cache) if self.cache[n] > 0), None)
            need = f"; the shortest input seen that works has {shortest_ok}" if shortest_ok else ""
            raise TooShortForSubsamplingError(
                f"{name}: {int(lengths[i])} input frames are too short for the encoder's "
                f"{type(module).__name__} (0 frames after subsampling{need}). Remove such "
                f"utterances from the data set (or use a subsampling with a smaller factor). "
                f"{len(short)} such utterance(s) in this batch."
            )
        new_lengths = torch.tensor(new_lengths, device=out_mask.device)
        frames = torch.arange(out_mask.size(-1), device=out_mask.device)
        exact = (frames[None, :] < new_lengths[:, None]).unsqueeze(1)
        return out, exact


@contextlib.contextmanager
def utt_id_context(utt_ids: Optional[Sequence[str]]):
    """Name the utterances of the batch this thread encodes next (for error messages).

    The model's forward pre-hook does this for ESPnet's trainer, which passes
    ``utt_id``; inference code that calls ``encode``/``encode_with_target``
    directly (teacher evaluation, posterior dump, decoding) wraps the call in this.

    ESPnet's encoders refuse a batch whose padded length is too short for the
    subsampling (``TooShortUttError``, naming no utterance) before the hook sees it:
    then every utterance of the batch is too short, and the error is raised again as
    :class:`TooShortForSubsamplingError` naming them. (A padding-sensitive encoder is
    run one utterance at a time at inference, so there it is the usual case.)
    """
    from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError

    previous = current_utt_ids()
    _batch_context.utt_ids = list(utt_ids) if utt_ids is not None else None
    try:
        yield
    except TooShortUttError as error:
        if not utt_ids:
            raise
        raise _batch_too_short(list(utt_ids), error) from error
    finally:
        _batch_context.utt_ids = previous


def _batch_too_short(utt_ids: List[str], error) -> TooShortForSubsamplingError:
    """The error for a batch ESPnet's encoder refused as a whole (all its utterances are too short)."""
    need = f"(it needs more than {error.limit})"
    if len(utt_ids) == 1:
        what = f"utterance {utt_ids[0]}: {error.actual_size} input frames are"
    else:
        more = f" and {len(utt_ids) - 5} more" if len(utt_ids) > 5 else ""
        what = f"utterances {', '.join(utt_ids[:5])}{more}: at most {error.actual_size} input frames each are"
    return TooShortForSubsamplingError(
        f"{what} too short for the encoder's subsampling {need}. Remove such utterances from the "
        f"data set (or use a subsampling with a smaller factor)."
    )


def _remember_utt_ids(module, args, kwargs):
    utt_id = kwargs.get("utt_id")
    _batch_context.utt_ids = list(utt_id) if utt_id is not None else None


def _forget_utt_ids(module, args, kwargs, output):
    _batch_context.utt_ids = None


def install_exact_subsampling_lengths(module: torch.nn.Module) -> bool:
    """Install the hook on every encoder input layer (``*.embed``) inside ``module``.

    ``module`` may be an encoder or a whole ESPnet model; for a model, its
    ``forward`` also makes the batch's ``utt_id`` available to error messages.
    Idempotent; returns whether at least one input layer was hooked.
    """
    hooked = False
    for name, child in module.named_modules():
        if name != "embed" and not name.endswith(".embed"):
            continue
        if getattr(child, "_exact_subsampling_lengths", False):
            hooked = True
            continue
        if not hasattr(child, "forward"):
            continue
        child.register_forward_hook(ExactSubsamplingLengths())
        child._exact_subsampling_lengths = True
        hooked = True
    if hasattr(module, "ctc") and not getattr(module, "_utt_id_context", False):
        module.register_forward_pre_hook(_remember_utt_ids, with_kwargs=True)
        module.register_forward_hook(_forget_utt_ids, with_kwargs=True, always_call=True)
        module._utt_id_context = True
    return hooked
