"""Every pair of a folder dataset read once before training: mask values against the class
list, mask sizes against their images'. Each kind of mismatch becomes one problem naming
its first file and how many files share it, so a user fixes them all from one line."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from fcn_lightning.data.label_png import short_palette_hint
from fcn_lightning.data.orientation import QUARTER_TURNS, exif_orientation
from fcn_lightning.data.readers import IGNORE_INDEX, read_label
from fcn_lightning.data.sample_files import SampleError
from fcn_lightning.data.splits import Sample
from fcn_lightning.errors import DataError, FCNError
from fcn_lightning.run.progress import track


def upright_size(path: Path) -> tuple[int, int]:
    """(height, width) of the image at `path` as the reader shows it (EXIF applied), from
    its header: decoding every image would double the check's time."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise SampleError(f"{path}: corrupt or unreadable image ({err}): replace it") from None
    if exif_orientation(path) in QUARTER_TURNS:
        return width, height
    return height, width


def scan_pairs(
    splits: Mapping[str, list[Sample]], num_classes: int, classes: Path
) -> list[FCNError]:
    unreadable: list[str] = []
    beyond: list[str] = []
    sizes: list[str] = []
    pairs = [s for samples in splits.values() for s in samples]
    seen: set[Path] = set()
    for sample in track(pairs, description="checking image/mask pairs", unit="pair"):
        if sample.label in seen:  # val and test often share one split
            continue
        seen.add(sample.label)
        try:
            label = read_label(sample.label)
            image_hw = upright_size(sample.image)
        except SampleError as err:
            unreadable.append(str(err))
            continue
        wrong = (label >= num_classes) & (label != IGNORE_INDEX)
        if bool(wrong.any()):
            values = [int(v) for v in torch.unique(label[wrong])[:4]]
            hint = short_palette_hint(sample.label, values)
            beyond.append(
                f"{sample.label}: value{'s' * (len(values) > 1)} "
                f"{', '.join(map(str, values))} beyond the {num_classes} classes of {classes} "
                f"(0..{num_classes - 1}, {IGNORE_INDEX} = void){hint}"
            )
        label_hw = tuple(label.shape[-2:])
        if label_hw != image_hw:
            sizes.append(
                f"{sample.label} is {label_hw[1]}x{label_hw[0]} (WxH) but its image "
                f"{sample.image} is {image_hw[1]}x{image_hw[0]}"
            )
    fixes = (
        (unreadable, "file(s) refused in all: `python -m fcn_lightning.verify_data "
                     "data=folder data.root=...` lists each"),
        (beyond, "mask(s) with values beyond the class list: fix the masks or add the "
                 "classes to classes.txt"),
        (sizes, "mask(s) whose size differs from the image's: each mask is the size of "
                "its image"),
    )  # fmt: skip
    return [DataError(f"{lines[0]}; {len(lines)} {fix}") for lines, fix in fixes if lines]
