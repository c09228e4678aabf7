"""Which reference FCN a ``.caffemodel`` holds, read off its layer names, and where each of
its layers goes in this project's model.

The reference names the layers of its nets beyond PASCAL VOC by suffixes (its net.py files):

- **SIFT Flow** (siftflow-fcn32s/16s/8s): one VGG16, then two heads, every head layer ending
  in ``_sem`` (33 semantic classes) or ``_geo`` (3 geometric): ``score_fr_sem``,
  ``upscore2_sem``, ``score_pool4_sem``, ``upscore16_sem`` ... This project's two-head FCN
  names them the same (contract of issue 15); the backbone is shared.
- **NYUDv2 late fusion** (nyud-fcn32s-color-hha): one whole VGG16 per stream, every layer up
  to ``score_fr`` ending in the stream's name without a separator (``conv1_1color``,
  ``fc7hha``, ``score_frcolor``); ``score_fused`` (an Eltwise, no weights) sums the two coarse
  scores 0.5 / 0.5, and one ``upscore`` follows. Here: ``backbones.<stream>.*`` and
  ``score_fr_<stream>``; the shared final upsampling keeps its name.
- **NYUDv2 early fusion** (nyud-fcn32s-color-d, no released weights): ``conv1_1_bgrd`` takes 4
  channels (BGR, then log depth); here the backbone's conv1_1 of 4 input channels.
- **Single-stream nets** (pascalcontext-fcn*, nyud-fcn32s-color, nyud-fcn32s-hha): the VOC
  names; 60 classes are PASCAL-Context's, 40 NYUDv2's. Nothing in a 40-class file tells its
  colour net from its HHA net: the input is given (``--input``), or read off the released
  file names (``nyud-fcn32s-hha-heavy``), else refused.

The dataset decides the data preset, the normalisation (each reference data layer subtracts
its own mean: `fcn_lightning.normalization.DATASET_CAFFE`) and the shipped class lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fcn_lightning.errors import WeightsError
from fcn_lightning.interop.torchfcn import vgg_conv_indices

# The reference's VGG16 layers up to fc7 (the backbone of every stream).
VGG_LAYERS = (
    "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
    "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3", "fc6", "fc7",
)  # fmt: skip
EARLY_FUSION_CONV = "conv1_1_bgrd"
# The final upsamplings a late-fusion net shares (after the streams' coarse scores are summed).
SHARED_UPSAMPLING = ("upscore", "upscore16", "upscore8")
# Stream suffix sets of the reference's late-fusion nets -> data.input.
FUSED_STREAMS = {("color", "hha"): "color_hha"}
SIFTFLOW_HEADS = ("sem", "geo")


@dataclass(frozen=True)
class Dataset:
    """What a converted net is evaluated with: ``data=<preset>``, its caffe normalisation
    and the shipped class list of each head (``fcn_lightning/resources/<name>``)."""

    preset: str
    normalization: str
    classes: tuple[str, ...]  # one per head


# By the class counts of the heads (the reference's nets of each benchmark).
DATASETS = {
    (21,): Dataset("paper", "caffe", ("pascal",)),
    (60,): Dataset("pascal_context", "caffe_pascal_context", ("pascal_context",)),
    (40,): Dataset("nyud", "caffe_nyud", ("nyud",)),
    (33, 3): Dataset("siftflow", "caffe_siftflow", ("siftflow", "siftflow_geo")),
}
NYUD_INPUTS = ("color", "hha", "color_depth", "color_hha")
INPUT_CHOICES = ("rgb", *NYUD_INPUTS)


@dataclass(frozen=True)
class Layout:
    """The net's shape in this project's terms (arguments of `build_fcn`)."""

    input: str  # data.input / model.input
    streams: tuple[str, ...]  # the layer-name suffixes of a late-fusion net's streams, else ()
    heads: tuple[str, ...]  # the layer-name suffixes of a several-head net's heads, else ()
    early_fusion: bool = False


def layout_of(names: set[str], where: str) -> Layout:
    """Streams, heads or early fusion, from the layer names (``names``: layers with blobs)."""
    plain = ("conv1_1", EARLY_FUSION_CONV)
    streams = tuple(sorted(n[7:] for n in names if n.startswith("conv1_1") and n not in plain))
    heads = tuple(sorted(n[len("score_fr_") :] for n in names if n.startswith("score_fr_")))
    if streams:
        fused = FUSED_STREAMS.get(streams)
        if fused is None or heads:
            raise WeightsError(
                f"{where} has the stream layers {['conv1_1' + s for s in streams]}; only the "
                f"reference's {[f'conv1_1{a}+conv1_1{b}' for a, b in FUSED_STREAMS]} late "
                "fusion converts"
            )
        missing = [f"score_fr{s}" for s in streams if f"score_fr{s}" not in names]
        if missing:
            raise WeightsError(f"{where} has streams {list(streams)} but no {missing[0]} layer")
        return Layout(fused, streams, (), False)
    if heads:
        order = tuple(h for h in SIFTFLOW_HEADS if h in heads)
        if order != SIFTFLOW_HEADS or len(heads) != len(SIFTFLOW_HEADS):
            raise WeightsError(
                f"{where} has the heads {['score_fr_' + h for h in heads]}; expected SIFT "
                f"Flow's two, {['score_fr_' + h for h in SIFTFLOW_HEADS]}"
            )
        return Layout("rgb", (), order, False)
    if EARLY_FUSION_CONV in names:
        return Layout("color_depth", (), (), True)
    return Layout("rgb", (), (), False)


def variant_of(names: set[str], suffix: str = "") -> str:
    """fcn32s | fcn16s | fcn8s | fcn8s_atonce from the skip layers (named with ``suffix``)."""
    if f"score_pool3{suffix}" in names:
        return "fcn8s_atonce" if "scale_pool3" in names else "fcn8s"
    return "fcn16s" if f"score_pool4{suffix}" in names else "fcn32s"


def model_key(layer: str, param: str, layout: Layout) -> str:
    """This project's state-dict key of the reference's ``layer.param`` (a VGG16 file's):
    the convs at torchvision's ``features.N``, fc6/fc7 and the heads by their reference
    names; a late-fusion stream's backbone under ``backbones.<stream>``, its score layers
    suffixed ``_<stream>``."""
    stream = next((s for s in layout.streams if layer.endswith(s) and layer != s), "")
    base = layer[: len(layer) - len(stream)]
    if layout.early_fusion and base == EARLY_FUSION_CONV:
        base = "conv1_1"
    if base in VGG_LAYERS:
        own = f"features.{vgg_conv_indices()[base]}" if base.startswith("conv") else base
        return f"backbones.{stream}.{own}.{param}" if stream else f"backbone.{own}.{param}"
    return f"{base}_{stream}.{param}" if stream else f"{layer}.{param}"


def nyud_input_hint(stem: str) -> str | None:
    """The input of a single-stream NYUDv2 net read off the released file's name
    (``nyud-fcn32s-color-heavy``, ``nyud-fcn32s-hha-heavy``), or None."""
    found = {part for part in re.split(r"[^a-z]+", stem.lower()) if part in ("color", "hha")}
    return found.pop() if len(found) == 1 else None
