"""An input stream of ``c`` channels on a 3-channel backbone: its first convolution widened.

The reference's RGB-D net (nyud-fcn32s-color-d, ``conv1_1_bgrd``) starts the 4-channel
conv1_1 from ImageNet's 3-channel one: the first three input channels are its weights, the
fourth is their mean over the three input channels, the bias is copied. `widen_weight`
applies that rule to any ``c``: channels past the third get the mean; a 1-channel stream
(``depth``) gets the mean alone, which is our choice (the reference has no depth-only net).
The colour channels keep the weights' order (caffe BGR, torchvision RGB): the data side
delivers colour in that order, so nothing is swapped here.

Every backbone names its first convolution (``FIRST_CONV``: VGG16's ``features.0``,
AlexNet's and ResNet's ``conv1``); the rule is the same for all of them, pretrained or not.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def widen_weight(weight: Tensor, channels: int) -> Tensor:
    """``O x 3 x kh x kw`` -> ``O x channels x kh x kw`` by the RGB-D rule above."""
    if weight.shape[1] != 3:
        raise ValueError(f"expected a 3-channel first convolution, got {tuple(weight.shape)}")
    mean = weight.mean(dim=1, keepdim=True)
    if channels < 3:
        return mean.expand(-1, channels, -1, -1).clone()
    return torch.cat([weight, mean.expand(-1, channels - 3, -1, -1)], dim=1)


def widen_first_conv(backbone: nn.Module, channels: int) -> None:
    """Make ``backbone``'s first convolution (``FIRST_CONV``) take ``channels`` inputs, in
    place, its weights widened from the present 3-channel ones."""
    if channels == 3:
        return
    name = backbone.FIRST_CONV
    conv = backbone.get_submodule(name)
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise ValueError(f"{name} of {type(backbone).__name__} is not a plain convolution")
    wide = nn.Conv2d(
        channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode,
    )  # fmt: skip
    with torch.no_grad():
        wide.weight.copy_(widen_weight(conv.weight, channels))
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)
    wide.to(conv.weight.device, conv.weight.dtype)
    backbone.set_submodule(name, wide)
