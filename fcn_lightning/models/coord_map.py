"""Receptive-field arithmetic: where each cell of a feature map sits in the input image.

Caffe derives the FCN crop offsets from a coordinate map (caffe/python/caffe/coord_map.py);
this is the same idea in PyTorch terms. A map records that cell ``i`` of a blob is centred
on input pixel ``scale * i + offset``. Walking the layers of a network composes these maps,
so crop offsets follow from the layer definitions for any backbone instead of being typed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

# Layers that keep every cell where it is.
PASS_THROUGH = (
    nn.ReLU,
    nn.Dropout,
    nn.Dropout2d,
    nn.LocalResponseNorm,
    nn.BatchNorm2d,
    FrozenBatchNorm2d,
    nn.Identity,
)


def _square(value: int | tuple[int, ...], what: str, layer: nn.Module) -> int:
    """The one value of a square kernel/stride/padding; FCN geometry is the same on both axes."""
    values = (value, value) if isinstance(value, int) else tuple(value)
    if len(set(values)) != 1:
        raise ValueError(f"coord_map needs square {what}, got {values} in {layer}")
    return int(values[0])


@dataclass(frozen=True)
class CoordMap:
    """Cell ``i`` of a feature map is centred on input pixel ``scale * i + offset``."""

    scale: Fraction = Fraction(1)
    offset: Fraction = Fraction(0)

    def then(self, layer: nn.Module) -> CoordMap:
        """The map of ``layer``'s output given that this is the map of its input."""
        if isinstance(layer, PASS_THROUGH):
            return self
        if isinstance(layer, nn.Sequential):
            return self.through(layer)
        if isinstance(layer, nn.ZeroPad2d):
            left, _, top, _ = layer.padding  # only where cells start matters
            return CoordMap(
                self.scale, self.offset - self.scale * _square((left, top), "padding", layer)
            )
        if isinstance(layer, BasicBlock | Bottleneck):
            return self._residual(layer)
        if isinstance(layer, nn.ConvTranspose2d | nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            k = _square(layer.kernel_size, "kernel", layer)
            s = _square(layer.stride, "stride", layer)
            d = _square(getattr(layer, "dilation", 1), "dilation", layer)
            half_extent = Fraction((k - 1) * d, 2)  # centre of the kernel's footprint
            p = _square(layer.padding, "padding", layer)
            if isinstance(layer, nn.ConvTranspose2d):
                return self.transposed(half_extent, s, p)
            # output cell j covers input cells j * s - p + [0, (k - 1) * d].
            return CoordMap(self.scale * s, self.offset + self.scale * (half_extent - p))
        raise TypeError(f"coord_map does not know how {type(layer).__name__} moves cells")

    def transposed(self, half_extent: Fraction, stride: int, padding: int) -> CoordMap:
        """The map after a transposed conv whose kernel footprint is ``2 * half_extent + 1``."""
        # output cell j gathers input cells i with j = i * s - p + t, 0 <= t < k,
        # so its centre maps back to input position (j + p - half_extent) / s.
        return CoordMap(
            self.scale / stride, self.offset + self.scale * (padding - half_extent) / stride
        )

    def _residual(self, block: BasicBlock | Bottleneck) -> CoordMap:
        """A residual block sums two branches, so both must put their cells at the same place
        (torchvision's strided 3x3 and strided 1x1 shortcut both do)."""
        convs = ["conv1", "conv2", "conv3"] if isinstance(block, Bottleneck) else ["conv1", "conv2"]
        main = self.through(getattr(block, name) for name in convs)
        shortcut = self if block.downsample is None else self.then(block.downsample)
        if main != shortcut:
            raise ValueError(f"residual branches disagree ({main} vs {shortcut}) in {block}")
        return main

    def through(self, layers: Iterable[nn.Module]) -> CoordMap:
        """The map after applying ``layers`` in order."""
        coord = self
        for layer in layers:
            coord = coord.then(layer)
        return coord


def crop_offset(source: CoordMap, target: CoordMap) -> int:
    """Offset at which to crop ``source`` so that its cell ``offset + j`` lies on ``target``'s j.

    This is what Caffe's Crop layer needs: both maps must have the same scale and the
    source must start at or before the target, by a whole number of cells.
    """
    if source.scale != target.scale:
        raise ValueError(f"cannot align maps of different strides: {source} vs {target}")
    cells = (target.offset - source.offset) / source.scale
    if cells.denominator != 1 or cells < 0:
        raise ValueError(
            f"maps are not aligned by a whole, non-negative number of cells "
            f"({cells}): {source} vs {target}"
        )
    return int(cells)
