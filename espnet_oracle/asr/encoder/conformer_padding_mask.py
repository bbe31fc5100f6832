"""Make ESPnet's conformer convolution module blind to padded frames.

ESPnet's ``ConvolutionModule`` runs a depthwise convolution over time on the whole padded
batch, so the last frames of a short utterance see the padding after it (values the
pointwise convolution and GLU made from the padded zeros), and its output depends on
which other utterances share the batch. For KD that is not cosmetic: a teacher's stored
posteriors would depend on the batching of the dump.

:func:`install_conformer_padding_mask` adds two hooks per conformer layer: a forward
pre-hook on the layer keeps its ``(B, 1, T)`` mask (thread-local, so concurrent models do
not share it), and a forward pre-hook on the layer's depthwise convolution multiplies its
``(B, C, T)`` input by that mask. The convolution then sees exactly the zeros it pads a
lone utterance with: in evaluation mode (batch norm on running statistics) every utterance
of a padded batch gets the output it gets alone. In training, batch norm's batch statistics
still include the padded frames (length-sorted batches keep them few).
"""

from __future__ import annotations

import threading

import torch

_masks = threading.local()


def _keep_mask(layer, args, kwargs):
    mask = args[1] if len(args) > 1 else kwargs.get("mask")
    store = getattr(_masks, "by_conv", None)
    if store is None:
        store = _masks.by_conv = {}
    store[id(layer.conv_module.depthwise_conv)] = mask


def _zero_padding(conv, args):
    mask = getattr(_masks, "by_conv", {}).get(id(conv))
    x = args[0]
    # only the encoder's (B, 1, T) padding mask; anything else (no mask, chunk masks) is left alone
    if mask is None or mask.dim() != 3 or mask.shape[1] != 1 or mask.shape[0] != x.shape[0] \
            or mask.shape[2] != x.shape[2]:
        return None
    return (x * mask.to(x.dtype),) + tuple(args[1:])


def install_conformer_padding_mask(module: torch.nn.Module) -> int:
    """Hook every conformer layer with a convolution module inside ``module``.

    Idempotent; returns the number of hooked convolution modules (0 for other encoders).
    """
    from espnet.nets.pytorch_backend.conformer.convolution import ConvolutionModule
    from espnet.nets.pytorch_backend.conformer.encoder_layer import EncoderLayer

    hooked = 0
    for layer in module.modules():
        conv = getattr(layer, "conv_module", None)
        if not isinstance(layer, EncoderLayer) or not isinstance(conv, ConvolutionModule):
            continue
        if not getattr(conv, "_padding_masked", False):
            layer.register_forward_pre_hook(_keep_mask, with_kwargs=True)
            conv.depthwise_conv.register_forward_pre_hook(_zero_padding)
            conv._padding_masked = True
        hooked += 1
    return hooked
