"""Loading pytorch-fcn (torchfcn) weights, its Caffe-converted FCNs included.

torchfcn names layers as the reference prototxt does (``conv1_1`` ... ``fc7``, ``score_fr``,
``upscore2`` ...). This project keeps torchvision's ``features.N`` indices for the VGG convs
(so ImageNet weights load unchanged) and the reference names for everything else, so the
mapping is a rename of the thirteen convs and fc6/fc7.

`torchfcn_models` imports pytorch-fcn's model definitions themselves (for the equivalence
tests and `fcn_lightning.bench`) without its package side effects: torchfcn's
``__init__`` pulls its trainer and datasets (pytz, scikit-image, ...), and its model files
import the ``fcn`` package, which needs chainer, only to download weights. The model
classes need neither, so ``torchfcn.models`` is loaded alone with an empty stand-in for
``fcn``. `make install` installs torchfcn without its dependencies.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

from torch import Tensor

from fcn_lightning.errors import ConfigError, WeightsError
from fcn_lightning.models.backbones.vgg import CONV_NAMES, POOL_INDEX
from fcn_lightning.models.build import build_fcn
from fcn_lightning.models.checkpoints import extract_state_dict, read_state_dict
from fcn_lightning.models.fcn import FCN

TORCHFCN_VARIANTS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")
# Our variant name -> torchfcn's class name.
TORCHFCN_CLASSES = {
    "fcn32s": "FCN32s", "fcn16s": "FCN16s", "fcn8s": "FCN8s", "fcn8s_atonce": "FCN8sAtOnce",
}  # fmt: skip


def torchfcn_models() -> types.ModuleType:
    """pytorch-fcn's ``torchfcn.models`` (FCN32s, FCN16s, FCN8s, FCN8sAtOnce, ...)."""
    if "torchfcn.models" in sys.modules:
        return sys.modules["torchfcn.models"]
    spec = importlib.util.find_spec("torchfcn")
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError(
            "torchfcn is not installed: run `make install` "
            "(or `pip install --no-deps torchfcn==1.9.7`)"
        )
    sys.modules.setdefault("fcn", types.ModuleType("fcn"))
    package = types.ModuleType("torchfcn")
    package.__path__ = [str(Path(p)) for p in spec.submodule_search_locations]
    sys.modules["torchfcn"] = package
    return importlib.import_module("torchfcn.models")


def vgg_conv_indices() -> dict[str, int]:
    """Reference conv name -> index in torchvision's VGG16 ``features``."""
    pools = sorted(POOL_INDEX.values())
    indices, index = {}, 0
    for name in CONV_NAMES:
        indices[name] = index
        index += 2  # conv, relu
        if index in pools:
            index += 1
    return indices


def torchfcn_to_fcn_lightning(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchfcn keys to this project's."""
    indices = vgg_conv_indices()
    renamed = {}
    for key, value in state_dict.items():
        layer, _, param = key.partition(".")
        if layer in indices:
            renamed[f"backbone.features.{indices[layer]}.{param}"] = value
        elif layer in ("fc6", "fc7"):
            renamed[f"backbone.{key}"] = value
        else:
            renamed[key] = value
    return renamed


def load_torchfcn(path_or_state_dict: str | Path | dict[str, Tensor], variant: str) -> FCN:
    """A caffe-geometry FCN that computes what torchfcn's ``variant`` computes with these
    weights (same scores for the same input, any size).

    Accepts a torchfcn weights file (e.g. ``fcn8s_from_caffe.pth``), a torchfcn training
    checkpoint (``model_state_dict`` inside) or a state dict.
    """
    if variant not in TORCHFCN_VARIANTS:
        raise ConfigError(f"torchfcn has no variant {variant!r}: choose one of {TORCHFCN_VARIANTS}")
    if isinstance(path_or_state_dict, dict):
        source = "the torchfcn state dict"
        state_dict = extract_state_dict(path_or_state_dict, source=source)
    else:
        source = str(path_or_state_dict)
        state_dict = read_state_dict(path_or_state_dict, key="torchfcn weights")
    if "score_fr.weight" not in state_dict:
        raise WeightsError(f"{source}: no score_fr.weight, so not a torchfcn FCN state dict")
    num_classes = state_dict["score_fr.weight"].shape[0]
    model = build_fcn(variant, num_classes=num_classes, geometry="caffe")
    renamed = torchfcn_to_fcn_lightning(state_dict)
    own = model.state_dict()
    missing = sorted(set(own) - set(renamed))
    unexpected = sorted(set(renamed) - set(own))
    if missing or unexpected:
        raise WeightsError(
            f"{source} does not fit torchfcn's {variant}: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}; check the variant"
        )
    for key, value in renamed.items():
        if value.shape != own[key].shape:
            raise WeightsError(
                f"{source}: {key} has shape {tuple(value.shape)}, {variant} needs "
                f"{tuple(own[key].shape)}"
            )
    model.load_state_dict(renamed)
    return model
