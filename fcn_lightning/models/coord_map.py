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

# Layers that keep every cell where it is.
PASS_THROUGH = (
    nn.ReLU,
    nn.Dropout,
    nn.Dropout2d,
    nn.LocalResponseNorm,
    nn.BatchNorm2d,
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
        if isinstance(layer, nn.ConvTranspose2d | nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            k = _square(layer.kernel_size, "kernel", layer)
            s = _square(layer.stride, "stride", layer)
            p = _square(layer.padding, "padding", layer)
            d = _square(getattr(layer, "dilation", 1), "dilation", layer)
            half_extent = Fraction((k - 1) * d, 2)  # centre of the kernel's footprint
            if isinstance(layer, nn.ConvTranspose2d):
                # output cell j gathers input cells i with j = i * s - p + t, 0 <= t < k,
                # so its centre maps back to input position (j + p - half_extent) / s.
                return CoordMap(self.scale / s, self.offset + self.scale * (p - half_extent) / s)
            # output cell j covers input cells j * s - p + [0, (k - 1) * d].
            return CoordMap(self.scale * s, self.offset + self.scale * (half_extent - p))
        raise TypeError(f"coord_map does not know how {type(layer).__name__} moves cells")

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
