"""Images that are not 8-bit RGB, and EXIF orientation of images and labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from fcn_lightning.data.readers import SegmentationDataset, read_image, read_label
from fcn_lightning.data.splits import Sample
from fcn_lightning.errors import DataError
from tests.data.png_files import write_png
from tests.data_fakes import image_from_label, make_label

ORIENTATION = 0x0112


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def sixteen_bit(rng, shape) -> np.ndarray:
    values = rng.integers(0, 65536, shape).astype(np.uint16)
    values.flat[:6] = [0, 65535, 128, 129, 32767, 32768]  # the ends and the rounding edges
    return values


def scaled(values: np.ndarray) -> np.ndarray:
    return np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def hwc(image: torch.Tensor) -> np.ndarray:
    assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
    return image.permute(1, 2, 0).numpy()


def test_sixteen_bit_greyscale_png_is_scaled_by_its_full_range(tmp_path, rng):
    grey = sixteen_bit(rng, (6, 9))
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert np.array_equal(np.array(Image.open(tmp_path / "g.png")), grey)  # written as meant
    expected = np.repeat(scaled(grey)[..., None], 3, axis=-1)
    assert np.array_equal(hwc(read_image(tmp_path / "g.png")), expected)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_sixteen_bit_colour_png_is_scaled_and_alpha_dropped(tmp_path, rng, mode):
    samples = sixteen_bit(rng, (5, 7, len(mode)))
    path = write_png(tmp_path / "c.png", samples, mode, 16)
    with Image.open(path) as im:  # Pillow reads the file as written (keeping the high byte)
        assert np.array_equal(np.array(im)[..., 0], (samples[..., 0] >> 8).astype(np.uint8))
    colour = samples[..., :3] if mode != "LA" else np.repeat(samples[..., :1], 3, axis=-1)
    assert np.array_equal(hwc(read_image(path)), scaled(colour))


def test_sixteen_bit_tiff_read_through_pillow_is_scaled_too(tmp_path, rng):
    grey = sixteen_bit(rng, (4, 6))
    Image.fromarray(grey).save(tmp_path / "g.tif")
    assert Image.open(tmp_path / "g.tif").mode == "I;16"
    assert np.array_equal(
        hwc(read_image(tmp_path / "g.tif")), np.repeat(scaled(grey)[..., None], 3, -1)
    )


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "1"])
def test_eight_bit_modes_arrive_as_pillows_rgb(tmp_path, rng, mode):
    rgb = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    path = tmp_path / "a.png"
    rgb.convert(mode).save(path)
    with Image.open(path) as im:
        assert np.array_equal(hwc(read_image(path)), np.asarray(im.convert("RGB")))


def test_bmp_read_through_pillow(tmp_path, rng):
    rgb = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.bmp")
    assert np.array_equal(hwc(read_image(tmp_path / "a.bmp")), rgb)


def test_animated_gif_is_refused_a_still_gif_is_read(tmp_path):
    frames = [Image.fromarray(np.full((4, 5), 60 * i, np.uint8)).convert("P") for i in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match="an animated image of 3 frames: save the frame"):
        read_image(tmp_path / "a.gif")
    frames[1].save(tmp_path / "b.gif")
    with Image.open(tmp_path / "b.gif") as im:
        assert np.array_equal(hwc(read_image(tmp_path / "b.gif")), np.asarray(im.convert("RGB")))


def with_orientation(image: Image.Image, path, orientation: int, **save) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    image.save(path, exif=exif, **save)


def upright(path, mode: str | None = None) -> np.ndarray:
    with Image.open(path) as im:
        turned = ImageOps.exif_transpose(im)
        return np.asarray(turned.convert(mode) if mode else turned)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_of_a_jpeg_is_applied(tmp_path, rng, orientation):
    stored = Image.fromarray(
        np.kron(rng.integers(0, 256, (3, 5, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    )
    with_orientation(stored, tmp_path / "a.jpg", orientation, quality=95)
    image = hwc(read_image(tmp_path / "a.jpg"))
    expected = upright(tmp_path / "a.jpg", "RGB")
    assert image.shape == expected.shape
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 2  # two libjpeg builds


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_of_a_png_image_and_label_is_applied(tmp_path, rng, orientation):
    with_orientation(
        Image.fromarray(rng.integers(0, 256, (4, 7, 3), dtype=np.uint8)),
        tmp_path / "i.png",
        orientation,
    )
    assert np.array_equal(hwc(read_image(tmp_path / "i.png")), upright(tmp_path / "i.png", "RGB"))
    label = rng.integers(0, 4, (4, 7), dtype=np.uint8)
    with_orientation(Image.fromarray(label, mode="L"), tmp_path / "l8.png", orientation)
    assert np.array_equal(read_label(tmp_path / "l8.png").numpy(), upright(tmp_path / "l8.png"))
    palette = Image.fromarray(label, mode="P")
    palette.putpalette([v for i in range(4) for v in (i, i, i)])
    with_orientation(palette, tmp_path / "l2.png", orientation, bits=2)  # the Pillow path
    assert np.array_equal(read_label(tmp_path / "l2.png").numpy(), upright(tmp_path / "l2.png"))


def pair(tmp_path, label: np.ndarray, image_orientation: int, label_orientation: int = 1):
    """A pair whose image stores the pixels that `image_orientation` shows as `label`'s."""
    shown = Image.fromarray(image_from_label(label))
    undo = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
            8: Image.Transpose.ROTATE_270}[image_orientation]  # fmt: skip
    stored = shown.transpose(undo) if undo else shown
    with_orientation(stored, tmp_path / "i.jpg", image_orientation, quality=95)
    with_orientation(Image.fromarray(label, mode="L"), tmp_path / "l.png", label_orientation)
    return Sample("x", tmp_path / "i.jpg", tmp_path / "l.png")


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_turned_photo_labelled_upright_lines_up(tmp_path, rng, orientation):
    label = make_label(rng, 12, 20)
    sample = pair(tmp_path, label, orientation)
    assert np.array_equal(upright(sample.image, "RGB").shape[:2], label.shape)
    image, read = SegmentationDataset([sample], num_classes=21)[0]
    assert np.array_equal(read.numpy(), label)
    pillow = upright(sample.image, "RGB")
    assert np.abs(hwc(image).astype(int) - pillow.astype(int)).max() <= 2
    # Each pixel nearest its own class's colour: the image lines up with the label.
    colours = image_from_label(np.arange(21, dtype=np.uint8)[None]).reshape(21, 3).astype(int)
    nearest = np.abs(hwc(image)[..., None, :].astype(int) - colours).sum(-1).argmin(-1)
    inside = label != 255
    assert (nearest[inside] == label[inside]).mean() > 0.75  # JPEG blurs block edges


def turned_pair_message(sample) -> str:
    with pytest.raises(DataError) as info:
        SegmentationDataset([sample], num_classes=21)[0]
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{sample.label}: ")
    assert str(sample.image) in message
    return message


def test_a_label_drawn_on_a_turned_photos_stored_pixels_is_refused(tmp_path, rng):
    label = make_label(rng, 12, 20)
    sample = pair(tmp_path, label, 1)
    with Image.open(sample.image) as im:
        stored = im.copy()
    with_orientation(stored, sample.image, 6, quality=95)  # the same pixels, now tagged
    message = turned_pair_message(sample)
    assert "label is 12x20 (HxW) but image" in message and "is 20x12" in message
    assert "the image's EXIF orientation 6 (shown turned 90 degrees clockwise)" in message
    assert "they agree as stored" in message and "Orientation tag" in message


def test_a_turned_label_of_an_upright_photo_is_refused(tmp_path, rng):
    label = make_label(rng, 12, 20)
    sample = pair(tmp_path, label, 1, label_orientation=8)
    message = turned_pair_message(sample)
    assert "the label's EXIF orientation 8" in message and "label is 20x12" in message


def test_sizes_that_differ_anyway_keep_the_plain_message(tmp_path, rng):
    sample = pair(tmp_path, make_label(rng, 12, 20), 6)
    Image.fromarray(np.zeros((7, 9), np.uint8), mode="L").save(sample.label)
    message = turned_pair_message(sample)
    assert "label is 7x9 (HxW) but image" in message and "EXIF" not in message
