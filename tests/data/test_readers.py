"""Reading image/label pairs: formats, colour modes, and every kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from fcn_lightning.data.readers import SegmentationDataset, read_image, read_label
from fcn_lightning.data.splits import Sample
from fcn_lightning.errors import DataError
from tests.data_fakes import image_from_label, make_label, write_palette_png, write_sbd_mat


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_jpeg_of_any_colour_mode_arrives_as_rgb(tmp_path, rng, mode):
    path = tmp_path / "a.jpg"
    Image.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)).convert(mode).save(path)
    image = read_image(path)
    assert isinstance(image, tv_tensors.Image)
    assert image.dtype == torch.uint8 and image.shape == (3, 9, 13)
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB"))
    # torchvision and PIL both decode with libjpeg(-turbo); allow rounding differences.
    diff = np.abs(image.permute(1, 2, 0).numpy().astype(int) - expected.astype(int))
    assert diff.max() <= 2


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA"])
def test_png_images_arrive_as_rgb(tmp_path, rng, mode):
    path = tmp_path / "a.png"
    rgb = Image.fromarray(rng.integers(0, 256, (7, 5, 3), dtype=np.uint8))
    rgb.convert(mode).save(path)
    image = read_image(path)
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB"))
    assert image.shape == (3, 7, 5)
    assert np.array_equal(image.permute(1, 2, 0).numpy(), expected)


def test_palette_png_label_values_are_class_indices(tmp_path, rng):
    label = make_label(rng, 12, 16)
    label[3, 3] = 255
    write_palette_png(tmp_path / "l.png", label)
    read = read_label(tmp_path / "l.png")
    assert isinstance(read, tv_tensors.Mask) and read.dtype == torch.uint8
    assert np.array_equal(read.numpy(), label)


def test_greyscale_png_label(tmp_path, rng):
    label = make_label(rng, 6, 9)
    Image.fromarray(label, mode="L").save(tmp_path / "l.png")
    assert np.array_equal(read_label(tmp_path / "l.png").numpy(), label)


def test_sbd_mat_label(tmp_path, rng):
    label = make_label(rng, 11, 7)
    label[label == 255] = 3
    write_sbd_mat(tmp_path / "l.mat", label)
    # The reference's own expression, to be sure the fake is the real format.
    raw = scipy.io.loadmat(tmp_path / "l.mat")["GTcls"][0]["Segmentation"][0]
    assert np.array_equal(raw, label)
    assert np.array_equal(read_label(tmp_path / "l.mat").numpy(), label)


def one_line_error(call, *args) -> str:
    with pytest.raises(DataError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_colour_coded_label_png_is_refused(tmp_path, rng):
    path = tmp_path / "l.png"
    Image.fromarray(image_from_label(make_label(rng, 5, 5))).save(path)
    message = one_line_error(read_label, path)
    assert str(path) in message and "label PNG is RGB colour" in message
    assert "save the class indices as a palette (mode P) or greyscale (mode L) PNG" in message


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"not an image at all" * 5, "Unsupported image file"),
        (b"", "empty"),
        ("truncated", "truncated"),
    ],
)
def test_corrupt_image_names_the_file(tmp_path, rng, content, reason):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        content = path.read_bytes()[:600]
    path.write_bytes(content)
    message = one_line_error(read_image, path)
    assert str(path) in message and reason in message


@pytest.mark.parametrize("content", [b"garbage", "no GTcls"])
def test_corrupt_mat_label_names_the_file(tmp_path, content):
    path = tmp_path / "bad.mat"
    if content == "no GTcls":
        scipy.io.savemat(path, {"other": np.zeros((2, 2))})
    else:
        path.write_bytes(content)
    message = one_line_error(read_label, path)
    assert str(path) in message and "GTcls.Segmentation" in message


def write_pair(tmp_path, label: np.ndarray, image_hw=None) -> Sample:
    h, w = image_hw or label.shape
    image = image_from_label(np.zeros((h, w), np.uint8))
    Image.fromarray(image).save(tmp_path / "i.jpg")
    write_palette_png(tmp_path / "l.png", label)
    return Sample("x", tmp_path / "i.jpg", tmp_path / "l.png")


def test_size_mismatch_names_both_files(tmp_path, rng):
    sample = write_pair(tmp_path, make_label(rng, 8, 10), image_hw=(10, 8))
    dataset = SegmentationDataset([sample], num_classes=21)
    message = one_line_error(dataset.__getitem__, 0)
    assert str(sample.label) in message and str(sample.image) in message
    assert "8x10" in message and "10x8" in message


def test_stray_label_values_are_listed(tmp_path, rng):
    label = make_label(rng, 8, 8, num_classes=5)
    label[0, 0], label[1, 1] = 5, 200  # 5 classes: 5 and 200 are neither a class nor 255
    sample = write_pair(tmp_path, label)
    message = one_line_error(SegmentationDataset([sample], num_classes=5).__getitem__, 0)
    assert str(sample.label) in message and "[5, 200]" in message
    image, read = SegmentationDataset([sample], num_classes=201)[0]  # all fit with 201
    assert np.array_equal(read.numpy(), label)
    assert image.shape == (3, 8, 8)


def test_bad_file_in_a_worker_reaches_the_user_as_one_line(tmp_path, rng):
    sample = write_pair(tmp_path, make_label(rng, 8, 8))
    sample.image.write_bytes(b"\xff\xd8\xff\xe0 corrupt jpeg")
    loader = DataLoader(SegmentationDataset([sample], num_classes=21), num_workers=1)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(str(sample.image)) and "corrupt" in message
