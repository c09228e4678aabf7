"""Pretrained VGG16 weights: fc->conv transplant, torchvision's weights API, local files,
offline errors, and refusing files that are not weights."""

from __future__ import annotations

import os
import pickle
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from fcn_lightning.errors import ConfigError, WeightsError
from fcn_lightning.models import build_fcn, input_norm_for
from fcn_lightning.models.backbones.vgg import FC_CHANNELS, scaled
from fcn_lightning.models.weights import PRETRAINED, cache_path

WIDTH = 1 / 8


def small_torchvision_vgg16(seed: int = 0) -> torchvision.models.VGG:
    """torchvision's VGG16 at a reduced width: its own features, avgpool and classifier."""
    torch.manual_seed(seed)
    cfg = [c if c == "M" else scaled(c, WIDTH) for c in torchvision.models.vgg.cfgs["D"]]
    net = torchvision.models.VGG(torchvision.models.vgg.make_layers(cfg), num_classes=10)
    c5, fc = scaled(512, WIDTH), scaled(FC_CHANNELS, WIDTH)
    net.classifier = nn.Sequential(
        nn.Linear(c5 * 7 * 7, fc), nn.ReLU(True), nn.Dropout(),
        nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(),
        nn.Linear(fc, 10),
    )  # fmt: skip
    for p in net.parameters():
        nn.init.normal_(p, std=0.05)
    return net.eval()


@pytest.fixture
def vgg_file(tmp_path):
    net = small_torchvision_vgg16()
    path = tmp_path / "vgg16-small.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_fc_to_conv_transplant_reproduces_classifier_activations(vgg_file):
    net, path = vgg_file
    model = build_fcn(
        "fcn32s", num_classes=3, width=WIDTH, geometry="aligned",
        pretrained=True, weights_path=str(path),
    ).eval()  # fmt: skip
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        fc7 = model.backbone(x)["fc7"]
        # The classifier up to fc7's ReLU, on the flattened 7x7 pool5 output.
        expected = net.classifier[:5](torch.flatten(net.avgpool(net.features(x)), 1))
    assert fc7.shape[-2:] == (7, 7)  # aligned: "same" fc6, so the centre cell sees all of pool5
    torch.testing.assert_close(fc7[0, :, 3, 3], expected[0], rtol=1e-4, atol=1e-5)
    assert expected.abs().max() > 0


def test_transplant_copies_every_conv(vgg_file):
    net, path = vgg_file
    model = build_fcn("fcn8s", num_classes=3, width=WIDTH, pretrained=True, weights_path=path)
    ours = model.backbone.state_dict()
    for key, value in net.state_dict().items():
        if key.startswith("features."):
            torch.testing.assert_close(ours[key], value)
    fc6 = net.classifier[0].weight.view(-1, scaled(512, WIDTH), 7, 7)
    torch.testing.assert_close(ours["fc6.weight"], fc6)


def test_torchvision_weights_come_through_torchvision_cache(vgg_file, tmp_path, monkeypatch):
    net, path = vgg_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    target = cache_path(PRETRAINED["torchvision"])
    assert target.name == "vgg16-397923af.pth" and str(tmp_path) in str(target)
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes())

    def no_network(*args, **kwargs):
        raise AssertionError("the cached file should be used without any download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    model = build_fcn("pool4", num_classes=2, width=WIDTH, pretrained=True)
    torch.testing.assert_close(
        model.backbone.features[0].weight, net.state_dict()["features.0.weight"]
    )


def test_offline_error_names_the_cache_path_and_config_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as info:
        build_fcn("fcn32s", num_classes=2, pretrained=True)
    message = str(info.value)
    assert str(tmp_path / "empty" / "hub" / "checkpoints" / "vgg16-397923af.pth") in message
    assert "model.weights_path" in message and "\n" not in message


def test_wrong_width_weights_are_refused(vgg_file):
    _, path = vgg_file
    with pytest.raises(WeightsError, match=r"features.0.weight has shape .* model.width"):
        build_fcn("fcn32s", num_classes=2, width=0.25, pretrained=True, weights_path=path)


def test_missing_corrupt_and_code_carrying_files_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        build_fcn("fcn32s", pretrained=True, weights_path=tmp_path / "nope.pth")
    truncated = tmp_path / "truncated.pth"
    torch.save(small_torchvision_vgg16().state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        build_fcn("fcn32s", width=WIDTH, pretrained=True, weights_path=truncated)

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    torch.save({"features.0.weight": Payload()}, evil)
    with pytest.raises(WeightsError, match="refused to load, it would import code"):
        build_fcn("fcn32s", width=WIDTH, pretrained=True, weights_path=evil)
    raw = tmp_path / "raw.pkl"  # a bare pickle with a newer protocol: refused all the same
    with open(raw, "wb") as f:
        pickle.dump({"features.0.weight": Payload()}, f, protocol=4)
    with pytest.raises(WeightsError, match=str(raw)):
        build_fcn("fcn32s", width=WIDTH, pretrained=True, weights_path=raw)
    assert not marker.exists()


def test_weights_declare_their_input_normalisation():
    image = torch.tensor([10.0, 20.0, 30.0]).view(3, 1, 1)  # RGB, 0-255
    caffe = input_norm_for("caffe")(image).flatten().tolist()
    # BGR order, 0-255, Caffe mean pixel subtracted, no std.
    assert caffe == pytest.approx([30 - 104.00699, 20 - 116.66877, 10 - 122.67892], abs=1e-4)
    tv = input_norm_for("torchvision")(image).flatten().tolist()
    expected = [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (30 / 255 - 0.406) / 0.225]
    assert tv == pytest.approx(expected, abs=1e-5)
    for name in ("caffe", "torchvision"):
        norm = input_norm_for(name)
        pixels = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
        assert torch.equal(norm.invert(norm(pixels)), pixels)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"variant": "fcn4s"}, "model.variant"),
        ({"variant": "fcn8s", "backbone": "resnet9"}, "model.backbone"),
        ({"variant": "fcn8s", "geometry": "tight"}, "model.geometry"),
        ({"variant": "fcn8s", "upsampling": "nearest"}, "model.upsampling"),
        ({"variant": "fcn8s", "weights": "imagenet21k"}, "model.weights"),
        ({"variant": "fcn8s", "num_classes": 0}, "model.num_classes"),
        ({"variant": "fcn8s", "width": 0}, "model.width"),
    ],
)
def test_bad_config_values_name_their_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_fcn(**kwargs)


@pytest.fixture
def served(tmp_path):
    """Files under `tmp_path / "www"` served over HTTP on localhost."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_caffe_weights_download_checksum_and_cache(vgg_file, served, tmp_path, monkeypatch):
    import dataclasses
    import hashlib

    net, path = vgg_file
    root, base = served
    (root / "vgg16_from_caffe.pth").write_bytes(path.read_bytes())
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    spec = dataclasses.replace(PRETRAINED["caffe"], md5=md5)
    monkeypatch.setitem(PRETRAINED, "caffe", spec)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    mirror = f"{base}/vgg16_from_caffe.pth"
    model = build_fcn(
        "fcn32s", num_classes=2, width=WIDTH, pretrained=True, weights="caffe", weights_url=mirror
    )
    torch.testing.assert_close(model.backbone.fc7.bias, net.state_dict()["classifier.3.bias"])
    assert cache_path(spec).is_file()  # the next run needs no network
    (root / "vgg16_from_caffe.pth").unlink()
    build_fcn("fcn32s", num_classes=2, width=WIDTH, pretrained=True, weights="caffe")

    # A mirror serving another file is caught by the checksum, and nothing is cached.
    cache_path(spec).unlink()
    (root / "vgg16_from_caffe.pth").write_bytes(b"something else")
    with pytest.raises(WeightsError, match=r"could not fetch the caffe VGG16 weights.*md5"):
        build_fcn("fcn32s", width=WIDTH, pretrained=True, weights="caffe", weights_url=mirror)
    assert not cache_path(spec).exists()
