"""Shift-and-stitch and filter dilation give the same numbers (docs/paper.md section 1).

Each claim is checked against a computation written out here independently of
`fcn_lightning.models.dense`: stride-1 pooling by hand, stitching layer by layer by
recursion, receptive fields by the textbook recurrence.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from fcn_lightning.errors import ConfigError
from fcn_lightning.models import build_fcn
from fcn_lightning.models.dense import DenseFCN, Resample, dilate_, shift_and_stitch
from fcn_lightning.models.fcn import score_name
from tests.model_fakes import random_resnet50


def random_fcn(variant, geometry, **kwargs):
    """Random weights everywhere (score layers start at zero otherwise), in float64 so that
    equal means equal up to rounding."""
    torch.manual_seed(0)
    model = build_fcn(variant, num_classes=3, width=1 / 16, geometry=geometry, **kwargs)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "upscore" not in name:
                param.normal_(0, 0.1 if param.dim() == 1 else math.sqrt(2 / param[0].numel()))
    return model.double().eval()


def by_hand_interleave(phases, s):
    """Rows a::s and columns b::s from phases[a][b], written cell row by cell row."""
    rows = sum(p[0].shape[-2] for p in phases)
    cols = sum(p.shape[-1] for p in phases[0])
    out = torch.full((*phases[0][0].shape[:-2], rows, cols), float("nan"), dtype=torch.float64)
    for a in range(s):
        for b in range(s):
            for r in range(phases[a][b].shape[-2]):
                out[..., a + s * r, b::s] = phases[a][b][..., r, :]
    assert not out.isnan().any()
    return out


# --- the single pooling layer: stitched stride-2 pooling is stride-1 pooling ---------------


@pytest.mark.parametrize("ceil_mode", [True, False])
@pytest.mark.parametrize("size", [(3, 9), (5, 6), (7, 7), (8, 3)])
def test_stitched_max_pooling_is_stride_one_pooling_everywhere(size, ceil_mode):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    pool = nn.MaxPool2d(2, 2, ceil_mode=ceil_mode)
    # Stride-1 pooling at every position; rounding up means the last window is what exists.
    pad = (0, 1, 0, 1) if ceil_mode else (0, 0, 0, 0)
    expected = F.max_pool2d(F.pad(x, pad, value=-math.inf), 2, stride=1)
    if not ceil_mode and min(size) < 2:
        return  # no window fits; nothing to compare
    phases = [[pool(x[..., a:, b:]) for b in range(2)] for a in range(2)]
    torch.testing.assert_close(by_hand_interleave(phases, 2), expected, rtol=0, atol=0)
    torch.testing.assert_close(shift_and_stitch(pool, x, 2, 1), expected, rtol=0, atol=0)
    dilated = dilate_(nn.Sequential(copy.deepcopy(pool)), 2)
    torch.testing.assert_close(dilated(x), expected, rtol=0, atol=0)


def test_stitching_two_poolings_is_dilated_pooling():
    x = torch.randn(1, 1, 13, 10, dtype=torch.float64)
    net = nn.Sequential(nn.MaxPool2d(2, 2, ceil_mode=True), nn.MaxPool2d(2, 2, ceil_mode=True))
    expected = shift_and_stitch(net, x, 4, 1)
    torch.testing.assert_close(dilate_(net, 4)(x), expected, rtol=0, atol=0)


# --- dilation == stitching layer by layer, everywhere -------------------------------------


def layers_of(model):
    body = model.backbone
    fc = (
        [body.fc6, body.relu6, body.drop6, body.fc7, body.relu7, body.drop7] if body.with_fc else []
    )
    return [*body.features, *fc, getattr(model, score_name(model.score_from))]


def stitch_layer_by_layer(layers, x, removed):
    """Run `layers`; at the first index in `removed` (a stride-s pooling), run the rest on its
    input shifted by 0..s-1 cells each way and interleave (the paper's argument, literally)."""
    for i, layer in enumerate(layers):
        if i in removed:
            s = layer.stride
            rest = {j - i for j in removed if j != i}
            phases = [
                [stitch_layer_by_layer(layers[i:], x[..., a:, b:], rest) for b in range(s)]
                for a in range(s)
            ]
            return by_hand_interleave(phases, s)
        x = layer(x)
    return x


CASES = [
    (variant, factor, geometry)
    for variant, factor in [("fcn32s", 2), ("fcn32s", 4), ("pool5", 2), ("pool4", 4), ("pool3", 8)]
    for geometry in ("aligned", "caffe")
] + [("fcn32s", 8, "aligned")]  # pool3-pool5 of the fc net (pool3 variant: in both)


@pytest.mark.parametrize(("variant", "factor", "geometry"), CASES)
def test_dilation_equals_stitching_layer_by_layer(variant, factor, geometry):
    model = random_fcn(variant, geometry)
    dilated = dilate_(copy.deepcopy(model), factor)
    layers = layers_of(model)
    pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
    removed = set(pools[len(pools) - int(math.log2(factor)) :])
    sizes = [(32, 32), (45, 70)]
    for height, width in sizes:
        x = torch.randn(1, 3, height, width, dtype=torch.float64)
        if geometry == "aligned":
            x = F.pad(x, (0, -width % 32, 0, -height % 32))
        with torch.no_grad():
            expected = stitch_layer_by_layer(layers, x, removed)
            got = dilated.coarse_scores(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected)


# --- stitching shifted inputs == dilation, away from the border ---------------------------


def receptive_field(layers):
    """(first cell centre, stride, size) in input pixels: the textbook recurrence."""
    start, jump, size = 0.0, 1, 1
    for layer in layers:
        if isinstance(layer, nn.Conv2d | nn.MaxPool2d):
            k, s, p, d = (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
            k, s, p, d = (v if isinstance(v, int) else v[0] for v in (k, s, p, d))
            size += (k - 1) * d * jump
            start += ((k - 1) * d / 2 - p) * jump
            jump *= s
    return start, jump, size


@pytest.mark.parametrize(("variant", "factor", "size"), [
    ("pool3", 2, 64), ("pool3", 4, 64), ("fcn32s", 2, 448),
])  # fmt: skip
def test_stitching_shifted_inputs_equals_dilation_away_from_the_border(variant, factor, size):
    model = random_fcn(variant, "aligned")
    start, stride, rf = receptive_field(layers_of(model))
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        stitched = DenseFCN(copy.deepcopy(model), "stitch", factor).dense_scores(x)
        dilated = DenseFCN(model, "dilate", factor).dense_scores(x)
    step = stride // factor
    # Cells whose receptive field lies inside every shifted copy: no padding reached them.
    centres = start + step * torch.arange(stitched.shape[-1])
    inside = (centres - (rf - 1) / 2 >= (factor - 1) * step) & (centres + (rf - 1) / 2 < size)
    cells = inside.nonzero().flatten()
    assert len(cells) >= 2
    region = (..., cells[:, None], cells[None, :])
    torch.testing.assert_close(stitched[region], dilated[region])
    # ...and only there: at the border the zero padding moves with the shift.
    common = (..., slice(0, stitched.shape[-2]), slice(0, stitched.shape[-1]))
    assert not torch.allclose(stitched, dilated[common])


@pytest.mark.parametrize(("variant", "factor"), [("fcn8s", 2), ("fcn16s", 4), ("fcn32s", 4)])
@pytest.mark.parametrize("geometry", ["aligned", "caffe"])
def test_stitched_map_holds_the_unshifted_coarse_map_and_gives_pixels(variant, factor, geometry):
    model = random_fcn(variant, geometry)
    dense = DenseFCN(model, "stitch", factor)
    x = torch.randn(1, 3, 37, 50, dtype=torch.float64)
    with torch.no_grad():
        stitched = dense.dense_scores(x)
        coarse = model.coarse_scores(x)
        pixels = dense(x)
    # Copy (0, 0) is the input itself; shifted copies may have fewer cells, so the stitched
    # map can end before the coarse one does.
    unshifted = stitched[..., ::factor, ::factor]
    rows, cols = unshifted.shape[-2:]
    torch.testing.assert_close(unshifted, coarse[..., :rows, :cols], rtol=0, atol=0)
    assert rows * model.output_stride >= 37 - model.coarse_coord.offset
    assert pixels.shape == (1, 3, 37, 50)


def test_dilated_fcn_still_maps_images_to_pixel_scores():
    model = random_fcn("fcn32s", "aligned")
    x = torch.randn(1, 3, 50, 37, dtype=torch.float64)
    with torch.no_grad():
        expected = DenseFCN(copy.deepcopy(model), "dilate", 4)(x)
        got = dilate_(model, 4)(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert model.output_stride == 8


def test_resample_interpolates_between_cell_centres_and_repeats_the_edges():
    cells = torch.tensor([0.0, 10.0, 20.0]).view(1, 1, 1, 3).expand(1, 1, 3, 3)
    out = Resample(scale=4, offset=1.5)(cells, (5, 12))
    # Pixel p lies at cell (p - 1.5) / 4: 2.5 per pixel between centres 1.5 and 9.5.
    expected = torch.tensor([0, 0, 1.25, 3.75, 6.25, 8.75, 11.25, 13.75, 16.25, 18.75, 20, 20])
    torch.testing.assert_close(out[0, 0, 2], expected)
    assert out.shape == (1, 1, 5, 12)


# --- ResNets: dilation is torchvision's replace_stride_with_dilation ----------------------


@pytest.mark.parametrize(("factor", "replace"), [(4, [False, True, True]),
                                                 (8, [True, True, True])])  # fmt: skip
def test_dilating_a_resnet_fcn_gives_torchvisions_dilated_resnet(factor, replace):
    net = random_resnet50()
    model = build_fcn("fcn32s", num_classes=3, backbone="resnet50")
    model.backbone.load_pretrained(net.state_dict(), source="test")
    dilate_(model.eval(), factor)
    assert model.output_stride == 32 // factor
    reference = torchvision.models.resnet50(replace_stride_with_dilation=replace)
    reference.load_state_dict(net.state_dict())
    expected = create_feature_extractor(reference.eval(), {"layer4": "layer4"})
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours, theirs = model.backbone(x)["layer4"], expected(x)["layer4"]
    assert ours.shape == theirs.shape == (1, 2048, 64 * factor // 32, 96 * factor // 32)
    scale = theirs.abs().max().item()  # frozen BN folds its statistics another way
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("size", [(64, 64), (50, 77)])
def test_a_dilated_resnet_fcn_keeps_the_plain_scores_on_every_factor_th_cell(size):
    model = random_fcn("fcn32s", "aligned", backbone="resnet50")
    dilated = dilate_(copy.deepcopy(model), 4)
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        plain, dense = model.coarse_scores(x), dilated.coarse_scores(x)
        assert dilated(x).shape == (1, 3, *size)
    assert dense.shape[-2:] == tuple(4 * n for n in plain.shape[-2:])
    torch.testing.assert_close(dense[..., ::4, ::4], plain)


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "method", "factor", "kwargs", "key"), [
    ("fcn32s", "stitch", 3, {}, "inference.factor=3"),
    ("fcn32s", "dilate", 64, {}, "inference.factor=64"),
    ("fcn8s", "stitch", 16, {}, "inference.factor=16"),
    ("fcn8s", "dilate", 2, {}, "inference.dense=dilate"),
    ("fcn32s", "shift", 2, {}, "inference.dense='shift'"),
    ("fcn32s", "dilate", 4, {"backbone": "resnet50_dilated"}, "inference.factor=2 at most"),
])  # fmt: skip
def test_unsupported_combinations_are_refused_in_one_line(variant, method, factor, kwargs, key):
    model = build_fcn(variant, num_classes=2, width=1 / 16, **kwargs)
    with pytest.raises(ConfigError, match=key) as error:
        DenseFCN(model, method, factor)
    assert "\n" not in str(error.value)


def test_learned_final_upsampling_is_refused_unless_fully_dense():
    model = build_fcn("fcn32s", num_classes=2, width=1 / 16, upsampling="learned")
    with torch.no_grad():
        model.upscore.weight.mul_(1.5)  # "learned"
    with pytest.raises(ConfigError, match="learned its final upsampling"):
        DenseFCN(copy.deepcopy(model), "stitch", 4)
    assert DenseFCN(model, "dilate", 32).model.output_stride == 1
