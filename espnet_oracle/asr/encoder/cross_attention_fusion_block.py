"""One fusion block of the Oracle Teacher: source frames attend to the target embedding."""

from typing import Optional, Tuple

import torch
from espnet.nets.pytorch_backend.transformer.attention import MultiHeadedAttention
from espnet.nets.pytorch_backend.transformer.layer_norm import LayerNorm
from espnet.nets.pytorch_backend.transformer.positionwise_feed_forward import (
    PositionwiseFeedForward,
)
from typeguard import typechecked


class CrossAttentionFusionBlock(torch.nn.Module):
    """Pre-norm cross-attention + feed-forward block.

    Queries come from the source frames, keys and values from the target embedding,
    so the output keeps the source's length and frame rate.

    Args:
        size: model dimension D (source and target sides share it).
        attention_heads: number of heads.
        linear_units: hidden size of the feed-forward layer.
        dropout_rate: dropout after attention and feed-forward.
        attention_dropout_rate: dropout on the attention weights.
    """

    @typechecked
    def __init__(
        self,
        size: int,
        attention_heads: int = 4,
        linear_units: int = 1024,
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
    ):
        super().__init__()
        self.norm_source = LayerNorm(size)
        self.norm_target = LayerNorm(size)
        self.cross_attention = MultiHeadedAttention(
            attention_heads, size, attention_dropout_rate
        )
        self.norm_feed_forward = LayerNorm(size)
        self.feed_forward = PositionwiseFeedForward(size, linear_units, dropout_rate)
        self.dropout = torch.nn.Dropout(dropout_rate)

    def forward(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        target_mask: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Fuse the target into the source frames.

        Args:
            source: (B, T', D) source-encoder frames (queries).
            target: (B, L, D) target embedding (keys and values).
            target_mask: (B, 1, L) True where the target token is real (not padding).

        Returns:
            (B, T', D) fused frames and (B, H, T', L) attention weights.
        """
        query = self.norm_source(source)
        memory = self.norm_target(target)
        attended = self.cross_attention(query, memory, memory, target_mask)
        weights = self.cross_attention.attn
        source = source + self.dropout(attended)
        source = source + self.dropout(self.feed_forward(self.norm_feed_forward(source)))
        return source, weights
