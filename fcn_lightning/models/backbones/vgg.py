"""VGG16 as an FCN backbone: torchvision's layer definition with the classifier made
convolutional (fc6 -> 7x7 conv, fc7 -> 1x1 conv; fc8 is dropped)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

from fcn_lightning.models.coord_map import CoordMap
from fcn_lightning.models.weights import PretrainedWeights, get_pretrained, load_vgg16_into

# Index of each pooling layer in torchvision's `vgg16().features`, so that pretrained
# torchvision state dicts load into `features` with their keys unchanged.
POOL_INDEX = {"pool1": 4, "pool2": 9, "pool3": 16, "pool4": 23, "pool5": 30}
# The reference's layer names, in the order of `features`' convolutions.
CONV_NAMES = (
    "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
    "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3",
)  # fmt: skip
FC_CHANNELS = 4096


def scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class VGG16Backbone(nn.Module):
    """Feature taps ``pool3``, ``pool4``, ``pool5`` and ``fc7`` of a (width-scaled) VGG16.

    ``geometry="caffe"``: conv1_1 pads by 100 and fc6 not at all, as in the reference, so any
    input of at least 1 px reaches fc7. ``geometry="aligned"``: conv1_1 pads by 1 and fc6 by 3
    ("same" convolutions); the FCN head then pads inputs to a multiple of 32 instead.
    Pooling rounds output sizes up, like Caffe. Dropout is element-wise, like Caffe's.
    Both weight sources (``weights``) fit the same layers.
    """

    ROLES: ClassVar[dict[str, str]] = {
        "fc7": "fc7",
        "pool5": "pool5",
        "pool4": "pool4",
        "pool3": "pool3",
    }
    GEOMETRIES = ("caffe", "aligned")
    FIRST_CONV = "features.0"

    @staticmethod
    def weights_for(weights: str) -> PretrainedWeights:
        return get_pretrained(weights)

    def __init__(
        self,
        *,
        taps: Sequence[str] = ("fc7",),
        width: float = 1.0,
        geometry: str = "caffe",
        dropout: float = 0.5,
        weights: str = "torchvision",
    ) -> None:
        super().__init__()
        order = ("pool3", "pool4", "pool5", "fc7")
        unknown = set(taps) - set(order)
        if unknown:
            raise ValueError(f"VGG16 has no tap(s) {sorted(unknown)}; available: {order}")
        self.taps = tuple(t for t in order if t in taps)
        self.with_fc = "fc7" in self.taps
        deepest_pool = "pool5" if self.with_fc else self.taps[-1]

        cfg = [c if c == "M" else scaled(c, width) for c in cfgs["D"]]
        features = make_layers(cfg, batch_norm=False)
        # Layers past the deepest tap would only hold unused parameters.
        self.features = features[: POOL_INDEX[deepest_pool] + 1]
        self.features[0].padding = (100, 100) if geometry == "caffe" else (1, 1)
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                layer.ceil_mode = True

        self.channels = {
            "pool3": scaled(256, width),
            "pool4": scaled(512, width),
            "pool5": scaled(512, width),
        }
        if self.with_fc:
            fc = scaled(FC_CHANNELS, width)
            self.fc6 = nn.Conv2d(
                self.channels["pool5"], fc, 7, padding=0 if geometry == "caffe" else 3
            )
            self.relu6 = nn.ReLU(inplace=True)
            self.drop6 = nn.Dropout(dropout)
            self.fc7 = nn.Conv2d(fc, fc, 1)
            self.relu7 = nn.ReLU(inplace=True)
            self.drop7 = nn.Dropout(dropout)
            self.channels["fc7"] = fc
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's VGG init (He, fan-out), so the net also trains from scratch (the CPU
        # quick start); pretrained weights overwrite it.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def load_pretrained(self, state_dict: dict[str, Tensor], *, source: str) -> None:
        """torchvision-layout VGG16 weights (fc6/fc7 reshaped into convolutions)."""
        load_vgg16_into(self, state_dict, source=source)

    def _fc_layers(self) -> list[nn.Module]:
        return [self.fc6, self.relu6, self.drop6, self.fc7, self.relu7, self.drop7]

    def coord_maps(self) -> dict[str, CoordMap]:
        """Where the cells of each tap sit in the input image."""
        maps = {
            name: CoordMap().through(self.features[: POOL_INDEX[name] + 1])
            for name in self.taps
            if name != "fc7"
        }
        if self.with_fc:
            maps["fc7"] = CoordMap().through([*self.features, *self._fc_layers()])
        return maps

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs = {}
        pool_at = {index: name for name, index in POOL_INDEX.items()}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if pool_at.get(index) in self.taps:
                outputs[pool_at[index]] = x
        if self.with_fc:
            for layer in self._fc_layers():
                x = layer(x)
            outputs["fc7"] = x
        return outputs
