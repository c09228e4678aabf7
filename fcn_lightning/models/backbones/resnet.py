"""ResNet-50/101 as FCN backbones: torchvision's layers with taps after ``layer2``,
``layer3`` and ``layer4`` (strides 8, 16, 32), or dilated (output stride 8).

The variants' taps map to the stages: ``fc7`` -> ``layer4``, ``pool4`` -> ``layer3``,
``pool3`` -> ``layer2``; FCN-16s fuses layer3, FCN-8s layer3 and layer2, upsampling x2
between them as on VGG16. ``dilated=True`` replaces the strides of layer3 and layer4 by
dilation (torchvision's ``replace_stride_with_dilation=[False, True, True]``, the "dilated
FCN" of later work): all three taps are then at stride 8, skips are summed at that one
resolution without upsampling, and the final upsampling is x8.

BatchNorm is frozen by default (torchvision's ``FrozenBatchNorm2d``: ImageNet statistics
and affine terms as constants), as detection models do: the reference trains at batch 1,
where batch statistics are noise. A net built without pretrained weights would thus have
identity normalisation, so ``batch_norm="train"`` (ordinary ``BatchNorm2d``, which learns
and tracks statistics) is there for training from scratch or with large batches.

ResNet convolutions are padded "same" already, so there is no pad-100 geometry: only
``aligned`` (the head pads inputs to a multiple of the output stride).
Weights: torchvision's ``IMAGENET1K_V2`` through its weights API (RGB, ImageNet mean/std).
ResNets have no fc layers, so ``dropout`` has nothing to act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights
from torchvision.models.resnet import Bottleneck, conv1x1
from torchvision.ops import FrozenBatchNorm2d

from fcn_lightning.errors import ConfigError
from fcn_lightning.models.backbones.vgg import scaled
from fcn_lightning.models.coord_map import CoordMap
from fcn_lightning.models.weights import (
    PretrainedWeights,
    get_pretrained,
    load_matching,
    torchvision_weights,
)

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
PLANES = (64, 128, 256, 512)
STAGES = ("layer1", "layer2", "layer3", "layer4")
TORCHVISION_WEIGHTS = {50: ResNet50_Weights.IMAGENET1K_V2, 101: ResNet101_Weights.IMAGENET1K_V2}


NORMS = {"frozen": FrozenBatchNorm2d, "train": nn.BatchNorm2d}


def make_stage(
    inplanes: int,
    planes: int,
    blocks: int,
    *,
    stride: int,
    dilation: int,
    first_dilation: int,
    norm: type[nn.Module] = FrozenBatchNorm2d,
) -> nn.Sequential:
    """torchvision's ``ResNet._make_layer`` for bottlenecks, with ``norm`` as BatchNorm."""
    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(
            conv1x1(inplanes, planes * Bottleneck.expansion, stride),
            norm(planes * Bottleneck.expansion),
        )
    layers = [
        Bottleneck(
            inplanes, planes, stride, downsample, dilation=first_dilation, norm_layer=norm,
        )
    ]  # fmt: skip
    layers += [
        Bottleneck(planes * Bottleneck.expansion, planes, dilation=dilation, norm_layer=norm)
        for _ in range(1, blocks)
    ]  # fmt: skip
    return nn.Sequential(*layers)


class ResNetBackbone(nn.Module):
    """Taps ``layer2``, ``layer3``, ``layer4`` of a (width-scaled) torchvision ResNet."""

    ROLES: ClassVar[dict[str, str]] = {"fc7": "layer4", "pool4": "layer3", "pool3": "layer2"}
    GEOMETRIES = ("aligned",)
    FIRST_CONV = "conv1"
    BATCH_NORMS = tuple(NORMS)

    @staticmethod
    def weights_for(weights: str, *, depth: int = 50, dilated: bool = False) -> PretrainedWeights:
        get_pretrained(weights)  # the one error for an unknown model.weights
        if weights != "torchvision":
            raise ConfigError(
                f"model.weights={weights}: ResNet-{depth} has only torchvision weights; set "
                "model.weights=torchvision"
            )
        return torchvision_weights(TORCHVISION_WEIGHTS[depth], f"ResNet-{depth}")

    def __init__(
        self,
        *,
        depth: int = 50,
        dilated: bool = False,
        taps: Sequence[str] = ("layer4",),
        width: float = 1.0,
        geometry: str = "aligned",
        dropout: float = 0.0,
        weights: str = "torchvision",
        batch_norm: str = "frozen",
    ) -> None:
        super().__init__()
        norm = NORMS[batch_norm]
        unknown = set(taps) - set(STAGES)
        if unknown:
            raise ValueError(f"ResNet has no tap(s) {sorted(unknown)}; available: {STAGES}")
        self.taps = tuple(t for t in STAGES if t in taps)
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        self.channels: dict[str, int] = {}
        self.stages: list[str] = []
        inplanes, dilation = stem, 1
        for index, (name, planes, blocks) in enumerate(
            zip(STAGES, PLANES, BLOCKS[depth], strict=True)
        ):
            if index > STAGES.index(self.taps[-1]):
                break  # layers past the deepest tap would only hold unused parameters
            stride, first_dilation = (1 if index == 0 else 2), dilation
            if dilated and index >= 2:
                dilation, stride = dilation * stride, 1
            planes = scaled(planes, width)
            self.add_module(
                name,
                make_stage(
                    inplanes, planes, blocks,
                    stride=stride, dilation=dilation, first_dilation=first_dilation, norm=norm,
                ),
            )  # fmt: skip
            self.stages.append(name)
            inplanes = self.channels[name] = planes * Bottleneck.expansion
        for module in self.modules():  # torchvision's init, for training from scratch
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _stem(self) -> list[nn.Module]:
        return [self.conv1, self.bn1, self.relu, self.maxpool]

    def coord_maps(self) -> dict[str, CoordMap]:
        maps, coord = {}, CoordMap().through(self._stem())
        for name in self.stages:
            coord = coord.then(getattr(self, name))
            if name in self.taps:
                maps[name] = coord
        return maps

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        for layer in self._stem():
            x = layer(x)
        outputs = {}
        for name in self.stages:
            x = getattr(self, name)(x)
            if name in self.taps:
                outputs[name] = x
        return outputs

    def load_pretrained(self, state_dict: dict[str, Tensor], *, source: str) -> None:
        """torchvision-layout ResNet weights; the ImageNet classifier (``fc``) is dropped."""
        load_matching(self, state_dict, source=source)
