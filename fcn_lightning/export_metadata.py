"""What an export records beside its graph (ONNX ``metadata_props``, the TorchScript extra
file, ``<out>.json``): how to feed the graph (its input's streams and normalisation) and how
to read its ``scores`` (the heads, their classes and colours), and which inputs the graph
can take as an RGB image (``normalize_in_graph``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fcn_lightning.data.inputs import input_channels, input_streams
from fcn_lightning.errors import ConfigError
from fcn_lightning.normalization import get_input_norm
from fcn_lightning.visualize import full_palette

# The inputs that are one RGB image (fcn_lightning/data/inputs.py): normalize_in_graph works.
IMAGE_INPUTS = ("rgb", "color")


def model_input(module: Any) -> str:
    """The checkpoint's ``model.input`` (fcn_lightning/data/inputs.py); rgb where absent."""
    return str(module.hparams.model.get("input") or "rgb")


def check_input(module: Any, cfg: DictConfig) -> int:
    """The exported graph's input channels; refuses ``normalize_in_graph`` for inputs that
    are not one RGB image."""
    name = model_input(module)
    if cfg.normalize_in_graph and name not in IMAGE_INPUTS:
        raise ConfigError(
            f"normalize_in_graph=true: ckpt_path={cfg.ckpt_path} takes data.input={name} "
            f"({input_channels(name)} channels), not an RGB image whose normalisation the "
            "graph could hold; export with normalize_in_graph=false (the graph takes the "
            "normalised input as the data pipeline gives it)"
        )
    return input_channels(name)


def heads_metadata(module: Any) -> list[dict[str, Any]]:
    """Each head's name, class count, class names and its channels of ``scores``."""
    entries, start = [], 0
    for (name, classes), names in zip(module.heads, module.head_class_names, strict=True):
        entries.append({
            "name": name, "num_classes": classes, "class_names": list(names),
            "channels": [start, start + classes],
        })  # fmt: skip
        start += classes
    return entries


def export_metadata(module: Any, cfg: DictConfig, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What a user of the exported file needs to feed it and read its output."""
    norm = get_input_norm(module.hparams.normalization)
    model = module.hparams.model
    name = model_input(module)
    channels = input_channels(name)
    if cfg.normalize_in_graph:
        image = "RGB values 0-255, float32 B x 3 x H x W (normalised inside the graph)"
    elif name in IMAGE_INPUTS:
        image = (
            "float32 B x 3 x H x W = (rgb_0_255 in `channel_order` * scale - mean) / std "
            "(mean and std per channel, in channel_order)"
        )
    else:
        image = (
            f"float32 B x {channels} x H x W: the streams of data.input={name} concatenated "
            "in `streams` order, each normalised as the data pipeline does it (docs/data.md)"
        )
    streams = [{"name": s.name, "channels": s.channels} for s in input_streams(name)]
    heads = heads_metadata(module)
    total = sum(head["num_classes"] for head in heads)
    output = "float32 B x C x H x W; argmax over C = class"
    if len(heads) > 1:
        output = (
            f"float32 B x {total} x H x W: the heads' scores concatenated in `heads` order "
            "(each head's `channels` [start, end)); argmax over a head's channels = its class"
        )
    return {
        "input": {
            "name": "image",
            "layout": image,
            "normalized_in_graph": cfg.normalize_in_graph,
            "data_input": name,
            "channels": channels,
            "streams": streams,
        },
        "heads": heads,
        "normalization": {
            "name": norm.name,
            "channel_order": norm.channel_order,
            "scale": norm.scale,
            "mean": list(norm.mean),
            "std": list(norm.std),
        },
        "output": {"name": "scores", "layout": output},
        "class_names": list(module.class_names),
        # [R, G, B] per class: the data's own colours (data=folder), else VOC's
        "palette": full_palette(module.hparams.get("palette"))[: module.num_classes].tolist(),
        "num_classes": module.num_classes,
        "model": {k: model.get(k) for k in ("variant", "backbone", "geometry", "width")},
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "step": int(checkpoint.get("global_step", 0)),
    }
