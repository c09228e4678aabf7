"""Joint transforms keep image and label aligned; normalisation is what the weights expect.

The image is painted from its label (one colour per class), so after a transform the class
can be read back from each pixel's colour and compared with the transformed label.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from fcn_lightning.data.transforms import build_transforms
from fcn_lightning.errors import ConfigError
from tests.data_fakes import class_colours

NUM_CLASSES = 7
CAFFE_MEAN_BGR = np.array([104.00698793, 116.66876762, 122.67891434])
TV_MEAN = np.array([0.485, 0.456, 0.406])
TV_STD = np.array([0.229, 0.224, 0.225])


def caffe(rgb: np.ndarray) -> np.ndarray:
    """Reference preprocessing: RGB -> BGR, 0-255, minus the mean pixel."""
    return rgb[..., ::-1].astype(np.float64) - CAFFE_MEAN_BGR


def block_pair(seed: int = 0, height: int = 64, width: int = 80):
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, NUM_CLASSES, (height // 8, width // 8))
    label = np.kron(blocks, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
    image = class_colours(NUM_CLASSES)[label]
    return (
        tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous()),
        tv_tensors.Mask(torch.from_numpy(label)),
        image,
        label,
    )


def classes_from_caffe_image(x: torch.Tensor) -> np.ndarray:
    """Nearest class colour of each pixel of a Caffe-normalised image."""
    pixels = x.permute(1, 2, 0).numpy().astype(np.float64)  # H x W x 3 (BGR - mean)
    palette = caffe(class_colours(NUM_CLASSES))  # C x 3
    dist = ((pixels[:, :, None, :] - palette[None, None]) ** 2).sum(-1)
    return dist.argmin(-1)


def interior(label: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds one label (bilinear blends only at edges)."""
    padded = np.pad(label.astype(int), 1, mode="edge")
    same = np.ones_like(label, dtype=bool)
    h, w = label.shape
    for dy in range(3):
        for dx in range(3):
            same &= padded[dy : dy + h, dx : dx + w] == label
    return same


OPTIONS = [
    {"hflip": True},
    {"translate_px": 32},
    {"crop_size": [24, 20]},
    {"crop_size": 64},  # larger than the image: padded
    {"scale_range": [0.5, 2.0]},
    {"scale_range": [0.6, 1.4], "translate_px": 12, "crop_size": [32, 32], "hflip": True},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(o))
def test_label_drawn_from_the_image_still_matches_after_the_transform(options):
    transform = build_transforms(normalization="caffe", **options)
    for seed in range(6):
        torch.manual_seed(seed)
        image, label, _, _ = block_pair(seed)
        x, y = transform(image, label)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[-2:] == y.shape
        if "crop_size" in options:
            size = options["crop_size"]
            assert tuple(y.shape) == ((size, size) if isinstance(size, int) else tuple(size))
        y = y.numpy()
        from_image = classes_from_caffe_image(x)
        check = (y != 255) & interior(y)
        assert check.sum() >= 100  # enough pixels to mean something
        assert np.array_equal(from_image[check], y[check])
        # Uncovered pixels: ignore in the label, the mean colour (about 0) in the image.
        pad = y == 255
        if pad.any():
            assert np.abs(x.numpy()[:, pad]).max() <= 0.5


def test_hflip_mirrors_image_and_label_together():
    transform = build_transforms(normalization="caffe", hflip=True)
    image, label, rgb, lab = block_pair(3)
    flips = 0
    for seed in range(8):
        torch.manual_seed(seed)
        x, y = transform(image, label)
        flipped = np.array_equal(y.numpy(), lab[:, ::-1])
        flips += flipped
        expected_label = lab[:, ::-1] if flipped else lab
        assert np.array_equal(y.numpy(), expected_label)
        expected_image = caffe(rgb[:, ::-1] if flipped else rgb)
        assert np.allclose(x.permute(1, 2, 0).numpy(), expected_image, atol=1e-4)
    assert 0 < flips < 8


def test_translation_shifts_by_whole_pixels_within_the_limit():
    transform = build_transforms(normalization="caffe", translate_px=5)
    image = tv_tensors.Image(torch.zeros(3, 40, 56, dtype=torch.uint8))
    marker = np.zeros((40, 56), np.uint8)
    marker[20, 28] = 1
    label = tv_tensors.Mask(torch.from_numpy(marker))
    shifts = set()
    for seed in range(30):
        torch.manual_seed(seed)
        _, y = transform(image, label)
        ys, xs = np.nonzero(y.numpy() == 1)
        assert len(ys) == 1
        dy, dx = int(ys[0]) - 20, int(xs[0]) - 28
        assert abs(dy) <= 5 and abs(dx) <= 5
        shifts.add((dy, dx))
    assert len(shifts) > 5


def test_paper_pipeline_is_normalisation_only():
    image, label, rgb, lab = block_pair(2)
    x, y = build_transforms(normalization="caffe")(image, label)
    assert np.allclose(x.permute(1, 2, 0).numpy(), caffe(rgb), atol=1e-4)
    assert np.array_equal(y.numpy(), lab)


def test_torchvision_normalisation():
    image, label, rgb, _ = block_pair(2)
    x, _ = build_transforms(normalization="torchvision")(image, label)
    expected = (rgb / 255.0 - TV_MEAN) / TV_STD
    assert np.allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    "options, key",
    [
        ({"scale_range": [2.0, 1.0]}, "data.scale_range"),
        ({"crop_size": [0, 5]}, "data.crop_size"),
        ({"translate_px": -1}, "data.translate_px"),
        ({"normalization": "imagenet"}, "data.normalization"),
    ],
)
def test_bad_transform_options_name_the_key(options, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_transforms(**{"normalization": "caffe", **options})
