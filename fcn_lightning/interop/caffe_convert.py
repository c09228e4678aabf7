"""Convert Caffe weights: ``python -m fcn_lightning.convert_caffe MODEL.caffemodel [--out PATH]
[--input color|hha]``.

What the file holds decides what is written (from its layer names):

- **ImageNet VGG16** (``conv1_1`` ... ``fc7``; VGG_ILSVRC_16_layers.caffemodel): a
  torchvision-layout state dict, by default at the cache path ``model.weights=caffe`` looks
  in (``vgg16_from_caffe.pth``), so training starts from the paper's weights without
  pytorch-fcn's Google Drive copy.
- **ImageNet AlexNet / CaffeNet** (``conv1`` ... ``fc7``; bvlc_alexnet.caffemodel): a state
  dict with the reference's layer names, by default at the cache path of
  ``model=fcn_alexnet`` (``alexnet_from_caffe.pth``).
- **A reference FCN** (``score_fr``; fcn32s/16s/8s-heavy-pascal, voc-fcn8s-atonce,
  fcn-alexnet-pascal): a fcn-lightning checkpoint (``<stem>.ckpt`` beside the input), for
  ``eval ckpt_path=... data=paper split=seg11valid``, ``predict`` and ``export``, or as
  ``model.init_from`` to fine-tune. The variant is read off the layers (``score_pool4``,
  ``score_pool3``, the at-once ``scale_pool*``); upsampling is ``fixed`` when every
  upsampling kernel is the bilinear one, else ``learned``.
- **The other benchmarks' FCNs** (`fcn_lightning.interop.caffe_nets` reads their names):
  pascalcontext-fcn32s/16s/8s (60 classes; ``data=pascal_context``), siftflow-fcn32s/16s/8s
  (two heads, ``score_fr_sem`` 33 + ``score_fr_geo`` 3 classes; ``data=siftflow``),
  nyud-fcn32s-color / -hha (40 classes; ``data=nyud data.input=color|hha``: the layers do not
  tell the two apart, so ``--input`` or the released file name does), nyud-fcn32s-color-hha
  (two streams, ``conv1_1color`` / ``conv1_1hha``; ``data.input=color_hha``) and the
  unreleased nyud-fcn32s-color-d (``conv1_1_bgrd``, 4 channels; ``data.input=color_depth``).
  Their checkpoints carry the dataset's own caffe mean (``caffe_pascal_context``,
  ``caffe_siftflow``, ``caffe_nyud``: the reference's data layers subtract those) and its
  shipped class names.

The weights are copied as they are: Caffe's nets take BGR, mean-subtracted 0-255 inputs,
which is this project's ``caffe`` normalisation. Every tensor is checked against the shape
the model needs before anything is written, and the file is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fcn_lightning.errors import WeightsError
from fcn_lightning.interop.caffe_blobs import _fill, _layer_params, _shapes
from fcn_lightning.interop.caffe_fcn import (
    ALEXNET_LAYERS,
    convert_fcn,
    evaluated_with,
    fcn_checkpoint,
    identify,
    width_of,
)
from fcn_lightning.interop.caffemodel import CaffeLayer, read_caffemodel
from fcn_lightning.interop.torchfcn import vgg_conv_indices
from fcn_lightning.models.backbones.alexnet import WEIGHTS as ALEXNET_WEIGHTS
from fcn_lightning.models.backbones.alexnet import AlexNetBackbone
from fcn_lightning.models.backbones.vgg import CONV_NAMES, VGG16Backbone
from fcn_lightning.models.weights import PRETRAINED, cache_path
from fcn_lightning.run.checkpoint_io import atomic_torch_save

# torchvision's VGG16 classifier indices of the reference's fc layers.
VGG_CLASSIFIER = {"fc6": 0, "fc7": 3, "fc8": 6}


def convert_vgg16(layers: dict[str, CaffeLayer], where: str) -> dict[str, Tensor]:
    """ImageNet VGG16 in torchvision's layout (``features.N``, ``classifier.0/3/6`` as
    matrices), which ``model.weights=caffe`` reads like pytorch-fcn's conversion."""
    with torch.device("meta"):
        own = VGG16Backbone(width=width_of(layers, "vgg16")).state_dict()
    shapes = {k: v.shape for k, v in own.items() if k.startswith("features.")}
    fc_channels = own["fc7.bias"].numel()
    for fc in ("fc6", "fc7"):  # the 7x7 (1x1) conv's kernel as a matrix, C x H x W flattened
        index = VGG_CLASSIFIER[fc]
        shapes[f"classifier.{index}.weight"] = torch.Size(
            (fc_channels, own[f"{fc}.weight"][0].numel())
        )
        shapes[f"classifier.{index}.bias"] = own[f"{fc}.bias"].shape
    params = _layer_params(layers, (*CONV_NAMES, *VGG_CLASSIFIER))
    if "fc8.weight" in params:  # ImageNet's classifier, whatever its class count
        classes = params["fc8.weight"].size // fc_channels
        shapes["classifier.6.weight"] = torch.Size((classes, fc_channels))
        shapes["classifier.6.bias"] = torch.Size((classes,))
    caffe_name = {f"features.{i}": n for n, i in vgg_conv_indices().items()}
    caffe_name.update({f"classifier.{i}": n for n, i in VGG_CLASSIFIER.items()})
    renamed = {}
    for key in shapes:
        module, _, param = key.rpartition(".")
        if f"{caffe_name[module]}.{param}" in params:
            renamed[key] = params[f"{caffe_name[module]}.{param}"]
    return _fill(shapes, renamed, where)


def convert_alexnet(layers: dict[str, CaffeLayer], where: str) -> dict[str, Tensor]:
    """ImageNet AlexNet / CaffeNet with the reference's layer names (fc6/fc7 as convs)."""
    with torch.device("meta"):
        own = AlexNetBackbone(weights="caffe", width=width_of(layers, "alexnet")).state_dict()
    return _fill(_shapes(own), _layer_params(layers, ALEXNET_LAYERS), where)


def convert(
    source: str | Path, out: str | Path | None = None, *, input_name: str | None = None
) -> tuple[Path, str]:
    """Convert ``source``; returns where the result went and a line saying what it is.
    ``input_name``: data.input of a single-stream NYUDv2 net (color | hha), which its layers
    do not tell."""
    source = Path(source)
    where = str(source)
    layers = {layer.name: layer for layer in read_caffemodel(source) if layer.blobs}
    kind, backbone, layout = identify(layers, where)
    if kind == "imagenet":
        if input_name is not None:
            raise WeightsError(f"{where}: ImageNet weights take no --input (an FCN's option)")
        state_dict = (convert_vgg16 if backbone == "vgg16" else convert_alexnet)(layers, where)
        weights = PRETRAINED["caffe"] if backbone == "vgg16" else ALEXNET_WEIGHTS["caffe"]
        path = Path(out) if out else cache_path(weights)
        what = f"ImageNet {weights.model} weights for model.weights=caffe"
        obj: Any = state_dict
    else:
        state_dict, settings = convert_fcn(layers, kind, backbone, where, layout, input_name)
        path = Path(out) if out else source.with_suffix(".ckpt")
        heads = settings.get("heads")
        classes = (
            " + ".join(f"{h['num_classes']} {h['name']}" for h in heads) if heads
            else str(settings["num_classes"])
        )  # fmt: skip
        shape = f", input {settings['input']}" if "input" in settings else ""
        what = (
            f"{kind} ({backbone}{shape}, {classes} classes, {settings['upsampling']} "
            f"upsampling; evaluate with {evaluated_with(settings)}) checkpoint"
        )
        obj = fcn_checkpoint(state_dict, settings, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(obj, path)
    return path, what
