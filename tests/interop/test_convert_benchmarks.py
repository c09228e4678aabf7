"""The reference's released nets of PASCAL-Context, NYUDv2 and SIFT Flow through
`fcn_lightning.interop.caffe_convert.convert` and eval's loader (`load_module`).

The fakes (tests/caffe_fakes.py) carry the reference net.py files' layer names and shapes.
The expected outputs are computed independently of the several-head / several-stream code:
each SIFT Flow head equals a one-head conversion of a file holding that head's layers alone
(the one-head path is checked against pytorch-fcn in test_convert_caffe.py), the color-hha
net equals 0.5 / 0.5 of two single-stream conversions (the final upsampling is linear, so
summing before or after it is the same), the color-d net equals a plain net whose first conv
is swapped by hand for the file's 4-channel one. Class names are spot-checked against the
reference's lists (data/*/classes.txt of fcn.berkeleyvision.org), typed here.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fcn_lightning.errors import WeightsError
from fcn_lightning.interop.caffe_convert import convert
from fcn_lightning.models import build_fcn, init_from_checkpoint
from fcn_lightning.module import FCNModule, load_module
from tests.caffe_fakes import (
    SIFTFLOW_HEADS,
    VGG_FEATURE_INDEX,
    Nets,
    blobs_by_name,
    write_caffemodel,
)
from tests.data_fakes import REPO

DIV = 16  # every channel count / 16
SKIPS = {
    "fcn32s": ("score_fr", "upscore"),
    "fcn16s": ("score_fr", "upscore2", "score_pool4", "upscore16"),
    "fcn8s": ("score_fr", "upscore2", "score_pool4", "upscore_pool4", "score_pool3", "upscore8"),
}
VGG = {n: f"backbone.features.{i}" for n, i in VGG_FEATURE_INDEX.items()} | {
    "fc6": "backbone.fc6", "fc7": "backbone.fc7",
}  # fmt: skip


def _converted(tmp_path, layers, name="net", **kw):
    source = write_caffemodel(tmp_path / f"{name}.caffemodel", layers)
    return convert(source, tmp_path / f"{name}.ckpt", **kw)


def _module(tmp_path, layers, name="net", **kw):
    return load_module(_converted(tmp_path, layers, name, **kw)[0]).eval()


def _image(channels: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, channels, 37, 45, generator=generator) * 40


def _run(module, image):
    with torch.no_grad():
        return module.model(image)


def _assert_in_place(own: dict, blobs: dict, where: dict) -> None:
    """Every blob at its state-dict name, and every tensor of the model from the file."""
    for name, key in where.items():
        for param, value in zip(("weight", "bias"), blobs[name], strict=False):
            np.testing.assert_array_equal(own[f"{key}.{param}"], value, err_msg=name)
    assert sum(len(blobs[name]) for name in where) == len(own)


@pytest.mark.parametrize("variant", list(SKIPS))
def test_pascal_context_nets_convert_with_its_mean_and_60_classes(tmp_path, variant):
    layers = Nets(DIV, num_classes=60).fcn(variant)
    path, what = _converted(tmp_path, layers, f"pascalcontext-{variant}-heavy")
    module = load_module(path)
    assert "60 classes" in what and "evaluate with data=pascal_context" in what
    assert module.hparams.model["variant"] == variant
    assert module.hparams.normalization == "caffe_pascal_context"
    names = module.class_names
    assert (len(names), names[0], names[15], names[59]) == (60, "background", "person", "wood")
    blobs = blobs_by_name(layers)
    _assert_in_place(module.model.state_dict(), blobs, VGG | {n: n for n in SKIPS[variant]})
    assert _run(module, _image(3)).shape == (1, 60, 37, 45)


def _one_head(layers: list, head: str) -> list:
    """The VGG16 and the layers of ``head`` alone, named as a one-head net names them."""
    suffix = f"_{head}"
    others = tuple(f"_{h}" for h, _ in SIFTFLOW_HEADS if h != head)
    return [(n.removesuffix(suffix), k, b) for n, k, b in layers if not n.endswith(others)]


@pytest.mark.parametrize("variant", list(SKIPS))
def test_siftflow_nets_have_two_heads_each_the_one_head_net_of_its_layers(tmp_path, variant):
    layers = Nets(DIV).siftflow(variant)
    path, what = _converted(tmp_path, layers, f"siftflow-{variant}-heavy")
    assert "33 sem + 3 geo classes" in what and "evaluate with data=siftflow" in what
    module = load_module(path).eval()
    assert module.model.heads == (("sem", 33), ("geo", 3))
    assert module.hparams.model["heads"] == [
        {"name": "sem", "num_classes": 33, "classes": "siftflow"},
        {"name": "geo", "num_classes": 3, "classes": "siftflow_geo"},
    ]
    assert module.hparams.model["num_classes"] == 33
    assert module.hparams.normalization == "caffe_siftflow"
    names = module.class_names
    assert (len(names), names[0], names[27], names[32]) == (33, "awning", "sky", "window")
    if "head_class_names" in inspect.signature(FCNModule).parameters:  # issue 15's module
        assert module.head_class_names[1] == ["sky", "horizontal", "vertical"]
    blobs = blobs_by_name(layers)
    head_layers = {f"{n}_{h}": f"{n}_{h}" for n in SKIPS[variant] for h, _ in SIFTFLOW_HEADS}
    _assert_in_place(module.model.state_dict(), blobs, VGG | head_layers)
    image = _image(3)
    both = _run(module, image)
    assert both.shape == (1, 36, 37, 45)
    start = 0
    for head, classes in SIFTFLOW_HEADS:
        alone = _module(tmp_path, _one_head(layers, head), f"alone_{head}")
        assert alone.model.num_classes == classes
        torch.testing.assert_close(both[:, start : start + classes], _run(alone, image))
        start += classes


@pytest.mark.parametrize("net", ["color", "hha"])
def test_nyud_single_stream_nets_take_their_input_from_the_released_name(tmp_path, net):
    layers = Nets(DIV, num_classes=40).nyud(net)
    path, what = _converted(tmp_path, layers, f"nyud-fcn32s-{net}-heavy")
    assert f"input {net}" in what and f"evaluate with data=nyud data.input={net}" in what
    module = load_module(path)
    assert module.hparams.model["input"] == net
    assert module.hparams.normalization == "caffe_nyud"
    names = module.class_names
    assert (len(names), names[0], names[4], names[39]) == (40, "wall", "chair", "otherprop")
    blobs = blobs_by_name(layers)
    _assert_in_place(module.model.state_dict(), blobs, VGG | {n: n for n in SKIPS["fcn32s"]})
    # The layers cannot tell colour from HHA: --input says it for any file name.
    other = "hha" if net == "color" else "color"
    path, _ = _converted(tmp_path, layers, "mine", input_name=other)
    assert load_module(path).hparams.model["input"] == other


def _one_stream(layers: list, stream: str) -> list:
    """A single-stream net of ``stream``'s layers (suffix dropped) and the shared upscore."""
    out = []
    for name, kind, blobs in layers:
        if name.endswith(stream) and name != stream:
            out.append((name.removesuffix(stream), kind, blobs))
        elif name == "upscore":
            out.append((name, kind, blobs))
    return out


def test_nyud_color_hha_is_the_mean_of_its_two_streams(tmp_path):
    layers = Nets(DIV, num_classes=40).nyud("color_hha")
    path, what = _converted(tmp_path, layers, "nyud-fcn32s-color-hha-heavy")
    assert "evaluate with data=nyud data.input=color_hha" in what
    module = load_module(path).eval()
    assert module.hparams.model["input"] == "color_hha"
    assert module.hparams.normalization == "caffe_nyud"
    blobs = blobs_by_name(layers)
    where = {"upscore": "upscore"}
    for stream in ("color", "hha"):
        where |= {f"{n}{stream}": f"backbones.{stream}.{k.removeprefix('backbone.')}"
                  for n, k in VGG.items()}  # fmt: skip
        where[f"score_fr{stream}"] = f"score_fr_{stream}"
    _assert_in_place(module.model.state_dict(), blobs, where)
    image = _image(6)
    color = _module(tmp_path, _one_stream(layers, "color"), "color", input_name="color")
    hha = _module(tmp_path, _one_stream(layers, "hha"), "hha", input_name="hha")
    expected = 0.5 * _run(color, image[:, :3]) + 0.5 * _run(hha, image[:, 3:])
    torch.testing.assert_close(_run(module, image), expected, rtol=1e-4, atol=1e-5)


def test_nyud_color_d_takes_four_channels_in_its_first_conv(tmp_path):
    layers = Nets(DIV, num_classes=40).nyud("color_d")
    module = _module(tmp_path, layers, "nyud-fcn32s-color-d")
    assert module.hparams.model["input"] == "color_depth"
    blobs = blobs_by_name(layers)
    weight, bias = blobs["conv1_1_bgrd"]
    assert weight.shape == (64 // DIV, 4, 3, 3)
    # By hand: a 3-channel net of the same file whose first conv's output is replaced by the
    # file's 4-channel conv over the whole image (torch's conv2d, the reference's pad 100).
    first_conv = ("conv1_1", "Convolution", [weight[:, :3], bias])
    renamed = [first_conv if n == "conv1_1_bgrd" else (n, k, b) for n, k, b in layers]
    plain = _module(tmp_path, renamed, "plain", input_name="color")
    image = _image(4)
    four = F.conv2d(image, torch.from_numpy(weight), torch.from_numpy(bias), padding=100)
    plain.model.backbone.features[0].register_forward_hook(lambda *_: four)
    torch.testing.assert_close(_run(module, image), _run(plain, image[:, :3]))


def _streams_of_other_classes(nets: Nets) -> list:
    layers = nets.nyud("color_hha")
    index = next(i for i, (n, _, _) in enumerate(layers) if n == "score_frhha")
    name, kind, (weight, bias) = layers[index]
    layers[index] = (name, kind, [weight[:39], bias[:39]])
    return layers


def _heads_of_other_skips(nets: Nets) -> list:
    fcn16s, fcn32s = nets.siftflow("fcn16s"), nets.siftflow("fcn32s")
    sem = [layer for layer in fcn16s if not layer[0].endswith("_geo")]
    return sem + [layer for layer in fcn32s if layer[0].endswith("_geo")]


BAD = [
    ("nyud_no_input", lambda n: n.nyud("color"), None,
     re.escape("a single-stream NYUDv2 net (40 classes) whose layers do not say whether it "
               "takes color or HHA images: give --input color or --input hha")),
    ("input_not_the_streams", lambda n: n.nyud("color_hha"), "hha",
     re.escape("is a color_hha net (its layers say so); --input hha does not fit it")),
    ("input_for_context", lambda n: Nets(DIV, num_classes=60).fcn("fcn32s"), "hha",
     "--input hha does not fit a pascal_context net; it takes rgb"),
    ("three_streams", lambda n: [*n.nyud("color_hha"), *n.vgg16(suffix="depth")], None,
     r"has the stream layers \['conv1_1color', 'conv1_1depth', 'conv1_1hha'\]"),
    ("one_geo_head", lambda n: [x for x in n.siftflow("fcn32s") if not x[0].endswith("_sem")],
     None, r"has the heads \['score_fr_geo'\]; expected SIFT Flow's two"),
    ("no_score_fr", lambda n: [*n.vgg16(), ("score_x", "Convolution", [np.ones((2, 8, 1, 1))])],
     None, r"has the score layers \['score_x'\] but not \['score_fr'\]"),
    ("streams_of_other_classes", _streams_of_other_classes, None,
     r"the streams' score layers predict \[40, 39\] classes"),
    ("heads_of_other_skips", _heads_of_other_skips, None,
     r"its heads or streams \['_sem', '_geo'\] have different skips"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "input_name", "message"), BAD, ids=[c[0] for c in BAD])
def test_nets_that_fit_no_reference_layout_are_refused_in_one_line(
    tmp_path, case, make, input_name, message
):
    path = write_caffemodel(tmp_path / f"{case}.caffemodel", make(Nets(DIV, num_classes=40)))
    out = tmp_path / "out.ckpt"
    out.write_bytes(b"an earlier conversion")
    with pytest.raises(WeightsError, match=message) as error:
        convert(path, out, input_name=input_name)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    assert out.read_bytes() == b"an earlier conversion"  # nothing written is lost


def test_the_command_line_takes_the_input_of_a_nyud_net(tmp_path):
    source = write_caffemodel(tmp_path / "mine.caffemodel", Nets(DIV, num_classes=40).nyud("hha"))
    command = [sys.executable, "-m", "fcn_lightning.convert_caffe", str(source)]
    ok = subprocess.run([*command, "--input", "hha"], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert "fcn32s (vgg16, input hha, 40 classes, fixed upsampling; evaluate with data=nyud " \
        "data.input=hha) checkpoint" in ok.stdout  # fmt: skip
    assert load_module(tmp_path / "mine.ckpt").hparams.model["input"] == "hha"
    bad = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "give --input color or --input hha" in bad.stderr


def test_a_converted_siftflow_fcn32s_starts_a_two_head_fcn16s(tmp_path):
    layers = Nets(DIV).siftflow("fcn32s")
    blobs = blobs_by_name(layers)
    path, _ = _converted(tmp_path, layers, "siftflow-fcn32s-heavy")
    heads = [{"name": "sem", "num_classes": 33}, {"name": "geo", "num_classes": 3}]
    model = build_fcn("fcn16s", width=1 / DIV, geometry="caffe", weights="caffe", heads=heads)
    init_from_checkpoint(model, path)
    for head in ("sem", "geo"):
        weight = getattr(model, f"score_fr_{head}").weight.detach()
        np.testing.assert_array_equal(weight, blobs[f"score_fr_{head}"][0])
        assert not getattr(model, f"score_pool4_{head}").weight.any()  # new skips start at 0
    np.testing.assert_array_equal(model.backbone.fc7.bias.detach(), blobs["fc7"][1])
