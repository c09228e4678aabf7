"""Convert Caffe weights: ``python -m fcn_lightning.convert_caffe MODEL.caffemodel [--out PATH]``.

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

The weights are copied as they are: Caffe's nets take BGR, mean-subtracted 0-255 inputs,
which is this project's ``caffe`` normalisation. Every tensor is checked against the shape
the model needs before anything is written, and the file is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from fcn_lightning import resolvers  # noqa: F401  (the configs it composes use them)
from fcn_lightning.errors import WeightsError
from fcn_lightning.interop.caffemodel import CaffeLayer, read_caffemodel
from fcn_lightning.interop.torchfcn import torchfcn_to_fcn_lightning, vgg_conv_indices
from fcn_lightning.models.backbones.alexnet import WEIGHTS as ALEXNET_WEIGHTS
from fcn_lightning.models.backbones.alexnet import AlexNetBackbone
from fcn_lightning.models.backbones.vgg import CONV_NAMES, VGG16Backbone
from fcn_lightning.models.bilinear import bilinear_weight
from fcn_lightning.models.build import build_fcn
from fcn_lightning.models.fcn import VARIANTS
from fcn_lightning.models.weights import PRETRAINED, cache_path
from fcn_lightning.run.checkpoint_io import atomic_torch_save
from fcn_lightning.run.config import CONF_DIR, resolved

ALEXNET_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
# torchvision's VGG16 classifier indices of the reference's fc layers.
VGG_CLASSIFIER = {"fc6": 0, "fc7": 3, "fc8": 6}
SKIP_SCALE_LAYERS = ("scale_pool4", "scale_pool3")


def _params(layer: CaffeLayer) -> dict[str, np.ndarray]:
    """A layer's blobs as ``{"weight": ..., "bias": ...}`` (Caffe's order)."""
    return dict(zip(("weight", "bias"), layer.blobs, strict=False))


def _fit(value: np.ndarray, shape: torch.Size, where: str, key: str) -> Tensor:
    """``value`` as a tensor of ``shape``: Caffe's legacy 4-D blobs (1 x 1 x out x in for an
    InnerProduct, 1 x 1 x 1 x n for a bias) and fc-as-matrix hold the same values in order."""
    if value.size != shape.numel():
        raise WeightsError(
            f"{where}: {key} has shape {value.shape}, the model needs {tuple(shape)}; "
            "is this the model it claims to be?"
        )
    return torch.from_numpy(value.reshape(tuple(shape)).copy())


def _fill(
    shapes: dict[str, torch.Size], params: dict[str, np.ndarray], where: str
) -> dict[str, Tensor]:
    """``shapes`` (name -> the shape the model needs) filled from ``params``."""
    missing = sorted(set(shapes) - set(params))
    if missing:
        raise WeightsError(
            f"{where} has no weights for {missing[:4]}; it is not the model expected"
        )
    return {key: _fit(params[key], shape, where, key) for key, shape in shapes.items()}


def _shapes(state_dict: dict[str, Tensor]) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in state_dict.items()}


def _layer_params(layers: dict[str, CaffeLayer], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {f"{n}.{p}": v for n in names if n in layers for p, v in _params(layers[n]).items()}


def identify(layers: dict[str, CaffeLayer], where: str) -> tuple[str, str]:
    """``(kind, backbone)``: kind an FCN variant or ``imagenet``; backbone vgg16 | alexnet."""
    names = set(layers)
    if "conv1_1" in names:
        backbone = "vgg16"
    elif "conv1" in names and "conv5" in names:
        backbone = "alexnet"
    else:
        shown = ", ".join(list(layers)[:8])
        raise WeightsError(
            f"{where} is neither VGG16 nor AlexNet (no conv1_1 or conv1..conv5; layers: "
            f"{shown}); only those backbones' Caffe models convert"
        )
    scores = sorted(n for n in names if n.startswith("score"))
    if "score_fr" not in names:
        if scores:
            raise WeightsError(
                f"{where} has score layers {scores[:4]} but no score_fr: only the one-head "
                "PASCAL-style FCNs convert (SIFT Flow's two heads do not)"
            )
        return "imagenet", backbone
    if "score_pool3" in names:
        variant = "fcn8s_atonce" if "scale_pool3" in names else "fcn8s"
    elif "score_pool4" in names:
        variant = "fcn16s"
    else:
        variant = "fcn32s"
    return variant, backbone


def width_of(layers: dict[str, CaffeLayer], backbone: str) -> float:
    """The channel multiplier (``model.width``) of the file's nets: 1.0 for the real ones."""
    first, base = ("conv1_1", 64) if backbone == "vgg16" else ("conv1", 96)
    return _params(layers[first])["weight"].shape[0] / base


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


def _upsampling(params: dict[str, np.ndarray]) -> str:
    """``fixed`` when every upsampling kernel (``upscore*``) is the bilinear one."""
    for key, weight in params.items():
        if not key.startswith("upscore") or weight.ndim != 4:
            continue
        bilinear = bilinear_weight(weight.shape[0], weight.shape[-1]).numpy()
        if weight.shape != bilinear.shape or not np.allclose(weight, bilinear, atol=1e-6):
            return "learned"
    return "fixed"


def _check_skip_scales(layers: dict[str, CaffeLayer], variant: str, where: str) -> None:
    """The at-once net's Scale layers must hold the constants the model applies."""
    expected = VARIANTS[variant].skip_scales or ()
    for name, value in zip(SKIP_SCALE_LAYERS, expected, strict=False):
        blobs = layers[name].blobs if name in layers else []
        if not blobs or not np.allclose(blobs[0], value, rtol=1e-5):
            found = "no blob" if not blobs else f"{np.unique(blobs[0])[:3].tolist()}"
            raise WeightsError(
                f"{where}: {name} should scale by the constant {value} of {variant}, found "
                f"{found}; this model's skip scaling is not the reference's"
            )


def convert_fcn(
    layers: dict[str, CaffeLayer], variant: str, backbone: str, where: str
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A reference FCN: (this project's model state dict, the build settings)."""
    caffe_names = (*CONV_NAMES, "fc6", "fc7") if backbone == "vgg16" else ALEXNET_LAYERS
    names = tuple(name for name in layers if name not in SKIP_SCALE_LAYERS)
    params = _layer_params(layers, names)
    if variant == "fcn8s_atonce":
        _check_skip_scales(layers, variant, where)
    settings = {
        "variant": variant,
        "backbone": backbone,
        "num_classes": int(params["score_fr.weight"].shape[0]),
        "geometry": "caffe",
        "weights": "caffe",
        "upsampling": _upsampling(params),
        "width": width_of(layers, backbone),
    }
    if backbone == "vgg16":
        params = torchfcn_to_fcn_lightning(params)  # type: ignore[arg-type]
    else:
        params = {(f"backbone.{k}" if k.split(".")[0] in caffe_names else k): v
                  for k, v in params.items()}  # fmt: skip
    with torch.device("meta"):  # only the names and shapes are needed
        target = build_fcn(**settings).state_dict()
    unexpected = sorted(set(params) - set(target))
    if unexpected:
        raise WeightsError(f"{where}: layers {unexpected[:4]} have no place in {variant}")
    return _fill(_shapes(target), params, where), settings


def fcn_checkpoint(
    state_dict: dict[str, Tensor], settings: dict[str, Any], source: Path
) -> dict[str, Any]:
    """A checkpoint that `fcn_lightning.module.load_module` (eval, predict, export) and
    ``model.init_from`` read: the composed model/optim/loss settings of the variant."""
    from hydra import compose, initialize_config_dir

    from fcn_lightning.data.splits import load_class_names

    preset = "fcn_alexnet" if settings["backbone"] == "alexnet" else settings["variant"]
    overrides = [f"model={preset}", *(f"model.{k}={v}" for k, v in settings.items())]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "model.pretrained=false"])
    pascal = load_class_names("pascal")
    return {
        "state_dict": {f"model.{k}": v for k, v in state_dict.items()},
        "hyper_parameters": {
            "model": resolved(cfg.model),
            "optim": resolved(cfg.optim),
            "loss": {k: v for k, v in resolved(cfg.loss).items() if k != "class_balance"},
            "class_names": pascal if settings["num_classes"] == len(pascal) else None,
            "ignore_index": 255,
            "normalization": "caffe",
        },
        "pytorch-lightning_version": pl.__version__,
        "converted_from": str(source),
    }


def convert(source: str | Path, out: str | Path | None = None) -> tuple[Path, str]:
    """Convert ``source``; returns where the result went and a line saying what it is."""
    source = Path(source)
    where = str(source)
    layers = {layer.name: layer for layer in read_caffemodel(source) if layer.blobs}
    kind, backbone = identify(layers, where)
    if kind == "imagenet":
        state_dict = (convert_vgg16 if backbone == "vgg16" else convert_alexnet)(layers, where)
        weights = PRETRAINED["caffe"] if backbone == "vgg16" else ALEXNET_WEIGHTS["caffe"]
        path = Path(out) if out else cache_path(weights)
        what = f"ImageNet {weights.model} weights for model.weights=caffe"
        obj: Any = state_dict
    else:
        state_dict, settings = convert_fcn(layers, kind, backbone, where)
        path = Path(out) if out else source.with_suffix(".ckpt")
        what = (
            f"{kind} ({backbone}, {settings['num_classes']} classes, "
            f"{settings['upsampling']} upsampling) checkpoint"
        )
        obj = fcn_checkpoint(state_dict, settings, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(obj, path)
    return path, what
