"""Export a checkpoint: ``python -m fcn_lightning.export ckpt_path=... format=onnx|torchscript``.

The exported graph maps ``image`` (float32 ``B x 3 x H x W``) to ``scores`` (float32
``B x C x H x W``; the argmax over C is the class) for any batch size, height and width, in
both geometries. Its input is the *normalised* image unless ``normalize_in_graph=true``,
which bakes the normalisation in (input: RGB values 0-255). Either way the normalisation,
class names and model are recorded beside the weights: ONNX ``metadata_props``, a
TorchScript extra file ``fcn_lightning.json``, and ``<out>.json`` next to the file.
After writing, the exported model is run at sizes other than the traced one (odd ones
included) and compared with PyTorch's scores (``check=true``; ONNX needs onnxruntime).

The ``inference`` node of `eval` and `predict` goes into the graph too:
``inference.dense=dilate|stitch`` (with ``inference.factor``) and ``inference.tta.hflip``
/ ``inference.tta.scales`` export as one graph that computes what ``eval`` computes with the
same settings, at any size. ONNX cannot express the antialiased shrinking of scales below 1;
those export to TorchScript only.

The normalisation recorded or baked in is the checkpoint's (``normalization=`` may only
repeat it). ``out=`` must name a file in a writable folder that exists; nothing is
written before every setting has passed its check.

A checkpoint of NYUD's other inputs (``model.input``: hha, depth, color_depth, color_hha)
exports its graph on the normalised input of C channels (the streams' channels as the data
pipeline gives them, docs/data.md); ``normalize_in_graph=true`` bakes in an RGB image's
normalisation and is refused for them. Several heads give one ``scores`` output, the
heads' scores concatenated in head order; the metadata's ``heads`` lists each head's name,
classes and channels.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from fcn_lightning import resolvers  # noqa: F401  (registers the config resolvers)
from fcn_lightning.errors import ConfigError, WeightsError
from fcn_lightning.export_metadata import check_input, export_metadata
from fcn_lightning.interop.zoo import resolve_checkpoint
from fcn_lightning.models.checkpoints import TrainedWith, command_line_keys, read_checkpoint, settle
from fcn_lightning.models.inference import Inference, inference_net
from fcn_lightning.module import load_module
from fcn_lightning.normalization import InputNorm, get_input_norm
from fcn_lightning.run.boundary import user_errors
from fcn_lightning.run.check_config import check_config
from fcn_lightning.run.config import resolved
from fcn_lightning.run.console import log
from fcn_lightning.run.overrides import fcn_main

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
# Sizes the exported model is checked at after writing (H, W): none is the traced size.
CHECK_SIZES = ((37, 53), (64, 64), (1, 1))
METADATA_FILE = "fcn_lightning.json"


class Normalized(nn.Module):
    """``model`` behind its input normalisation: takes RGB 0-255 images."""

    def __init__(self, model: nn.Module, norm: InputNorm) -> None:
        super().__init__()
        self.model, self.norm = model, norm

    def forward(self, image: Tensor) -> Tensor:
        return self.model(self.norm(image))


def check_format(fmt: Any) -> str:
    if fmt not in FORMATS:
        close = difflib.get_close_matches(str(fmt), FORMATS, n=1)
        hint = f" (did you mean format={close[0]}?)" if close else ""
        raise ConfigError(f"format={fmt!r}: choose one of {sorted(FORMATS)}{hint}")
    return fmt


def check_example_size(size: Any) -> tuple[int, int]:
    """``example_size`` as (H, W): two positive integers."""
    value = OmegaConf.to_container(size) if isinstance(size, ListConfig) else size
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or min(value) < 1
    ):
        shown = list(value) if isinstance(value, list | tuple) else value
        raise ConfigError(
            f"example_size={shown}: must be [height, width], two positive integers, e.g. "
            "example_size=[224,224]"
        )
    return value[0], value[1]


def output_path(cfg: DictConfig) -> Path:
    """Where the export goes, checked to be a writable place (nothing is written yet)."""
    if not cfg.out:
        return Path(cfg.ckpt_path).expanduser().with_suffix(FORMATS[cfg.format])
    path = Path(cfg.out).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"out={path}: is a folder; name the file, e.g. out={path}/model{FORMATS[cfg.format]}"
        )
    other = {suffix: fmt for fmt, suffix in FORMATS.items() if fmt != cfg.format}
    if path.suffix in other:
        raise ConfigError(
            f"out={path}: format={cfg.format} writes {cfg.format} files, this name says "
            f"{other[path.suffix]}; name it {path.with_suffix(FORMATS[cfg.format]).name} or "
            f"set format={other[path.suffix]}"
        )
    folder = path.parent
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise ConfigError(
            f"out={path}: the folder {folder} {what}; create it or choose another out="
        )
    try:  # os.access says yes to root on a read-only mount; a real file says what is so
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".fcn-export-probe-"):
            pass
    except OSError as error:
        raise ConfigError(
            f"out={path}: cannot write to the folder {folder} ({error.strerror}); choose a "
            "writable folder"
        ) from None
    return path


def _export_onnx(net: nn.Module, example: Tensor, path: Path, cfg: DictConfig, meta: dict) -> None:
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            "format=onnx needs the onnx package: pip install 'fcn-lightning[export]'"
        ) from None
    axes = {0: "batch", 2: "height", 3: "width"}
    # The TorchScript-based exporter: it records the shape arithmetic of the aligned
    # geometry's padding and the caffe geometry's crops, so height and width stay dynamic.
    torch.onnx.export(
        net, (example,), str(path), input_names=["image"], output_names=["scores"],
        dynamic_axes={"image": axes, "scores": axes}, opset_version=cfg.opset, dynamo=False,
    )  # fmt: skip
    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, str(path))


def _export_torchscript(
    net: nn.Module, example: Tensor, path: Path, cfg: DictConfig, meta: dict
) -> None:
    # Traced, not scripted: the trace records the shape arithmetic (padding to a multiple of
    # 32, crops), so other sizes run too; the check below makes sure of it.
    traced = torch.jit.trace(net, example, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(meta)})


def run_exported(path: Path, fmt: str, x: Tensor) -> Tensor | None:
    """``path``'s scores for ``x``; None where the runtime for ``fmt`` is not installed."""
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path), map_location="cpu")(x)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def check_export(
    path: Path, fmt: str, net: nn.Module, cfg: DictConfig, channels: int = 3
) -> float | None:
    """The largest score difference from PyTorch over `CHECK_SIZES`; raises if too large."""
    worst = 0.0
    for height, width in CHECK_SIZES:
        x = torch.randn(1, channels, height, width) * (50 if cfg.normalize_in_graph else 1) + (
            128 if cfg.normalize_in_graph else 0
        )
        got = run_exported(path, fmt, x)
        if got is None:
            log.warning("onnxruntime is not installed: %s was not checked", path)
            return None
        with torch.no_grad():
            expected = net(x)
        if got.shape != expected.shape:
            raise WeightsError(
                f"{path}: gives scores of shape {tuple(got.shape)} for a {height} x {width} "
                f"image, PyTorch {tuple(expected.shape)}; please report this"
            )
        scale = float(expected.abs().max()) or 1.0
        worst = max(worst, float((got - expected).abs().max()) / scale)
    if worst > cfg.check_tolerance:
        raise WeightsError(
            f"{path}: scores differ from PyTorch's by {worst:.2e} (relative), more than "
            f"check_tolerance={cfg.check_tolerance}; please report this"
        )
    return worst


def export(cfg: DictConfig, typed: Collection[str] = ()) -> Path:
    """Write the checkpoint's model as ONNX or TorchScript; returns the file written.

    ``typed``: the config keys the user set on the command line (`command_line_keys`).
    """
    check_format(cfg.format)
    height, width = check_example_size(cfg.example_size)
    resolve_checkpoint(cfg, "export")  # model_zoo=<name>: its converted checkpoint
    path = output_path(cfg)
    checkpoint = read_checkpoint(cfg.ckpt_path, key="ckpt_path")
    module = load_module(cfg.ckpt_path).eval()
    channels = check_input(module, cfg)
    trained = TrainedWith.of(module.hparams)
    settle(
        "normalization", cfg.get("normalization"), trained.normalization,
        ckpt_path=cfg.ckpt_path, typed=typed,
        fix="drop it: the export records (or bakes in) the checkpoint's",
    )  # fmt: skip
    settings = Inference.from_config(resolved(cfg.inference) if "inference" in cfg else None)
    if cfg.format == "onnx" and min(settings.scales) < 1:
        raise ConfigError(
            f"inference.tta.scales={list(settings.scales)}: a scale below 1 shrinks with "
            "antialiasing, which the ONNX exporter cannot write; use format=torchscript, or "
            "scales of 1 and above"
        )
    net: nn.Module = inference_net(module.model, settings)
    if cfg.normalize_in_graph:
        net = Normalized(net, get_input_norm(module.hparams.normalization))
    net.eval()
    meta = {**export_metadata(module, cfg, checkpoint), "inference": settings.summary()}
    example = torch.rand(1, channels, height, width) * (255 if cfg.normalize_in_graph else 1)
    with warnings.catch_warnings(), torch.no_grad():
        # Tracing warns about the input-shape checks it cannot record; they are static.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        exporter = _export_onnx if cfg.format == "onnx" else _export_torchscript
        # Written beside the target and moved into place only once checked: a failed
        # export or check leaves no file behind, and an earlier export as it was.
        partial = path.with_name(f".{path.stem}.partial{path.suffix}")
        try:
            exporter(net, example, partial, cfg, meta)
            worst = check_export(partial, cfg.format, net, cfg, channels) if cfg.check else None
        except WeightsError as error:
            partial.unlink(missing_ok=True)
            kept = f"; {path} was left as it was" if path.exists() else ""
            raise WeightsError(f"{str(error).replace(str(partial), str(path))}{kept}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    sidecar = path.with_name(path.name + ".json")
    atomic_write_text(sidecar, json.dumps(meta, indent=2))
    os.replace(partial, path)
    log.info("wrote %s (and %s.json, the input normalisation and classes)", path, path.name)
    if worst is not None:
        sizes = ", ".join(f"{h}x{w}" for h, w in CHECK_SIZES)
        log.info("checked at %s: max relative difference from PyTorch %.1e", sizes, worst)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


@fcn_main("export")
def main(cfg: DictConfig) -> None:
    with user_errors():
        check_config(cfg, "export")  # before anything is written or fetched
        export(cfg, command_line_keys())


if __name__ == "__main__":
    main()
