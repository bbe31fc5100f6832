"""Oracle Teacher encoder: a source encoder whose frames attend to the target labels."""

import random
import zlib
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet.nets.pytorch_backend.transformer.attention import MultiHeadedAttention
from espnet.nets.pytorch_backend.transformer.embedding import PositionalEncoding
from espnet.nets.pytorch_backend.transformer.encoder_layer import EncoderLayer
from espnet.nets.pytorch_backend.transformer.layer_norm import LayerNorm
from espnet.nets.pytorch_backend.transformer.positionwise_feed_forward import (
    PositionwiseFeedForward,
)
from typeguard import typechecked

from espnet_oracle.asr.encoder.cross_attention_fusion_block import (
    CrossAttentionFusionBlock,
)
from espnet_oracle.asr.encoder.exact_subsampling_lengths import (
    install_exact_subsampling_lengths,
)


MISSING_TARGET = (
    "OracleTeacherEncoder needs the target: call it with text= and "
    "text_lengths= (the Oracle Teacher always sees the transcript). "
    "Stock ESPnet inference does not pass it; use "
    "espnet_oracle.bin.teacher_eval or espnet_oracle.bin.decode."
)


class OracleEncoderOutput(NamedTuple):
    fused: torch.Tensor  # (B, T', D) what the CTC layer reads
    source: torch.Tensor  # (B, T', D) source-encoder output, before fusion
    lengths: torch.Tensor  # (B,) valid frames T'_b
    attention: List[torch.Tensor]  # per fusion block, (B, H, T', L) cross-attention


def _transformer_layer(size, heads, units, dropout_rate, attention_dropout_rate):
    return EncoderLayer(
        size,
        MultiHeadedAttention(heads, size, attention_dropout_rate),
        PositionwiseFeedForward(size, units, dropout_rate),
        dropout_rate,
        normalize_before=True,
        concat_after=False,
    )


class OracleTeacherEncoder(AbsEncoder):
    """Source encoder + target embedding + cross-attention fusion.

    The source encoder is any ESPnet ASR encoder, built by name from ESPnet's own
    registry (``source_encoder: transformer`` + ``source_encoder_conf``); its
    subsampling fixes the output frame rate. The target (label ids) is embedded,
    optionally given positions and self-attention, and ``num_fusion_blocks``
    cross-attention blocks let every source frame (query) read the target
    (keys/values). The output has the source's length: one CTC posterior per frame.

    Anti-copy options (how much the target may tell about timing and order):
        target_positional_encoding: add positions to the target. Off by default:
            then order and timing can only come from the audio.
        target_token_dropout: in training, replace this share of target tokens by
            a mask token.
        target_ctc_expansion: feed a random sequence that CTC's many-to-one
            mapping collapses to the target (tokens repeated 1 to
            ``expansion_max_repeat`` times, blanks inserted with probability
            ``expansion_blank_prob``), so token positions carry no timing. In
            training a fresh draw each time; in evaluation (probes, posterior
            dump) a draw from the same distribution seeded by the target's
            content, so the input has the form the teacher trained on and the
            same utterance always gets the same input.

    Target scale: the embedding rows are N(0, 1) (torch's and ESPnet's init of
    ``Embedding``) and are NOT multiplied by sqrt(D); with positions on, the
    sinusoidal encoding (RMS 1/sqrt(2) per dimension) is added at weight 1, so
    positions make ~0.7 of the token part's RMS. (ESPnet's PositionalEncoding
    would scale its input by sqrt(D) once more, which made positions ~1 % of
    the signal; the fusion blocks layer-normalise the target, so its overall
    scale does not matter, only this ratio.)

    Args:
        input_size: feature dimension of the input.
        vocab_size: size of the token list (the task fills it in).
        source_encoder: ESPnet encoder name, e.g. ``transformer``, ``conformer``.
        source_encoder_conf: its constructor arguments.
    """

    @typechecked
    def __init__(
        self,
        input_size: int,
        vocab_size: int,
        source_encoder: str = "transformer",
        source_encoder_conf: Optional[Dict] = None,
        num_fusion_blocks: int = 2,
        fusion_attention_heads: int = 4,
        fusion_linear_units: int = 1024,
        num_target_layers: int = 0,
        num_post_fusion_layers: int = 0,
        target_positional_encoding: bool = False,
        target_token_dropout: float = 0.0,
        target_ctc_expansion: bool = False,
        expansion_max_repeat: int = 3,
        expansion_blank_prob: float = 0.3,
        blank_id: int = 0,
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
    ):
        super().__init__()
        # Imported here: espnet2.tasks.asr imports the whole encoder registry,
        # and our task module registers this class into it.
        from espnet2.tasks.asr import encoder_choices

        if source_encoder == "oracle_teacher":
            raise ValueError("source_encoder cannot itself be an oracle_teacher")
        source_class = encoder_choices.get_class(source_encoder)
        self.source_encoder = source_class(
            input_size=input_size, **(source_encoder_conf or {})
        )
        # one frame count per utterance, however it is batched (posteriors are stored per utterance)
        install_exact_subsampling_lengths(self.source_encoder)
        size = self.source_encoder.output_size()
        self._output_size = size
        self.vocab_size = vocab_size
        self.mask_id = vocab_size  # an extra embedding row for dropped tokens
        self.blank_id = blank_id
        if not 0.0 <= target_token_dropout < 1.0:
            raise ValueError(f"target_token_dropout must be in [0, 1): {target_token_dropout}")
        if expansion_max_repeat < 1:
            raise ValueError(f"expansion_max_repeat must be >= 1: {expansion_max_repeat}")
        self.target_token_dropout = target_token_dropout
        self.target_ctc_expansion = target_ctc_expansion
        self.expansion_max_repeat = expansion_max_repeat
        self.expansion_blank_prob = expansion_blank_prob

        self.target_embedding = torch.nn.Embedding(vocab_size + 1, size)
        self.target_positional_encoding = None
        if target_positional_encoding:
            self.target_positional_encoding = PositionalEncoding(size, dropout_rate)
            # add positions at weight 1 to the unscaled embedding (see the class docstring)
            self.target_positional_encoding.xscale = 1.0
        self.target_dropout = torch.nn.Dropout(dropout_rate)
        self.target_layers = torch.nn.ModuleList(
            _transformer_layer(size, fusion_attention_heads, fusion_linear_units,
                               dropout_rate, attention_dropout_rate)
            for _ in range(num_target_layers)
        )
        self.fusion_blocks = torch.nn.ModuleList(
            CrossAttentionFusionBlock(size, fusion_attention_heads, fusion_linear_units,
                                      dropout_rate, attention_dropout_rate)
            for _ in range(num_fusion_blocks)
        )
        self.post_fusion_layers = torch.nn.ModuleList(
            _transformer_layer(size, fusion_attention_heads, fusion_linear_units,
                               dropout_rate, attention_dropout_rate)
            for _ in range(num_post_fusion_layers)
        )
        self.after_norm = LayerNorm(size)

    def output_size(self) -> int:
        return self._output_size

    def expand_like_ctc(
        self, text: torch.Tensor, text_lengths: torch.Tensor, deterministic: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Draw, per utterance, a sequence that CTC collapses to the target.

        Args:
            text: (B, L) padded token ids; text_lengths: (B,).
            deterministic: seed each utterance's draw by its token ids (evaluation),
                instead of the global random state (training).

        Returns:
            (B, L2) padded expanded ids (padding = -1) and (B,) their lengths.
        """
        expanded = []
        for row, length in zip(text.tolist(), text_lengths.tolist()):
            tokens = row[:length]
            rng = random
            if deterministic:
                rng = random.Random(zlib.crc32(",".join(map(str, tokens)).encode()))
            sequence = []
            previous = None
            for token in tokens:
                # identical neighbours need a blank between them, or CTC would merge them
                if token == previous or rng.random() < self.expansion_blank_prob:
                    sequence.append(self.blank_id)
                sequence.extend([token] * rng.randint(1, self.expansion_max_repeat))
                previous = token
            if rng.random() < self.expansion_blank_prob:
                sequence.append(self.blank_id)
            expanded.append(sequence)
        lengths = torch.tensor([len(s) for s in expanded], device=text.device)
        out = text.new_full((len(expanded), max(1, int(lengths.max()))), -1)
        for i, sequence in enumerate(expanded):
            out[i, : len(sequence)] = torch.tensor(sequence, device=text.device)
        return out, lengths

    def embed_target(
        self, text: torch.Tensor, text_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Embed the target. text: (B, L) ids, padding -1. Returns (B, L', D), (B, 1, L') mask."""
        if self.target_ctc_expansion:
            # the same kind of input in training and evaluation (fixed draw in evaluation)
            text, text_lengths = self.expand_like_ctc(
                text, text_lengths, deterministic=not self.training
            )
        pad = make_pad_mask(text_lengths, maxlen=text.size(1)).to(text.device)
        ids = text.masked_fill(pad, 0)
        if self.training and self.target_token_dropout > 0:
            dropped = torch.rand(ids.shape, device=ids.device) < self.target_token_dropout
            ids = ids.masked_fill(dropped & ~pad, self.mask_id)
        embedded = self.target_embedding(ids)
        if self.target_positional_encoding is not None:
            embedded = self.target_positional_encoding(embedded)
        else:
            embedded = self.target_dropout(embedded)
        mask = (~pad).unsqueeze(1)
        for layer in self.target_layers:
            embedded, mask = layer(embedded, mask)
        return embedded, mask

    def encode_with_target(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
    ) -> OracleEncoderOutput:
        """Run source encoder and fusion, keeping the intermediate results.

        Args:
            xs_pad: (B, T, F) features; ilens: (B,).
            text: (B, L) target ids (padding -1); text_lengths: (B,).
        """
        source, olens, _ = self.source_encoder(xs_pad, ilens)
        if isinstance(source, tuple):  # intermediate CTC outputs are not used here
            source = source[0]
        target, target_mask = self.embed_target(text, text_lengths)
        fused = source
        attention = []
        for block in self.fusion_blocks:
            fused, weights = block(fused, target, target_mask)
            attention.append(weights)
        if len(self.post_fusion_layers) > 0:
            source_mask = (~make_pad_mask(olens, maxlen=fused.size(1))).unsqueeze(1).to(fused.device)
            for layer in self.post_fusion_layers:
                fused, source_mask = layer(fused, source_mask)
        fused = self.after_norm(fused)
        return OracleEncoderOutput(fused, source, olens, attention)

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: torch.Tensor = None,
        text: Optional[torch.Tensor] = None,
        text_lengths: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Encode features with the target.

        Args:
            xs_pad: (B, T, F); ilens: (B,); text: (B, L); text_lengths: (B,).

        Returns:
            (B, T', D) fused frames, (B,) their lengths, None.
        """
        if text is None or text_lengths is None:
            raise ValueError(MISSING_TARGET)
        output = self.encode_with_target(xs_pad, ilens, text, text_lengths)
        return output.fused, output.lengths, None
