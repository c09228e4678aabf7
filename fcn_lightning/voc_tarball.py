"""The VOC server's tarball and its masks, checked as the server would read them: each
member a palette PNG of its JPEG's size holding class indices 0..20, every listed id
exactly once, nothing else (`fcn_lightning.voc_submission` writes them)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from fcn_lightning.errors import DataError

if TYPE_CHECKING:
    from fcn_lightning.voc_submission import Submission

NUM_CLASSES = 21  # background + the 20 VOC classes: what the server scores


def upright_size(jpeg: Path) -> tuple[int, int]:
    """(width, height) of the image as `read_image` gives it (EXIF orientation applied)."""
    with Image.open(jpeg) as im:
        turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        return (im.height, im.width) if turned else im.size


def mask_problem(data: bytes | Path, size: tuple[int, int]) -> str | None:
    """Why a submitted mask is unusable: not a PNG, not palette mode, wrong size, values."""
    try:
        with Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as im:
            if im.format != "PNG" or im.mode != "P":
                return f"a {im.format} image in mode {im.mode}, not a palette PNG"
            if im.size != size:
                return f"{im.size[0]}x{im.size[1]} (WxH), but the JPEG is {size[0]}x{size[1]}"
            values = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        return f"unreadable ({error})"
    if values.size and values.max() >= NUM_CLASSES:
        return f"holds value {int(values.max())}, not a class index 0..{NUM_CLASSES - 1}"
    return None


def pack(sub: Submission, ids: list[str]) -> Path:
    """The tarball, written beside its final name, checked, then renamed into place."""
    partial = sub.partial_tarball
    with tarfile.open(partial, "w:gz") as tar:
        for image_id in ids:
            tar.add(sub.mask_dir / f"{image_id}.png", arcname=f"{sub.member_dir}/{image_id}.png")
    verify_tarball(partial, sub, ids)
    os.replace(partial, sub.tarball)
    return sub.tarball


def verify_tarball(path: Path, sub: Submission, ids: list[str]) -> None:
    """Every listed id exactly once, nothing else, each a palette PNG of its JPEG's
    size holding class indices: read back from the file itself."""
    expected = {f"{sub.member_dir}/{i}.png": i for i in ids}
    seen: set[str] = set()
    try:
        _check_members(path, sub, expected, seen)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"{path}: unreadable as a .tar.gz ({error}); rerun the command") from None
    if len(seen) != len(expected):
        absent = next(n for n in expected if n not in seen)
        raise DataError(f"{path}: lacks {absent}; rerun the command")


def _check_members(path: Path, sub: Submission, expected: dict[str, str], seen: set[str]) -> None:
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if member.name not in expected or member.name in seen or not member.isfile():
                raise DataError(f"{path}: holds {member.name} unexpectedly; rerun the command")
            seen.add(member.name)
            data = tar.extractfile(member).read()
            why = mask_problem(data, upright_size(sub.jpeg(expected[member.name])))
            if why:
                raise DataError(f"{path}: {member.name} is {why}; rerun the command")


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
