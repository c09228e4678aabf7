"""Reference networks with random weights, for tests that compare against them."""

from __future__ import annotations

import torch
import torchvision
from torch import nn


def random_resnet50(seed: int = 0) -> nn.Module:
    """torchvision's ResNet-50 with random weights and random BatchNorm affine terms and
    statistics (the defaults, 1 and 0, would hide a normalisation applied wrongly)."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet50()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.1, 0.1)
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return net
