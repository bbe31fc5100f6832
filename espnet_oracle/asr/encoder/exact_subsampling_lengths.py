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
"""

from typing import Dict

import torch


class ExactSubsamplingLengths:
    """Forward hook for an encoder's ``embed`` (input layer) module."""

    def __init__(self):
        self.cache: Dict[int, int] = {}
        self.busy = False

    def output_length(self, module: torch.nn.Module, length: int, x: torch.Tensor) -> int:
        if length not in self.cache:
            self.busy = True
            try:
                with torch.no_grad():
                    probe = x.new_zeros((1, length) + tuple(x.shape[2:]))
                    mask = torch.ones(1, 1, length, dtype=torch.bool, device=x.device)
                    _, out_mask = module(probe, mask)
                self.cache[length] = int(out_mask.sum())
            finally:
                self.busy = False
        return self.cache[length]

    def __call__(self, module, inputs, output):
        if self.busy or len(inputs) < 2 or inputs[1] is None:
            return None
        x, in_mask = inputs[0], inputs[1]
        out, out_mask = output
        if out_mask is None:
            return None
        lengths = in_mask.reshape(in_mask.size(0), -1).sum(dim=-1).tolist()
        new_lengths = torch.tensor(
            [self.output_length(module, int(n), x) for n in lengths], device=out_mask.device
        )
        frames = torch.arange(out_mask.size(-1), device=out_mask.device)
        exact = (frames[None, :] < new_lengths[:, None]).unsqueeze(1)
        return out, exact


def install_exact_subsampling_lengths(encoder: torch.nn.Module) -> bool:
    """Register the hook on ``encoder.embed`` once; returns whether it applies."""
    embed = getattr(encoder, "embed", None)
    if embed is None or not isinstance(embed, torch.nn.Module):
        return False
    if getattr(embed, "_exact_subsampling_lengths", False):
        return True
    embed.register_forward_hook(ExactSubsamplingLengths())
    embed._exact_subsampling_lengths = True
    return True
