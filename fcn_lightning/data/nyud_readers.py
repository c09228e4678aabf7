"""Reading NYUDv2's modalities and turning them into the network input, as the reference.

The reference's data layer (nyud_layers.py) gives, in float32:

    colour  BGR - (116.190, 97.203, 92.318)        (data.normalization: caffe_nyud; with
                                                     torchvision weights, torchvision's)
    depth   log(depth) - 7.844                      (the 16-bit PNG's raw values)
    HHA     HHA - (132.431, 94.076, 118.477)        (no channel swap)
    label   segmentation - 1, so void 0 -> 255 and the classes 1..40 -> 0..39

and the batch tensor is the modalities of `data.input` concatenated (`nyud.INPUT_MODALITIES`).
One departure: a depth pixel of 0 (no measurement) would be log(0) = -inf there; here it
becomes 0 after the mean, i.e. the mean log depth, the value padding gets too;
`python -m fcn_lightning.verify_data` counts such pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.io
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image

from fcn_lightning.data.nyud import input_modalities
from fcn_lightning.data.readers import IGNORE_INDEX, SegmentationDataset, read_image
from fcn_lightning.data.sample_files import SampleError, read_bytes, reason, unusable_path
from fcn_lightning.data.splits import Sample
from fcn_lightning.normalization import InputNorm, get_input_norm

HHA_MEAN = (132.431, 94.076, 118.477)
LOG_DEPTH_MEAN = 7.844
NUM_CLASSES = 40


def _decode(path, what: str) -> Tensor:
    data = torch.frombuffer(bytearray(read_bytes(path, what)), dtype=torch.uint8)
    try:
        return decode_image(data, mode=ImageReadMode.UNCHANGED)
    except RuntimeError as err:
        raise SampleError(
            f"{path}: corrupt or unreadable {what} image ({reason(err)}): replace it from "
            "nyud.tar.gz"
        ) from None


def read_depth(path) -> Tensor:
    """The 16-bit depth PNG at `path` as its raw values, uint16 1 x H x W."""
    depth = _decode(path, "depth")
    if depth.dtype != torch.uint16 or depth.shape[0] != 1:
        bits = 8 * depth.element_size()
        raise SampleError(
            f"{path}: depth is {bits}-bit with {depth.shape[0]} channel(s); NYUDv2 depth "
            "is a 16-bit greyscale PNG (millimetres): replace it from nyud.tar.gz's data/depth"
        )
    return depth


def read_hha(path) -> Tensor:
    """The HHA PNG at `path`, uint8 3 x H x W in the file's channel order."""
    hha = _decode(path, "HHA")
    if hha.dtype != torch.uint8 or hha.shape[0] != 3:
        raise SampleError(
            f"{path}: HHA is {8 * hha.element_size()}-bit with {hha.shape[0]} channel(s); "
            "expected an 8-bit RGB PNG (nyud.tar.gz's data/hha, or `python -m fcn_lightning.hha`)"
        )
    return hha


def read_nyud_label(path, num_classes: int = NUM_CLASSES) -> tv_tensors.Mask:
    """The `segmentation` of a NYUDv2 .mat as class indices, uint8 H x W, void 255."""
    why = unusable_path(path)
    if why is not None:
        raise SampleError(f"{path}: label file is {why}: put the label file there")
    try:
        raw = np.asarray(scipy.io.loadmat(path)["segmentation"])
    except Exception as err:  # loadmat fails in many ways on a bad file
        raise SampleError(
            f"{path}: unreadable NYUDv2 label ({type(err).__name__}: {err}); expected a MATLAB "
            "file with the key segmentation: replace it from nyud.tar.gz"
        ) from None
    integral = raw.dtype.kind in "uib" or (raw.dtype.kind == "f" and np.all(raw == np.round(raw)))
    if raw.ndim != 2 or not integral:
        raise SampleError(
            f"{path}: segmentation is {raw.dtype} with shape {raw.shape}, expected an H x W "
            "array of 0 (void) and class numbers 1..40"
        )
    bad = np.unique(raw[(raw < 0) | (raw > num_classes)])
    if bad.size:
        raise SampleError(
            f"{path}: segmentation values {bad[:8].astype(np.int64).tolist()} are neither 0 "
            f"(void) nor classes 1..{num_classes}: check data.num_classes, or the label file"
        )
    label = raw.astype(np.int64) - 1  # the reference's rotation: void 0 -> 255
    label[label < 0] = IGNORE_INDEX
    return tv_tensors.Mask(torch.from_numpy(label.astype(np.uint8)))


def depth_input(depth: Tensor) -> Tensor:
    """Raw depth uint16 1 x H x W -> log(depth) - 7.844, float32; 0 (missing) -> 0."""
    raw = depth.numpy()
    with np.errstate(divide="ignore"):
        logd = np.log(raw.astype(np.float32)) - np.float32(LOG_DEPTH_MEAN)
    logd[raw == 0] = 0.0
    return torch.from_numpy(logd)


def hha_input(hha: Tensor) -> Tensor:
    """HHA uint8 3 x H x W -> HHA - mean, float32, channels as stored."""
    mean = torch.tensor(HHA_MEAN, dtype=torch.float32).view(3, 1, 1)
    return hha.float() - mean


READERS: dict[str, Callable] = {"color": read_image, "depth": read_depth, "hha": read_hha}


def modality_input(modality: str, raw: Tensor, norm: InputNorm) -> Tensor:
    """One modality's raw tensor as the network sees it."""
    if modality == "color":
        return norm(raw.as_subclass(Tensor))
    if modality == "depth":
        return depth_input(raw.as_subclass(Tensor))
    return hha_input(raw.as_subclass(Tensor))


def sample_files(sample: Sample, modalities: Sequence[str]) -> dict[str, object]:
    """Modality -> file of a selected sample (`image` is the first modality's)."""
    files = [sample.image, *(path for _, path in sample.extra)]
    return dict(zip(modalities, files, strict=True))


def size_problems(sample: Sample, raws: dict[str, Tensor], label: Tensor) -> list[str]:
    """A line for each modality whose height and width differ from the label's."""
    lh, lw = label.shape[-2:]
    files = sample_files(sample, list(raws))
    return [
        f"{sample.label}: label is {lh}x{lw} (HxW) but {modality} {files[modality]} is "
        f"{raw.shape[-2]}x{raw.shape[-1]}"
        for modality, raw in raws.items()
        if tuple(raw.shape[-2:]) != (lh, lw)
    ]


def read_modalities(sample: Sample, modalities: Sequence[str]) -> dict[str, Tensor]:
    """The raw tensors of `sample`'s files (`image` is the first modality's)."""
    return {m: READERS[m](path) for m, path in sample_files(sample, modalities).items()}


class NYUDDataset(SegmentationDataset):
    """NYUDv2 items: `(tv_tensors.Image float32 C x H x W, already the network's input,
    tv_tensors.Mask uint8 H x W)` before `transforms`, C = the channels of `input_name`.

    The samples must come from `nyud.select_input(..., input_name)`.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        input_name: str,
        normalization: str,
        num_classes: int = NUM_CLASSES,
        ignore_index: int = IGNORE_INDEX,
        transforms: Callable | None = None,
    ):
        super().__init__(
            samples, num_classes=num_classes, ignore_index=ignore_index, transforms=transforms
        )
        self.modalities = input_modalities(input_name)
        self.norm = get_input_norm(normalization)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        sample = self.samples[index]
        raws = read_modalities(sample, self.modalities)
        label = read_nyud_label(sample.label, self.num_classes)
        problems = size_problems(sample, raws, label)
        if problems:
            raise SampleError(problems[0])
        parts = [modality_input(m, raw, self.norm) for m, raw in raws.items()]
        return tv_tensors.Image(torch.cat(parts)), label


def sample_problems(
    sample: Sample, modalities: Sequence[str], num_classes: int = NUM_CLASSES
) -> tuple[list[str], Tensor | None, int]:
    """Everything wrong with one selected sample's files, for verify_data: (problems,
    the label when all is well, its depth pixels that are 0 = missing)."""
    problems, raws = [], {}
    for modality, path in sample_files(sample, modalities).items():
        try:
            raws[modality] = READERS[modality](path)
        except SampleError as err:
            problems.append(str(err))
    label = None
    try:
        label = read_nyud_label(sample.label, num_classes)
    except SampleError as err:
        problems.append(str(err))
    if label is None or len(raws) < len(modalities):
        return problems, None, 0
    problems += size_problems(sample, raws, label)
    zeros = int((raws["depth"] == 0).sum()) if "depth" in raws else 0
    return problems, (None if problems else label), zeros
