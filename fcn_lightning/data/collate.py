"""Batching (image, label) pairs of possibly different sizes.

The paper trains on whole images of varying size at batch 1. For larger batches either
crops make every pair the same size (`stack`), or `pad` pads each pair to the largest
height and width in the batch: labels with `ignore_index`, so padding is never scored or
learned, images with 0, the mean colour after normalisation. Padding goes at the bottom
and right, so pixel (y, x) of the batch is pixel (y, x) of its image. A label of K >= 2
heads (K x H x W) batches to B x K x H x W, padded alike in every head.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from fcn_lightning.errors import ConfigError

COLLATES = ("stack", "pad")


def new_batch_tensor(like: Tensor, shape: Sequence[int], fill: float | int | None = None) -> Tensor:
    """An uninitialised (or `fill`ed) tensor for a batch; in shared memory inside a worker.

    A worker hands its batch to the main process through shared memory. Allocating it
    there directly, as torch's default_collate does, saves copying every batch into it.
    """
    if get_worker_info() is None:
        out = like.new_empty(tuple(shape))
    else:
        storage = torch.UntypedStorage._new_shared(math.prod(shape) * like.element_size())
        out = like.new_empty(0).set_(storage, 0, tuple(shape))
    return out if fill is None else out.fill_(fill)


def stack_collate(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Stack equal-size pairs into `(B x C x H x W, B x H x W)` (labels B x K x H x W)."""
    sizes = {tuple(image.shape[-2:]) for image, _ in batch}
    if len(sizes) > 1:
        raise ConfigError(
            f"a batch holds images of sizes {sorted(sizes)}: set data.collate=pad, or "
            "data.crop_size, or data.batch_size=1"
        )
    images, labels = zip(*batch, strict=True)
    out_images = new_batch_tensor(images[0], (len(batch), *images[0].shape))
    out_labels = new_batch_tensor(labels[0], (len(batch), *labels[0].shape))
    return torch.stack(images, out=out_images), torch.stack(labels, out=out_labels)


def pad_collate(
    batch: Sequence[tuple[Tensor, Tensor]], *, ignore_index: int = 255
) -> tuple[Tensor, Tensor]:
    """Pad pairs to the batch's largest height and width, then stack."""
    height = max(image.shape[-2] for image, _ in batch)
    width = max(image.shape[-1] for image, _ in batch)
    first_image, first_label = batch[0]
    images = new_batch_tensor(first_image, (len(batch), first_image.shape[0], height, width), 0)
    label_shape = (len(batch), *first_label.shape[:-2], height, width)
    labels = new_batch_tensor(first_label, label_shape, ignore_index)
    for i, (image, label) in enumerate(batch):
        h, w = image.shape[-2:]
        images[i, :, :h, :w] = image
        labels[i, ..., :h, :w] = label
    return images, labels


def build_collate(kind: str, *, ignore_index: int = 255) -> Callable:
    if kind == "stack":
        return stack_collate
    if kind == "pad":
        return partial(pad_collate, ignore_index=ignore_index)
    raise ConfigError(f"data.collate={kind!r}: choose one of {list(COLLATES)}")
