"""A picture of what the network was fed, for prediction and sample grids.

A batch holds `data.input`'s streams normalised (fcn_lightning.data.inputs); a person
wants to see an RGB image. Inputs with colour show the colour (the first three channels,
un-normalised with `data.normalization`); `hha` shows the HHA image itself (its three
channels as red, green, blue, as the PNG stores them); `depth` shows grey, near dark and
far light, stretched over each image's own depth range.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fcn_lightning.data.inputs import input_channels, input_streams
from fcn_lightning.data.nyud_readers import HHA_MEAN
from fcn_lightning.errors import ConfigError
from fcn_lightning.normalization import get_input_norm

COLOUR_FIRST = ("rgb", "color", "color_depth", "color_hha")


def display_rgb(images: Tensor, input_name: str, normalization: str) -> Tensor:
    """Normalised `[B x] C x H x W` of input `input_name` -> RGB uint8 `[B x] 3 x H x W`."""
    input_streams(input_name)  # an unknown input: one line naming data.input
    channels = input_channels(input_name)
    if images.ndim < 3 or images.shape[-3] != channels:
        raise ConfigError(
            f"data.input={input_name!r} has {channels} channels but the images are "
            f"{tuple(images.shape)}: show them with the data.input they were made with"
        )
    x = images.detach().float().cpu()
    if input_name in COLOUR_FIRST:
        return get_input_norm(normalization).invert(x[..., :3, :, :])
    if input_name == "hha":
        mean = torch.tensor(HHA_MEAN).view(3, 1, 1)
        return (x + mean).round().clamp(0, 255).to(torch.uint8)
    return _depth_grey(x)


def _depth_grey(depth: Tensor) -> Tensor:
    """Log depth `[B x] 1 x H x W` -> grey uint8 `[B x] 3 x H x W`, per image min..max."""
    flat = depth.flatten(-3)
    low = flat.min(-1).values[..., None, None, None]
    high = flat.max(-1).values[..., None, None, None]
    span = (high - low).clamp_min(1e-6)
    grey = ((depth - low) / span * 255).round().clamp(0, 255).to(torch.uint8)
    return grey.expand(*depth.shape[:-3], 3, *depth.shape[-2:]).contiguous()
