"""Caffe weights: the .caffemodel reader and `python -m fcn_lightning.convert_caffe`.

The files are written by tests/caffe_fakes.py (an encoder independent of the reader) with the
reference nets' layer names and shapes; the expected placement of every blob is typed here
(torchvision's VGG16 indices, the reference head names), not taken from the converter.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from fcn_lightning.errors import WeightsError
from fcn_lightning.eval import eval_datamodule, evaluate
from fcn_lightning.interop.caffe_convert import convert
from fcn_lightning.interop.caffemodel import read_caffemodel
from fcn_lightning.interop.torchfcn import torchfcn_models
from fcn_lightning.models import build_fcn, init_from_checkpoint
from fcn_lightning.models.checkpoints import read_checkpoint, read_state_dict
from fcn_lightning.module import load_module
from tests.caffe_fakes import (
    VGG_FEATURE_INDEX,
    Nets,
    blobs_by_name,
    write_caffemodel,
)
from tests.data_fakes import REPO, FakeTree, fake_ids

DIV = 16  # every channel count / 16: the nets' real layouts at a test's size


def test_the_reader_understands_every_layer_and_blob_format(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((4, 3, 2, 2), (4,), (5, 6))]
    records = []
    for fmt in ("v2", "v1", "v0"):
        for legacy in (False, True):
            for packed, double in ((True, False), (False, False), (True, True)):
                name = f"{fmt}_{'legacy' if legacy else 'shape'}_{packed}_{double}"
                path = write_caffemodel(
                    tmp_path / f"{name}.caffemodel",
                    [("relu", "ReLU", []), (name, "Convolution", arrays)],
                    fmt=fmt, legacy=legacy, packed=packed, double=double,
                )  # fmt: skip
                records.append((name, read_caffemodel(path)))
    for name, layers in records:
        assert [layer.name for layer in layers] == ["relu", name]
        assert layers[1].type == "Convolution" or (name.startswith("v0") and layers[1].type)
        got = layers[1].blobs
        assert len(got) == 3, name
        for array, read in zip(arrays, got, strict=True):
            # Legacy shapes are Caffe's 4-D ones: the values and their order are what count.
            assert read.size == array.size and read.dtype == np.float32, name
            np.testing.assert_array_equal(read.reshape(array.shape), array)
            if "shape" in name:
                assert read.shape == array.shape, name


def _converted(tmp_path, layers, name="net", **kw):
    source = write_caffemodel(tmp_path / f"{name}.caffemodel", layers, **kw)
    return convert(source, tmp_path / f"{name}.out")[0]


def test_imagenet_vgg16_lands_in_torchvision_layout_and_trains_as_model_weights_caffe(tmp_path):
    layers = Nets(DIV).vgg16(fc_as="InnerProduct")
    blobs = blobs_by_name(layers)
    out = _converted(tmp_path, layers, fmt="v1", legacy=True)  # as VGG_ILSVRC_16_layers is
    state = read_state_dict(out, key="test")
    for name, index in VGG_FEATURE_INDEX.items():
        np.testing.assert_array_equal(state[f"features.{index}.weight"], blobs[name][0])
        np.testing.assert_array_equal(state[f"features.{index}.bias"], blobs[name][1])
    for fc, index in (("fc6", 0), ("fc7", 3), ("fc8", 6)):
        np.testing.assert_array_equal(state[f"classifier.{index}.weight"], blobs[fc][0])
        np.testing.assert_array_equal(state[f"classifier.{index}.bias"], blobs[fc][1])

    model = build_fcn(
        "fcn32s", width=1 / DIV, pretrained=True, weights="caffe", weights_path=str(out)
    )
    # fc6 as a 7x7 convolution computes Caffe's InnerProduct over the C x 7 x 7 pool5 blob.
    pool5 = np.random.default_rng(1).standard_normal((512 // DIV, 7, 7)).astype(np.float32)
    inner_product = blobs["fc6"][0] @ pool5.reshape(-1) + blobs["fc6"][1]
    with torch.no_grad():
        conv = model.backbone.fc6(torch.from_numpy(pool5)[None])
    np.testing.assert_allclose(conv.reshape(-1).numpy(), inner_product, rtol=1e-4, atol=1e-6)


def test_imagenet_models_go_to_the_weights_cache_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    nets = Nets(DIV)
    alexnet = nets.alexnet()
    for i in (-2, -1):  # bvlc_alexnet's fc6/fc7 are InnerProducts
        name, _, (weight, bias) = alexnet[i]
        alexnet[i] = (name, "InnerProduct", [weight.reshape(len(weight), -1), bias])
    for layers, file_name in ((nets.vgg16(), "vgg16_from_caffe.pth"),
                              (alexnet, "alexnet_from_caffe.pth")):  # fmt: skip
        source = write_caffemodel(tmp_path / "in.caffemodel", layers)
        path, what = convert(source)
        assert path == tmp_path / "torch" / "hub" / "checkpoints" / file_name
        assert "model.weights=caffe" in what
    blobs = blobs_by_name(alexnet)
    model = build_fcn("fcn32s", backbone="alexnet", width=1 / DIV, pretrained=True,
                      weights="caffe")  # fmt: skip
    for name in ("conv1", "conv2", "conv5", "fc6", "fc7"):  # conv2/4/5: 2 groups
        layer = getattr(model.backbone, name)
        np.testing.assert_array_equal(layer.weight.detach().reshape(len(layer.weight), -1),
                                      blobs[name][0].reshape(len(blobs[name][0]), -1))  # fmt: skip
        np.testing.assert_array_equal(layer.bias.detach(), blobs[name][1])
    assert model.backbone.conv2.groups == 2


# Where each reference layer lands in this project's FCN (besides the VGG convs).
HEADS = {
    "fcn32s": ("score_fr", "upscore"),
    "fcn16s": ("score_fr", "upscore2", "score_pool4", "upscore16"),
    "fcn8s": ("score_fr", "upscore2", "score_pool4", "upscore_pool4", "score_pool3", "upscore8"),
    "fcn8s_atonce": ("score_fr", "upscore2", "score_pool4", "upscore_pool4", "score_pool3",
                     "upscore8"),
    "alexnet": ("score_fr", "upscore"),
}  # fmt: skip


@pytest.mark.parametrize("net", list(HEADS))
def test_reference_fcns_become_checkpoints_with_every_blob_in_place(tmp_path, net):
    layers = Nets(DIV).fcn(net)
    blobs = blobs_by_name(layers)
    ckpt = _converted(tmp_path, layers)
    module = load_module(ckpt)
    assert module.hparams.model["variant"] == ("fcn32s" if net == "alexnet" else net)
    assert module.hparams.model["upsampling"] == "fixed"
    assert module.hparams.normalization == "caffe"
    assert module.class_names[15] == "person"
    own = module.model.state_dict()
    if net == "alexnet":
        where = {n: f"backbone.{n}" for n in ("conv1", "conv2", "conv3", "conv4", "conv5")}
    else:
        where = {n: f"backbone.features.{i}" for n, i in VGG_FEATURE_INDEX.items()}
    where |= {"fc6": "backbone.fc6", "fc7": "backbone.fc7"}
    where |= {n: n for n in HEADS[net]}
    assert set(where) == set(blobs) - {"scale_pool4", "scale_pool3"}
    for name, key in where.items():
        for param, value in zip(("weight", "bias"), blobs[name], strict=False):
            np.testing.assert_array_equal(own[f"{key}.{param}"], value, err_msg=name)
    n_tensors = sum(len(blobs[name]) for name in where)
    assert n_tensors == len(own), "every tensor of the model comes from the file"
    # The whole net runs at any size (caffe geometry).
    with torch.no_grad():
        assert module.model(torch.randn(1, 3, 37, 45)).shape == (1, 21, 37, 45)


def test_learned_upsampling_is_kept_as_learned(tmp_path):
    layers = Nets(DIV).fcn("fcn16s")
    name, kind, (weight,) = layers[-1]
    layers[-1] = (name, kind, [weight + 0.01])  # a final upsampling trained away from bilinear
    module = load_module(_converted(tmp_path, layers))
    assert module.hparams.model["upsampling"] == "learned"
    np.testing.assert_array_equal(module.model.upscore16.weight.detach(), weight + 0.01)
    assert module.model.upscore16.weight.requires_grad


def test_a_full_size_at_once_fcn8s_computes_what_pytorch_fcn_computes(tmp_path):
    """The real layout at full width: the converted checkpoint gives pytorch-fcn's scores
    (its FCN8sAtOnce, loaded by Caffe layer name) for the same image."""
    layers = Nets(div=1).fcn("fcn8s_atonce")
    module = load_module(_converted(tmp_path, layers)).eval()
    reference = torchfcn_models().FCN8sAtOnce(n_class=21).eval()
    blobs = blobs_by_name(layers)
    reference.load_state_dict({
        f"{name}.{param}": torch.from_numpy(value)
        for name, values in blobs.items() if not name.startswith("scale")
        for param, value in zip(("weight", "bias"), values, strict=False)
    })  # fmt: skip
    image = torch.randn(1, 3, 41, 53) * 50
    with torch.no_grad():
        torch.testing.assert_close(module.model(image), reference(image), rtol=1e-4, atol=1e-4)


def test_a_converted_checkpoint_evaluates_with_the_eval_entry_point(tmp_path):
    ids = fake_ids(700, 3, 2012)
    tree = FakeTree(tmp_path / "data", seed=3)
    tree.voc({"val": ids})
    ckpt = _converted(tmp_path, Nets(DIV).fcn("fcn8s"))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("eval", overrides=[
            f"ckpt_path={ckpt}", "data=voc2012", f"paths.data_dir={tmp_path / 'data'}",
            "data.expected_counts=null", "num_workers=0", "trainer=cpu",
            f"paths.output_dir={tmp_path / 'eval'}",
        ])  # fmt: skip
    scores = evaluate(cfg)
    # The same numbers from the model by hand: NumPy confusion matrix over the 3 images.
    module = load_module(ckpt).eval()
    hist, seen = np.zeros((21, 21), np.int64), 0
    datamodule = eval_datamodule(cfg, read_checkpoint(ckpt, key="c"))
    datamodule.setup("validate")
    with torch.no_grad():
        for images, labels in datamodule.val_dataloader():
            seen += len(images)
            pred = module.model(images).argmax(1).numpy().ravel()
            true = labels.numpy().ravel()
            keep = true != 255
            hist += np.bincount(21 * true[keep] + pred[keep], minlength=441).reshape(21, 21)
    assert seen == 3
    with np.errstate(invalid="ignore", divide="ignore"):
        iu = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    assert scores["mean_iu"] == pytest.approx(float(np.nanmean(iu)), abs=1e-6)
    assert scores["pixel_acc"] == pytest.approx(np.diag(hist).sum() / hist.sum(), abs=1e-6)


BAD = [
    ("prototxt", lambda p: p.write_text('name: "FCN"\nlayer { name: "data" }\n'), "prototxt"),
    ("truncated", None, "not a complete Caffe model"),
    ("resnet", None, "neither VGG16 nor AlexNet"),
    ("siftflow", None, r"has the heads \['score_fr_sem'\]; expected SIFT Flow's two"),
    ("atonce_scale", None, "scale_pool4 should scale by the constant 0.01"),
    ("fc6_shape", None, "fc6"),
]


@pytest.mark.parametrize(("case", "make", "message"), BAD, ids=[c[0] for c in BAD])
def test_bad_caffe_files_are_refused_with_one_line_naming_them(tmp_path, case, make, message):
    path = tmp_path / f"{case}.caffemodel"
    nets = Nets(DIV)
    if make is not None:
        make(path)
    elif case == "truncated":
        write_caffemodel(path, nets.fcn("fcn32s"))
        path.write_bytes(path.read_bytes()[:-1000])
    elif case == "resnet":
        write_caffemodel(path, [("res2a", "Convolution", [np.zeros((4, 3, 1, 1), np.float32)])])
    elif case == "siftflow":
        layers = [(n.replace("score_fr", "score_fr_sem"), k, b) for n, k, b in nets.fcn("fcn32s")]
        write_caffemodel(path, layers)
    elif case == "atonce_scale":
        layers = nets.fcn("fcn8s_atonce")
        layers = [(n, k, [b[0] * 100] if n == "scale_pool4" else b) for n, k, b in layers]
        write_caffemodel(path, layers)
    elif case == "fc6_shape":
        layers = [(n, k, [b[0][:, :, :6, :6], b[1]] if n == "fc6" else b)
                  for n, k, b in nets.fcn("fcn32s")]  # fmt: skip
        write_caffemodel(path, layers)
    out = tmp_path / "out.ckpt"
    out.write_bytes(b"an earlier conversion")
    with pytest.raises(WeightsError, match=message) as error:
        convert(path, out)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    assert out.read_bytes() == b"an earlier conversion"  # nothing written is lost


def test_the_command_line_converts_and_refuses_in_one_line(tmp_path):
    source = write_caffemodel(tmp_path / "fcn32s-heavy-pascal.caffemodel", Nets(DIV).fcn("fcn32s"))
    ok = subprocess.run([sys.executable, "-m", "fcn_lightning.convert_caffe", str(source)],
                        capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "fcn32s-heavy-pascal.ckpt").is_file()
    assert "fcn32s (vgg16, 21 classes, fixed upsampling; evaluate with data=paper) checkpoint" in (
        ok.stdout
    )
    bad = subprocess.run([sys.executable, "-m", "fcn_lightning.convert_caffe",
                          str(tmp_path / "missing.caffemodel")],
                         capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "missing.caffemodel" in bad.stderr


def test_a_converted_fcn16s_starts_an_fcn8s_as_model_init_from(tmp_path):
    layers = Nets(DIV).fcn("fcn16s")
    blobs = blobs_by_name(layers)
    ckpt = _converted(tmp_path, layers)
    model = build_fcn("fcn8s", width=1 / DIV, geometry="caffe", weights="caffe")
    init_from_checkpoint(model, ckpt)
    np.testing.assert_array_equal(model.score_pool4.weight.detach(), blobs["score_pool4"][0])
    np.testing.assert_array_equal(model.backbone.features[28].bias.detach(), blobs["conv5_3"][1])
    assert not model.score_pool3.weight.any()  # the new skip starts at zero
