"""`build_fcn`: the one way to make an FCN, from primitive arguments (config values)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from fcn_lightning.errors import ConfigError
from fcn_lightning.models.fcn import FCN, GEOMETRIES, UPSAMPLING, VARIANTS
from fcn_lightning.models.vgg import VGG16Backbone
from fcn_lightning.models.weights import fetch_vgg16_state_dict, get_pretrained, load_vgg16_into

BACKBONES = {"vgg16": VGG16Backbone}


def _choice(value: str, choices, key: str) -> str:
    if value not in choices:
        raise ConfigError(f"unknown {key}={value!r}: choose one of {sorted(choices)}")
    return value


def build_fcn(
    variant: str,
    *,
    num_classes: int = 21,
    backbone: str = "vgg16",
    geometry: str = "caffe",
    pretrained: bool = False,
    weights: str = "torchvision",
    weights_path: str | Path | None = None,
    weights_url: str | None = None,
    width: float = 1.0,
    upsampling: str = "fixed",
    frozen_backbone: bool = False,
    dropout: float = 0.5,
    progress: bool = True,
) -> FCN:
    """An FCN mapping ``B x 3 x H x W`` normalised images to ``B x C x H x W`` scores.

    Args:
        variant: ``fcn32s``, ``fcn16s``, ``fcn8s``, ``fcn8s_atonce`` or the single-layer
            ablations ``pool5``, ``pool4``, ``pool3``.
        num_classes: C, background included (21 for PASCAL VOC).
        backbone: ``vgg16``.
        geometry: ``caffe`` (pad 100 and the reference crops) or ``aligned`` (no pad 100;
            same parameters, far fewer FLOPs).
        pretrained: start the backbone from ImageNet weights (``weights`` says which).
        weights: ``torchvision`` or ``caffe``; each needs its own input normalisation
            (`fcn_lightning.models.input_norm_for`).
        weights_path: a local weights file to use instead of the cache or a download.
        weights_url: a mirror to download the weights from.
        width: backbone channel multiplier (e.g. 0.25 for CPU runs and tests).
        upsampling: ``fixed`` (bilinear, frozen, as the reference) or ``learned``.
        frozen_backbone: train only the score layers ("FCN-32s fixed" in the paper).
        dropout: element-wise dropout probability after fc6 and fc7.
    """
    _choice(variant, VARIANTS, "model.variant")
    _choice(backbone, BACKBONES, "model.backbone")
    _choice(geometry, GEOMETRIES, "model.geometry")
    _choice(upsampling, UPSAMPLING, "model.upsampling")
    get_pretrained(weights)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"model.num_classes={num_classes!r}: must be a positive integer")
    if not width > 0:
        raise ConfigError(f"model.width={width!r}: must be positive")
    if not 0 <= dropout < 1:
        raise ConfigError(f"model.dropout={dropout!r}: must be in [0, 1)")

    spec = VARIANTS[variant]
    body = BACKBONES[backbone](
        taps=(spec.score_from, *spec.skips), width=width, geometry=geometry, dropout=dropout
    )
    if pretrained:
        state_dict = fetch_vgg16_state_dict(
            weights, weights_path=weights_path, weights_url=weights_url, progress=progress
        )
        source = str(weights_path) if weights_path else f"{weights} VGG16 weights"
        load_vgg16_into(body, state_dict, source=source)
    model = FCN(body, variant, num_classes=num_classes, geometry=geometry, upsampling=upsampling)
    if frozen_backbone:
        body.requires_grad_(False)
    return model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
