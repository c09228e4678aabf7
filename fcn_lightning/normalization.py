"""Input normalisation declared by pretrained weights and applied by the data pipeline.

Caffe's VGG16 was trained on BGR images in 0-255 with the mean pixel subtracted and no
std division; torchvision's on RGB in [0, 1] normalised by ImageNet mean and std. Feeding
one the other's input costs points of mean IU, so the weights name their normalisation
and the model itself takes already-normalised tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fcn_lightning.errors import ConfigError


@dataclass(frozen=True)
class InputNorm:
    """`normalised = (channels_in_order(rgb_0_255) * scale - mean) / std`."""

    name: str
    channel_order: str  # "RGB" or "BGR": order of the channels the network sees
    scale: float  # applied to 0-255 values before the mean is subtracted
    mean: tuple[float, float, float]  # in `channel_order`, after scaling
    std: tuple[float, float, float]

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        shape = (3, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=like.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=like.device).view(shape)
        return mean, std

    def __call__(self, image: Tensor) -> Tensor:
        """RGB `[..., 3, H, W]` in 0-255 (uint8 or float) -> float32 network input."""
        x = image.float()
        if self.channel_order == "BGR":
            x = x.flip(-3)
        mean, std = self._stats(x)
        return (x * self.scale - mean) / std

    def invert(self, x: Tensor) -> Tensor:
        """Network input -> RGB uint8 `[..., 3, H, W]`, for showing images."""
        mean, std = self._stats(x)
        rgb = (x.float() * std + mean) / self.scale
        if self.channel_order == "BGR":
            rgb = rgb.flip(-3)
        return rgb.round().clamp(0, 255).to(torch.uint8)


CAFFE = InputNorm(
    name="caffe",
    channel_order="BGR",
    scale=1.0,
    mean=(104.00698793, 116.66876762, 122.67891434),
    std=(1.0, 1.0, 1.0),
)
TORCHVISION = InputNorm(
    name="torchvision",
    channel_order="RGB",
    scale=1.0 / 255.0,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)


def _caffe_with_mean(dataset: str, mean_bgr: tuple[float, float, float]) -> InputNorm:
    """Caffe input with the mean the reference's data layer of `dataset` subtracts."""
    return InputNorm(f"caffe_{dataset}", "BGR", 1.0, mean_bgr, (1.0, 1.0, 1.0))


# The reference's per-dataset data layers (pascalcontext_layers.py, siftflow_layers.py,
# nyud_layers.py: the colour stream) subtract their own means, not VGG16's.
DATASET_CAFFE = {
    "pascal_context": _caffe_with_mean("pascal_context", (104.007, 116.669, 122.679)),
    "siftflow": _caffe_with_mean("siftflow", (114.578, 115.294, 108.353)),
    "nyud": _caffe_with_mean("nyud", (116.190, 97.203, 92.318)),
}
NORMS = {norm.name: norm for norm in (CAFFE, TORCHVISION, *DATASET_CAFFE.values())}


def dataset_norm(weights: str, dataset: str) -> str:
    """data.normalization of a dataset preset: the dataset's own caffe mean (the reference
    layer's) under caffe weights; any other weights' own normalisation as it is."""
    if weights == "caffe" and dataset in DATASET_CAFFE:
        return DATASET_CAFFE[dataset].name
    return weights


def get_input_norm(name: str) -> InputNorm:
    """The normalisation called `name` ("caffe" or "torchvision")."""
    try:
        return NORMS[name]
    except KeyError:
        raise ConfigError(
            f"unknown input normalisation {name!r} (data.normalization): "
            f"choose one of {sorted(NORMS)}"
        ) from None
