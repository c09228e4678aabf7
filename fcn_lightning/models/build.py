"""`build_fcn`: the one way to make an FCN, from primitive arguments (config values)."""

from __future__ import annotations

import keyword
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from fcn_lightning.data.inputs import input_streams
from fcn_lightning.errors import ConfigError
from fcn_lightning.models.backbones.alexnet import AlexNetBackbone
from fcn_lightning.models.backbones.resnet import ResNetBackbone
from fcn_lightning.models.backbones.vgg import VGG16Backbone
from fcn_lightning.models.fcn import FCN, GEOMETRIES, UPSAMPLING, VARIANTS
from fcn_lightning.models.streams import widen_first_conv
from fcn_lightning.models.weights import PretrainedWeights, fetch_state_dict, get_pretrained

# model.backbone -> (class, its architecture arguments). A backbone class declares ROLES
# (variant tap -> its own tap), GEOMETRIES (the first is its default), weights_for() and
# load_pretrained(); see fcn.py for what the head needs of it.
BACKBONES: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "vgg16": (VGG16Backbone, {}),
    "alexnet": (AlexNetBackbone, {}),
    "resnet50": (ResNetBackbone, {"depth": 50}),
    "resnet101": (ResNetBackbone, {"depth": 101}),
    "resnet50_dilated": (ResNetBackbone, {"depth": 50, "dilated": True}),
    "resnet101_dilated": (ResNetBackbone, {"depth": 101, "dilated": True}),
}


def _choice(value: str, choices, key: str) -> str:
    if value not in choices:
        raise ConfigError(f"unknown {key}={value!r}: choose one of {sorted(choices)}")
    return value


def backbone_default(backbone: str, key: str) -> str:
    """The config's default ``model.geometry`` / ``model.weights`` for ``backbone``: the
    reference's (caffe) where the backbone has it. Unknown names get VGG16's, so that
    `build_fcn` is the one place that refuses them."""
    cls, arch = BACKBONES.get(backbone, BACKBONES["vgg16"])
    if key == "geometry":
        return cls.GEOMETRIES[0]
    if key == "weights":
        try:
            cls.weights_for("caffe", **arch)
        except ConfigError:
            return "torchvision"
        return "caffe"
    raise ValueError(f"no backbone default for {key!r}")


def backbone_weights(backbone: str, weights: str) -> PretrainedWeights:
    """What ``model.weights`` means for ``model.backbone`` (a ConfigError if it has none)."""
    _choice(backbone, BACKBONES, "model.backbone")
    cls, arch = BACKBONES[backbone]
    return cls.weights_for(weights, **arch)


def check_heads(
    heads: Sequence[Mapping[str, Any]] | None, num_classes: int | None
) -> tuple[tuple[str, int], ...] | None:
    """``model.heads`` as (name, num_classes) pairs, checked; None: one head."""
    if heads is None:
        return None
    if isinstance(heads, str | Mapping) or not isinstance(heads, Sequence) or not heads:
        raise ConfigError(
            f"model.heads={heads!r}: a non-empty list of {{name, num_classes}}, or null for "
            "one head"
        )
    checked: list[tuple[str, int]] = []
    for i, head in enumerate(heads):
        key = f"model.heads[{i}]"
        if not isinstance(head, Mapping) or not {"name", "num_classes"} <= set(head):
            raise ConfigError(f"{key}={head!r}: each head needs a name and a num_classes")
        unknown = set(head) - {"name", "num_classes", "classes"}
        if unknown:
            raise ConfigError(
                f"{key}: unknown key(s) {sorted(unknown)}; known: name, num_classes, classes"
            )
        name, classes = head["name"], head["num_classes"]
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ConfigError(f"{key}.name={name!r}: must be a Python identifier (it names layers)")
        if name in dict(checked):
            raise ConfigError(f"{key}.name={name!r}: another head has that name; names are unique")
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            raise ConfigError(f"{key}.num_classes={classes!r}: must be a positive integer")
        checked.append((name, classes))
    if num_classes is not None and num_classes != checked[0][1]:
        raise ConfigError(
            f"model.num_classes={num_classes} but the first head ({checked[0][0]}) has "
            f"{checked[0][1]} classes: model.num_classes is the first head's (data.num_classes)"
        )
    return tuple(checked)


def build_fcn(
    variant: str,
    *,
    num_classes: int | None = None,
    input: str = "rgb",
    heads: Sequence[Mapping[str, Any]] | None = None,
    backbone: str = "vgg16",
    geometry: str | None = None,
    pretrained: bool = False,
    weights: str = "torchvision",
    weights_path: str | Path | None = None,
    weights_url: str | None = None,
    width: float = 1.0,
    upsampling: str = "fixed",
    frozen_backbone: bool = False,
    dropout: float = 0.5,
    batch_norm: str = "frozen",
    progress: bool = True,
) -> FCN:
    """An FCN mapping ``B x C x H x W`` normalised images to ``B x K x H x W`` scores.

    Args:
        variant: ``fcn32s``, ``fcn16s``, ``fcn8s``, ``fcn8s_atonce`` or the single-layer
            ablations ``pool5``, ``pool4``, ``pool3``.
        num_classes: K for one head, background included (None: 21, PASCAL VOC's); with
            ``heads``, the first head's (None: taken from it).
        input: the input streams (`fcn_lightning.data.inputs`, ``data.input``): ``rgb``,
            NYUDv2 ``color``, ``hha``, ``depth`` (C = 3, 3, 3, 1), ``color_depth`` (early
            fusion, one backbone, C = 4) or ``color_hha`` (late fusion: a backbone per stream,
            coarse scores averaged, C = 3 + 3). A stream of other than 3 channels gets a
            conv1_1 widened from the 3-channel one (`fcn_lightning.models.streams`).
        heads: several outputs on one backbone, ``[{name, num_classes[, classes]}, ...]``
            (SIFT Flow: sem 33, geo 3); K is their classes together, in this order.
        backbone: ``vgg16``; ``alexnet`` (FCN-32s only); ``resnet50``, ``resnet101`` (taps
            at strides 8/16/32, no ``pool5``) or their ``_dilated`` versions (output stride
            8).
        geometry: ``caffe`` (pad 100 and the reference crops) or ``aligned`` (no pad 100;
            same parameters, far fewer FLOPs); ResNets have only ``aligned``. None: the
            backbone's default (``caffe`` where it has it).
        pretrained: start the backbone from ImageNet weights (``weights`` says which).
        weights: ``torchvision`` or ``caffe`` (VGG16 and AlexNet; AlexNet's layers follow
            the weights' shape); each needs its own input normalisation
            (`fcn_lightning.models.input_norm_for`).
        weights_path: a local weights file to use instead of the cache or a download.
        weights_url: a mirror to download the weights from.
        width: backbone channel multiplier (e.g. 0.25 for CPU runs and tests).
        upsampling: ``fixed`` (bilinear, frozen, as the reference) or ``learned``.
        frozen_backbone: train only the score layers ("FCN-32s fixed" in the paper).
        dropout: element-wise dropout probability after fc6 and fc7 (VGG16, AlexNet).
        batch_norm: ``frozen`` (constants, the default: batch-1 training) or ``train``
            (learned, with running statistics: from scratch or large batches); ResNets.
    """
    _choice(variant, VARIANTS, "model.variant")
    streams = input_streams(input, key="model.input")
    head_list = check_heads(heads, num_classes)
    num_classes = 21 if num_classes is None and head_list is None else num_classes
    _choice(backbone, BACKBONES, "model.backbone")
    cls, arch = BACKBONES[backbone]
    geometry = cls.GEOMETRIES[0] if geometry is None else geometry
    _choice(geometry, GEOMETRIES, "model.geometry")
    _choice(upsampling, UPSAMPLING, "model.upsampling")
    get_pretrained(weights)
    if head_list is None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ConfigError(f"model.num_classes={num_classes!r}: must be a positive integer")
    if not width > 0:
        raise ConfigError(f"model.width={width!r}: must be positive")
    if not 0 <= dropout < 1:
        raise ConfigError(f"model.dropout={dropout!r}: must be in [0, 1)")

    spec = VARIANTS[variant]
    missing = [tap for tap in (spec.score_from, *spec.skips) if tap not in cls.ROLES]
    if missing:
        supported = sorted(
            v for v, s in VARIANTS.items() if {s.score_from, *s.skips} <= set(cls.ROLES)
        )
        raise ConfigError(
            f"model.variant={variant} needs a {missing[0]} tap, which model.backbone={backbone}"
            f" does not have: choose model.variant from {supported}"
        )
    if geometry not in cls.GEOMETRIES:
        raise ConfigError(
            f"model.geometry={geometry} is not available for model.backbone={backbone}: "
            f"choose one of {list(cls.GEOMETRIES)}"
        )
    norms = getattr(cls, "BATCH_NORMS", ("frozen",))
    if batch_norm not in norms:
        raise ConfigError(
            f"model.batch_norm={batch_norm!r}: model.backbone={backbone} allows {list(norms)}"
            + ("" if len(norms) > 1 else " (it has no BatchNorm)")
        )
    if frozen_backbone and batch_norm == "train":
        raise ConfigError(
            "model.batch_norm=train would still move the statistics of a frozen backbone "
            "(model.frozen_backbone=true): set model.batch_norm=frozen"
        )
    extra = {"batch_norm": batch_norm} if len(norms) > 1 else {}
    source_weights = cls.weights_for(weights, **arch)
    state_dict = None
    if pretrained:  # fetched once: every stream starts from the same ImageNet weights
        state_dict = fetch_state_dict(
            source_weights, weights_path=weights_path, weights_url=weights_url, progress=progress
        )
    source = str(weights_path) if weights_path else f"{weights} {source_weights.model} weights"
    bodies = {}
    for stream in streams:
        body = cls(
            **arch,
            taps=tuple(cls.ROLES[tap] for tap in (spec.score_from, *spec.skips)),
            width=width,
            geometry=geometry,
            dropout=dropout,
            weights=weights,
            **extra,
        )
        if state_dict is not None:
            body.load_pretrained(state_dict, source=source)
        widen_first_conv(body, stream.channels)
        if frozen_backbone:
            body.requires_grad_(False)
        bodies[stream.name] = body
    return FCN(
        bodies, variant, num_classes=num_classes, heads=head_list, geometry=geometry,
        upsampling=upsampling,
    )  # fmt: skip


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
