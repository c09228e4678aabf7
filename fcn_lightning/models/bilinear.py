"""Bilinear initialisation of upsampling (transposed convolution) kernels."""

from __future__ import annotations

import torch
from torch import Tensor


def bilinear_kernel(size: int) -> Tensor:
    """The ``size x size`` kernel that makes a transposed conv of stride ``(size + 1) // 2``
    interpolate bilinearly (reference surgery.upsample_filt)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(taps, taps).float()


def bilinear_weight(channels: int, size: int) -> Tensor:
    """``channels x channels x size x size`` weight: bilinear on the class diagonal, zero
    elsewhere, so each class is upsampled on its own and classes never mix."""
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = bilinear_kernel(size)
    return weight
