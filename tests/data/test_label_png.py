"""Label PNGs of every bit depth and colour type: read as Pillow reads them, or refused.

Each file is written by Pillow (or, where Pillow cannot, by tests/data/png_files.py) and
the class indices `read_label` returns are compared with Pillow's own reading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fcn_lightning.data.readers import read_label
from fcn_lightning.errors import DataError
from tests.data.png_files import write_png

GREY_PALETTE = [v for i in range(256) for v in (i, i, i)]


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def pillow_reads(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


def refused(path) -> str:
    with pytest.raises(DataError) as info:
        read_label(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


def header(path) -> tuple[int, int]:
    data = path.read_bytes()
    return data[24], data[25]  # IHDR bit depth, colour type


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_palette_labels_of_every_bit_depth(tmp_path, rng, bits):
    label = rng.integers(0, 1 << bits, (9, 13), dtype=np.uint8)
    im = Image.fromarray(label, mode="P")
    im.putpalette(GREY_PALETTE[: 3 << bits])
    path = tmp_path / "l.png"
    im.save(path, bits=bits)
    assert header(path) == (bits, 3)  # Pillow wrote what the test means
    read = read_label(path)
    assert read.dtype == torch.uint8
    assert np.array_equal(read.numpy(), pillow_reads(path))
    assert np.array_equal(read.numpy(), label)


def test_palette_label_of_few_colours_as_pillow_quantises_it(tmp_path, rng):
    """`convert("P")` on an image of 5 colours: Pillow writes it at 4 bits."""
    label = rng.integers(0, 5, (8, 11), dtype=np.uint8)
    grey = Image.fromarray(label * 40, mode="L").convert("RGB")
    path = tmp_path / "l.png"
    grey.convert("P", palette=Image.Palette.ADAPTIVE, colors=5).save(path)
    assert header(path) == (4, 3)
    assert np.array_equal(read_label(path).numpy(), pillow_reads(path))


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_greyscale_labels_hold_their_stored_values(tmp_path, rng, bits):
    label = rng.integers(0, 1 << bits, (7, 10), dtype=np.uint8)
    path = tmp_path / "l.png"
    Image.fromarray(label, mode="L").save(path, bits=bits)
    assert header(path) == (bits, 0)
    # Pillow shows a low-bit sample as brightness stretched to 0-255 (3 of 2 bits: 255);
    # the file stores the index, so un-stretch Pillow's values to compare.
    stretch = 255 // ((1 << bits) - 1)
    pillow = np.asarray(Image.open(path).convert("L"))
    assert np.array_equal(read_label(path).numpy(), pillow // stretch)
    assert np.array_equal(read_label(path).numpy(), label)


def test_one_bit_mask_from_a_boolean_array_holds_classes_0_and_1(tmp_path, rng):
    mask = rng.random((6, 9)) > 0.5
    Image.fromarray(mask).save(tmp_path / "l.png")  # mode "1"
    assert header(tmp_path / "l.png") == (1, 0)
    assert np.array_equal(read_label(tmp_path / "l.png").numpy(), pillow_reads(tmp_path / "l.png"))


def test_sixteen_bit_greyscale_label_values_up_to_255(tmp_path, rng):
    label = rng.integers(0, 21, (8, 8)).astype(np.uint16)
    label[0, :3] = 255
    path = tmp_path / "l.png"
    Image.fromarray(label).save(path)  # mode I;16
    assert header(path) == (16, 0)
    read = read_label(path)
    assert read.dtype == torch.uint8
    assert np.array_equal(read.numpy(), pillow_reads(path))


@pytest.mark.parametrize("value", [256, 300, 65535])
def test_sixteen_bit_label_value_above_255_is_refused(tmp_path, value):
    label = np.zeros((4, 5), np.uint16)
    label[1, 2] = value
    Image.fromarray(label).save(tmp_path / "l.png")
    message = refused(tmp_path / "l.png")
    assert f"up to {value}" in message and "1 pixel(s) above 255" in message


def test_palette_transparency_is_ignored(tmp_path, rng):
    label = rng.integers(0, 4, (6, 7), dtype=np.uint8)
    im = Image.fromarray(label, mode="P")
    im.putpalette(GREY_PALETTE)
    im.save(tmp_path / "l.png", transparency=bytes([0, 128, 255, 0]))  # a tRNS chunk
    with Image.open(tmp_path / "l.png") as pil:
        assert "transparency" in pil.info
        assert pil.convert("PA").getchannel("A").getextrema() == (0, 255)
    assert np.array_equal(read_label(tmp_path / "l.png").numpy(), pillow_reads(tmp_path / "l.png"))


def test_greyscale_with_opaque_alpha_reads_its_grey(tmp_path, rng):
    grey = rng.integers(0, 21, (5, 6), dtype=np.uint8)
    la = np.stack([grey, np.full_like(grey, 255)], axis=-1)
    Image.fromarray(la, mode="LA").save(tmp_path / "l.png")
    assert np.array_equal(
        read_label(tmp_path / "l.png").numpy(), pillow_reads(tmp_path / "l.png")[..., 0]
    )


def test_sixteen_bit_greyscale_with_opaque_alpha(tmp_path, rng):
    grey = rng.integers(0, 21, (5, 6)).astype(np.uint16)
    path = write_png(tmp_path / "l.png", np.stack([grey, np.full_like(grey, 65535)], -1), "LA", 16)
    assert np.array_equal(read_label(path).numpy(), grey)


@pytest.mark.parametrize("depth", [8, 16])
def test_transparent_pixels_are_refused(tmp_path, rng, depth):
    grey = rng.integers(0, 21, (5, 6))
    alpha = np.full_like(grey, (1 << depth) - 1)
    alpha[2, 2] = alpha[3, 3] = 0
    path = write_png(tmp_path / "l.png", np.stack([grey, alpha], -1), "LA", depth)
    with Image.open(path) as im:  # Pillow sees the same two transparent pixels
        assert int((np.array(im.getchannel("A")) == 0).sum()) == 2
    message = refused(path)
    assert "2 transparent pixel(s)" in message and "without alpha" in message


@pytest.mark.parametrize("mode, depth", [("RGB", 8), ("RGBA", 8), ("RGB", 16), ("RGBA", 16)])
def test_colour_labels_are_refused_not_read_through_a_channel(tmp_path, rng, mode, depth):
    grey = rng.integers(0, 21, (4, 4))
    samples = np.repeat(grey[..., None], len(mode), axis=-1)  # even equal channels
    if mode == "RGBA":
        samples[..., 3] = (1 << depth) - 1
    path = tmp_path / "l.png"
    if depth == 8:
        Image.fromarray(samples.astype(np.uint8), mode=mode).save(path)
    else:
        write_png(path, samples, mode, depth)
    message = refused(path)
    assert f"label PNG is {mode} colour" in message
    assert "palette (mode P) or greyscale (mode L) PNG" in message


def test_jpeg_saved_as_a_label_png_is_named(tmp_path, rng):
    path = tmp_path / "l.png"
    Image.fromarray(rng.integers(0, 21, (8, 8), dtype=np.uint8)).save(path, "JPEG")
    assert "is a JPEG, not a PNG" in refused(path)


@pytest.mark.parametrize("setup, why", [
    (lambda p: p.mkdir(), "label file is a directory"),
    (lambda p: p.write_bytes(b""), "label file is empty"),
    (lambda p: p.symlink_to(p), "label file is a symbolic link that loops"),
    (lambda p: p.symlink_to(p.parent / "gone.png"), "which does not exist"),
])  # fmt: skip
def test_a_label_path_that_is_no_file(tmp_path, setup, why):
    path = tmp_path / "l.png"
    setup(path)
    assert why in refused(path)
