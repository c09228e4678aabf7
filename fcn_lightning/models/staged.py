"""Staged training (CVPR): FCN-16s starts from a trained FCN-32s, FCN-8s from FCN-16s.

Layers are matched by name (the reference's names, shared by every variant), so the
backbone, ``score_fr`` and earlier skips carry over, while the new skip's score layer stays
at zero: the net starts out computing exactly what the previous stage computed.

A late-fusion net can also start from one trained one-stream net per stream, as the
reference's nyud-fcn32s-color-hha does (solve.py: ``surgery.transplant(..., suffix='color')``
from the colour FCN-32s, the same for HHA): `init_streams_from_checkpoints` renames each
net's ``backbone.*`` and score/skip layers to its stream's (``backbones.hha.*``,
``score_fr_hha``) and keeps the fused net's own final upsampling (the reference re-fills
every upsampling with bilinear weights after the transplant), so the fused net starts at
the mean of the two nets' scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from fcn_lightning.errors import WeightsError
from fcn_lightning.models.checkpoints import read_state_dict, strip_prefix


@dataclass
class InitReport:
    copied: list[str]
    kept: list[str]  # the model's own initial values (new layers)
    ignored: list[str]  # in the source but not in the model

    def summary(self) -> str:
        return (
            f"copied {len(self.copied)} tensors; kept initial values for {self.kept or 'none'}; "
            f"ignored from the source: {self.ignored or 'none'}"
        )


def init_from_state_dict(
    model: nn.Module, source: dict[str, Tensor], *, origin: str = "the source"
) -> InitReport:
    """Copy every tensor of ``source`` whose name the model has; shapes must agree."""
    source = strip_prefix(source, "model.")
    own = model.state_dict()
    copied = [k for k in own if k in source]
    for key in copied:
        if source[key].shape != own[key].shape:
            raise WeightsError(
                f"{origin}: {key} has shape {tuple(source[key].shape)} but this model needs "
                f"{tuple(own[key].shape)}; was it trained with another num_classes or width?"
            )
    if not copied:
        raise WeightsError(f"{origin}: no layer names in common with this model")
    model.load_state_dict({**own, **{k: source[k] for k in copied}})
    return InitReport(
        copied=copied,
        kept=[k for k in own if k not in source],
        ignored=[k for k in source if k not in own],
    )


def init_from_checkpoint(model: nn.Module, path: str | Path) -> InitReport:
    """Start ``model`` from an earlier stage's checkpoint (``model.init_from``)."""
    state_dict = read_state_dict(path, key="model.init_from")
    return init_from_state_dict(model, state_dict, origin=f"model.init_from={path}")


def stream_state_dict(
    model: nn.Module, stream: str, source: dict[str, Tensor]
) -> dict[str, Tensor]:
    """``source``, a one-stream net's state dict, renamed as stream ``stream`` of the
    late-fusion ``model`` (an `FCN`): ``backbone.X`` -> ``backbones.<stream>.X``, a head
    layer ``L<head>`` -> ``L_<stream><head>``; the shared final upsamplings are left out."""
    source = strip_prefix(source, "model.")
    head_ends = [f"_{name}" if len(model.heads) > 1 else "" for name, _ in model.heads]
    renamed = {}
    for key in model.state_dict():
        layer, _, param = key.rpartition(".")
        if key.startswith(f"backbones.{stream}."):
            theirs = "backbone." + key[len(f"backbones.{stream}.") :]
        else:
            end = next((e for e in head_ends if layer.endswith(f"_{stream}{e}")), None)
            if end is None:
                continue
            theirs = f"{layer[: len(layer) - len(f'_{stream}{end}')]}{end}.{param}"
        if theirs in source:
            renamed[key] = source[theirs]
    return renamed


def init_streams_from_checkpoints(
    model: nn.Module, paths: Mapping[str, str | Path | dict[str, Tensor]]
) -> InitReport:
    """Start each stream of the late-fusion ``model`` from a trained one-stream net:
    ``paths`` maps stream name -> that net's checkpoint (or state dict)."""
    streams = [name for name, _ in model.streams]
    unknown = sorted(set(paths) - set(streams))
    if len(streams) < 2 or unknown:
        raise WeightsError(
            f"model.init_from: streams {unknown or sorted(paths)} are not streams of this "
            f"model (its streams: {streams}); per-stream starts need a late-fusion model.input"
        )
    named = {stream: "a state dict" if isinstance(p, dict) else p for stream, p in paths.items()}
    combined: dict[str, Tensor] = {}
    for stream, path in paths.items():
        source = path if isinstance(path, dict) else read_state_dict(path, key="model.init_from")
        renamed = stream_state_dict(model, stream, source)
        if not renamed:
            raise WeightsError(
                f"model.init_from={named[stream]}: no layer fits stream {stream}; expected a "
                "one-stream FCN checkpoint (backbone.* and score_fr layers)"
            )
        combined.update(renamed)
    origin = "model.init_from=" + ", ".join(f"{stream}:{p}" for stream, p in named.items())
    return init_from_state_dict(model, combined, origin=origin)
