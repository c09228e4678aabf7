"""Bad file formats and split lists (the second table): labels of a colour or bit depth
that holds no class indices, images turned by EXIF away from their labels, paths that
are no files, split lists with repeated IDs or no IDs. Each is refused through the real
entry points with its one line, and nothing earlier is lost (tests/bad_input/harness.py).
Formats that must be *read* (1/2/4-bit palettes, a BOM in a list) are tested in
tests/data/."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.bad_input.harness import SPLITS, Case, Place, check_case, write_label, write_text
from tests.data.png_files import write_png


def label_array(place: Place) -> np.ndarray:
    with Image.open(place.label()) as im:
        return np.array(im)


def colour_label(mode: str):
    def setup(place: Place) -> None:
        with Image.open(place.label()) as im:
            im.convert(mode).save(place.label())

    return setup


def grey_as_rgb_label(place: Place) -> None:
    grey = label_array(place)
    Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)).save(place.label())


def sixteen_bit_label(value: int):
    def setup(place: Place) -> None:
        label = label_array(place).astype(np.uint16)
        label[1, 1] = value
        Image.fromarray(label).save(place.label())

    return setup


def sixteen_bit_colour_label(place: Place) -> None:
    grey = label_array(place).astype(np.uint16)
    write_png(place.label(), np.repeat(grey[..., None], 3, axis=-1), "RGB", 16)


def transparent_label(place: Place) -> None:
    grey = label_array(place)
    alpha = np.full_like(grey, 255)
    alpha[:3] = 0
    Image.fromarray(np.stack([grey, alpha], axis=-1), mode="LA").save(place.label())


def jpeg_label(place: Place) -> None:
    Image.fromarray(label_array(place)).save(place.label(), "JPEG")


def exif(orientation: int) -> Image.Exif:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags


def not_square(place: Place) -> tuple[Image.Image, np.ndarray]:
    """The first val pair cropped to a width unlike its height (so a turn shows)."""
    with Image.open(place.image()) as im:
        image = im.convert("RGB")
    label = label_array(place)
    width = label.shape[1] - 8
    return image.crop((0, 0, width, label.shape[0])), label[:, :width]


def image_turned_by_exif(place: Place) -> None:
    image, label = not_square(place)
    write_label(place.label(), label)
    image.save(place.image(), "JPEG", quality=95, exif=exif(6))  # the same pixels, tagged


def label_turned_by_exif(place: Place) -> None:
    image, label = not_square(place)
    image.save(place.image(), "JPEG", quality=95)
    Image.fromarray(label, mode="L").save(place.label(), exif=exif(8))


def animated(path) -> None:
    frames = [Image.fromarray(np.full((8, 8, 3), 80 * i, np.uint8)) for i in range(3)]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:])


def replace_with_directory(path) -> None:
    path.unlink()
    path.mkdir()


def replace_with_link(path, target: str) -> None:
    path.unlink()
    path.symlink_to(target)


def repeat_first_id(place: Place, split: str) -> None:
    path = place.voc / SPLITS / f"{split}.txt"
    ids = path.read_text().split()
    write_text(path, "\n".join([*ids, ids[0]]) + "\n")


def folder_with_dangling_link(path) -> None:
    path.mkdir()
    (path / "gone.jpg").symlink_to(path / "deleted.jpg")


def predict_file(place: Place, name: str, make) -> None:
    path = place.root / name
    make(path)
    place.extra["inputs"] = path


TRAIN_LIST = "split list {voc}/" + SPLITS + "/train.txt"
VAL_LIST = "split list {voc}/" + SPLITS + "/val.txt"
COLOUR = "palette (mode P) or greyscale (mode L) PNG"

CASES = [
    # -- labels that hold no class indices ------------------------------------------------
    Case("RGB colour label", "data", "train", lambda p: [],
         ["{label}: label PNG is RGB colour, not class indices", COLOUR],
         setup=colour_label("RGB"), fresh=True),
    Case("RGBA colour label", "data", "train", lambda p: [],
         ["{label}: label PNG is RGBA colour", COLOUR], setup=colour_label("RGBA"), fresh=True),
    Case("greyscale label saved as RGB", "data", "train", lambda p: [],
         ["{label}: label PNG is RGB colour", COLOUR], setup=grey_as_rgb_label, fresh=True),
    Case("16-bit colour label", "data", "train", lambda p: [],
         ["{label}: label PNG is RGB colour", COLOUR], setup=sixteen_bit_colour_label,
         fresh=True),
    Case("16-bit label with value 300", "data", "train", lambda p: [],
         ["{label}: 16-bit label PNG holds values up to 300 (1 pixel(s) above 255)",
          "class indices are 0-254 and 255 (void)", "8-bit palette or greyscale PNG"],
         setup=sixteen_bit_label(300), fresh=True),
    Case("16-bit label with value 256 (eval)", "data", "eval", lambda p: [],
         ["{label}: 16-bit label PNG holds values up to 256"], setup=sixteen_bit_label(256)),
    Case("label with transparent pixels", "data", "train", lambda p: [],
         ["{label}: label PNG has an alpha channel with", "transparent pixel(s)",
          "mark unlabelled pixels 255", "without alpha"],
         setup=transparent_label, fresh=True),
    Case("JPEG saved as the label PNG", "data", "train", lambda p: [],
         ["{label}: label file is a JPEG, not a PNG", "replace it"],
         setup=jpeg_label, fresh=True),
    # -- files that are empty or no files -------------------------------------------------
    Case("empty label file", "data", "train", lambda p: [],
         ["{label}: label file is empty", "put the label file there"],
         setup=lambda p: p.label().write_bytes(b""), fresh=True),
    Case("empty image file", "data", "train", lambda p: [],
         ["{image}: image file is empty", "put the image file there"],
         setup=lambda p: p.image().write_bytes(b""), fresh=True),
    Case("label that is a directory", "data", "train", lambda p: [],
         ["{label}: label of ID", "is a directory, not a file", "in split synthetic_val"],
         setup=lambda p: replace_with_directory(p.label())),
    Case("image path that is a symlink loop", "data", "train", lambda p: [],
         ["{image}: image of ID", "is a symbolic link that loops", "in split synthetic_val"],
         setup=lambda p: replace_with_link(p.image(), p.image().name)),
    Case("image path that is a broken symlink", "data", "train", lambda p: [],
         ["{image}: image of ID", "a symbolic link to /nowhere/a.jpg, which does not exist"],
         setup=lambda p: replace_with_link(p.image(), "/nowhere/a.jpg")),
    Case("animated image in the dataset", "data", "train", lambda p: [],
         ["{image}: an animated image of 3 frames", "save the frame to use"],
         setup=lambda p: animated(p.image()), fresh=True),
    Case("predict an animated image", "data", "predict",
         lambda p: [f"inputs={p.extra['inputs']}"],
         ["{root}/anim.png: an animated image of 3 frames"],
         setup=lambda p: predict_file(p, "anim.png", animated)),
    Case("predict an empty image file", "data", "predict",
         lambda p: [f"inputs={p.extra['inputs']}"], ["{root}/empty.jpg: image file is empty"],
         setup=lambda p: predict_file(p, "empty.jpg", lambda path: path.write_bytes(b""))),
    Case("predict a folder with a dangling link", "data", "predict",
         lambda p: [f"inputs={p.extra['inputs']}"],
         ["inputs={root}/photos: gone.jpg is a symbolic link to nothing (or a loop)"],
         setup=lambda p: predict_file(p, "photos", folder_with_dangling_link)),
    Case("predict a binary file that is no image", "data", "predict",
         lambda p: [f"inputs={p.extra['inputs']}"],
         ["inputs={root}/photo.heic: neither an image", "nor a UTF-8 text file listing images"],
         setup=lambda p: predict_file(
             p, "photo.heic", lambda path: path.write_bytes(bytes(range(256)) * 4))),
    # -- EXIF orientation -----------------------------------------------------------------
    Case("image turned by EXIF away from its label", "data", "train", lambda p: [],
         ["{label}: label is", "(HxW) but image {image} is",
          "the image's EXIF orientation 6 (shown turned 90 degrees clockwise)",
          "they agree as stored", "remove the Orientation tag"],
         setup=image_turned_by_exif, fresh=True),
    Case("label turned by EXIF away from its image", "data", "train", lambda p: [],
         ["{label}: label is", "the label's EXIF orientation 8", "PIL.ImageOps.exif_transpose"],
         setup=label_turned_by_exif, fresh=True),
    # -- split lists ----------------------------------------------------------------------
    Case("split that is only a BOM", "data", "train", lambda p: [],
         [VAL_LIST + " lists no image IDs"],
         setup=lambda p: (p.voc / SPLITS / "val.txt").write_bytes(b"\xef\xbb\xbf\r\n")),
    Case("ID repeated in train", "data", "train", lambda p: [],
         [TRAIN_LIST + ": 1 ID(s) listed more than once", "(lines 1, ",
          "trained on or scored twice: delete the repeated lines"],
         setup=lambda p: repeat_first_id(p, "train")),
    Case("ID repeated in val", "data", "train", lambda p: [],
         [VAL_LIST + ": 1 ID(s) listed more than once", "delete the repeated lines"],
         setup=lambda p: repeat_first_id(p, "val")),
    Case("ID repeated in val (eval)", "data", "eval", lambda p: [],
         [VAL_LIST + ": 1 ID(s) listed more than once", "delete the repeated lines"],
         setup=lambda p: repeat_first_id(p, "val")),
    Case("split list in UTF-16", "data", "train", lambda p: [],
         [TRAIN_LIST + " is not UTF-8 text", "save it as UTF-8, one image ID per line"],
         setup=lambda p: (p.voc / SPLITS / "train.txt").write_bytes(
             (p.voc / SPLITS / "train.txt").read_text().encode("utf-16"))),
    Case("split list that is a directory", "data", "train", lambda p: [],
         [VAL_LIST + " is a directory: put the text file of image IDs there"],
         setup=lambda p: replace_with_directory(p.voc / SPLITS / "val.txt")),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_format_is_refused_with_its_message_and_nothing_is_lost(
    case, earlier, tmp_path, monkeypatch, capfd
):
    check_case(case, earlier, tmp_path, monkeypatch, capfd)


def test_the_table_has_a_case_per_kind_of_format():
    assert len({c.id for c in CASES}) == len(CASES) >= 15
    assert {c.entry for c in CASES} == {"train", "eval", "predict"}
