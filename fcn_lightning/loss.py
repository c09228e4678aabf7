"""The FCN loss: per-pixel softmax cross-entropy with the reference's options.

``normalize="sum"`` is the reference (Caffe ``SoftmaxWithLoss`` with ``normalize: false``):
the loss is summed over pixels and divided only by the batch size. Its gradient is that of
the per-pixel mean times the number of pixels, which is why the reference's learning rates
are tiny (1e-10 for FCN-32s): ``lr_sum * pixels ~= lr_mean``, so 1e-10 on ~500x375 images
corresponds to about 2e-5 with ``normalize="mean"``.

Loss sampling (the paper's emulation of patchwise training) keeps each output cell with
probability ``keep_prob``; a cell is a ``cell_size`` square of pixels (the net's output
stride, so one cell is one final-layer score), and dropped cells are simply ignored.

Several heads (SIFT Flow's semantic and geometric labels) sum their losses with weight 1
each, as the reference's two ``SoftmaxWithLoss`` layers do; loss sampling drops the same
cells in every head's labels (the cells are the net's, not a head's).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fcn_lightning.errors import ConfigError

NORMALIZE = ("sum", "mean")


def sample_cells(
    target: Tensor, keep_prob: float, cell_size: int, ignore_index: int, generator=None
) -> Tensor:
    """``target`` (``B x H x W``, or ``B x K x H x W`` for K heads) with each ``cell_size``
    square kept with probability ``keep_prob``, the same squares in all K planes."""
    batch, height, width = target.shape[0], *target.shape[-2:]
    cells = (batch, -(-height // cell_size), -(-width // cell_size))
    keep = torch.rand(cells, generator=generator, device=target.device) < keep_prob
    keep = keep.repeat_interleave(cell_size, 1).repeat_interleave(cell_size, 2)
    keep = keep[:, :height, :width]
    if target.dim() == 4:
        keep = keep[:, None]
    return target.masked_fill(~keep, ignore_index)


def median_frequency_weights(pixel_counts: Tensor) -> Tensor:
    """Class balancing: weight ``median(freq) / freq`` per class (0 for absent classes)."""
    counts = pixel_counts.double()
    freq = counts / counts.sum()
    present = freq > 0
    weights = torch.zeros_like(freq)
    weights[present] = freq[present].median() / freq[present]
    return weights.float()


def loss_normaliser(
    target: Tensor, *, normalize: str, ignore_index: int = 255, class_weight: Tensor | None = None
) -> Tensor | int:
    """What `segmentation_loss` divides the summed cross-entropy of ``target`` by: the
    images (normalize=sum) or the valid pixels, class-weighted if the loss is (before the
    clamp to 1 that keeps an all-ignored batch at 0)."""
    if normalize == "sum":
        return target.shape[0]
    valid = target != ignore_index
    if class_weight is None:
        return valid.sum()
    return class_weight.to(target.device)[target[valid].long()].sum()


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
    denominator = loss_normaliser(
        target, normalize=normalize, ignore_index=ignore_index, class_weight=class_weight
    )
    # An image whose pixels are all ignored contributes nothing rather than 0/0.
    assert isinstance(denominator, Tensor)
    return summed / denominator.clamp(min=1)


def heads_loss(
    scores: Sequence[Tensor],
    targets: Sequence[Tensor],
    *,
    normalize: str = "sum",
    ignore_index: int = 255,
    class_weight: Tensor | None = None,
) -> list[Tensor]:
    """Each head's `segmentation_loss` on its own label plane (their sum is the loss);
    ``class_weight`` weighs the first head's classes (FCNModule refuses it with several)."""
    losses = []
    for index, (head_scores, target) in enumerate(zip(scores, targets, strict=True)):
        weight = class_weight if index == 0 else None
        losses.append(
            segmentation_loss(
                head_scores,
                target,
                normalize=normalize,
                ignore_index=ignore_index,
                class_weight=weight,
            )
        )
    return losses
