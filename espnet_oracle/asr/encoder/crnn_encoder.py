"""CRNN-style encoder for text-line images given as column sequences."""

from typing import Optional, Sequence, Tuple

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

from espnet_oracle.asr.encoder.masked_batch_norm import MaskedBatchNorm2d

#: name in ESPnet's encoder registry (``encoder: crnn``, ``source_encoder: crnn``)
REGISTRY_NAME = "crnn"


class _ConvUnit(torch.nn.Module):
    """3x3 convolution -> masked batch norm (optional) -> ReLU, zero at padded columns."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not norm)
        self.norm = MaskedBatchNorm2d(out_channels) if norm else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor, relu: bool = True) -> torch.Tensor:
        x = self.conv(x)
        x = self.norm(x, mask) if self.norm is not None else x * mask
        return torch.relu(x) if relu else x


class CRNNEncoder(AbsEncoder):
    """CNN trunk over column-sequence images, height collapsed, then an optional sequence model.

    The input is what ``local/extract_image_features.py`` writes: per frame one
    image column of ``input_size = input_height * C`` values (element
    ``c * input_height + y``). It is reshaped to ``(B, C, input_height, W)``
    images; ``len(channels)`` stages of 3x3 convolutions (``block: vgg``: one
    conv unit per stage, ``block: resnet``: two with a residual connection)
    each end in a 2x max pooling of the height and, for the first
    ``log2(width_subsampling)`` stages, of the width too. The remaining height
    ``input_height / 2**len(channels)`` is folded into the channels and
    projected to ``output_size``; a BiLSTM (``sequence_model: blstm``) or
    transformer layers (``sequence_model: transformer``) may follow.

    Padding invariance: every convolution, normalisation and pooling stage
    zeroes the padded columns (so a convolution at an image's last valid
    column sees the same zeros as a lone image's zero padding), batch norm
    takes its statistics over valid columns only (``MaskedBatchNorm2d``),
    pooling uses floor mode, the BiLSTM runs on packed sequences and the
    transformer masks padded frames. An image padded to a wider batch gives the
    same valid outputs as alone (in evaluation; in training batch statistics
    and dropout depend on the batch as usual).

    Output lengths are exact per image: ``T'_b = floor(W_b / width_subsampling)``,
    independent of the batch (no ESPnet ``embed`` module, so the project's
    frame-count hook is not needed). For CTC, ``T'_b >= 2 L + 1`` for a label
    of L characters needs ``W_b >= width_subsampling * (2 L + 1)``.

    Args:
        input_size: frame dimension, ``input_height * C`` (C = 1 grey, 3 RGB).
        output_size: output dimension D.
        input_height: image height (pixel rows per column).
        channels: output channels of each stage; ``input_height`` must be
            divisible by ``2 ** len(channels)``.
        block: ``vgg`` or ``resnet``.
        width_subsampling: 1, 2, 4, ...: total width reduction (<= 2 ** len(channels)).
        batch_norm: masked batch norm after each convolution.
        sequence_model: ``none``, ``blstm`` or ``transformer``.
        num_sequence_layers: BiLSTM layers or transformer blocks.
        attention_heads, linear_units, attention_dropout_rate: transformer settings.
        dropout_rate: dropout after the projection and inside the sequence model.
    """

    @typechecked
    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        input_height: int = 32,
        channels: Sequence[int] = (64, 128, 256, 256),
        block: str = "vgg",
        width_subsampling: int = 4,
        batch_norm: bool = True,
        sequence_model: str = "blstm",
        num_sequence_layers: int = 1,
        attention_heads: int = 4,
        linear_units: int = 1024,
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
    ):
        super().__init__()
        if input_height < 1 or input_size % input_height != 0:
            raise ValueError(
                f"input_size {input_size} is not a multiple of input_height {input_height} "
                "(frames must be image columns of input_height * C values)"
            )
        stages = len(channels)
        if stages < 1 or input_height % (2 ** stages) != 0:
            raise ValueError(
                f"{stages} stages halve the height {stages} times: input_height {input_height} "
                f"must be divisible by {2 ** stages}"
            )
        if width_subsampling < 1 or width_subsampling & (width_subsampling - 1):
            raise ValueError(f"width_subsampling must be a power of 2: {width_subsampling}")
        width_pools = width_subsampling.bit_length() - 1
        if width_pools > stages:
            raise ValueError(f"width_subsampling {width_subsampling} needs >= {width_pools} stages")
        if block not in ("vgg", "resnet"):
            raise ValueError(f"block must be 'vgg' or 'resnet': {block!r}")
        if sequence_model not in ("none", "blstm", "transformer"):
            raise ValueError(f"sequence_model must be none, blstm or transformer: {sequence_model!r}")
        if sequence_model == "blstm" and output_size % 2:
            raise ValueError(f"a BiLSTM needs an even output_size: {output_size}")

        self.input_height = input_height
        self.in_channels = input_size // input_height
        self.block = block
        self.width_subsampling = width_subsampling
        self._output_size = output_size
        self.sequence_model = sequence_model

        self.units = torch.nn.ModuleList()
        self.shortcuts = torch.nn.ModuleList()
        self.width_pool = []
        previous = self.in_channels
        for i, ch in enumerate(channels):
            stage = torch.nn.ModuleList([_ConvUnit(previous, ch, batch_norm)])
            if block == "resnet":
                stage.append(_ConvUnit(ch, ch, batch_norm))
                self.shortcuts.append(
                    torch.nn.Identity() if previous == ch else torch.nn.Conv2d(previous, ch, 1, bias=False)
                )
            self.units.append(stage)
            self.width_pool.append(2 if i < width_pools else 1)
            previous = ch
        folded = previous * (input_height // 2 ** stages)
        self.projection = torch.nn.Linear(folded, output_size)
        self.dropout = torch.nn.Dropout(dropout_rate)

        self.rnn = None
        self.layers = torch.nn.ModuleList()
        self.pos_enc = None
        self.after_norm = None
        if sequence_model == "blstm":
            self.rnn = torch.nn.LSTM(
                output_size, output_size // 2, num_layers=num_sequence_layers, batch_first=True,
                bidirectional=True, dropout=dropout_rate if num_sequence_layers > 1 else 0.0,
            )
        elif sequence_model == "transformer":
            self.pos_enc = PositionalEncoding(output_size, dropout_rate)
            for _ in range(num_sequence_layers):
                self.layers.append(
                    EncoderLayer(
                        output_size,
                        MultiHeadedAttention(attention_heads, output_size, attention_dropout_rate),
                        PositionwiseFeedForward(output_size, linear_units, dropout_rate),
                        dropout_rate,
                        normalize_before=True,
                        concat_after=False,
                    )
                )
            self.after_norm = LayerNorm(output_size)

    def output_size(self) -> int:
        return self._output_size

    def output_lengths(self, ilens: torch.Tensor) -> torch.Tensor:
        """(B,) frames after the trunk for (B,) input widths: floor(W / width_subsampling)."""
        return torch.div(ilens, self.width_subsampling, rounding_mode="floor")

    @staticmethod
    def _column_mask(lengths: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
        """(B, 1, 1, width) float mask, 1 at the first lengths[b] columns."""
        cols = torch.arange(width, device=lengths.device)
        return (cols[None, :] < lengths[:, None]).to(dtype)[:, None, None, :]

    def trunk(self, xs_pad: torch.Tensor, ilens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """CNN part. xs_pad: (B, W, input_height*C); returns (B, T', D) projected frames and (B,) T'."""
        b, w, _ = xs_pad.shape
        lengths = ilens.to(xs_pad.device).long()
        # (B, W, C*H) -> (B, C, H, W)
        x = xs_pad.view(b, w, self.in_channels, self.input_height).permute(0, 2, 3, 1)
        mask = self._column_mask(lengths, w, x.dtype)
        x = x * mask
        for i, stage in enumerate(self.units):
            if self.block == "vgg":
                x = stage[0](x, mask)
            else:
                y = stage[0](x, mask)
                y = stage[1](y, mask, relu=False)
                x = torch.relu(y + self.shortcuts[i](x) * mask)
            pw = self.width_pool[i]
            x = torch.nn.functional.max_pool2d(x, kernel_size=(2, pw), stride=(2, pw))
            if pw > 1:
                lengths = torch.div(lengths, pw, rounding_mode="floor")
                mask = self._column_mask(lengths, x.size(3), x.dtype)
                x = x * mask
        # (B, C', H', T') -> (B, T', C'*H')
        b, c, h, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * h)
        x = self.dropout(self.projection(x))
        return x, lengths

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: torch.Tensor = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Encode column-sequence images.

        Args:
            xs_pad: (B, W, input_height * C) padded column features.
            ilens: (B,) image widths W_b.
            prev_states: unused.

        Returns:
            (B, T', D) frames, zero beyond each length; (B,) lengths
            ``T'_b = floor(W_b / width_subsampling)``, T' = max_b T'_b; None.
        """
        if xs_pad.size(2) != self.in_channels * self.input_height:
            raise ValueError(
                f"CRNNEncoder expects frames of {self.in_channels * self.input_height} values "
                f"(input_height {self.input_height} x {self.in_channels} channels), got {xs_pad.size(2)}"
            )
        olens_expected = self.output_lengths(ilens.long())
        if bool((olens_expected < 1).any()):
            i = int((olens_expected < 1).nonzero()[0])
            raise ValueError(
                f"batch item {i}: an image {int(ilens[i])} columns wide gives no frame after the "
                f"x{self.width_subsampling} width subsampling; images need >= {self.width_subsampling} columns"
            )
        x, olens = self.trunk(xs_pad, ilens)
        t = int(olens.max())
        x = x[:, :t]  # the batch may be padded wider than its widest image
        if self.rnn is not None:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x, olens.cpu(), batch_first=True, enforce_sorted=False
            )
            out, _ = self.rnn(packed)
            x, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=t)
        elif self.pos_enc is not None:
            x = self.pos_enc(x)
            att_mask = (~make_pad_mask(olens, maxlen=t)).unsqueeze(1).to(x.device)
            for layer in self.layers:
                x, att_mask = layer(x, att_mask)
            x = self.after_norm(x)
        valid = (~make_pad_mask(olens, maxlen=t)).to(x.device).unsqueeze(-1)
        return x * valid.to(x.dtype), olens.to(ilens.device), None


def register() -> None:
    """Add ``encoder: crnn`` to ESPnet's ASR encoder choices (idempotent).

    Call before building a parser: ESPnet reads the choices when it creates
    ``--encoder``. ``OracleTeacherEncoder`` then also builds it as
    ``source_encoder: crnn``.
    """
    from espnet2.tasks.asr import encoder_choices

    encoder_choices.classes.setdefault(REGISTRY_NAME, CRNNEncoder)
