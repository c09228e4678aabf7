"""Export to ONNX and TorchScript: dynamic batch, height and width, both geometries, the
same scores as PyTorch, the input normalisation recorded."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fcn_lightning.errors import ConfigError, WeightsError
from fcn_lightning.export import METADATA_FILE, export, run_exported
from fcn_lightning.models.inference import apply_inference
from fcn_lightning.module import load_module
from fcn_lightning.normalization import get_input_norm
from fcn_lightning.train import train
from tests.train_helpers import CONF, compose_train, run_module, tiny_dataset

SIZES = [(1, 1), (31, 45), (64, 64), (97, 70)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny FCN-8s checkpoints (2 training steps), one per geometry."""
    root = tmp_path_factory.mktemp("export")
    data_dir = tiny_dataset(root / "data")
    paths = {}
    for geometry in ("aligned", "caffe"):
        run = root / geometry
        train(compose_train(data_dir, run, "model=fcn8s", f"model.geometry={geometry}"))
        paths[geometry] = run / "checkpoints" / "last.ckpt"
    run = root / "fcn32s"  # a net without skips, which dilation converts
    train(compose_train(data_dir, run, "model=fcn32s", "model.geometry=caffe"))
    paths["fcn32s"] = run / "checkpoints" / "last.ckpt"
    return paths


def export_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("export", overrides=[*overrides, "example_size=[40,56]"])


def pytorch_scores(checkpoint, x):
    with torch.no_grad():
        return load_module(checkpoint).eval().model(x)


@pytest.mark.parametrize("geometry", ["aligned", "caffe"])
def test_onnx_scores_equal_pytorch_at_several_sizes(checkpoints, geometry, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "model.onnx"
    path = export(export_cfg(f"ckpt_path={checkpoints[geometry]}", f"out={out}"))
    assert path == out
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for height, width in SIZES:
        x = torch.randn(2, 3, height, width)
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
        torch.testing.assert_close(
            got, pytorch_scores(checkpoints[geometry], x), atol=1e-4, rtol=1e-4
        )
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["normalization"])["name"] == "torchvision"
    assert json.loads(props["model"])["geometry"] == geometry
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert sidecar["num_classes"] == len(sidecar["class_names"]) == len(sidecar["palette"])
    assert sidecar["palette"][:3] == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]  # VOC's colour map


def test_torchscript_runs_at_sizes_other_than_the_traced_one(checkpoints, tmp_path):
    checkpoint = checkpoints["aligned"]
    path = export(
        export_cfg(f"ckpt_path={checkpoint}", "format=torchscript", f"out={tmp_path}/m.pt")
    )
    extra = {METADATA_FILE: ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra[METADATA_FILE])["normalization"]["channel_order"] == "RGB"
    for height, width in SIZES:
        x = torch.randn(1, 3, height, width)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), pytorch_scores(checkpoint, x))


def test_normalisation_baked_into_the_graph(checkpoints, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    checkpoint = checkpoints["caffe"]
    out = tmp_path / "rgb.onnx"
    export(export_cfg(f"ckpt_path={checkpoint}", f"out={out}", "normalize_in_graph=true"))
    rgb = torch.randint(0, 256, (1, 3, 33, 47)).float()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"image": rgb.numpy()})[0])
    norm = get_input_norm(load_module(checkpoint).hparams.normalization)
    torch.testing.assert_close(got, pytorch_scores(checkpoint, norm(rgb)), atol=1e-4, rtol=1e-4)


INFERENCE = {  # name: (checkpoint, format, overrides)
    "dilate": ("fcn32s", "onnx", ["inference.dense=dilate", "inference.factor=4"]),
    "stitch": ("caffe", "onnx", ["inference.dense=stitch", "inference.factor=2"]),
    "hflip_upscale": ("aligned", "onnx", ["inference.tta.hflip=true",
                                          "inference.tta.scales=[1.0,1.5]"]),
    "stitch_multiscale": ("aligned", "torchscript", ["inference.dense=stitch",
                                                     "inference.tta.scales=[0.5,1.0]"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(INFERENCE))
def test_inference_settings_export_and_score_as_eval_does(checkpoints, case, tmp_path):
    """The exported graph computes what `eval`/`predict` compute with the same `inference`
    settings, at sizes other than the traced one (the 1 x 1 image is padded for stitching)."""
    name, fmt, overrides = INFERENCE[case]
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / f"m.{fmt}"
    path = export(export_cfg(f"ckpt_path={checkpoints[name]}", f"format={fmt}", f"out={out}",
                             "check=false", *overrides))  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        node = compose("eval", overrides=["ckpt_path=x", *overrides]).inference
    module = load_module(checkpoints[name]).eval()
    apply_inference(module, OmegaConf.to_container(node))
    for height, width in SIZES:
        x = torch.randn(2, 3, height, width)
        got = run_exported(path, fmt, x)
        with torch.no_grad():
            expected = module(x)
        assert got.shape == expected.shape == (2, module.num_classes, height, width)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert sidecar["inference"]["dense"] == node.dense


def test_onnx_refuses_shrinking_tta_in_one_line(checkpoints, tmp_path):
    with pytest.raises(ConfigError, match=r"inference\.tta\.scales=\[0\.5, 1\.0\]: .*torchscript"):
        export(export_cfg(f"ckpt_path={checkpoints['aligned']}", f"out={tmp_path}/m.onnx",
                          "inference.tta.scales=[0.5,1.0]"))  # fmt: skip
    assert not (tmp_path / "m.onnx").exists()


def test_unknown_format_and_missing_checkpoint_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="format='tflite'"):
        export(export_cfg("ckpt_path=x.ckpt", "format=tflite"))
    with pytest.raises(WeightsError, match=r"missing\.ckpt: no such file"):
        export(export_cfg(f"ckpt_path={tmp_path}/missing.ckpt"))


def test_command_line_writes_next_to_the_checkpoint(checkpoints, tmp_path):
    checkpoint = checkpoints["aligned"]
    result = run_module(
        "fcn_lightning.export", f"ckpt_path={checkpoint}", "format=torchscript",
        f"hydra.run.dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert checkpoint.with_suffix(".pt").is_file()
    assert checkpoint.with_name("last.pt.json").is_file()


def test_a_failed_check_leaves_the_earlier_export_as_it_was(checkpoints, tmp_path, monkeypatch):
    out = tmp_path / "model.pt"
    ckpt = f"ckpt_path={checkpoints['aligned']}"
    export(export_cfg(ckpt, f"out={out}", "format=torchscript"))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def off_by_one(path, fmt, x):
        return run_exported(path, fmt, x) + 1.0  # an exporter that changed the scores

    monkeypatch.setattr("fcn_lightning.export.run_exported", off_by_one)
    with pytest.raises(WeightsError) as caught:
        export(export_cfg(ckpt, f"out={out}", "format=torchscript"))
    message = str(caught.value)
    assert message.startswith(f"{out}: scores differ from PyTorch's")
    assert message.endswith(f"; {out} was left as it was")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no partial file
