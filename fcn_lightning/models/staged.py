"""Staged training (CVPR): FCN-16s starts from a trained FCN-32s, FCN-8s from FCN-16s.

Layers are matched by name (the reference's names, shared by every variant), so the
backbone, ``score_fr`` and earlier skips carry over, while the new skip's score layer stays
at zero: the net starts out computing exactly what the previous stage computed.
"""

from __future__ import annotations

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
