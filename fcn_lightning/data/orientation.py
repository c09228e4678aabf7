"""EXIF orientation: what a file's tag says, and the line for a pair it turned apart.

Images and labels are read upright, their EXIF orientation applied (as every viewer and
browser-based annotation tool shows them). A label drawn on a photo's stored, unrotated
pixels then no longer fits it: for a quarter turn the sizes disagree, and `turned_apart`
says so; a half turn or a mirror keeps the sizes and cannot be told from the files.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

ORIENTATION_TAG = 0x0112
SHOWN = {
    2: "shown mirrored left to right",
    3: "shown turned 180 degrees",
    4: "shown mirrored top to bottom",
    5: "shown transposed",
    6: "shown turned 90 degrees clockwise",
    7: "shown transversed",
    8: "shown turned 90 degrees counter-clockwise",
}
QUARTER_TURNS = {5, 6, 7, 8}  # these swap height and width


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag of the image file at `path`: 1 (as stored) when absent."""
    try:
        with Image.open(path) as im:
            value = int(im.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # an unreadable tag is reported by the decoder, not here
        return 1
    return value if value in SHOWN else 1


def turned_apart(
    image: Path, label: Path, image_hw: tuple[int, int], label_hw: tuple[int, int]
) -> str | None:
    """The error line when the upright sizes differ only through a quarter turn."""
    turns = {path: exif_orientation(path) for path in (image, label)}
    turned = {path: o for path, o in turns.items() if o in QUARTER_TURNS}
    if not turned:
        return None

    def stored(path: Path, hw: tuple[int, int]) -> tuple[int, int]:
        return hw[::-1] if path in turned else hw

    if stored(image, image_hw) != stored(label, label_hw):
        return None
    tags = " and ".join(
        f"the {'image' if path == image else 'label'}'s EXIF orientation {o} ({SHOWN[o]})"
        for path, o in turned.items()
    )
    (ih, iw), (lh, lw) = image_hw, label_hw
    return (
        f"{label}: label is {lh}x{lw} (HxW) but image {image} is {ih}x{iw} once {tags} is "
        "applied; they agree as stored, so the label was drawn on unrotated pixels: rotate "
        "the label to the upright image (PIL.ImageOps.exif_transpose) or remove the "
        "Orientation tag (exiftool -Orientation= FILE)"
    )
