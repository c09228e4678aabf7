"""Class indices from a label PNG, whatever its bit depth and colour type.

A label PNG's pixel values are class indices (255 = void), read as stored:

- palette (P) at 8 bits, greyscale (L) at 8 bits: torchvision's decoder, the fast path
  every VOC label takes.
- palette at 1, 2 or 4 bits (what Pillow writes for 16 colours or fewer): Pillow, since
  torchvision returns the packed bytes unpacked as if they were 8-bit pixels.
- greyscale at 1, 2 or 4 bits: the stored sample values (a 1-bit mask holds classes 0
  and 1), not the 0-255 brightness viewers and Pillow stretch them to.
- greyscale at 16 bits: values 0-255 are classes and void like 8-bit ones; a value above
  255 is refused.
- palette transparency (a tRNS chunk, Pillow's "PA"/"P" with `transparency`) is ignored:
  it belongs to an index, so it changes no pixel's class.
- greyscale with alpha (LA): the alpha channel is ignored while every pixel is opaque; a
  transparent pixel is refused, as its grey value is no reliable class.
- RGB and RGBA (colour-coded labels): refused, never read through one channel.

EXIF orientation is applied like the images' (`fcn_lightning.data.readers`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_png

from fcn_lightning.data.sample_files import SampleError, reason

SIGNATURE = b"\x89PNG\r\n\x1a\n"
GREY, RGB, PALETTE, GREY_ALPHA, RGBA = 0, 2, 3, 4, 6
SAVE_AS = (
    "save the class indices as a palette (mode P) or greyscale (mode L) PNG whose pixel "
    "values are the indices, 255 for void"
)


def png_header(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from the IHDR chunk, or None if `data` is no PNG."""
    if data[:8] != SIGNATURE or data[12:16] != b"IHDR" or len(data) < 26:
        return None
    return data[24], data[25]


def short_palette_hint(path: Path, values: list[int]) -> str:
    """Why a palette PNG of fewer than 8 bits may hold a value no one drew: Pillow saves an
    image with a short palette (say 3 colours) at 2 bits, so void (255) comes back as 3."""
    try:
        with open(path, "rb") as file:
            header = png_header(file.read(26))
    except OSError:  # gone since it was read: the hint is only a hint
        return ""
    if header is None or header[1] != 3 or header[0] >= 8:  # colour type 3: palette
        return ""
    top = 2 ** header[0] - 1
    if top not in values:
        return ""
    return (
        f" (a {header[0]}-bit palette PNG: void 255 saved with a short palette comes back as "
        f"{top}; give the palette all 256 colours, e.g. PIL's putpalette with 768 values)"
    )


def decode_label_png(path, data: bytes) -> torch.Tensor:
    """The H x W class indices of the label PNG `data` read from `path` (uint8)."""
    header = png_header(data)
    if header is None:
        raise SampleError(f"{path}: {_not_png(data)}: replace it from the original archive")
    depth, colour = header
    if colour in (RGB, RGBA):
        kind = "RGB" if colour == RGB else "RGBA"
        raise SampleError(f"{path}: label PNG is {kind} colour, not class indices: {SAVE_AS}")
    if colour == PALETTE and depth < 8:
        return _pillow_indices(path)
    try:
        label = decode_png(
            torch.frombuffer(bytearray(data), dtype=torch.uint8),
            mode=ImageReadMode.UNCHANGED,
            apply_exif_orientation=True,
        )
    except RuntimeError as err:
        raise _corrupt(path, err) from None
    if depth == 16:  # torch.uint16 has few operations: compare as int32
        label = label.to(torch.int32)
    if colour == GREY_ALPHA:
        label = _opaque_grey(path, label, depth)
    label = label[0]
    if colour == GREY and depth < 8:  # libpng stretched the samples to 0-255: undo it
        label = label // (255 // ((1 << depth) - 1))
    if depth == 16:
        label = _fit_uint8(path, label)
    return label


def _not_png(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "label file is a JPEG, not a PNG (JPEG's lossy compression changes class indices)"
    return "corrupt or unreadable label PNG (no PNG signature)"


def _corrupt(path, err: Exception) -> SampleError:
    return SampleError(
        f"{path}: corrupt or unreadable label PNG ({reason(err)}): replace it from the "
        "original archive"
    )


def _pillow_indices(path) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            indices = np.array(ImageOps.exif_transpose(im))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise _corrupt(path, err) from None
    return torch.from_numpy(indices.astype(np.uint8))


def _opaque_grey(path, label: torch.Tensor, depth: int) -> torch.Tensor:
    opaque = (1 << depth) - 1
    clear = int((label[1] != opaque).sum())
    if clear:
        raise SampleError(
            f"{path}: label PNG has an alpha channel with {clear} transparent pixel(s), whose "
            f"grey values are no reliable class: mark unlabelled pixels 255 and {SAVE_AS}, "
            "without alpha"
        )
    return label[:1]


def _fit_uint8(path, label: torch.Tensor) -> torch.Tensor:
    above = label > 255
    if bool(above.any()):
        raise SampleError(
            f"{path}: 16-bit label PNG holds values up to {int(label.max())} "
            f"({int(above.sum())} pixel(s) above 255); class indices are 0-254 and 255 (void): "
            "check the label file, then save it as an 8-bit palette or greyscale PNG"
        )
    return label.to(torch.uint8)
