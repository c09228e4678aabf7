"""Writing .caffemodel files for tests: a protocol-buffer encoder written from the wire-format
spec and caffe.proto's field numbers, independent of the reader in
fcn_lightning/models/caffemodel.py, and the reference nets' layer shapes as the reference
prototxts give them (scaled down by an integer factor for speed)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

V1_ENUM = {"Convolution": 4, "InnerProduct": 14, "Deconvolution": 39}
VGG_CONVS = (
    ("conv1_1", 64), ("conv1_2", 64), ("conv2_1", 128), ("conv2_2", 128),
    ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), ("conv4_1", 512),
    ("conv4_2", 512), ("conv4_3", 512), ("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512),
)  # fmt: skip
# torchvision's vgg16().features index of each conv (conv, relu and pool layers counted).
FEATURE_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG_FEATURE_INDEX = dict(zip([n for n, _ in VGG_CONVS], FEATURE_INDICES, strict=True))


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def message(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def string(number: int, text: str) -> bytes:
    return message(number, text.encode())


def integer(number: int, value: int) -> bytes:
    return tag(number, 0) + varint(value)


def blob(array: np.ndarray, *, legacy: bool = False, packed: bool = True, double: bool = False):
    """A BlobProto: shape in ``shape`` (7) or the legacy num/channels/height/width (1-4,
    leading 1s as Caffe wrote them); values packed floats (5), one float per field, or packed
    doubles (8)."""
    array = np.asarray(array)
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        head = b"".join(integer(i + 1, d) for i, d in enumerate(dims))
    else:
        head = message(7, message(1, b"".join(varint(d) for d in array.shape)))
    if double:
        body = message(8, array.astype("<f8").tobytes())
    elif packed:
        body = message(5, array.astype("<f4").tobytes())
    else:
        body = b"".join(tag(5, 5) + struct.pack("<f", v) for v in array.ravel())
    return head + body


def layer(name: str, kind: str, blobs: list[np.ndarray], fmt: str = "v2", **blob_args) -> bytes:
    """One layer record of NetParameter in Caffe's V2 (``layer``, 100), V1 (``layers``, 2) or
    V0 (a ``layer`` inside a V1 record) format, with settings fields the reader must skip."""
    encoded = [blob(b, **blob_args) for b in blobs]
    if fmt == "v2":
        settings = message(6, tag(3, 5) + struct.pack("<f", 1.0))  # param { lr_mult: 1 }
        settings += message(106, integer(1, 7))  # convolution_param { num_output: 7 }
        settings += tag(999, 1) + struct.pack("<d", 0.5)  # an unknown 64-bit field
        fields = string(1, name) + string(2, kind) + string(3, "data") + string(4, name)
        return message(100, fields + settings + b"".join(message(7, b) for b in encoded))
    if fmt == "v1":
        fields = string(2, "data") + string(3, name) + string(4, name)
        fields += integer(5, V1_ENUM.get(kind, 0))
        return message(2, fields + b"".join(message(6, b) for b in encoded))
    v0 = string(1, name) + string(2, kind.lower()) + b"".join(message(50, b) for b in encoded)
    return message(2, message(1, v0))


def write_caffemodel(path: Path, layers: list[tuple[str, str, list[np.ndarray]]], **kw) -> Path:
    """A NetParameter (name, an input, force_backward, then the layers) written to ``path``;
    blob-less layers (ReLU, Crop ...) as records without blobs."""
    net = string(1, "net") + string(3, "data") + integer(5, 1)
    net += b"".join(layer(name, kind, blobs, **kw) for name, kind, blobs in layers)
    path.write_bytes(net)
    return path


def bilinear(channels: int, size: int) -> np.ndarray:
    """The reference's surgery.upsample_filt on the class diagonal."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    rows, cols = np.ogrid[:size, :size]
    kernel = (1 - abs(rows - center) / factor) * (1 - abs(cols - center) / factor)
    weight = np.zeros((channels, channels, size, size), np.float32)
    weight[range(channels), range(channels)] = kernel
    return weight


class Nets:
    """The reference nets' weight layers, every channel count divided by ``div``, random
    values (std 0.01 as the reference's fillers, biases too, so that they are checked)."""

    def __init__(self, div: int = 16, num_classes: int = 21, seed: int = 0):
        self.div, self.num_classes = div, num_classes
        self.rng = np.random.default_rng(seed)

    def _conv(self, name, out, inp, k, kind="Convolution", bias=True):
        shape = (out, inp, k, k)
        weight = (self.rng.standard_normal(shape, np.float32) * 0.01).astype(np.float32)
        blobs = [weight] + ([self.rng.standard_normal(out, np.float32) * 0.01] if bias else [])
        return (name, kind, blobs)

    def vgg16(self, fc_as="Convolution", suffix: str = "", first: str = "conv1_1",
              in_channels: int = 3) -> list:  # fmt: skip
        """VGG16 conv1_1 ... fc7; ``suffix`` ends every name (a NYUD stream's ``color``),
        ``first`` renames conv1_1 (color-d's ``conv1_1_bgrd`` with ``in_channels`` 4)."""
        layers, previous = [], in_channels
        for name, channels in VGG_CONVS:
            own = first if name == "conv1_1" else name
            layers.append(self._conv(own + suffix, channels // self.div, previous, 3))
            layers.append((name.replace("conv", "relu") + suffix, "ReLU", []))
            previous = channels // self.div
        fc = 4096 // self.div
        layers += [self._conv("fc6" + suffix, fc, previous, 7),
                   self._conv("fc7" + suffix, fc, fc, 1)]  # fmt: skip
        if fc_as == "InnerProduct":  # ImageNet's: fc matrices, C x H x W flattened
            for i in (-2, -1):
                name, _, (weight, bias) = layers[i]
                layers[i] = (name, "InnerProduct", [weight.reshape(len(weight), -1), bias])
            weight = self.rng.standard_normal((1000, fc), np.float32) * 0.01
            layers.append(("fc8", "InnerProduct", [weight, np.zeros(1000, np.float32)]))
        return layers

    def alexnet(self) -> list:
        d = self.div
        layers = [
            self._conv("conv1", 96 // d, 3, 11),
            ("norm1", "LRN", []),
            self._conv("conv2", 256 // d, 48 // d, 5),
            self._conv("conv3", 384 // d, 256 // d, 3),
            self._conv("conv4", 384 // d, 192 // d, 3),
            self._conv("conv5", 256 // d, 192 // d, 3),
            self._conv("fc6", 4096 // d, 256 // d, 6),
            self._conv("fc7", 4096 // d, 4096 // d, 1),
        ]
        return layers

    def head(self, variant: str, c: int) -> list:
        """The layers after fc7 of voc-fcn32s / 16s / 8s / 8s-atonce (``c`` classes)."""
        d = self.div
        layers = [self._conv("score_fr", c, 4096 // d, 1)]
        if variant == "fcn32s":
            return [*layers, ("upscore", "Deconvolution", [bilinear(c, 64)])]
        layers.append(("upscore2", "Deconvolution", [bilinear(c, 4)]))
        if variant == "fcn8s_atonce":
            layers.append(("scale_pool4", "Scale", [np.full(512 // d, 0.01, np.float32)]))
        layers += [self._conv("score_pool4", c, 512 // d, 1), ("crop", "Crop", [])]
        if variant == "fcn16s":
            return [*layers, ("upscore16", "Deconvolution", [bilinear(c, 32)])]
        layers.append(("upscore_pool4", "Deconvolution", [bilinear(c, 4)]))
        if variant == "fcn8s_atonce":
            layers.append(("scale_pool3", "Scale", [np.full(256 // d, 1e-4, np.float32)]))
        layers.append(self._conv("score_pool3", c, 256 // d, 1))
        return [*layers, ("upscore8", "Deconvolution", [bilinear(c, 16)])]

    def fcn(self, variant: str) -> list:
        """voc-fcn32s / 16s / 8s / 8s-atonce and fcn-alexnet, as their net.py builds them
        (pascalcontext-fcn32s/16s/8s and nyud-fcn32s-color / -hha: the same names, with
        ``num_classes`` 60 / 40)."""
        c, d = self.num_classes, self.div
        if variant == "alexnet":
            return [*self.alexnet(), self._conv("score_fr", c, 4096 // d, 1),
                    ("upscore", "Deconvolution", [bilinear(c, 63)])]  # fmt: skip
        return [*self.vgg16(), *self.head(variant, c)]

    def siftflow(self, variant: str) -> list:
        """siftflow-fcn32s / 16s / 8s: one VGG16, then a semantic (33 classes) and a
        geometric (3) head, every head layer named with ``_sem`` / ``_geo``."""
        layers = self.vgg16()
        for name, classes in SIFTFLOW_HEADS:
            layers += [(f"{n}_{name}", k, b) for n, k, b in self.head(variant, classes)]
        return layers

    def nyud(self, net: str) -> list:
        """nyud-fcn32s-color / -hha (the VOC names), -color-hha (two streams: every layer up
        to score_fr ends in ``color`` / ``hha``, score_fused an Eltwise, one upscore) and
        -color-d (``conv1_1_bgrd`` over 4 channels: BGR and log depth)."""
        c, d = self.num_classes, self.div
        if net in ("color", "hha"):
            return self.fcn("fcn32s")
        if net == "color_d":
            return [*self.vgg16(first="conv1_1_bgrd", in_channels=4), *self.head("fcn32s", c)]
        layers = [("color", "Python", []), ("hha", "Python", [])]
        for stream in ("color", "hha"):
            layers += self.vgg16(suffix=stream)
            layers.append(self._conv(f"score_fr{stream}", c, 4096 // d, 1))
        return [*layers, ("score_fused", "Eltwise", []),
                ("upscore", "Deconvolution", [bilinear(c, 64)])]  # fmt: skip


SIFTFLOW_HEADS = (("sem", 33), ("geo", 3))


def blobs_by_name(layers: list) -> dict[str, list[np.ndarray]]:
    return {name: blobs for name, _, blobs in layers if blobs}
