"""The one FLOP counter of the benchmarks: torch.utils.flop_counter on meta tensors, so
nothing is computed and any size is instant."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[..., object], *args: object) -> int:
    """FLOPs of ``fn(*args)``: matmuls and convolutions, forward and any backward it runs
    (elementwise ops are not counted)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn(*args)
    return counter.get_total_flops()


def meta_images(batch: int, height: int, width: int) -> Tensor:
    """A batch of RGB images with a shape and no data."""
    return torch.empty(batch, 3, height, width, device="meta")


def inference_flops(net: Callable[[Tensor], object], height: int, width: int) -> int:
    """FLOPs of ``net`` on one ``height`` x ``width`` image, without autograd (``net`` on the
    meta device)."""
    with torch.no_grad():
        return count_flops(net, meta_images(1, height, width))
