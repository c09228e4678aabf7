"""Backbones for the FCN head: one file each (`vgg`, `alexnet`, `resnet`), one contract.

The head (`fcn_lightning.models.fcn.FCN`) relies on exactly what `Backbone` names, so a
new network joins by meeting it: no change to the head, and the crops and upsampling
kernels follow from its `coord_maps` by the same receptive-field code.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from torch import Tensor

from fcn_lightning.models.coord_map import CoordMap


@runtime_checkable
class Backbone(Protocol):
    """What the FCN head asks of a backbone.

    ``ROLES`` maps the variants' tap names (``fc7``, ``pool5``, ``pool4``, ``pool3``) to
    this network's own layers; ``channels`` gives each of its taps' output channels;
    ``coord_maps()`` each tap's position and scale relative to the input (Caffe's
    coord_map); ``forward`` returns every requested tap's output by its own name.
    ``FIRST_CONV`` names the first convolution (a 3-channel one when built): a stream of
    other channels widens it (`fcn_lightning.models.streams`), and the head reads a stream's
    input channels from it.
    """

    ROLES: ClassVar[dict[str, str]]
    FIRST_CONV: ClassVar[str]
    GEOMETRIES: ClassVar[tuple[str, ...]]
    channels: dict[str, int]

    def coord_maps(self) -> dict[str, CoordMap]: ...

    def __call__(self, x: Tensor) -> dict[str, Tensor]: ...
