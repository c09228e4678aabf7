"""Input streams (early and late fusion) and several heads: geometry, the reference's
fusion and initialisation rules, and refusals.

Every expected value comes from an independent computation: single-stream, single-head FCNs
loaded with one path's weights (the reference's nets are sums of such paths: the Eltwise
0.5 / 0.5 of nyud-fcn32s-color-hha, the two heads of siftflow-fcn16s), the RGB-D conv1_1
rule of nyud-fcn32s-color-d/solve.py in NumPy, and Caffe's crop offsets.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fcn_lightning.errors import ConfigError, WeightsError
from fcn_lightning.models import (
    build_fcn,
    inference,
    init_from_state_dict,
    init_streams_from_checkpoints,
    split_heads,
)
from fcn_lightning.models.bilinear import bilinear_weight
from fcn_lightning.models.dense import DenseFCN

WIDTH = 1 / 16
HEADS = [{"name": "sem", "num_classes": 5}, {"name": "geo", "num_classes": 3}]
SIZES = [(1, 1), (33, 47), (45, 31)]


def perturbed(model: nn.Module, seed: int) -> nn.Module:
    """``model`` with every trainable parameter moved off its initial value, as after
    training (the fixed upsamplings stay bilinear)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def copy_path(target: nn.Module, source: nn.Module, rename: dict[str, str]) -> None:
    """Load into ``target`` every tensor of ``source`` whose name ``rename`` maps (by prefix)
    to one of ``target``'s, checking that all of ``target``'s tensors are covered."""
    wanted = target.state_dict()
    picked = {}
    for key, value in source.state_dict().items():
        for old, new in rename.items():
            if key.startswith(old):
                picked[new + key[len(old) :]] = value
    assert set(picked) >= set(wanted), sorted(set(wanted) - set(picked))
    target.load_state_dict({k: picked[k] for k in wanted})


def head_layers(variant: str) -> list[str]:
    return {
        "fcn32s": ["score_fr", "upscore"],
        "fcn16s": ["score_fr", "upscore2", "score_pool4", "upscore16"],
        "fcn8s": ["score_fr", "upscore2", "score_pool4", "upscore_pool4", "score_pool3",
                  "upscore8"],
    }[variant]  # fmt: skip


def single_for_head(model: nn.Module, variant: str, head: str, classes: int, **kw) -> nn.Module:
    single = build_fcn(variant, num_classes=classes, width=WIDTH, **kw).eval()
    rename = {"backbone.": "backbone."}
    rename.update({f"{layer}_{head}.": f"{layer}." for layer in head_layers(variant)})
    copy_path(single, model, rename)
    return single


def single_for_stream(model: nn.Module, variant: str, stream: str, classes: int, **kw):
    """A one-stream FCN with ``stream``'s backbone and score/skip layers and the shared final
    upsampling of ``model``."""
    single = build_fcn(variant, num_classes=classes, width=WIDTH, **kw).eval()
    *inner, final = head_layers(variant)
    rename = {f"backbones.{stream}.": "backbone.", f"{final}.": f"{final}."}
    rename.update({f"{layer}_{stream}.": f"{layer}." for layer in inner})
    copy_path(single, model, rename)
    return single


# --- geometry ---------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", ["caffe", "aligned"])
@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize(
    ("input", "heads", "channels", "classes"),
    [("color_hha", None, 6, 4), ("color_depth", None, 4, 4), ("depth", None, 1, 4),
     ("rgb", HEADS, 3, 8), ("color_hha", HEADS, 6, 8)],
)  # fmt: skip
def test_output_size_equals_input_size(variant, geometry, input, heads, channels, classes):
    model = build_fcn(
        variant, input=input, heads=heads, num_classes=None if heads else 4,
        width=WIDTH, geometry=geometry,
    ).eval()  # fmt: skip
    with torch.no_grad():
        for height, width in SIZES:
            out = model(torch.randn(2, channels, height, width))
            assert out.shape == (2, classes, height, width), (height, width)


def test_every_path_has_the_reference_crops_and_names():
    # Caffe's crops for VGG16 FCN-8s: score_pool4 5, score_pool3 9, upscore8 31 (docs/paper.md).
    model = build_fcn("fcn8s", input="color_hha", heads=HEADS, width=WIDTH)
    expected = {}
    for head in ("sem", "geo"):
        for stream in ("color", "hha"):
            expected[f"score_pool4_{stream}_{head}"] = 5
            expected[f"score_pool3_{stream}_{head}"] = 9
        expected[f"upscore8_{head}"] = 31
    assert model.crops == expected
    assert model.heads == (("sem", 5), ("geo", 3))
    assert model.streams == (("color", 3), ("hha", 3))
    assert model.num_classes == 5 and model.out_channels == 8
    assert model.final_upsamplings == ["upscore8_sem", "upscore8_geo"]

    sift = build_fcn("fcn16s", heads=HEADS, width=WIDTH)
    names = {k.rsplit(".", 1)[0] for k in sift.state_dict() if not k.startswith("backbone.")}
    assert names == {f"{layer}_{head}" for layer in head_layers("fcn16s")
                     for head in ("sem", "geo")}  # fmt: skip
    assert sift.heads == (("sem", 5), ("geo", 3)) and sift.streams == (("rgb", 3),)

    nyud = build_fcn("fcn32s", input="color_hha", num_classes=4, width=WIDTH)
    names = {k.rsplit(".", 1)[0] for k in nyud.state_dict() if "backbones." not in k}
    assert names == {"score_fr_color", "score_fr_hha", "upscore"}
    assert "backbones.color.features.0.weight" in nyud.state_dict()
    assert "backbones.hha.fc7.weight" in nyud.state_dict()
    assert nyud.heads == (("", 4),)

    plain = build_fcn("fcn32s", num_classes=4, width=WIDTH)
    assert plain.heads == (("", 4),) and plain.streams == (("rgb", 3),)
    assert {k.rsplit(".", 1)[0] for k in plain.state_dict() if "backbone." not in k} == {
        "score_fr", "upscore",
    }  # fmt: skip


# --- late fusion ------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", ["caffe", "aligned"])
@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s"])
def test_late_fusion_is_the_mean_of_the_streams(variant, geometry):
    """nyud-fcn32s-color-hha: score_fused = 0.5 score_frcolor + 0.5 score_frhha, then one
    upscore and crop; the upsampling is linear, so the fused net's scores are the mean of
    two one-stream nets' (FCN-16s: each stream fuses its own pool4 first)."""
    model = perturbed(
        build_fcn(variant, input="color_hha", num_classes=4, width=WIDTH, geometry=geometry), 0
    )
    color = single_for_stream(model, variant, "color", 4, geometry=geometry)
    hha = single_for_stream(model, variant, "hha", 4, geometry=geometry)
    x = torch.randn(2, 6, 45, 37)
    with torch.no_grad():
        got = model(x)
        expected = 0.5 * color(x[:, :3]) + 0.5 * hha(x[:, 3:])
        coarse = 0.5 * color.coarse_scores(x[:, :3]) + 0.5 * hha.coarse_scores(x[:, 3:])
        torch.testing.assert_close(model.coarse_scores(x), coarse, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got.abs().max() > 0  # perturbed score layers: a real comparison


def test_fcn32s_late_fusion_by_hand():
    """The color-hha net written out: each stream's fc7 scored by its 1x1 conv, averaged,
    upsampled by the bilinear k64 s32 transposed conv and cropped at 19."""
    model = perturbed(build_fcn("fcn32s", input="color_hha", num_classes=3, width=WIDTH), 1)
    x = torch.randn(1, 6, 40, 33)
    with torch.no_grad():
        fc7 = [model.backbones[s](part)["fc7"] for s, part in (("color", x[:, :3]),
                                                                ("hha", x[:, 3:]))]  # fmt: skip
        scores = [
            F.conv2d(
                f, getattr(model, f"score_fr_{s}").weight, getattr(model, f"score_fr_{s}").bias
            )
            for f, s in zip(fc7, ("color", "hha"), strict=True)
        ]
        fused = 0.5 * scores[0] + 0.5 * scores[1]
        up = F.conv_transpose2d(fused, bilinear_weight(3, 64), stride=32)
        expected = up[..., 19 : 19 + 40, 19 : 19 + 33]
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


# --- early fusion and one-channel streams: conv1_1 init ---------------------------------


def torchvision_vgg_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """A random width-scaled VGG16 state dict in torchvision's layout (features.*, and the
    classifier as matrices), as a pretrained file would hold."""
    torch.manual_seed(seed)
    c = lambda n: max(1, round(n * WIDTH))  # noqa: E731
    cfg = [v if v == "M" else c(v) for v in torchvision.models.vgg.cfgs["D"]]
    features = torchvision.models.vgg.make_layers(cfg)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.randn(c(4096), c(512) * 49)
    state["classifier.0.bias"] = torch.randn(c(4096))
    state["classifier.3.weight"] = torch.randn(c(4096), c(4096))
    state["classifier.3.bias"] = torch.randn(c(4096))
    return {k: v + torch.randn_like(v) * 0.1 for k, v in state.items()}


@pytest.fixture
def vgg_file(tmp_path):
    state = torchvision_vgg_state_dict(3)
    path = tmp_path / "vgg16-small.pth"
    torch.save(state, path)
    return state, path


def test_early_fusion_conv1_1_follows_the_reference_rule(vgg_file):
    """nyud-fcn32s-color-d/solve.py: conv1_1_bgrd[:, :3] = conv1_1, [:, 3] = its mean over
    the input channels, bias copied; every other layer is the file's."""
    state, path = vgg_file
    model = build_fcn(
        "fcn32s", input="color_depth", num_classes=4, width=WIDTH,
        pretrained=True, weights_path=path,
    )  # fmt: skip
    assert model.streams == (("color_depth", 4),)
    conv = model.backbone.features[0]
    w, b = state["features.0.weight"].numpy(), state["features.0.bias"].numpy()
    expected = np.concatenate([w, w.mean(axis=1, keepdims=True)], axis=1)
    assert conv.weight.shape == (w.shape[0], 4, 3, 3) and conv.padding == (100, 100)
    np.testing.assert_allclose(conv.weight.detach().numpy(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(conv.bias.detach().numpy(), b)
    np.testing.assert_array_equal(
        model.backbone.features[28].weight.detach().numpy(), state["features.28.weight"]
    )
    fc6 = model.backbone.fc6.weight.detach()
    np.testing.assert_array_equal(fc6.reshape(fc6.shape[0], -1), state["classifier.0.weight"])


def test_depth_stream_conv1_1_is_the_mean_alone(vgg_file):
    state, path = vgg_file
    model = build_fcn(
        "fcn32s", input="depth", num_classes=4, width=WIDTH, pretrained=True, weights_path=path
    )
    w = state["features.0.weight"].numpy()
    np.testing.assert_allclose(
        model.backbone.features[0].weight.detach().numpy(),
        w.mean(axis=1, keepdims=True), rtol=1e-6, atol=1e-7,
    )  # fmt: skip


def test_every_stream_starts_from_the_same_weights(vgg_file):
    state, path = vgg_file
    model = build_fcn(
        "fcn32s", input="color_hha", num_classes=4, width=WIDTH,
        pretrained=True, weights_path=path, frozen_backbone=True,
    )  # fmt: skip
    for stream in ("color", "hha"):
        body = model.backbones[stream]
        np.testing.assert_array_equal(body.features[0].weight.detach(), state["features.0.weight"])
        np.testing.assert_array_equal(
            body.fc7.weight.detach()[..., 0, 0], state["classifier.3.weight"]
        )
        assert not any(p.requires_grad for p in body.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("score_fr"))


@pytest.mark.parametrize("backbone", ["alexnet", "resnet50"])
def test_other_backbones_take_other_channels(backbone):
    variant = "fcn32s"
    model = build_fcn(
        variant, input="color_depth", num_classes=3, width=WIDTH, backbone=backbone,
        weights="torchvision",
    ).eval()  # fmt: skip
    assert model.backbone.conv1.in_channels == 4
    with torch.no_grad():
        assert model(torch.randn(1, 4, 35, 29)).shape == (1, 3, 35, 29)


# --- heads ------------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", ["caffe", "aligned"])
@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s", "fcn8s"])
def test_each_head_is_a_single_head_fcn(variant, geometry):
    """siftflow-fcn16s: two complete heads on one trunk; the output concatenates them."""
    model = perturbed(build_fcn(variant, heads=HEADS, width=WIDTH, geometry=geometry), 2)
    x = torch.randn(2, 3, 37, 43)
    with torch.no_grad():
        got = model(x)
        sem = single_for_head(model, variant, "sem", 5, geometry=geometry)(x)
        geo = single_for_head(model, variant, "geo", 3, geometry=geometry)(x)
    assert got.shape == (2, 8, 37, 43)
    torch.testing.assert_close(got[:, :5], sem, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[:, 5:], geo, rtol=1e-5, atol=1e-6)
    blocks = split_heads(got, model.heads)
    assert [b.shape[1] for b in blocks] == [5, 3] and torch.equal(blocks[1], got[:, 5:])
    with pytest.raises(ValueError, match="scores of 5 channels do not fit the heads"):
        split_heads(got[:, :5], model.heads)


@pytest.mark.parametrize("upsampling", ["fixed", "learned"])
def test_gradients_reach_both_heads_and_both_streams(upsampling):
    model = build_fcn("fcn16s", input="color_hha", heads=HEADS, width=WIDTH, upsampling=upsampling)
    model = perturbed(model, 4)
    learned = [n for n, p in model.named_parameters() if n.startswith("up") and p.requires_grad]
    assert len(learned) == (6 if upsampling == "learned" else 0)  # 2 heads x (2 upscore2 + 1)
    model.train()
    labels = torch.randint(0, 3, (2, 2, 36, 36))
    out = model(torch.randn(2, 6, 36, 36))
    loss = F.cross_entropy(out[:, :5], labels[:, 0]) + F.cross_entropy(out[:, 5:], labels[:, 1])
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    for prefix in ("backbones.color.", "backbones.hha.", "score_fr_color_sem", "score_fr_hha_geo",
                   "score_pool4_hha_sem"):  # fmt: skip
        assert any(n.startswith(prefix) and p.grad is not None for n, p in model.named_parameters())


# --- staged training: init_from by name -------------------------------------------------


@pytest.mark.parametrize(
    ("input", "heads", "ends"),
    [("rgb", HEADS, ["_sem", "_geo"]), ("color_hha", None, ["_color", "_hha"])],
)
def test_fcn16s_starts_from_fcn32s_with_heads_and_streams(input, heads, ends):
    classes = {} if heads else {"num_classes": 4}
    source = perturbed(build_fcn("fcn32s", input=input, heads=heads, width=WIDTH, **classes), 5)
    model = build_fcn("fcn16s", input=input, heads=heads, width=WIDTH, **classes)
    report = init_from_state_dict(model, {f"model.{k}": v for k, v in source.state_dict().items()})
    ours, theirs = model.state_dict(), source.state_dict()
    body = [k for k in theirs if k.startswith(("backbone.", "backbones."))]
    assert body and set(body) <= set(report.copied)
    for key in body + [f"score_fr{end}.{p}" for end in ends for p in ("weight", "bias")]:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)
    # The new skip layers start at zero, so FCN-16s starts from what FCN-32s scored.
    for end in ends:
        assert torch.count_nonzero(ours[f"score_pool4{end}.weight"]) == 0
    if heads:  # per head: its own upsamplings, each of its own classes
        kept = {f"{layer}{end}.weight" for layer in ("upscore2", "upscore16")
                for end in ends} | {f"score_pool4{end}.{p}" for end in ends
                                    for p in ("weight", "bias")}  # fmt: skip
        assert set(report.ignored) == {"upscore_sem.weight", "upscore_geo.weight"}
        torch.testing.assert_close(ours["upscore16_geo.weight"], bilinear_weight(3, 32))
    else:  # per stream its skip, one shared final upsampling
        kept = {"upscore16.weight"} | {f"{layer}{end}.{p}" for end in ends
                                       for layer, p in (("upscore2", "weight"),
                                                        ("score_pool4", "weight"),
                                                        ("score_pool4", "bias"))}  # fmt: skip
        assert report.ignored == ["upscore.weight"]
    assert set(report.kept) == kept


@pytest.mark.parametrize("heads", [None, HEADS])
def test_late_fusion_starts_from_one_trained_net_per_stream(tmp_path, heads):
    """nyud-fcn32s-color-hha/solve.py: the colour and HHA FCN-32s transplanted with their
    suffixes; the fused net then starts at the mean of the two nets' scores."""
    classes = {} if heads else {"num_classes": 4}
    color = perturbed(build_fcn("fcn32s", input="color", heads=heads, width=WIDTH, **classes), 10)
    hha = perturbed(build_fcn("fcn32s", input="hha", heads=heads, width=WIDTH, **classes), 11)
    path = tmp_path / "color.ckpt"  # a Lightning checkpoint, as training writes it
    state = {f"model.{k}": v for k, v in color.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 1, "epoch": 0}, path)
    model = build_fcn("fcn32s", input="color_hha", heads=heads, width=WIDTH, **classes).eval()
    report = init_streams_from_checkpoints(model, {"color": path, "hha": hha.state_dict()})
    finals = set(model.final_upsamplings)
    assert {k.rsplit(".", 1)[0] for k in report.kept} == finals  # the shared bilinear ones
    x = torch.randn(1, 6, 37, 41)
    with torch.no_grad():
        expected = 0.5 * color(x[:, :3]) + 0.5 * hha(x[:, 3:])
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)

    with pytest.raises(WeightsError, match=r"streams \['depth'\] are not streams") as error:
        init_streams_from_checkpoints(model, {"depth": path})
    assert "\n" not in str(error.value)
    with pytest.raises(WeightsError, match=r"=a state dict: no layer fits stream hha"):
        init_streams_from_checkpoints(model, {"hha": {"other.weight": torch.zeros(1)}})


# --- inference: test-time augmentation and dense prediction -----------------------------


def test_tta_averages_each_head_on_its_own():
    """TTA averages scores channel by channel, so each head's mean is the mean of its own
    scores: equal to TTA of that head alone, computed here by hand."""
    model = perturbed(build_fcn("fcn32s", heads=HEADS, width=WIDTH), 6)
    scales = (1.0, 0.75)
    tta = inference.TestTimeAugmentation(model, hflip=True, scales=scales)
    x = torch.randn(1, 3, 36, 44)
    with torch.no_grad():
        got = tta(x)
        for head, classes, channels in (("sem", 5, slice(0, 5)), ("geo", 3, slice(5, 8))):
            single = single_for_head(model, "fcn32s", head, classes)
            copies = []
            for scale in scales:
                size = (round(36 * scale), round(44 * scale))
                image = x if scale == 1 else F.interpolate(
                    x, size, mode="bilinear", align_corners=False, antialias=True
                )  # fmt: skip
                for flip in (False, True):
                    scores = single(image.flip(-1)).flip(-1) if flip else single(image)
                    if scale != 1:
                        scores = F.interpolate(scores, (36, 44), mode="bilinear")
                    copies.append(scores)
            torch.testing.assert_close(
                got[:, channels], torch.stack(copies).mean(0), rtol=1e-5, atol=1e-6
            )


def test_stitched_heads_equal_each_head_stitched():
    model = perturbed(build_fcn("fcn16s", heads=HEADS, width=WIDTH), 7)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        got = DenseFCN(model, "stitch", 2)(x)
        sem = DenseFCN(single_for_head(model, "fcn16s", "sem", 5), "stitch", 2)(x)
        geo = DenseFCN(single_for_head(model, "fcn16s", "geo", 3), "stitch", 2)(x)
    torch.testing.assert_close(got, torch.cat([sem, geo], 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["stitch", "dilate"])
def test_dense_streams_are_the_mean_of_each_stream_dense(method):
    model = perturbed(build_fcn("fcn32s", input="color_hha", num_classes=4, width=WIDTH), 8)
    color = single_for_stream(model, "fcn32s", "color", 4)
    hha = single_for_stream(model, "fcn32s", "hha", 4)
    x = torch.randn(1, 6, 38, 42)
    with torch.no_grad():
        got = DenseFCN(model, method, 4)(x)
        expected = 0.5 * DenseFCN(color, method, 4)(x[:, :3]) + 0.5 * DenseFCN(hha, method, 4)(
            x[:, 3:]
        )
    assert got.shape == (1, 4, 38, 42)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_dilated_heads_replace_every_final_upsampling():
    model = perturbed(build_fcn("fcn32s", heads=HEADS, width=WIDTH), 9)
    sem = single_for_head(model, "fcn32s", "sem", 5)
    x = torch.randn(1, 3, 35, 41)
    with torch.no_grad():
        got = DenseFCN(model, "dilate", 2)(x)
        expected = DenseFCN(sem, "dilate", 2)(x)
    assert got.shape == (1, 8, 35, 41)
    torch.testing.assert_close(got[:, :5], expected, rtol=1e-5, atol=1e-5)
    assert type(model.upscore_sem).__name__ == type(model.upscore_geo).__name__ == "Resample"


def test_a_learned_final_upsampling_of_any_head_is_refused_for_partial_density():
    model = build_fcn("fcn32s", heads=HEADS, width=WIDTH, upsampling="learned")
    with torch.no_grad():
        model.upscore_geo.weight.add_(0.01)
    with pytest.raises(ConfigError, match=r"upscore_geo.*inference\.factor=32") as error:
        DenseFCN(model, "stitch", 2)
    assert "\n" not in str(error.value)


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input": "rgbd"}, r"model\.input='rgbd': choose one of \['rgb', 'color'"),
        ({"heads": []}, r"model\.heads=\[\]: a non-empty list"),
        ({"heads": {"name": "sem", "num_classes": 3}}, r"model\.heads=.*a non-empty list"),
        ({"heads": [{"name": "sem"}]}, r"model\.heads\[0\]=.*needs a name and a num_classes"),
        ({"heads": [HEADS[0], {"name": "geo", "num_classes": 0}]},
         r"model\.heads\[1\]\.num_classes=0: must be a positive integer"),
        ({"heads": [HEADS[0], {"name": "geo", "num_classes": True}]},
         r"model\.heads\[1\]\.num_classes=True"),
        ({"heads": [HEADS[0], {"name": "sem", "num_classes": 3}]},
         r"model\.heads\[1\]\.name='sem': another head has that name"),
        ({"heads": [{"name": "geo-2", "num_classes": 3}]},
         r"model\.heads\[0\]\.name='geo-2': must be a Python identifier"),
        ({"heads": [{"name": "class", "num_classes": 3}]}, r"model\.heads\[0\]\.name='class'"),
        ({"heads": [{"name": "sem", "num_classes": 3, "weight": 2}]},
         r"model\.heads\[0\]: unknown key\(s\) \['weight'\]"),
        ({"heads": HEADS, "num_classes": 21},
         r"model\.num_classes=21 but the first head \(sem\) has 5 classes"),
    ],
)  # fmt: skip
def test_bad_streams_and_heads_are_refused_in_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message) as error:
        build_fcn("fcn16s", width=WIDTH, **kwargs)
    assert "\n" not in str(error.value)


def test_a_batch_of_other_channels_is_refused():
    model = build_fcn("fcn32s", input="color_hha", num_classes=4, width=WIDTH)
    with pytest.raises(ValueError, match=r"B x 6 x H x W image batch, got \(1, 3, 32, 32\)"):
        model(torch.randn(1, 3, 32, 32))


def test_one_named_head_is_a_plain_net():
    model = build_fcn("fcn32s", heads=[{"name": "sem", "num_classes": 5, "classes": "x"}],
                      width=WIDTH)  # fmt: skip
    assert model.heads == (("sem", 5),) and model.num_classes == 5
    assert {k.rsplit(".", 1)[0] for k in model.state_dict() if "backbone." not in k} == {
        "score_fr", "upscore",
    }  # fmt: skip


def test_the_model_node_follows_the_data_node():
    """conf/model_base.yaml: model.input and model.heads follow data.input / data.heads and
    reach build_fcn through the LightningModule (hparams keep them for eval and export)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import fcn_lightning.resolvers  # noqa: F401  (the config's resolvers)
    from fcn_lightning.module import FCNModule
    from tests.train_helpers import CONF

    overrides = ["model=fcn16s", f"model.width={WIDTH}", "model.pretrained=false"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        plain = compose("train", overrides=overrides)
        sift = compose("train", overrides=[
            *overrides, "data.num_classes=5", "data.input=color_hha",
            "+data.heads=[{name: sem, num_classes: 5}, {name: geo, num_classes: 3}]",
        ])  # fmt: skip
    assert plain.model.input == "rgb" and plain.model.heads is None
    model = OmegaConf.to_container(sift.model, resolve=True)
    assert model["input"] == "color_hha" and model["heads"] == HEADS
    module = FCNModule(model=model, optim=OmegaConf.to_container(sift.optim, resolve=True))
    assert module.model.heads == (("sem", 5), ("geo", 3))
    assert module.model.streams == (("color", 3), ("hha", 3))
    assert module.hparams["model"]["heads"] == HEADS
