"""AlexNet as an FCN backbone: FCN-AlexNet (docs/paper.md section 2), FCN-32s only.

Two shapes of AlexNet, chosen by the weights they load (``model.weights``):

- ``caffe`` (the reference's): CaffeNet's layers. conv1 96 11x11/4, pool, LRN, conv2 256
  5x5 in 2 groups, pool, LRN, conv3 384, conv4 384 and conv5 256 in 2 groups, pool5; fc6 a
  6x6 conv to 4096, fc7 1x1. Weights: Caffe's ImageNet AlexNet (``bvlc_alexnet``, which the
  reference starts from; CaffeNet has the same shapes) converted to a state dict with the
  reference's layer names (``conv1.weight`` ... ``fc7.bias``; fc6/fc7 as convolutions or as
  InnerProduct matrices). No converted file is published: ``python -m
  fcn_lightning.convert_caffe bvlc_alexnet.caffemodel`` writes it to the cache path
  (or give any such file as ``model.weights_path``). BGR, Caffe mean pixel.
- ``torchvision``: torchvision's AlexNet (64-192-384-256-256, no LRN, no groups) and its
  ``AlexNet_Weights.IMAGENET1K_V1``, fetched through torchvision's weights API. RGB,
  ImageNet mean/std. Dropout sits after fc6 and fc7 as in the reference, not before.

Layer names are the reference's in both. Geometry as VGG16's: ``caffe`` pads conv1 by 100,
fc6 not at all, pools round up; ``aligned`` pads every layer "same" (the head pads the input
to a multiple of 32). The head derives the reference's ``upscore`` kernel 63 and its crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torchvision
from torch import Tensor, nn

from fcn_lightning.errors import WeightsError
from fcn_lightning.models.backbones.vgg import scaled
from fcn_lightning.models.coord_map import CoordMap
from fcn_lightning.models.weights import (
    PretrainedWeights,
    get_pretrained,
    load_matching,
    torchvision_weights,
)

FC_CHANNELS = 4096
CAFFE_CHANNELS = (96, 256, 384, 384, 256)
CAFFE_GROUPS = (1, 2, 1, 2, 2)
TORCHVISION_CHANNELS = (64, 192, 384, 256, 256)
# torchvision's `alexnet().features` / `.classifier` indices of each reference layer.
TORCHVISION_NAMES = {
    "features.0": "conv1", "features.3": "conv2", "features.6": "conv3",
    "features.8": "conv4", "features.10": "conv5", "classifier.1": "fc6", "classifier.4": "fc7",
}  # fmt: skip
WEIGHTS = {
    "torchvision": torchvision_weights(torchvision.models.AlexNet_Weights.IMAGENET1K_V1, "AlexNet"),
    "caffe": PretrainedWeights(
        name="caffe",
        url=None,
        file_name="alexnet_from_caffe.pth",
        input_norm="caffe",
        model="AlexNet (Caffe)",
    ),
}


class AlexNetBackbone(nn.Module):
    """The ``fc7`` tap of a (width-scaled) AlexNet, shaped for ``weights``."""

    ROLES: ClassVar[dict[str, str]] = {"fc7": "fc7"}
    GEOMETRIES = ("caffe", "aligned")
    FIRST_CONV = "conv1"

    @staticmethod
    def weights_for(weights: str) -> PretrainedWeights:
        get_pretrained(weights)  # the one error for an unknown model.weights
        return WEIGHTS[weights]

    def __init__(
        self,
        *,
        taps: Sequence[str] = ("fc7",),
        width: float = 1.0,
        geometry: str = "caffe",
        dropout: float = 0.5,
        weights: str = "caffe",
    ) -> None:
        super().__init__()
        if set(taps) != {"fc7"}:
            raise ValueError(f"AlexNet has only the fc7 tap, not {sorted(taps)}")
        self.taps = ("fc7",)
        caffe, aligned = weights == "caffe", geometry == "aligned"
        if caffe:  # grouped convolutions need an even number of channels
            channels = [2 * scaled(c // 2, width) for c in CAFFE_CHANNELS]
            groups = CAFFE_GROUPS
        else:
            channels, groups = [scaled(c, width) for c in TORCHVISION_CHANNELS], (1,) * 5
        fc = scaled(FC_CHANNELS, width)

        def pool() -> nn.MaxPool2d:
            return nn.MaxPool2d(3, 2, padding=1) if aligned else nn.MaxPool2d(3, 2, ceil_mode=True)

        def block(index: int, conv: nn.Conv2d, pooled: bool) -> list[tuple[str, nn.Module]]:
            layers = [(f"conv{index}", conv), (f"relu{index}", nn.ReLU(inplace=True))]
            if pooled:
                layers.append((f"pool{index}", pool()))
            if pooled and caffe and index < 5:  # CaffeNet: LRN after pool1 and pool2
                layers.append((f"norm{index}", nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)))
            return layers

        c1, c2, c3, c4, c5 = channels
        _, g2, g3, g4, g5 = groups
        layers = [
            *block(1, nn.Conv2d(3, c1, 11, stride=4, padding=5 if aligned else 100), True),
            *block(2, nn.Conv2d(c1, c2, 5, padding=2, groups=g2), True),
            *block(3, nn.Conv2d(c2, c3, 3, padding=1, groups=g3), False),
            *block(4, nn.Conv2d(c3, c4, 3, padding=1, groups=g4), False),
            *block(5, nn.Conv2d(c4, c5, 3, padding=1, groups=g5), True),
            # An even kernel has no centred "same" padding: the extra pixel goes at the
            # bottom/right, and the coordinate maps account for the half-cell shift.
            *([("pad6", nn.ZeroPad2d((2, 3, 2, 3)))] if aligned else []),
            ("fc6", nn.Conv2d(c5, fc, 6)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(dropout)),
            ("fc7", nn.Conv2d(fc, fc, 1)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
        ]
        for name, layer in layers:
            self.add_module(name, layer)
        self.channels = {"fc7": fc}
        for module in self.modules():  # torchvision's default init, for training from scratch
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def coord_maps(self) -> dict[str, CoordMap]:
        return {"fc7": CoordMap().through(self.children())}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        for layer in self.children():
            x = layer(x)
        return {"fc7": x}

    def load_pretrained(self, state_dict: dict[str, Tensor], *, source: str) -> None:
        """torchvision-layout weights are renamed; fc matrices become convolutions."""
        renamed = {}
        for key, value in state_dict.items():
            layer, _, param = key.rpartition(".")
            renamed[f"{TORCHVISION_NAMES.get(layer, layer)}.{param}"] = value
        if "conv1.weight" not in renamed:
            raise WeightsError(
                f"{source} is not an AlexNet state dict (no conv1.weight or features.0.weight);"
                " check model.weights_path"
            )
        for fc in ("fc6", "fc7"):
            weight, own = renamed.get(f"{fc}.weight"), getattr(self, fc).weight
            if weight is not None and weight.dim() == 2 and weight.numel() == own.numel():
                renamed[f"{fc}.weight"] = weight.reshape(own.shape)
        load_matching(self, renamed, source=source)
