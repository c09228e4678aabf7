"""The FCN loss: per-pixel softmax cross-entropy with the reference's options.

``normalize="sum"`` is the reference (Caffe ``SoftmaxWithLoss`` with ``normalize: false``):
the loss is summed over pixels and divided only by the batch size. Its gradient is that of
the per-pixel mean times the number of pixels, which is why the reference's learning rates
are tiny (1e-10 for FCN-32s): ``lr_sum * pixels ~= lr_mean``, so 1e-10 on ~500x375 images
corresponds to about 2e-5 with ``normalize="mean"``.

Loss sampling (the paper's emulation of patchwise training) keeps each output cell with
probability ``keep_prob``; a cell is a ``cell_size`` square of pixels (the net's output
stride, so one cell is one final-layer score), and dropped cells are simply ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fcn_lightning.errors import ConfigError

NORMALIZE = ("sum", "mean")


def sample_cells(
    target: Tensor, keep_prob: float, cell_size: int, ignore_index: int, generator=None
) -> Tensor:
    """``target`` with each ``cell_size`` square kept with probability ``keep_prob``."""
    batch, height, width = target.shape
    cells = (batch, -(-height // cell_size), -(-width // cell_size))
    keep = torch.rand(cells, generator=generator, device=target.device) < keep_prob
    keep = keep.repeat_interleave(cell_size, 1).repeat_interleave(cell_size, 2)
    return target.masked_fill(~keep[:, :height, :width], ignore_index)


def median_frequency_weights(pixel_counts: Tensor) -> Tensor:
    """Class balancing: weight ``median(freq) / freq`` per class (0 for absent classes)."""
    counts = pixel_counts.double()
    freq = counts / counts.sum()
    present = freq > 0
    weights = torch.zeros_like(freq)
    weights[present] = freq[present].median() / freq[present]
    return weights.float()


def segmentation_loss(
    scores: Tensor,
    target: Tensor,
    *,
    normalize: str = "sum",
    ignore_index: int = 255,
    class_weight: Tensor | None = None,
) -> Tensor:
    if normalize not in NORMALIZE:
        raise ConfigError(f"loss.normalize={normalize!r}: choose one of {list(NORMALIZE)}")
    # Scores in float32 even under mixed precision: a sum over 10^5 pixels in bf16 loses
    # most of its digits.
    summed = F.cross_entropy(
        scores.float(), target.long(), weight=class_weight, ignore_index=ignore_index,
        reduction="sum",
    )  # fmt: skip
    if normalize == "sum":
        return summed / scores.shape[0]
    valid = target != ignore_index
    if class_weight is None:
        denominator = valid.sum()
    else:
        denominator = class_weight.to(scores.device)[target[valid].long()].sum()
    # An image whose pixels are all ignored contributes nothing rather than 0/0.
    return summed / denominator.clamp(min=1)
