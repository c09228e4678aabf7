"""Reading one image/label pair: RGB uint8 image, class-index label, both checked.

Images are decoded by torchvision.io (libjpeg-turbo straight into a tensor, faster than
PIL plus the conversion; `python -m fcn_lightning.bench.loader` measures both) into RGB
whatever their colour mode: greyscale, palette and CMYK are converted, alpha is dropped,
16-bit PNGs are scaled by their full range (round(v * 255 / 65535)); PIL is only the
fallback for formats torchvision cannot read (BMP, TIFF, ...). An animated image is
refused. Labels are class indices, 255 for void: VOC's palette PNGs hold the indices as
their pixel values (every bit depth and colour type: `fcn_lightning.data.label_png`),
SBD's .mat files as `GTcls.Segmentation`; PASCAL-Context's and SIFT Flow's .mat files are
mapped by their own rules (`LABEL_FORMATS`). A sample with K >= 2 heads (SIFT Flow) has a
K x H x W label, one labelling per head in `data.heads` order, each checked against its
head's classes.

EXIF orientation is applied to images and PNG labels alike, so both are read upright as
viewers and annotation tools show them. A pair whose sizes then disagree but agree as
stored (a label drawn on a quarter-turned photo's raw pixels) is refused with a line
naming both files and the tag (`fcn_lightning.data.orientation`); a half turn or a mirror
keeps the sizes, so no check can see it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image

from fcn_lightning.data.label_png import decode_label_png, short_palette_hint
from fcn_lightning.data.orientation import turned_apart
from fcn_lightning.data.pascal_context import read_context_label
from fcn_lightning.data.sample_files import SampleError, read_bytes, reason, unusable_path
from fcn_lightning.data.siftflow import read_siftflow_labels
from fcn_lightning.data.splits import Sample

IGNORE_INDEX = 255
# Sample.label_format -> reader of the sample's label (uint8 H x W, or K x H x W for K heads)
LABEL_FORMATS: dict[str, Callable[[Sample], torch.Tensor]] = {
    "pascal_context": read_context_label,
    "siftflow": read_siftflow_labels,
}


def read_image(path: Path) -> tv_tensors.Image:
    """The image at `path`, upright, as RGB uint8, 3 x H x W."""
    data = torch.frombuffer(bytearray(read_bytes(path, "image")), dtype=torch.uint8)
    try:
        image = decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError as tv_err:
        image = _pillow_rgb(path, tv_err)
    if image.ndim == 4:  # GIF frames
        if image.shape[0] != 1:
            raise SampleError(
                f"{path}: an animated image of {image.shape[0]} frames: save the frame to "
                "use as a still JPEG or PNG"
            )
        image = image[0]
    if image.dtype == torch.uint16:
        image = full_range_uint8(image)
    return tv_tensors.Image(image)


def full_range_uint8(values: torch.Tensor) -> torch.Tensor:
    """16-bit samples scaled to 0-255, rounded: round(v * 255 / 65535)."""
    # v / 257 is never exactly halfway, so adding just under half rounds correctly.
    return ((values.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)


def _pillow_rgb(path: Path, tv_err: RuntimeError) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I;16"):  # PIL's convert("RGB") would clip at 255
                grey = full_range_uint8(torch.from_numpy(np.asarray(im).astype(np.int32)))
                return grey.expand(3, *grey.shape).contiguous()
            array = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError):
        raise SampleError(
            f"{path}: corrupt or unreadable image ({reason(tv_err)}): replace it from the "
            "original archive"
        ) from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def read_png_label(path: Path) -> torch.Tensor:
    return decode_label_png(path, read_bytes(path, "label"))


def read_mat_label(path: Path) -> torch.Tensor:
    why = unusable_path(path)
    if why is not None:
        raise SampleError(f"{path}: label file is {why}: put the label file there")
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
    suffix = path.suffix.lower()  # a camera's or Windows' .PNG is a PNG all the same
    if suffix == ".mat":
        label = read_mat_label(path)
    elif suffix == ".png":
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


def read_sample_label(sample: Sample) -> tv_tensors.Mask:
    """The label of `sample` by its dataset's rules (`label_format`), else by its suffix."""
    if not sample.label_format:
        return read_label(sample.label)
    return tv_tensors.Mask(LABEL_FORMATS[sample.label_format](sample))


Heads = Sequence[tuple[str, int]]


def pair_problems(
    sample: Sample,
    image: torch.Tensor,
    label: torch.Tensor,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    heads: Heads | None = None,
) -> list[str]:
    """What is wrong with a read pair: sizes that differ, label values that are no class.

    `heads` ((name, num_classes) each) for a K x H x W label of K >= 2 heads; else one
    head of `num_classes`.
    """
    problems = []
    if (heads is not None and len(heads) > 1) or label.ndim == 3:
        problems += _head_problems(sample, label, heads or (("", num_classes),), ignore_index)
        if problems:
            return problems
    image_hw, label_hw = tuple(image.shape[-2:]), tuple(label.shape[-2:])
    if image_hw != label_hw:
        (ih, iw), (lh, lw) = image_hw, label_hw
        problems.append(
            turned_apart(sample.image, sample.label, image_hw, label_hw)
            or f"{sample.label}: label is {lh}x{lw} (HxW) but image {sample.image} is {ih}x{iw}"
        )
    bad = [] if label.ndim == 3 else stray_values(label, num_classes, ignore_index)
    if bad:
        png = sample.label.suffix.lower() == ".png"
        hint = short_palette_hint(sample.label, bad) if png else ""
        problems.append(
            f"{sample.label}: label values {bad} are neither classes 0..{num_classes - 1} nor "
            f"{ignore_index} (ignore): check data.num_classes, or the label file{hint}"
        )
    return problems


def _head_problems(
    sample: Sample, label: torch.Tensor, heads: Heads, ignore_index: int
) -> list[str]:
    """A K-head label's problems: K that is not the number of heads, values per head."""
    names = [name for name, _ in heads]
    if label.ndim != 3 or label.shape[0] != len(heads):
        held = label.shape[0] if label.ndim == 3 else 1
        named = f"names {len(heads)} ({names})" if len(heads) > 1 else "names 1 (it is null)"
        return [
            f"{sample.label}: the label of {sample.id} holds {held} labelling(s) but data.heads "
            f"{named}: give this dataset's heads (its preset has them)"
        ]
    files = (sample.label, *sample.more_labels)
    problems = []
    for k, (name, classes) in enumerate(heads):
        bad = stray_values(label[k], classes, ignore_index)
        if bad:
            path = files[k] if k < len(files) else sample.label
            problems.append(
                f"{path}: label values {bad} of head {name} are neither its classes "
                f"0..{classes - 1} nor {ignore_index} (ignore): check data.heads, or the label file"
            )
    return problems


def check_pair(
    sample: Sample,
    image: torch.Tensor,
    label: torch.Tensor,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    heads: Heads | None = None,
) -> None:
    """Raise a SampleError when sizes differ or a label value is not a class or ignore."""
    problems = pair_problems(sample, image, label, num_classes, ignore_index, heads)
    if problems:
        raise SampleError(problems[0])


def stray_values(label: torch.Tensor, num_classes: int, ignore_index: int) -> list[int]:
    """The label values that are neither a class index nor `ignore_index`, at most 8."""
    wrong = (label >= num_classes) & (label != ignore_index)
    if not bool(wrong.any()):
        return []
    return [int(v) for v in torch.unique(label[wrong])[:8]]


class SegmentationDataset(Dataset):
    """Image/label pairs read from `samples`, checked, then passed through `transforms`.

    Without transforms an item is `(tv_tensors.Image uint8 3xHxW RGB, tv_tensors.Mask
    uint8 HxW)`, the label K x H x W for K >= 2 `heads` ((name, num_classes) each, in
    data.heads order); `transforms` is called as `transforms(image, label)`. An item is read by
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
        heads: Heads | None = None,
    ):
        self.samples = list(samples)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.transforms = transforms
        self.heads = None if heads is None or len(heads) < 2 else tuple(heads)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """The checked pair before transforms."""
        sample = self.samples[index]
        image, label = read_image(sample.image), read_sample_label(sample)
        check_pair(sample, image, label, self.num_classes, self.ignore_index, self.heads)
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
