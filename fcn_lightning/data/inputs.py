"""What a dataset feeds the network: its input streams and their channels.

``data.input`` names it; the model builds one backbone per stream (``model.input`` follows
``data.input``). The tensor a batch holds is every stream's channels concatenated in this
order, already normalised as the reference's data layer does it (docs/data.md):

    rgb          one stream of 3 (colour; data.normalization: caffe BGR - mean | torchvision)
    color        NYUDv2 colour, 3 (caffe: BGR - (116.190, 97.203, 92.318))
    hha          NYUDv2 HHA, 3 (HHA - (132.431, 94.076, 118.477), no channel swap)
    depth        NYUDv2 depth, 1 (log(depth) - 7.844)
    color_depth  early fusion: one stream of 4 (colour, then log depth)
    color_hha    late fusion: two streams of 3 (colour, then HHA), scores summed 0.5 / 0.5
"""

from __future__ import annotations

from dataclasses import dataclass

from fcn_lightning.errors import ConfigError


@dataclass(frozen=True)
class Stream:
    name: str
    channels: int


INPUTS: dict[str, tuple[Stream, ...]] = {
    "rgb": (Stream("rgb", 3),),
    "color": (Stream("color", 3),),
    "hha": (Stream("hha", 3),),
    "depth": (Stream("depth", 1),),
    "color_depth": (Stream("color_depth", 4),),
    "color_hha": (Stream("color", 3), Stream("hha", 3)),
}


def input_streams(name: str, key: str = "data.input") -> tuple[Stream, ...]:
    """The streams of input ``name``; a ConfigError naming ``key`` for an unknown one."""
    try:
        return INPUTS[name]
    except KeyError:
        raise ConfigError(f"{key}={name!r}: choose one of {list(INPUTS)}") from None


def input_channels(name: str) -> int:
    """Channels of the batch tensor for input ``name`` (all streams together)."""
    return sum(stream.channels for stream in input_streams(name))
