"""Joint image/label transforms, then the input normalisation the backbone's weights expect.

Geometry runs on the uint8 image and the uint8 `tv_tensors.Mask` together through
torchvision.transforms.v2, which resizes masks with nearest neighbour and pads them with
their own fill, so labels stay class indices aligned with the pixels they describe.
Padding puts `ignore_index` in the label, so it never counts, and the mean colour in the
image, which normalises to about zero like the zero padding inside the network.

The paper trains without augmentation (its random mirroring and 32 px jitter did not
help); the options exist for the ablations and for modern recipes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from fcn_lightning.errors import ConfigError
from fcn_lightning.normalization import InputNorm, get_input_norm


def mean_rgb_uint8(norm: InputNorm) -> tuple[int, int, int]:
    """The 0-255 RGB colour that `norm` maps to (about) zero."""
    mean = [m / norm.scale for m in norm.mean]
    if norm.channel_order == "BGR":
        mean = mean[::-1]
    r, g, b = (round(m) for m in mean)
    return r, g, b


def _first_size(flat_inputs: list[Any]) -> tuple[int, int]:
    for inpt in flat_inputs:
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            h, w = F.get_size(inpt)
            return h, w
    raise TypeError("expected a tv_tensors.Image or tv_tensors.Mask among the inputs")


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from `scale_range`."""

    def __init__(self, scale_range: Sequence[float]):
        super().__init__()
        low, high = (float(s) for s in scale_range)
        if not 0 < low <= high:
            raise ConfigError(
                f"data.scale_range={list(scale_range)}: need 0 < low <= high, e.g. [0.5, 2.0]"
            )
        self.scale_range = (low, high)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _first_size(flat_inputs)
        factor = float(torch.empty(()).uniform_(*self.scale_range))
        return {"size": [max(1, round(h * factor)), max(1, round(w * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # NEAREST_EXACT samples at pixel centres as bilinear does; plain NEAREST would
        # shift the label by up to half a source pixel against the image.
        mode = v2.InterpolationMode
        is_mask = isinstance(inpt, tv_tensors.Mask)
        return self._call_kernel(
            F.resize,
            inpt,
            size=params["size"],
            interpolation=mode.NEAREST_EXACT if is_mask else mode.BILINEAR,
            antialias=True,
        )


class RandomTranslate(v2.Transform):
    """Shift the content by whole pixels, up to `max_shift` each way; keeps the size.

    The paper's "jittering": uncovered pixels get `fill` (mean colour / ignore label).
    """

    def __init__(self, max_shift: int, *, image_fill: Sequence[int], label_fill: int):
        super().__init__()
        if max_shift < 0:
            raise ConfigError(f"data.translate_px={max_shift} must be >= 0")
        self.max_shift = int(max_shift)
        self.image_fill = list(image_fill)
        self.label_fill = int(label_fill)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _first_size(flat_inputs)
        dy, dx = torch.randint(-self.max_shift, self.max_shift + 1, (2,)).tolist()
        return {"dx": dx, "dy": dy, "height": h, "width": w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        m = self.max_shift
        fill = self.label_fill if isinstance(inpt, tv_tensors.Mask) else self.image_fill
        padded = self._call_kernel(F.pad, inpt, padding=[m, m, m, m], fill=fill)
        return self._call_kernel(
            F.crop,
            padded,
            top=m - params["dy"],
            left=m - params["dx"],
            height=params["height"],
            width=params["width"],
        )


class ToNetworkInput:
    """(uint8 Image, uint8 Mask) -> (normalised float32 3xHxW, int64 HxW) plain tensors."""

    def __init__(self, normalization: str):
        self.norm = get_input_norm(normalization)

    def __call__(self, image: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        return self.norm(image.as_subclass(Tensor)), label.as_subclass(Tensor).long()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(normalization={self.norm.name!r})"


def crop_hw(crop_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if crop_size is None:
        return None
    size = [crop_size] * 2 if isinstance(crop_size, int) else list(crop_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConfigError(f"data.crop_size={crop_size!r}: give one positive int or [height, width]")
    return size[0], size[1]


def build_transforms(
    *,
    normalization: str,
    ignore_index: int = 255,
    hflip: bool = False,
    scale_range: Sequence[float] | None = None,
    crop_size: int | Sequence[int] | None = None,
    translate_px: int = 0,
) -> v2.Compose:
    """The pipeline for one (image, label) pair; with no options only normalisation.

    Order: scale, translate, crop (padding when the image is smaller), flip.
    """
    norm = get_input_norm(normalization)
    steps = geometry_steps(
        image_fill=mean_rgb_uint8(norm),
        ignore_index=ignore_index,
        hflip=hflip,
        scale_range=scale_range,
        crop_size=crop_size,
        translate_px=translate_px,
    )
    steps.append(ToNetworkInput(normalization))
    return v2.Compose(steps)


def geometry_steps(
    *,
    image_fill: Sequence[float],
    ignore_index: int,
    hflip: bool,
    scale_range: Sequence[float] | None,
    crop_size: int | Sequence[int] | None,
    translate_px: int,
) -> list[Any]:
    """The random geometry, applied alike to the image (padded with `image_fill`, one value
    per channel) and the label (padded with `ignore_index`)."""
    fill = list(image_fill)
    steps: list[Any] = []
    if scale_range is not None:
        steps.append(RandomScale(scale_range))
    if translate_px:
        steps.append(RandomTranslate(translate_px, image_fill=fill, label_fill=ignore_index))
    size = crop_hw(crop_size)
    if size is not None:
        steps.append(
            v2.RandomCrop(
                size,
                pad_if_needed=True,
                fill={tv_tensors.Image: fill, tv_tensors.Mask: ignore_index},
            )
        )
    if hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    return steps


class ToTensors:
    """(float Image, uint8 Mask) -> (the same float32 C x H x W, int64 label) plain tensors."""

    def __call__(self, image: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        return image.as_subclass(Tensor).float(), label.as_subclass(Tensor).long()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def build_stream_transforms(
    *,
    channels: int,
    ignore_index: int = 255,
    hflip: bool = False,
    scale_range: Sequence[float] | None = None,
    crop_size: int | Sequence[int] | None = None,
    translate_px: int = 0,
) -> v2.Compose:
    """The pipeline for an input already normalised (NYUDv2's streams: float C x H x W).

    The same geometry as `build_transforms`, on every channel at once, so colour, depth
    and HHA stay aligned with each other and the label; padding is 0, each modality's
    mean, as the batch padding is.
    """
    steps = geometry_steps(
        image_fill=[0.0] * channels,
        ignore_index=ignore_index,
        hflip=hflip,
        scale_range=scale_range,
        crop_size=crop_size,
        translate_px=translate_px,
    )
    return v2.Compose([*steps, ToTensors()])
