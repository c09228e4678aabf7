"""How `eval` and `predict` turn images into scores: the ``inference`` config node.

``inference.dense`` (none | stitch | dilate) with ``inference.factor`` predicts a denser
coarse map (`fcn_lightning.models.dense`); ``inference.tta`` averages the scores of
horizontally flipped and rescaled copies of each image (test-time augmentation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from fcn_lightning.errors import ConfigError
from fcn_lightning.models.dense import METHODS, DenseFCN, check_dense
from fcn_lightning.models.fcn import FCN


@dataclass(frozen=True)
class Inference:
    dense: str = "none"
    factor: int = 2
    hflip: bool = False
    scales: tuple[float, ...] = (1.0,)

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> Inference:
        """Checked settings from the ``inference`` node (absent: plain inference)."""
        node = dict(node or {})
        tta = dict(node.get("tta") or {})
        unknown = (set(node) - {"dense", "factor", "tta"}) | (set(tta) - {"hflip", "scales"})
        if unknown:
            raise ConfigError(
                f"inference: unknown key(s) {sorted(unknown)}; "
                "known: dense, factor, tta.hflip, tta.scales"
            )
        dense = node.get("dense", "none")
        dense = "none" if dense is None else dense
        if dense not in METHODS:
            raise ConfigError(f"inference.dense={dense!r}: choose one of {list(METHODS)}")
        factor = node.get("factor", 2)
        if isinstance(factor, bool) or not isinstance(factor, int):
            raise ConfigError(f"inference.factor={factor!r}: must be an integer power of two")
        hflip = tta.get("hflip", False)
        if not isinstance(hflip, bool):
            raise ConfigError(f"inference.tta.hflip={hflip!r}: must be true or false")
        scales = tta.get("scales", [1.0])
        scales = [scales] if isinstance(scales, int | float) else scales
        if (
            not isinstance(scales, Sequence)
            or not scales
            or not all(isinstance(s, int | float) and not isinstance(s, bool) for s in scales)
            or min(scales) <= 0
        ):
            raise ConfigError(
                f"inference.tta.scales={scales!r}: must be a non-empty list of positive numbers"
            )
        return cls(dense, factor, hflip, tuple(float(s) for s in scales))

    def summary(self) -> dict[str, Any]:
        return {
            "dense": self.dense,
            "factor": self.factor if self.dense != "none" else None,
            "tta": {"hflip": self.hflip, "scales": list(self.scales)},
        }


class TestTimeAugmentation(nn.Module):
    """The mean of ``net``'s scores over rescaled and (``hflip``) mirrored copies of the
    input, each mapped back to the input's pixels (flipped back, resized bilinearly)."""

    def __init__(self, net: nn.Module, *, hflip: bool, scales: Sequence[float]) -> None:
        super().__init__()
        self.net, self.hflip, self.scales = net, hflip, tuple(scales)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        total, count = None, 0
        for scale in self.scales:
            # A resize to the same size is the identity, so `scale == 1` alone skips it (a
            # fixed choice, as tracing for export needs; the sizes stay in the graph).
            resized = x
            if scale != 1.0:
                size = (_scaled(height, scale), _scaled(width, scale))
                # Antialiasing when shrinking, as image libraries do.
                resized = F.interpolate(
                    x, size, mode="bilinear", align_corners=False, antialias=scale < 1
                )
            for flip in (False, True) if self.hflip else (False,):
                scores = self.net(resized.flip(-1) if flip else resized)
                if flip:
                    scores = scores.flip(-1)
                if scale != 1.0:
                    scores = F.interpolate(
                        scores, (height, width), mode="bilinear", align_corners=False
                    )
                total = scores if total is None else total + scores
                count += 1
        assert total is not None
        return total / count


def _scaled(size: int | Tensor, scale: float) -> int | Tensor:
    """``size * scale`` rounded (half to even, as Python's `round`), at least 1; a tensor
    while tracing for export, so the exported graph rescales any input size."""
    if isinstance(size, Tensor):
        return (size * scale).round().clamp(min=1).long()
    return max(1, round(size * scale))


def inference_net(model: FCN, settings: Inference) -> nn.Module:
    """``model`` wrapped as ``settings`` say (``dense=dilate`` converts ``model`` in place)."""
    check_dense(model, settings.dense, settings.factor)
    net: nn.Module = model
    if settings.dense != "none":
        net = DenseFCN(model, settings.dense, settings.factor)
    if settings.hflip or settings.scales != (1.0,):
        net = TestTimeAugmentation(net, hflip=settings.hflip, scales=settings.scales)
    return net


def apply_inference(module: Any, node: Mapping[str, Any] | None) -> Inference:
    """Make ``module`` (an `FCNModule`) score images as the ``inference`` node says."""
    settings = Inference.from_config(node)
    net = inference_net(module.model, settings)
    # FCNModule.forward calls `_net`, kept out of the submodules so state dicts keep their
    # names; the wrapper holds module.model, so the weights stay the checkpoint's.
    module.__dict__["_net"] = net
    return settings
