"""Backbones behind the one FCN head: FCN-AlexNet (Caffe-shaped and torchvision-shaped) and
ResNet-50/101 (strided and dilated). Geometry, crops, weights, refusals, configs, training."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hydra import compose, initialize_config_dir
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from fcn_lightning.errors import ConfigError, WeightsError
from fcn_lightning.models import build_fcn, input_norm_for
from fcn_lightning.models.backbones.vgg import scaled
from fcn_lightning.models.coord_map import CoordMap
from tests.model_fakes import random_resnet50
from tests.models.test_geometry import caffe_crop, deconv
from tests.train_helpers import CONF, compose_train, tiny_dataset

WIDTH = 1 / 16
SIZES = [(1, 1), (1, 7), (5, 3), (31, 33), (32, 32), (64, 47), (80, 33)]
# (backbone, variant, geometry, weights): every supported kind of combination once.
CASES = [
    ("alexnet", "fcn32s", "caffe", "caffe"),
    ("alexnet", "fcn32s", "aligned", "caffe"),
    ("alexnet", "fcn32s", "caffe", "torchvision"),
    ("resnet50", "fcn32s", "aligned", "torchvision"),
    ("resnet50", "fcn16s", "aligned", "torchvision"),
    ("resnet50", "fcn8s", "aligned", "torchvision"),
    ("resnet50", "pool3", "aligned", "torchvision"),
    ("resnet50_dilated", "fcn32s", "aligned", "torchvision"),
    ("resnet50_dilated", "fcn8s_atonce", "aligned", "torchvision"),
    ("resnet101", "fcn16s", "aligned", "torchvision"),
]


def tiny(backbone, variant, geometry, weights="torchvision", classes=3, **kwargs):
    return build_fcn(
        variant, num_classes=classes, backbone=backbone, geometry=geometry,
        weights=weights, width=WIDTH, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize(("backbone", "variant", "geometry", "weights"), CASES)
def test_output_size_equals_input_size_and_fresh_scores_are_constant(
    backbone, variant, geometry, weights
):
    model = tiny(backbone, variant, geometry, weights).eval()
    with torch.no_grad():
        for height, width in SIZES:
            out = model(torch.randn(2, 3, height, width) * 50)
            assert out.shape == (2, 3, height, width), (height, width)
            assert torch.count_nonzero(out) == 0  # every score layer starts at zero


# Independent of CoordMap: Caffe's (a, b) formulas over the layer lists written out.
def alexnet_layers(geometry):
    if geometry == "caffe":
        return [(11, 4, 100), (3, 2, 0), (5, 1, 2), (3, 2, 0), (3, 1, 1), (3, 1, 1),
                (3, 1, 1), (3, 2, 0), (6, 1, 0), "fc7"]  # fmt: skip
    # "same" padding; fc6 is padded (2, 3), which only the first 2 moves cells.
    return [(11, 4, 5), (3, 2, 1), (5, 1, 2), (3, 2, 1), (3, 1, 1), (3, 1, 1),
            (3, 1, 1), (3, 2, 1), (6, 1, 2), "fc7"]  # fmt: skip


def resnet_layers(dilated):
    """Stem, then per stage the strided (or dilated) 3x3 of its first block; the other
    convolutions of a bottleneck are centred (3x3 pad = dilation, 1x1 pad 0)."""
    layers = [(7, 2, 3), (3, 2, 1), "layer1"]
    for stage, dilation in (("layer2", 1), ("layer3", 2), ("layer4", 4)):
        if dilated and stage != "layer2":
            layers += [(1 + 2 * dilation, 1, dilation), stage]
        else:
            layers += [(3, 2, 1), stage]
    return layers


def caffe_maps(layers):
    a, b, maps = 1.0, 0.0, {}
    for layer in layers:
        if isinstance(layer, str):
            maps[layer] = (a, b)
            continue
        k, s, p = layer
        a, b = a / s, b / s + (p - (k - 1) / 2) / s
    return maps


def head_crops(model, maps):
    """Crops that follow from the head's own upsampling layers, Caffe's way."""
    coord, crops = maps[model.score_from], {}
    for skip, up in zip(model.skips, model.skip_upsamplings, strict=True):
        if up is not None:
            layer = getattr(model, up)
            coord = deconv(coord, layer.kernel_size[0], layer.stride[0], layer.padding[0])
        crops[f"score_{skip}"] = caffe_crop(maps[skip], coord)
    final = getattr(model, model.upsample_names[-1])
    coord = deconv(coord, final.kernel_size[0], final.stride[0], final.padding[0])
    crops[model.upsample_names[-1]] = caffe_crop(coord, (1.0, 0.0))
    return crops


@pytest.mark.parametrize(("backbone", "variant", "geometry", "weights"), CASES)
def test_crop_offsets_match_independent_coordinate_computation(
    backbone, variant, geometry, weights
):
    model = tiny(backbone, variant, geometry, weights)
    if backbone == "alexnet":
        layers = alexnet_layers(geometry)
    else:
        layers = resnet_layers(dilated=backbone.endswith("dilated"))
    assert model.crops == head_crops(model, caffe_maps(layers))
    if geometry == "aligned":
        assert set(model.crops.values()) == {0}


def test_fcn_alexnet_has_the_reference_upsampling_and_crop():
    model = tiny("alexnet", "fcn32s", "caffe", "caffe", classes=21)
    assert model.upscore.kernel_size == (63, 63) and model.upscore.stride == (32, 32)
    assert model.crops == {"upscore": 18}  # voc-fcn-alexnet's Crop offset


def test_resnet_taps_have_their_strides_and_skips_fuse_by_stride():
    x = torch.randn(1, 3, 64, 96)
    plain = tiny("resnet50", "fcn8s", "aligned")
    dilated = tiny("resnet50_dilated", "fcn8s", "aligned")
    assert (plain.output_stride, dilated.output_stride) == (8, 8)
    assert plain.upsample_names == ["upscore2", "upscore_layer3", "upscore8"]
    assert dilated.upsample_names == ["upscore8"]  # all taps at stride 8: plain sums
    for model, strides in ((plain, (8, 16, 32)), (dilated, (8, 8, 8))):
        features = model.backbone(x)
        for tap, stride in zip(("layer2", "layer3", "layer4"), strides, strict=True):
            assert features[tap].shape[-2:] == (64 // stride, 96 // stride), tap
            assert model.backbone.coord_maps()[tap] == CoordMap(stride, 0)


def test_residual_branches_that_disagree_are_refused():
    downsample = nn.Sequential(nn.Conv2d(4, 16, 3, stride=2, padding=0), nn.BatchNorm2d(16))
    block = torchvision.models.resnet.Bottleneck(4, 4, stride=2, downsample=downsample)
    with pytest.raises(ValueError, match="residual branches disagree"):
        CoordMap().then(block)


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    """A torchvision ResNet-50 state dict with random weights and BatchNorm statistics."""
    net = random_resnet50()
    path = tmp_path_factory.mktemp("weights") / "resnet50-random.pth"
    torch.save(net.state_dict(), path)
    return net.state_dict(), path


@pytest.mark.parametrize("dilated", [False, True])
def test_resnet_weights_load_and_taps_equal_torchvision(resnet50_file, dilated):
    state_dict, path = resnet50_file
    backbone = "resnet50_dilated" if dilated else "resnet50"
    model = build_fcn(
        "fcn8s", num_classes=3, backbone=backbone, pretrained=True, weights_path=str(path)
    ).eval()
    reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, dilated, dilated])
    reference.load_state_dict(state_dict)
    taps = {f"layer{i}": f"layer{i}" for i in (2, 3, 4)}
    expected = create_feature_extractor(reference.eval(), taps)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours, theirs = model.backbone(x), expected(x)
    for tap in taps:  # frozen BN folds its statistics differently: float32 rounding only
        scale = theirs[tap].abs().max().item()
        torch.testing.assert_close(ours[tap], theirs[tap], rtol=1e-3, atol=1e-4 * scale)
    # Frozen BatchNorm: training mode changes nothing, at batch 1 too.
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x)["layer4"], ours["layer4"])


def small_torchvision_alexnet(seed=0, width=1 / 8):
    """torchvision's AlexNet layer for layer at a reduced width (its own `features` and
    `classifier` indices), random weights."""
    torch.manual_seed(seed)
    c = [scaled(n, width) for n in (64, 192, 384, 256, 256)]
    fc = scaled(4096, width)
    net = torchvision.models.AlexNet(num_classes=10)
    net.features = nn.Sequential(
        nn.Conv2d(3, c[0], 11, stride=4, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(True),
        nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(True),
        nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2),
    )  # fmt: skip
    net.classifier = nn.Sequential(
        nn.Dropout(), nn.Linear(c[4] * 36, fc), nn.ReLU(True),
        nn.Dropout(), nn.Linear(fc, fc), nn.ReLU(True), nn.Linear(fc, 10),
    )  # fmt: skip
    for p in net.parameters():
        nn.init.normal_(p, std=0.05)
    return net.eval()


def test_torchvision_alexnet_transplant_reproduces_classifier_activations(tmp_path):
    net = small_torchvision_alexnet()
    path = tmp_path / "alexnet-small.pth"
    torch.save(net.state_dict(), path)
    model = build_fcn(
        "fcn32s", num_classes=3, backbone="alexnet", weights="torchvision", width=1 / 8,
        pretrained=True, weights_path=path,
    ).eval()  # fmt: skip
    body = model.backbone
    body.conv1.padding = (2, 2)  # torchvision's, instead of pad 100: one fc6 cell at 224 px
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        fc7 = body(x)["fc7"]
        expected = net.classifier[:6](torch.flatten(net.avgpool(net.features(x)), 1))
    assert fc7.shape[-2:] == (1, 1)
    torch.testing.assert_close(fc7[0, :, 0, 0], expected[0], rtol=1e-4, atol=1e-5)
    assert expected.abs().max() > 0


def caffe_alexnet_state_dict(width=1 / 8):
    """Caffe-named AlexNet weights as a converter writes them: fc layers as matrices."""
    torch.manual_seed(1)
    c = [2 * scaled(n // 2, width) for n in (96, 256, 384, 384, 256)]
    fc = scaled(4096, width)
    shapes = {
        "conv1": (c[0], 3, 11, 11), "conv2": (c[1], c[0] // 2, 5, 5),
        "conv3": (c[2], c[1], 3, 3), "conv4": (c[3], c[2] // 2, 3, 3),
        "conv5": (c[4], c[3] // 2, 3, 3), "fc6": (fc, c[4] * 36), "fc7": (fc, fc),
        "fc8": (1000, fc),
    }  # fmt: skip
    state = {}
    for name, shape in shapes.items():
        state[f"{name}.weight"] = torch.randn(shape) * 0.05
        state[f"{name}.bias"] = torch.randn(shape[0]) * 0.05
    return state


def caffe_alexnet_fc7(state, x):
    """CaffeNet as the reference's net.py writes it, in torch.nn.functional."""

    def conv(x, name, groups=1, **kwargs):
        weight = state[f"{name}.weight"]
        return F.relu(F.conv2d(x, weight, state[f"{name}.bias"], groups=groups, **kwargs))

    def pool_norm(x):
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        return F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0)

    x = pool_norm(conv(x, "conv1", stride=4, padding=100))
    x = pool_norm(conv(x, "conv2", groups=2, padding=2))
    x = conv(x, "conv3", padding=1)
    x = conv(conv(x, "conv4", groups=2, padding=1), "conv5", groups=2, padding=1)
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    fc6 = state["fc6.weight"].view(len(state["fc6.weight"]), -1, 6, 6)
    x = F.relu(F.conv2d(x, fc6, state["fc6.bias"]))
    fc7 = state["fc7.weight"][:, :, None, None]
    return F.relu(F.conv2d(x, fc7, state["fc7.bias"]))


def test_caffe_alexnet_has_lrn_and_groups_and_loads_caffe_named_weights(tmp_path):
    state = caffe_alexnet_state_dict()
    path = tmp_path / "alexnet_from_caffe.pth"
    torch.save(state, path)
    model = build_fcn(
        "fcn32s", num_classes=3, backbone="alexnet", weights="caffe", width=1 / 8,
        pretrained=True, weights_path=path,
    ).eval()  # fmt: skip
    assert model.backbone.conv2.groups == 2 and hasattr(model.backbone, "norm1")
    x = torch.randn(1, 3, 45, 37) * 20
    with torch.no_grad():
        torch.testing.assert_close(
            model.backbone(x)["fc7"], caffe_alexnet_fc7(state, x), rtol=1e-4, atol=1e-4
        )


def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "empty" / "hub" / "checkpoints"


@pytest.mark.parametrize(
    ("backbone", "weights", "file_name"),
    [
        ("resnet50", "torchvision", "resnet50-11ad3fa6.pth"),
        ("resnet101_dilated", "torchvision", "resnet101-cd907fc2.pth"),
        ("alexnet", "torchvision", "alexnet-owt-7be5be79.pth"),
        ("alexnet", "caffe", "alexnet_from_caffe.pth"),  # no public download at all
    ],
)
def test_offline_error_names_the_cache_path_and_config_key(
    backbone, weights, file_name, monkeypatch, tmp_path
):
    cache = offline(monkeypatch, tmp_path)
    variant = "fcn32s"
    with pytest.raises(WeightsError) as info:
        tiny(backbone, variant, None, weights, pretrained=True)
    message = str(info.value)
    assert str(cache / file_name) in message
    assert "model.weights_path" in message and "\n" not in message
    if weights == "caffe":  # no download: the converter makes the file from Caffe's
        assert "python -m fcn_lightning.convert_caffe" in message


def test_resnet_weights_come_from_the_torch_hub_cache(monkeypatch, tmp_path):
    cache = offline(monkeypatch, tmp_path)
    source = tiny("resnet50", "fcn8s", "aligned")
    for p in source.backbone.parameters():
        nn.init.normal_(p, std=0.05)
    cache.mkdir(parents=True)
    torch.save(source.backbone.state_dict(), cache / "resnet50-11ad3fa6.pth")
    model = tiny("resnet50", "fcn16s", "aligned", pretrained=True)
    torch.testing.assert_close(model.backbone.conv1.weight, source.backbone.conv1.weight)


@pytest.mark.parametrize(
    ("options", "keys"),
    [
        ({"backbone": "alexnet", "variant": "fcn8s"}, ("model.variant=fcn8s", "model.backbone")),
        ({"backbone": "resnet50", "variant": "pool5"}, ("model.variant=pool5", "model.backbone")),
        ({"backbone": "resnet50", "geometry": "caffe"}, ("model.geometry=caffe", "resnet50")),
        ({"backbone": "resnet101", "weights": "caffe"}, ("model.weights=caffe", "torchvision")),
    ],
)
def test_unsupported_combinations_are_one_line_config_errors(options, keys):
    with pytest.raises(ConfigError) as info:
        build_fcn(**{"variant": "fcn32s", "width": WIDTH, **options})
    assert all(key in str(info.value) for key in keys) and "\n" not in str(info.value)


def test_weights_declare_their_input_normalisation_per_backbone():
    assert input_norm_for("torchvision", "resnet50").name == "torchvision"
    assert input_norm_for("caffe", "alexnet").name == "caffe"
    assert input_norm_for("torchvision", "alexnet").name == "torchvision"
    with pytest.raises(ConfigError, match=r"model\.weights=caffe"):
        input_norm_for("caffe", "resnet50_dilated")


def composed(*overrides, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={tmp_path}"])


def test_config_defaults_follow_the_backbone(tmp_path):
    resnet = composed("model=fcn8s", "model.backbone=resnet101_dilated", tmp_path=tmp_path)
    assert (resnet.model.geometry, resnet.model.weights) == ("aligned", "torchvision")
    assert resnet.data.normalization == "torchvision"
    alexnet = composed("model=fcn_alexnet", tmp_path=tmp_path)
    assert (alexnet.model.backbone, alexnet.model.variant) == ("alexnet", "fcn32s")
    assert (alexnet.model.geometry, alexnet.model.weights) == ("caffe", "caffe")
    assert alexnet.data.normalization == "caffe"
    recipe = composed("experiment=fcn_alexnet", tmp_path=tmp_path)
    assert (recipe.optim.lr, recipe.optim.momentum) == (1e-4, 0.9)
    assert recipe.optim.accumulate_grad_batches == 20 and recipe.loss.normalize == "mean"
    vgg = composed("model=fcn8s", tmp_path=tmp_path)  # unchanged: the paper's
    assert (vgg.model.geometry, vgg.model.weights) == ("caffe", "caffe")


@pytest.mark.parametrize(
    "overrides",
    [
        ("model=fcn8s", "model.backbone=resnet50_dilated"),
        ("model=fcn_alexnet", "model.weights=caffe", "data.normalization=caffe"),
    ],
)
def test_a_tiny_training_run_with_a_new_backbone(overrides, tmp_path):
    from fcn_lightning.train import train

    data_dir = tiny_dataset(tmp_path / "data")
    run = tmp_path / "run"
    metrics = train(compose_train(data_dir, run, *overrides, "optim.lr=0.01"))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert 0 <= metrics["val/mean_iu"] <= 1 and torch.isfinite(torch.tensor(metrics["val/loss"]))


def test_flops_table_covers_each_backbones_own_variants_and_geometries():
    from fcn_lightning.bench.flops import flops_table

    table = flops_table([(48, 64)], ["fcn32s", "fcn8s"], ("alexnet", "resnet50_dilated"))
    rows = [line.split(" | ")[:2] for line in table.splitlines()[2:]]
    assert rows == [["| alexnet", "fcn32s"], ["| resnet50_dilated", "fcn32s"],
                    ["| resnet50_dilated", "fcn8s"]]  # fmt: skip
    assert "| - |" in table  # no caffe geometry for ResNets


def test_trainable_batch_norm_loads_the_same_weights_and_learns_statistics(resnet50_file):
    """batch_norm=train: in eval mode the same function as torchvision's ResNet with the
    same weights (here bit for bit: the same BatchNorm2d); in training mode it normalises
    by the batch and moves its running statistics, as torchvision's does."""
    state_dict, path = resnet50_file
    model = build_fcn(
        "fcn32s", num_classes=3, backbone="resnet50", pretrained=True, weights_path=str(path),
        batch_norm="train",
    ).eval()  # fmt: skip
    reference = create_feature_extractor(torchvision.models.resnet50().eval(), {"layer4": "layer4"})
    reference.load_state_dict(state_dict, strict=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x)["layer4"], reference(x)["layer4"])
        model.train(), reference.train()
        torch.testing.assert_close(model.backbone(x)["layer4"], reference(x)["layer4"])
    assert not torch.equal(model.backbone.bn1.running_mean, state_dict["bn1.running_mean"])
    torch.testing.assert_close(model.backbone.bn1.running_mean, reference.bn1.running_mean)


def test_batch_norm_choice_is_checked():
    with pytest.raises(ConfigError, match=r"model.batch_norm='train': model.backbone=vgg16 "):
        build_fcn("fcn32s", num_classes=3, width=WIDTH, batch_norm="train")
    with pytest.raises(ConfigError, match=r"model.batch_norm='none'.*\['frozen', 'train'\]"):
        build_fcn("fcn32s", num_classes=3, backbone="resnet50", width=WIDTH, batch_norm="none")
    with pytest.raises(ConfigError, match=r"model\.frozen_backbone=true"):
        build_fcn("fcn32s", num_classes=3, backbone="resnet50", width=WIDTH,
                  batch_norm="train", frozen_backbone=True)  # fmt: skip
