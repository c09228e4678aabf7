"""FCN models: `build_fcn`, the variants, pretrained weights, staged init."""

from fcn_lightning.models.build import (
    BACKBONES,
    backbone_weights,
    build_fcn,
    trainable_parameters,
)
from fcn_lightning.models.fcn import FCN, VARIANTS, split_heads
from fcn_lightning.models.staged import init_from_checkpoint, init_from_state_dict
from fcn_lightning.models.weights import PRETRAINED
from fcn_lightning.normalization import InputNorm, get_input_norm


def input_norm_for(weights: str, backbone: str = "vgg16") -> InputNorm:
    """The input normalisation that the pretrained ``weights`` (model.weights) of
    ``backbone`` (model.backbone) expect."""
    return get_input_norm(backbone_weights(backbone, weights).input_norm)


__all__ = [
    "BACKBONES",
    "FCN",
    "PRETRAINED",
    "VARIANTS",
    "backbone_weights",
    "build_fcn",
    "init_from_checkpoint",
    "init_from_state_dict",
    "input_norm_for",
    "split_heads",
    "trainable_parameters",
]
