"""Pretrained ImageNet weights, described by data, fetched offline-first, and the VGG16
transplant into an FCN. Other backbones declare their own weights the same way (alexnet.py,
resnet.py) and share the fetching and checking here.

Two VGG16 sources, each declaring the input normalisation it was trained with (the data pipeline
applies it; the model takes normalised tensors):

- ``torchvision``: torchvision's ``VGG16_Weights.IMAGENET1K_V1``, fetched through
  torchvision's weights API into the torch hub cache. RGB, ImageNet mean/std.
- ``caffe``: the original Caffe VGG16 (VGG_ILSVRC_16_layers) converted to a torchvision
  state dict by pytorch-fcn (``vgg16_from_caffe.pth``). BGR, 0-255, mean subtracted. Users
  report 1-3 points more mean IU with these, which is what the paper used.
"""

from __future__ import annotations

import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from fcn_lightning.errors import ConfigError, DownloadError, WeightsError
from fcn_lightning.models.checkpoints import read_state_dict


@dataclass(frozen=True)
class PretrainedWeights:
    name: str  # the model.weights value: torchvision | caffe
    url: str | None  # None: no known download, the file must be provided
    file_name: str
    input_norm: str  # a name in fcn_lightning.normalization.NORMS
    md5: str | None = None
    model: str = "VGG16"  # what the weights are for, in messages
    torchvision: WeightsEnum | None = None  # fetched through torchvision's weights API


def torchvision_weights(enum: WeightsEnum, model: str) -> PretrainedWeights:
    """torchvision's ``enum`` weights (RGB, ImageNet mean/std), cached by torch hub."""
    return PretrainedWeights(
        name="torchvision",
        url=enum.url,
        file_name=Path(enum.url).name,
        input_norm="torchvision",
        model=model,
        torchvision=enum,
    )


_TORCHVISION_VGG16 = torchvision.models.VGG16_Weights.IMAGENET1K_V1
PRETRAINED = {
    "torchvision": torchvision_weights(_TORCHVISION_VGG16, "VGG16"),
    "caffe": PretrainedWeights(
        name="caffe",
        # pytorch-fcn's conversion of the Caffe model; Google Drive serves large files only
        # through a confirmation page, so users behind it set model.weights_url to a mirror.
        url="https://drive.google.com/uc?id=1adDBTGY3GcEB_47dvcibajyzi872RAs3",
        file_name="vgg16_from_caffe.pth",
        input_norm="caffe",
        md5="aa75b158f4181e7f6230029eb96c1b13",
    ),
}


def get_pretrained(name: str) -> PretrainedWeights:
    try:
        return PRETRAINED[name]
    except KeyError:
        raise ConfigError(
            f"unknown pretrained weights {name!r} (model.weights): choose one of "
            f"{sorted(PRETRAINED)}"
        ) from None


def cache_path(weights: PretrainedWeights) -> Path:
    """Where the weights file is looked for before any download (the torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.file_name


def _offline_error(
    weights: PretrainedWeights, url: str | None, reason: object, *, mirror: bool = False
) -> WeightsError:
    if url is None:
        where = f"({reason})"
    elif mirror:
        where = f"from the mirror model.weights_url={url} ({reason})"
    else:
        where = f"from {url} ({reason})"
    cache = cache_path(weights)
    convert = "`python -m fcn_lightning.convert_caffe FILE.caffemodel` writes it"
    official = weights.url or weights.file_name
    if weights.name == "caffe" and weights.url is None:
        get = f"{convert} to {cache}"
    elif weights.name == "caffe":
        get = f"download {official} yourself and put it at {cache} (or {convert} there)"
    else:
        get = f"download {official} yourself and put it at {cache}"
    return WeightsError(
        f"could not fetch the {weights.name} {weights.model} weights {where}; {get}, or point "
        f"model.weights_path at a local {weights.file_name}"
    )


def weights_problem(
    weights: PretrainedWeights,
    *,
    weights_path: str | Path | None = None,
    weights_url: str | None = None,
) -> str | None:
    """Why `fetch_state_dict` cannot get ``weights`` whatever the network does (no file
    where model.weights_path points, or neither a cached copy nor a known download), or
    None. Reads and fetches nothing."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        return (
            None if path.is_file() else f"model.weights_path={path}: no such file; check the path"
        )
    if cache_path(weights).is_file() or (weights_url or weights.url) is not None:
        return None
    return str(_offline_error(weights, None, "no public download is known"))


def fetch_state_dict(
    weights: PretrainedWeights,
    *,
    weights_path: str | Path | None = None,
    weights_url: str | None = None,
    progress: bool = True,
) -> dict[str, Tensor]:
    """The state dict of ``weights``, from a local file, the cache, or the network (in that
    order)."""
    problem = weights_problem(weights, weights_path=weights_path, weights_url=weights_url)
    if problem is not None:
        raise WeightsError(problem)
    if weights_path is not None:
        return read_state_dict(weights_path, key="model.weights_path")
    local = cache_path(weights)
    if local.is_file():
        return read_state_dict(local, key="model.weights_path")
    url = weights_url or weights.url
    try:
        if weights.torchvision is not None and weights_url is None:
            return weights.torchvision.get_state_dict(progress=progress, check_hash=True)
        from fcn_lightning.download import download_file

        download_file(url, local, md5=weights.md5, desc=weights.file_name, official=weights.url)
    except DownloadError as error:
        # Each failure is "<url>: <why>"; the url is named once, in the message.
        failures = getattr(error, "failures", [])
        reason = "; ".join(f.split(": ", 1)[-1] for f in failures) or error
        raise _offline_error(weights, url, reason, mirror=weights_url is not None) from None
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise _offline_error(weights, url, error, mirror=weights_url is not None) from None
    return read_state_dict(local, key="model.weights_path")


def fetch_vgg16_state_dict(
    name: str = "torchvision",
    *,
    weights_path: str | Path | None = None,
    weights_url: str | None = None,
    progress: bool = True,
) -> dict[str, Tensor]:
    """The ImageNet VGG16 state dict in torchvision's layout, from a local file, the cache,
    or the network (in that order)."""
    return fetch_state_dict(
        get_pretrained(name), weights_path=weights_path, weights_url=weights_url, progress=progress
    )


def vgg16_fc_to_conv(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision VGG16 state dict -> backbone state dict: ``features.*`` as they are,
    fc6/fc7 reshaped into convolutions (O x I -> O x I x kh x kw), fc8 dropped."""
    converted = {k: v for k, v in state_dict.items() if k.startswith("features.")}
    for fc, index in (("fc6", 0), ("fc7", 3)):
        weight = state_dict[f"classifier.{index}.weight"]
        out_channels = weight.shape[0]
        kernel = 7 if fc == "fc6" else 1
        converted[f"{fc}.weight"] = weight.reshape(out_channels, -1, kernel, kernel)
        converted[f"{fc}.bias"] = state_dict[f"classifier.{index}.bias"]
    return converted


def load_vgg16_into(backbone: nn.Module, state_dict: dict[str, Tensor], *, source: str) -> None:
    """Copy pretrained VGG16 weights into a backbone (which may be truncated at a pool layer).

    Every backbone parameter must come from the file, with the same shape.
    """
    try:
        converted = vgg16_fc_to_conv(state_dict)
    except KeyError as missing:
        raise WeightsError(
            f"{source} is not a torchvision-layout VGG16 state dict (no {missing}); "
            "check model.weights_path"
        ) from None
    load_matching(backbone, converted, source=source)


def load_matching(backbone: nn.Module, converted: dict[str, Tensor], *, source: str) -> None:
    """Load every tensor of ``backbone``'s state dict from ``converted`` (extra keys, such
    as an ImageNet classifier, are ignored); names and shapes must all match."""
    own = backbone.state_dict()
    # BatchNorm's step counter is not a weight; files from frozen-BN models lack it.
    converted = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **converted}
    for key, target in own.items():
        if key not in converted:
            raise WeightsError(f"{source} has no weights for backbone layer {key!r}")
        if converted[key].shape != target.shape:
            raise WeightsError(
                f"{source}: {key} has shape {tuple(converted[key].shape)} but the model needs "
                f"{tuple(target.shape)} (pretrained weights need model.width=1.0)"
            )
    backbone.load_state_dict({key: converted[key] for key in own})
