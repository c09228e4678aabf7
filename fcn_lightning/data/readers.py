"""Reading one image/label pair: RGB uint8 image, class-index label, both checked.

Images are decoded by torchvision.io (libjpeg-turbo straight into a tensor, faster than
PIL plus the conversion; `python -m fcn_lightning.bench.loader` measures both) into RGB
whatever their colour mode; PIL is only the fallback for formats torchvision cannot read.
EXIF orientation is deliberately not applied: labels are drawn on the stored pixel grid.
Labels are class indices, 255 for void: VOC's palette PNGs hold the indices as their pixel
values, SBD's .mat files as `GTcls.Segmentation`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image, decode_png

from fcn_lightning.data.splits import Sample
from fcn_lightning.errors import DataError

IGNORE_INDEX = 255


class SampleError(DataError):
    """A bad file met while loading; keeps its one line across DataLoader workers.

    A worker's exception reaches the main process rebuilt from the worker's formatted
    traceback ("Caught SampleError in DataLoader worker process 0. Original Traceback
    ..."); this class takes back the original line so users see the file and the fix.
    """

    def __init__(self, message: str = ""):
        if message.startswith("Caught ") and "Original Traceback" in message:
            last = message.rstrip().splitlines()[-1]
            prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
            message = last.removeprefix(prefix)
        super().__init__(message)


def _read_bytes(path: Path, what: str) -> torch.Tensor:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SampleError(f"{path}: {what} file is missing") from None
    except OSError as err:
        raise SampleError(f"{path}: cannot read {what} file ({err.strerror or err})") from None
    if not data:
        raise SampleError(f"{path}: {what} file is empty")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def read_image(path: Path) -> tv_tensors.Image:
    """The image at `path` as RGB uint8, 3 x H x W (greyscale, CMYK, palette: all RGB)."""
    data = _read_bytes(path, "image")
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as tv_err:
        try:
            with Image.open(path) as im:
                array = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError):
            raise SampleError(
                f"{path}: corrupt or unreadable image ({_reason(tv_err)}): replace it from "
                "the original archive"
            ) from None
        image = torch.from_numpy(array.copy()).permute(2, 0, 1)
    return tv_tensors.Image(image)


def _reason(err: Exception) -> str:
    """torchvision's message without its C++ source location."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    return re.sub(r"^\S+, \S+:\d+, ", "", lines[-1])


def read_png_label(path: Path) -> torch.Tensor:
    data = _read_bytes(path, "label")
    try:
        label = decode_png(data, mode=ImageReadMode.UNCHANGED)
    except RuntimeError as err:
        raise SampleError(
            f"{path}: corrupt or unreadable label PNG ({_reason(err)}): replace it from the "
            "original archive"
        ) from None
    if label.shape[0] != 1:
        raise SampleError(
            f"{path}: label PNG has {label.shape[0]} channels; labels must be palette or "
            "greyscale PNGs whose pixel values are class indices (a colour-coded label?)"
        )
    return label[0]


def read_mat_label(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise SampleError(f"{path}: label file is missing")
    try:
        label = np.asarray(scipy.io.loadmat(path)["GTcls"][0]["Segmentation"][0])
    except Exception as err:  # loadmat fails in many ways on a bad file
        raise SampleError(
            f"{path}: unreadable SBD label ({type(err).__name__}: {err}); expected a MATLAB "
            "file with GTcls.Segmentation: replace it from benchmark.tgz"
        ) from None
    if label.ndim != 2 or label.dtype.kind not in "uib":
        raise SampleError(
            f"{path}: GTcls.Segmentation is {label.dtype} with shape {label.shape}, expected "
            "an H x W array of class indices"
        )
    if label.dtype != np.uint8:
        label = label.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(label))


def read_label(path: Path) -> tv_tensors.Mask:
    """The class-index label at `path` (.png or SBD .mat) as uint8, H x W."""
    if path.suffix == ".mat":
        label = read_mat_label(path)
    elif path.suffix == ".png":
        label = read_png_label(path)
    else:
        raise SampleError(f"{path}: unknown label format (expected .png or .mat)")
    if label.dtype != torch.uint8:
        if label.numel() and (label.min() < 0 or label.max() > 255):
            raise SampleError(
                f"{path}: label values {int(label.min())}..{int(label.max())} do not fit "
                "class indices 0-254 and 255 (ignore)"
            )
        label = label.to(torch.uint8)
    return tv_tensors.Mask(label)


def check_pair(
    sample: Sample,
    image: torch.Tensor,
    label: torch.Tensor,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> None:
    """Raise a SampleError when sizes differ or a label value is not a class or ignore."""
    if tuple(image.shape[-2:]) != tuple(label.shape[-2:]):
        ih, iw = image.shape[-2:]
        lh, lw = label.shape[-2:]
        raise SampleError(
            f"{sample.label}: label is {lh}x{lw} (HxW) but image {sample.image} is {ih}x{iw}"
        )
    bad = stray_values(label, num_classes, ignore_index)
    if bad:
        raise SampleError(
            f"{sample.label}: label values {bad} are neither classes 0..{num_classes - 1} nor "
            f"{ignore_index} (ignore): check data.num_classes, or the label file"
        )


def stray_values(label: torch.Tensor, num_classes: int, ignore_index: int) -> list[int]:
    """The label values that are neither a class index nor `ignore_index`, at most 8."""
    wrong = (label >= num_classes) & (label != ignore_index)
    if not bool(wrong.any()):
        return []
    return [int(v) for v in torch.unique(label[wrong])[:8]]


class SegmentationDataset(Dataset):
    """Image/label pairs read from `samples`, checked, then passed through `transforms`.

    Without transforms an item is `(tv_tensors.Image uint8 3xHxW RGB, tv_tensors.Mask
    uint8 HxW)`; `transforms` is called as `transforms(image, label)`. An item is read by
    index, or by `(index, seed)` (`sampling.SeededDraws`): the random transforms then
    draw from `seed`, leaving the process's random state as it was.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        transforms: Callable | None = None,
    ):
        self.samples = list(samples)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.transforms = transforms

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """The checked pair before transforms."""
        sample = self.samples[index]
        image, label = read_image(sample.image), read_label(sample.label)
        check_pair(sample, image, label, self.num_classes, self.ignore_index)
        return image, label

    def __getitem__(self, item: int | tuple[int, int]):
        index, seed = item if isinstance(item, tuple) else (item, None)
        image, label = self.load(index)
        if self.transforms is None:
            return image, label
        if seed is None:
            return self.transforms(image, label)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transforms(image, label)
