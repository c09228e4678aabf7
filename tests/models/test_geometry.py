"""FCN geometry: output sizes, crop offsets, bilinear upsampling, zero-initialised scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcn_lightning.models import VARIANTS, build_fcn
from fcn_lightning.models.bilinear import bilinear_kernel, bilinear_weight

SIZES = [(1, 1), (1, 7), (5, 3), (31, 33), (32, 32), (64, 47), (97, 130)]


@pytest.mark.parametrize("geometry", ["caffe", "aligned"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_output_size_equals_input_size(variant, geometry):
    model = build_fcn(variant, num_classes=3, width=1 / 16, geometry=geometry).eval()
    with torch.no_grad():
        for height, width in SIZES:
            out = model(torch.randn(2, 3, height, width))
            assert out.shape == (2, 3, height, width), (variant, geometry, height, width)


# Independent of the package's CoordMap: Caffe's coord_map formulas (top = a * bottom + b per
# layer, caffe/python/caffe/coord_map.py) applied to the reference layer lists written out.
def caffe_layers(geometry):
    pad1, fc6_pad = (100, 0) if geometry == "caffe" else (1, 3)
    layers = []
    for block, convs in enumerate([2, 2, 3, 3, 3], start=1):
        for i in range(convs):
            layers.append(("conv", 3, 1, pad1 if (block, i) == (1, 0) else 1))
        layers.append(("pool", 2, 2, 0))
        layers.append(f"pool{block}")
    layers += [("conv", 7, 1, fc6_pad), ("conv", 1, 1, 0), "fc7"]
    return layers


def caffe_maps(geometry):
    """Blob name -> (a, b): the blob's coordinate as a function of the image coordinate."""
    a, b, maps = 1.0, 0.0, {}
    for layer in caffe_layers(geometry):
        if isinstance(layer, str):
            maps[layer] = (a, b)
            continue
        _, k, s, p = layer
        a, b = a / s, b / s + (p - (k - 1) / 2) / s
    return maps


def deconv(coord, k, s, p):
    a, b = coord
    return a * s, b * s + (k - 1) / 2 - p


def caffe_crop(cropped, reference):
    """Caffe's crop(): the offset of `reference`'s origin inside `cropped`."""
    (a1, b1), (a2, b2) = cropped, reference
    assert a1 == a2
    offset = b1 - b2  # both in the coordinate of the same blob scale
    assert offset >= 0 and offset == int(offset)
    return int(offset)


def expected_crops(variant, geometry):
    maps = caffe_maps(geometry)
    spec = VARIANTS[variant]
    trim = (lambda f: f // 2) if geometry == "aligned" else (lambda f: 0)
    stride = {"pool3": 8, "pool4": 16, "pool5": 32, "fc7": 32}
    coord, tap, crops = maps[spec.score_from], spec.score_from, {}
    for skip in spec.skips:
        f = stride[tap] // stride[skip]
        coord = deconv(coord, 2 * f, f, trim(f))
        crops[f"score_{skip}"] = caffe_crop(maps[skip], coord)
        tap = skip
    f = stride[tap]
    coord = deconv(coord, 2 * f, f, trim(f))
    final = "upscore" if not spec.skips else f"upscore{f}"
    crops[final] = caffe_crop(coord, (1.0, 0.0))
    return crops


@pytest.mark.parametrize("geometry", ["caffe", "aligned"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_crop_offsets_match_independent_coordinate_computation(variant, geometry):
    model = build_fcn(variant, num_classes=2, width=1 / 16, geometry=geometry)
    assert model.crops == expected_crops(variant, geometry)


def test_crop_offsets_are_the_reference_numbers():
    def crops(variant):
        return build_fcn(variant, num_classes=21, width=1 / 16).crops

    assert crops("fcn32s") == {"upscore": 19}
    assert crops("fcn16s") == {"score_pool4": 5, "upscore16": 27}
    assert crops("fcn8s") == {"score_pool4": 5, "score_pool3": 9, "upscore8": 31}
    assert crops("fcn8s_atonce") == crops("fcn8s")


def numpy_bilinear(k):
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = np.ogrid[:k, :k]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


@pytest.mark.parametrize("size", [3, 4, 5, 16, 32, 63, 64])
def test_bilinear_kernel_matches_formula(size):
    np.testing.assert_allclose(bilinear_kernel(size).numpy(), numpy_bilinear(size), atol=1e-7)


def test_bilinear_weight_is_on_the_class_diagonal():
    weight = bilinear_weight(4, 8)
    for i in range(4):
        for j in range(4):
            expected = numpy_bilinear(8) if i == j else np.zeros((8, 8))
            np.testing.assert_allclose(weight[i, j].numpy(), expected, atol=1e-7)


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_transposed_conv_interpolates_linear_ramps(factor):
    # A ramp sampled at the coarse cells must come out as the same ramp at fine resolution,
    # away from the borders (where the transposed conv sees only one neighbour).
    coarse = torch.arange(6, dtype=torch.float64).view(1, 1, 1, 6).expand(1, 1, 6, 6)
    weight = bilinear_weight(1, 2 * factor).double()
    fine = F.conv_transpose2d(coarse, weight, stride=factor)
    # Fine cell x sits at coarse coordinate (x - (k - 1) / 2) / s.
    xs = torch.arange(fine.shape[-1], dtype=torch.float64)
    position = (xs - (2 * factor - 1) / 2) / factor
    interior = (position >= 0) & (position <= 5)
    torch.testing.assert_close(fine[0, 0, factor * 2, interior], position[interior])


@pytest.mark.parametrize("geometry", ["caffe", "aligned"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fresh_model_scores_are_constant(variant, geometry):
    model = build_fcn(variant, num_classes=4, width=1 / 16, geometry=geometry).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 41, 29) * 50)
    assert torch.count_nonzero(out) == 0


def test_upsampling_frozen_unless_learned():
    fixed = build_fcn("fcn8s", num_classes=3, width=1 / 16)
    learned = build_fcn("fcn8s", num_classes=3, width=1 / 16, upsampling="learned")
    for model, trainable in ((fixed, False), (learned, True)):
        for name in model.upsample_names:
            assert getattr(model, name).weight.requires_grad is trainable


def test_frozen_backbone_trains_only_score_layers():
    model = build_fcn("fcn32s", num_classes=3, width=1 / 16, frozen_backbone=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"score_fr.weight", "score_fr.bias"}


def test_atonce_scales_skip_inputs():
    torch.manual_seed(0)
    plain = build_fcn("fcn8s", num_classes=3, width=1 / 16).eval()
    atonce = build_fcn("fcn8s_atonce", num_classes=3, width=1 / 16).eval()
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.05)
    atonce.load_state_dict(plain.state_dict())
    # Multiplying the skip score weights by the fixed scales makes fcn8s compute fcn8s_atonce.
    with torch.no_grad():
        plain.score_pool4.weight.mul_(0.01)
        plain.score_pool3.weight.mul_(0.0001)
        x = torch.randn(1, 3, 45, 61)
        torch.testing.assert_close(plain(x), atonce(x))


def test_aligned_and_caffe_share_parameters():
    caffe = build_fcn("fcn8s", num_classes=5, width=1 / 8)
    aligned = build_fcn("fcn8s", num_classes=5, width=1 / 8, geometry="aligned")
    shapes = {k: v.shape for k, v in caffe.state_dict().items()}
    assert shapes == {k: v.shape for k, v in aligned.state_dict().items()}
    aligned.load_state_dict(caffe.state_dict())


def test_dropout_is_element_wise():
    torch.manual_seed(0)
    model = build_fcn("fcn32s", num_classes=2, width=1 / 16, geometry="aligned")
    body = model.backbone
    x = torch.randn(1, 3, 96, 96)
    body.eval()
    with torch.no_grad():
        clean = body(x)["fc7"]
        body.train()
        # Drop only at fc7: fc6's dropout would change fc7's input.
        body.drop6.p = 0.0
        dropped = body(x)["fc7"]
    alive = clean > 0
    ratio = dropped[alive] / clean[alive]
    assert set(ratio.round().unique().tolist()) == {0.0, 2.0}  # survivors scaled by 1/(1-p)
    # Within one channel some cells survive and others do not (Dropout2d drops channels).
    per_channel = (dropped > 0) & alive
    mixed = (per_channel.any(dim=(2, 3)) & (~per_channel & alive).any(dim=(2, 3))).sum()
    assert mixed > 0


def test_bad_input_shape_is_refused_clearly():
    model = build_fcn("fcn32s", num_classes=2, width=1 / 16)
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        model(torch.randn(3, 8, 8))
