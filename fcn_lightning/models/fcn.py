"""The FCN head: score layers, skips, crops and upsampling (docs/paper.md section 2).

Reading guide for FCN-8s on VGG16, caffe geometry (reference names):

    score_fr    = 1x1 conv on fc7                         (stride 32)
    upscore2    = 2x transposed conv of score_fr          (stride 16)
    score_pool4 = 1x1 conv on pool4, cropped at 5, + upscore2
    upscore_pool4 = 2x transposed conv of that sum        (stride 8)
    score_pool3 = 1x1 conv on pool3, cropped at 9, + upscore_pool4
    upscore8    = 8x transposed conv of that sum, cropped at 31 to the input size

FCN-16s stops after the pool4 fuse (final ``upscore16``, crop 27); FCN-32s has no skip
(final ``upscore``, crop 19). The crop offsets are not typed in: they follow from the
backbone's layers by receptive-field arithmetic (`coord_map`), so other backbones get theirs.
Every score layer starts at zero (a skip starts as a no-op); every upsampling kernel starts
bilinear on the class diagonal and is frozen unless ``upsampling="learned"``.

Input streams and heads (docs/models.md, "Streams and heads") repeat that walk:

    streams  (late fusion, NYUDv2 color_hha): one backbone per stream (``backbones.color``,
             ``backbones.hha``), each with its own score layers and skip upsamplings
             (suffix ``_<stream>``: ``score_fr_color``, ``upscore2_hha``); the streams'
             coarse scores (before the final upsampling) are summed with 1/n each (the
             reference's Eltwise 0.5 / 0.5), then one final upsampling and crop (``upscore``).
    heads    (SIFT Flow sem + geo): one backbone, and per head the whole walk above with
             suffix ``_<head>`` (``score_fr_sem`` ... ``upscore16_geo``); the output is the
             heads' scores concatenated in head order.

Several streams and several heads at once suffix the stream, then the head
(``score_fr_color_sem``). One stream and one head keep the plain names.

Variants name their taps by the reference's VGG16 layers (``fc7``, ``pool4``, ``pool3``);
each backbone maps them to its own (``ROLES``: ResNet's ``layer4``, ``layer3``, ``layer2``),
and layers are named after the backbone's taps (``score_layer3``). An upsampling by f has
the reference's kernel 2f, or 2f - 1 where the backbone centres its cells on whole pixels
(odd kernels throughout: AlexNet's ``upscore`` k63, ResNet). Taps at the same stride (a
dilated ResNet) are summed without upsampling.

``geometry="aligned"`` drops the pad-100 trick: the backbone uses "same" padding, the input
is padded at the bottom/right to a multiple of the coarsest stride, and the transposed convs
pad so that their first output cell lies on the first target cell, so every crop offset
comes out as 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcn_lightning.models.backbones import Backbone
from fcn_lightning.models.bilinear import bilinear_weight
from fcn_lightning.models.coord_map import CoordMap, crop_offset


@dataclass(frozen=True)
class Variant:
    """Which backbone tap is scored, and which shallower taps are fused in (deepest first),
    named by the reference's VGG16 layers (a backbone's ``ROLES`` maps them to its own)."""

    score_from: str
    skips: tuple[str, ...] = ()
    # At-once training (PAMI) scales the skip features by fixed factors before scoring them,
    # so the fine layers do not swamp the coarse prediction early in training.
    skip_scales: tuple[float, ...] | None = None


VARIANTS = {
    "fcn32s": Variant("fc7"),
    "fcn16s": Variant("fc7", ("pool4",)),
    "fcn8s": Variant("fc7", ("pool4", "pool3")),
    "fcn8s_atonce": Variant("fc7", ("pool4", "pool3"), skip_scales=(0.01, 0.0001)),
    # PAMI ablation: predict from one pooling layer alone (no fc6/fc7, no skips).
    "pool5": Variant("pool5"),
    "pool4": Variant("pool4"),
    "pool3": Variant("pool3"),
}
GEOMETRIES = ("caffe", "aligned")
UPSAMPLING = ("fixed", "learned")


def score_name(tap: str) -> str:
    return "score_fr" if tap == "fc7" else f"score_{tap}"


def fit_upsampling(
    source: CoordMap, target: CoordMap, factor: int, geometry: str
) -> tuple[int, int, int]:
    """Kernel, padding and output padding of the bilinear x``factor`` transposed conv that
    takes ``source``'s cells to ``target``'s grid.

    The kernel is 2f (the reference's) if it lands the output on whole target cells, else
    2f - 1. ``caffe``: no padding; the crop after it takes up the offset. ``aligned``: the
    padding puts output cell 0 on target cell 0 and the output padding makes the output as
    long as the padded input needs.
    """
    for kernel in (2 * factor, 2 * factor - 1):
        half_extent = Fraction(kernel - 1, 2)
        if geometry == "caffe":
            moved = source.transposed(half_extent, factor, 0)
            if ((target.offset - moved.offset) / moved.scale).denominator == 1:
                return kernel, 0, 0
            continue
        # Solve source.transposed(half_extent, factor, padding).offset == target.offset.
        padding = half_extent + (target.offset - source.offset) / target.scale
        if padding.denominator == 1 and padding >= 0:
            # n cells upsample to (n - 1) f - 2 p + k + output_padding = n f.
            output_padding = max(0, int(2 * padding) + factor - kernel)
            if output_padding < factor:
                return kernel, int(padding), output_padding
    raise ValueError(f"no bilinear x{factor} upsampling takes {source} onto {target} ({geometry})")


def crop(x: Tensor, offset: int, height: int, width: int) -> Tensor:
    """Caffe's Crop layer: ``height x width`` cells starting at ``offset`` on both axes."""
    return x[..., offset : offset + height, offset : offset + width]


def input_channels(backbone: Backbone) -> int:
    """The channels ``backbone`` takes: its ``FIRST_CONV``'s (3 for a backbone without)."""
    name = getattr(backbone, "FIRST_CONV", None)
    return 3 if name is None else backbone.get_submodule(name).in_channels


def split_heads(scores: Tensor, heads: Sequence[tuple[str, int]]) -> tuple[Tensor, ...]:
    """Each head's block of an FCN's ``B x K x ...`` scores (``FCN.heads`` order), so that
    softmax, argmax and losses act on one head's channels at a time."""
    if scores.shape[1] != sum(n for _, n in heads):
        raise ValueError(f"scores of {scores.shape[1]} channels do not fit the heads {heads}")
    return scores.split([n for _, n in heads], dim=1)


def suffix(name: str, several: bool) -> str:
    """The layer-name suffix of a stream or head: ``_<name>`` when there are several."""
    return f"_{name}" if several else ""


class FCN(nn.Module):
    """A fully convolutional network: ``B x C x H x W`` -> class scores ``B x K x H x W``,
    for any ``H, W >= 1``.

    ``backbone`` meets the `Backbone` contract (`fcn_lightning.models.backbones`): it maps
    the variants' tap names to its own (``ROLES``), exposes ``channels`` and ``coord_maps()``
    per tap of its own, and returns a dict of tap outputs from ``forward``. A mapping of
    stream name -> backbone makes a late-fusion net; C is the streams' input channels
    together (each backbone's ``FIRST_CONV``), in the mapping's order.

    ``heads``: (name, num_classes) per head; None: one head of ``num_classes``. K is the
    heads' classes together; ``num_classes`` is the first head's (``model.num_classes``).
    """

    def __init__(
        self,
        backbone: Backbone | Mapping[str, Backbone],
        variant: str,
        *,
        num_classes: int | None = None,
        heads: Sequence[tuple[str, int]] | None = None,
        geometry: str = "caffe",
        upsampling: str = "fixed",
    ) -> None:
        super().__init__()
        spec = VARIANTS[variant]
        bodies = dict(backbone) if isinstance(backbone, Mapping) else {"rgb": backbone}
        if heads is None:
            if num_classes is None:
                raise ValueError("FCN needs num_classes or heads")
            heads = (("", num_classes),)
        self.heads = tuple((name, int(n)) for name, n in heads)
        self.variant, self.geometry = variant, geometry
        self.num_classes = self.heads[0][1]
        self.out_channels = sum(n for _, n in self.heads)
        self.streams = tuple((name, input_channels(body)) for name, body in bodies.items())
        if len(bodies) == 1:
            self.backbone = next(iter(bodies.values()))
        else:
            self.backbones = nn.ModuleDict(bodies)
        first = next(iter(bodies.values()))
        self.score_from = first.ROLES[spec.score_from]
        self.skips = tuple(first.ROLES[skip] for skip in spec.skips)
        self.skip_scales = spec.skip_scales or (1.0,) * len(spec.skips)
        maps = first.coord_maps()
        if any(body.coord_maps() != maps for body in bodies.values()):
            raise ValueError("the streams' backbones must have the same geometry")
        strides = {tap: int(coord.scale) for tap, coord in maps.items()}

        def score_layer(tap: str, end: str, classes: int) -> None:
            layer = nn.Conv2d(first.channels[tap], classes, 1)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
            self.add_module(score_name(tap) + end, layer)

        def upsample(name: str, coord: CoordMap, target: CoordMap, factor: int, classes: int):
            kernel, padding, output_padding = fit_upsampling(coord, target, factor, geometry)
            layer = nn.ConvTranspose2d(
                classes, classes, kernel, stride=factor, padding=padding,
                output_padding=output_padding, bias=False,
            )  # fmt: skip
            layer.weight.data.copy_(bilinear_weight(classes, kernel))
            layer.weight.requires_grad_(upsampling == "learned")
            self.add_module(name, layer)
            self.upsample_names.append(name)
            return coord.then(layer)

        # Walk the head once per (head, stream) path, building its layers and composing
        # coordinate maps so that each crop offset is where the reference blob starts inside
        # the cropped one. Every path has the same geometry; only the names differ.
        self.crops: dict[str, int] = {}
        self.upsample_names: list[str] = []
        self.skip_upsamplings: list[str | None] = []  # None: the skip has the same stride
        self.final_upsamplings: list[str] = []  # one per head, in head order
        # head -> the suffixes of its streams' layers, in stream order
        self.paths: list[list[str]] = []
        for head, classes in self.heads:
            head_end = suffix(head, len(self.heads) > 1)
            ends = [suffix(s, len(self.streams) > 1) + head_end for s, _ in self.streams]
            self.paths.append(ends)
            for end in ends:
                score_layer(self.score_from, end, classes)
                coord, tap, ups = maps[self.score_from], self.score_from, []
                for i, skip in enumerate(self.skips):
                    factor = strides[tap] // strides[skip]
                    name = None
                    if factor > 1:
                        name = "upscore2" if i == 0 else f"upscore_{self.skips[i - 1]}"
                        coord = upsample(name + end, coord, maps[skip], factor, classes)
                    ups.append(name)
                    score_layer(skip, end, classes)
                    self.crops[score_name(skip) + end] = crop_offset(maps[skip], coord)
                    tap = skip
                self.skip_upsamplings = ups
            final = ("upscore" if not self.skips else f"upscore{strides[tap]}") + head_end
            # The map the final upsampling reads: dense prediction (`models.dense`) replaces
            # that upsampling and needs to know where this map's cells sit.
            self.coarse_coord = coord
            self.crops[final] = crop_offset(
                upsample(final, coord, CoordMap(), strides[tap], classes), CoordMap()
            )
            self.final_upsamplings.append(final)
        # Aligned geometry pads inputs so that every pooling divides evenly.
        self.input_multiple = max(strides.values()) if geometry == "aligned" else 1
        self.output_stride = strides[tap]

    def stream_backbones(self) -> dict[str, Backbone]:
        """Stream name -> its backbone, in stream order."""
        if len(self.streams) == 1:
            return {self.streams[0][0]: self.backbone}
        return dict(self.backbones.items())

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        coarse = split_heads(self.coarse_scores(x), self.heads)
        scores = [
            crop(getattr(self, final)(score), self.crops[final], height, width)
            for final, score in zip(self.final_upsamplings, coarse, strict=True)
        ]
        return (scores[0] if len(scores) == 1 else torch.cat(scores, 1)).contiguous()

    def coarse_scores(self, x: Tensor) -> Tensor:
        """The scores before the final upsampling (stride ``output_stride``; cell ``i`` sits
        on input pixel ``coarse_coord.scale * i + coarse_coord.offset``), the heads'
        concatenated in head order, each the mean of its streams'."""
        channels = [c for _, c in self.streams]
        if x.dim() != 4 or x.shape[1] != sum(channels):
            raise ValueError(
                f"FCN expects a B x {sum(channels)} x H x W image batch, got {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        if self.input_multiple > 1:
            x = F.pad(x, (0, -width % self.input_multiple, 0, -height % self.input_multiple))
        inputs = x.split(channels, dim=1) if len(channels) > 1 else (x,)
        features = [
            body(part) for body, part in zip(self.stream_backbones().values(), inputs, strict=True)
        ]
        heads = []
        for ends in self.paths:
            streams = [self._path_scores(f, end) for f, end in zip(features, ends, strict=True)]
            # The reference's Eltwise SUM with coeff 1/n (0.5 / 0.5 for two streams).
            heads.append(streams[0] if len(streams) == 1 else sum(streams) / len(streams))
        return heads[0] if len(heads) == 1 else torch.cat(heads, 1)

    def _path_scores(self, features: dict[str, Tensor], end: str) -> Tensor:
        """One stream's coarse scores for one head: its layers are those named ``...end``."""
        score = getattr(self, score_name(self.score_from) + end)(features[self.score_from])
        for skip, scale, up_name in zip(
            self.skips, self.skip_scales, self.skip_upsamplings, strict=True
        ):
            if up_name is not None:
                score = getattr(self, up_name + end)(score)
            skip_input = features[skip] * scale if scale != 1.0 else features[skip]
            skip_score = getattr(self, score_name(skip) + end)(skip_input)
            offset = self.crops[score_name(skip) + end]
            score = score + crop(skip_score, offset, score.shape[-2], score.shape[-1])
        return score
