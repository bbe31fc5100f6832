"""Batch normalisation over the valid columns of padded image batches."""

import torch


class MaskedBatchNorm2d(torch.nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics ignore padded columns.

    Images of different widths are zero-padded to the batch's widest; plain batch
    norm would average the padding into its statistics, so an image's features
    would depend on how much padding its batch has. Here the mean and variance
    are taken over the valid positions only (batch, height and the columns the
    mask marks), the running statistics are updated from those, and the output
    is zero at padded columns. In evaluation the running statistics are used, as
    in ``BatchNorm2d``. Parameters and buffers have ``BatchNorm2d``'s names.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Normalise ``x``.

        Args:
            x: (B, C, H, W) features, padding columns included.
            mask: (B, 1, 1, W) float, 1 at valid columns, 0 at padding.

        Returns:
            (B, C, H, W), zero at padded columns.
        """
        if self.training and self.track_running_stats:
            count = mask.sum() * x.size(2)
            if count < 2:
                raise ValueError("MaskedBatchNorm2d needs at least 2 valid positions in training")
            x = x * mask
            mean = x.sum(dim=(0, 2, 3)) / count
            # E[x^2] - E[x]^2 over the valid positions (fewer full-size passes than centring first)
            var = ((x * x).sum(dim=(0, 2, 3)) / count - mean * mean).clamp(min=0.0)
            with torch.no_grad():
                self.num_batches_tracked += 1
                # momentum None: cumulative average, as in BatchNorm2d
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * count / (count - 1), alpha=m)
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            shift = self.bias - mean * scale * self.weight
            scale = scale * self.weight
        else:
            shift = -mean * scale
        out = torch.addcmul(shift[None, :, None, None], x, scale[None, :, None, None])
        return out * mask
