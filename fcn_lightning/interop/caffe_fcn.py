"""A reference FCN's ``.caffemodel`` as this project's model and checkpoint: which net it
is (`identify`, with `fcn_lightning.interop.caffe_nets` for the layer names), its tensors
in the model's state dict (`convert_fcn`) and the checkpoint eval, predict and export load
(`fcn_checkpoint`: the dataset's normalisation and class names with the model settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from fcn_lightning import resolvers  # noqa: F401  (the configs it composes use them)
from fcn_lightning.errors import WeightsError
from fcn_lightning.interop.caffe_blobs import _fill, _layer_params, _params, _shapes
from fcn_lightning.interop.caffe_nets import (
    DATASETS,
    EARLY_FUSION_CONV,
    Dataset,
    Layout,
    layout_of,
    model_key,
    nyud_input_hint,
    variant_of,
)
from fcn_lightning.interop.caffemodel import CaffeLayer
from fcn_lightning.models.bilinear import bilinear_weight
from fcn_lightning.models.build import build_fcn
from fcn_lightning.models.fcn import VARIANTS
from fcn_lightning.run.config import CONF_DIR, resolved

ALEXNET_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
SKIP_SCALE_LAYERS = ("scale_pool4", "scale_pool3")


def _score_layers(layout: Layout) -> tuple[str, ...]:
    """The coarse score layer of each head (SIFT Flow) or stream (NYUD late fusion)."""
    if layout.heads:
        return tuple(f"score_fr_{h}" for h in layout.heads)
    return tuple(f"score_fr{s}" for s in layout.streams) or ("score_fr",)


def identify(layers: dict[str, CaffeLayer], where: str) -> tuple[str, str, Layout]:
    """``(kind, backbone, layout)``: kind an FCN variant or ``imagenet``; backbone vgg16 |
    alexnet; the layout's streams / heads (`fcn_lightning.interop.caffe_nets`)."""
    names = set(layers)
    layout = layout_of(names, where)
    if "conv1_1" in names or layout.streams or layout.early_fusion:
        backbone = "vgg16"
    elif "conv1" in names and "conv5" in names:
        backbone = "alexnet"
    else:
        shown = ", ".join(list(layers)[:8])
        raise WeightsError(
            f"{where} is neither VGG16 nor AlexNet (no conv1_1, conv1_1_bgrd, conv1_1color or "
            f"conv1..conv5; layers: {shown}); only those backbones' Caffe models convert"
        )
    scores = _score_layers(layout)
    if not all(score in names for score in scores):
        found = sorted(n for n in names if n.startswith("score"))
        if found:
            raise WeightsError(
                f"{where} has the score layers {found[:4]} but not {list(scores)}: expected "
                "score_fr (PASCAL VOC / Context, NYUDv2), score_fr_sem + score_fr_geo (SIFT "
                "Flow) or score_frcolor + score_frhha (NYUDv2 color-hha)"
            )
        return "imagenet", backbone, layout
    suffixes = [f"_{h}" for h in layout.heads] or list(layout.streams) or [""]
    variants = {variant_of(names, suffix) for suffix in suffixes}
    if len(variants) > 1:
        raise WeightsError(
            f"{where}: its heads or streams {suffixes} have different skips ({sorted(variants)}); "
            "the reference's nets have the same in each"
        )
    return variants.pop(), backbone, layout


def width_of(layers: dict[str, CaffeLayer], backbone: str, layout: Layout | None = None) -> float:
    """The channel multiplier (``model.width``) of the file's nets: 1.0 for the real ones."""
    first, base = ("conv1_1", 64) if backbone == "vgg16" else ("conv1", 96)
    if layout is not None and layout.streams:
        first += layout.streams[0]
    elif layout is not None and layout.early_fusion:
        first = EARLY_FUSION_CONV
    return _params(layers[first])["weight"].shape[0] / base


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


def _class_counts(params: dict[str, np.ndarray], layout: Layout, where: str) -> tuple[int, ...]:
    """The classes of each head (a late-fusion net's streams all predict the same ones)."""
    counts = tuple(int(params[f"{score}.weight"].shape[0]) for score in _score_layers(layout))
    if layout.streams and len(set(counts)) > 1:
        raise WeightsError(
            f"{where}: the streams' score layers predict {list(counts)} classes; the fused "
            "scores need the same classes in every stream"
        )
    return counts[:1] if layout.streams else counts


def fcn_input(layout: Layout, dataset: Dataset | None, given: str | None, source: Path) -> str:
    """``data.input`` of the net: fixed by its layers, or for NYUDv2's single-stream nets
    (which the layers cannot tell apart) ``given`` or the released file's name."""
    where = str(source)
    if layout.streams or layout.early_fusion:
        if given not in (None, layout.input):
            raise WeightsError(
                f"{where} is a {layout.input} net (its layers say so); --input {given} does not "
                f"fit it: leave --input out"
            )
        return layout.input
    if dataset is not None and dataset.preset == "nyud":
        choice = given or nyud_input_hint(source.stem)
        if choice not in ("color", "hha"):
            raise WeightsError(
                f"{where}: a single-stream NYUDv2 net (40 classes) whose layers do not say "
                f"whether it takes color or HHA images: give --input color or --input hha"
            )
        return choice
    if given not in (None, "rgb"):
        net = dataset.preset if dataset else "this"
        raise WeightsError(f"{where}: --input {given} does not fit a {net} net; it takes rgb")
    return "rgb"


def convert_fcn(
    layers: dict[str, CaffeLayer],
    variant: str,
    backbone: str,
    where: str,
    layout: Layout | None = None,
    input_name: str | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A reference FCN: (this project's model state dict, the build settings: `build_fcn`'s
    arguments, with ``input`` and ``heads`` where they are not the one rgb stream and head)."""
    layout = layout or Layout("rgb", (), ())
    names = tuple(name for name in layers if name not in SKIP_SCALE_LAYERS)
    params = _layer_params(layers, names)
    if variant == "fcn8s_atonce":
        _check_skip_scales(layers, variant, where)
    counts = _class_counts(params, layout, where)
    dataset = DATASETS.get(counts)
    settings: dict[str, Any] = {
        "variant": variant,
        "backbone": backbone,
        "num_classes": counts[0],
        "geometry": "caffe",
        "weights": "caffe",
        "upsampling": _upsampling(params),
        "width": width_of(layers, backbone, layout),
    }
    net_input = fcn_input(layout, dataset, input_name, Path(where))
    if net_input != "rgb":
        settings["input"] = net_input
    if layout.heads:
        classes = dataset.classes if dataset else (None,) * len(counts)
        settings["heads"] = [
            {"name": name, "num_classes": count, **({"classes": cls} if cls else {})}
            for name, count, cls in zip(layout.heads, counts, classes, strict=True)
        ]
    if backbone == "vgg16":
        params = {model_key(*key.rsplit(".", 1), layout): v for key, v in params.items()}
    else:
        params = {(f"backbone.{k}" if k.split(".")[0] in ALEXNET_LAYERS else k): v
                  for k, v in params.items()}  # fmt: skip
    with torch.device("meta"):  # only the names and shapes are needed
        target = build_fcn(**settings).state_dict()
    unexpected = sorted(set(params) - set(target))
    if unexpected:
        raise WeightsError(f"{where}: layers {unexpected[:4]} have no place in {variant}")
    return _fill(_shapes(target), params, where), settings


def _dataset_of(settings: dict[str, Any]) -> Dataset | None:
    heads = settings.get("heads") or [{"num_classes": settings["num_classes"]}]
    return DATASETS.get(tuple(int(h["num_classes"]) for h in heads))


def _class_names(dataset: Dataset | None, counts: list[int], where: str) -> list[list[str]]:
    """Each head's names from the shipped lists of the net's dataset ([] for a class count
    no reference dataset has)."""
    if dataset is None:
        return []
    from fcn_lightning.data.splits import load_class_names

    lists = [load_class_names(name) for name in dataset.classes]
    for name, names, count in zip(dataset.classes, lists, counts, strict=True):
        if len(names) != count:
            raise WeightsError(
                f"{where}: the shipped class list {name!r} has {len(names)} names, the net "
                f"predicts {count} classes; reinstall fcn-lightning"
            )
    return lists


def _head_class_names(settings: dict[str, Any], lists: list[list[str]]) -> dict[str, Any]:
    """``head_class_names`` (the heads after the first), for the FCNModule that takes it."""
    import inspect

    from fcn_lightning.module import FCNModule

    heads = settings.get("heads") or []
    if (
        len(heads) < 2
        or not lists
        or "head_class_names" not in inspect.signature(FCNModule).parameters
    ):
        return {}
    return {
        "head_class_names": {
            h["name"]: names for h, names in zip(heads[1:], lists[1:], strict=True)
        }
    }


def fcn_checkpoint(
    state_dict: dict[str, Tensor], settings: dict[str, Any], source: Path
) -> dict[str, Any]:
    """A checkpoint that `fcn_lightning.module.load_module` (eval, predict, export) and
    ``model.init_from`` read: the composed model/optim/loss settings of the variant, the
    normalisation and class names of the net's dataset (`caffe_nets.DATASETS`)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    preset = "fcn_alexnet" if settings["backbone"] == "alexnet" else settings["variant"]
    scalars = {k: v for k, v in settings.items() if k != "heads"}
    overrides = [f"model={preset}", *(f"model.{k}={v}" for k, v in scalars.items())]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "model.pretrained=false"])
    if settings.get("heads"):
        with open_dict(cfg):
            cfg.model.heads = settings["heads"]
    dataset = _dataset_of(settings)
    heads = settings.get("heads") or [{"num_classes": settings["num_classes"]}]
    lists = _class_names(dataset, [int(h["num_classes"]) for h in heads], str(source))
    return {
        "state_dict": {f"model.{k}": v for k, v in state_dict.items()},
        "hyper_parameters": {
            "model": resolved(cfg.model),
            "optim": resolved(cfg.optim),
            "loss": {k: v for k, v in resolved(cfg.loss).items() if k != "class_balance"},
            "class_names": lists[0] if lists else None,
            **_head_class_names(settings, lists),
            "ignore_index": 255,
            "normalization": dataset.normalization if dataset else "caffe",
        },
        "pytorch-lightning_version": pl.__version__,
        "converted_from": str(source),
    }


def evaluated_with(settings: dict[str, Any]) -> str:
    """The data settings that evaluate the converted net (``data=nyud data.input=hha``)."""
    dataset = _dataset_of(settings)
    if dataset is None:
        return f"data with {settings['num_classes']} classes"
    words = [f"data={dataset.preset}"]
    if dataset.preset == "nyud":
        words.append(f"data.input={settings.get('input', 'rgb')}")
    return " ".join(words)
