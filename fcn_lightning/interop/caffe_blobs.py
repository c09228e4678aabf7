"""Caffe blobs into a model's tensors: every value checked against the shape the model
needs (Caffe's legacy 4-D blobs hold the same values in order), one line naming the file
and the tensor when it does not fit."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fcn_lightning.errors import WeightsError
from fcn_lightning.interop.caffemodel import CaffeLayer


def _params(layer: CaffeLayer) -> dict[str, np.ndarray]:
    """A layer's blobs as ``{"weight": ..., "bias": ...}`` (Caffe's order)."""
    return dict(zip(("weight", "bias"), layer.blobs, strict=False))


def _fit(value: np.ndarray, shape: torch.Size, where: str, key: str) -> Tensor:
    """``value`` as a tensor of ``shape``: Caffe's legacy 4-D blobs (1 x 1 x out x in for an
    InnerProduct, 1 x 1 x 1 x n for a bias) and fc-as-matrix hold the same values in order."""
    if value.size != shape.numel():
        raise WeightsError(
            f"{where}: {key} has shape {value.shape}, the model needs {tuple(shape)}; "
            "is this the model it claims to be?"
        )
    return torch.from_numpy(value.reshape(tuple(shape)).copy())


def _fill(
    shapes: dict[str, torch.Size], params: dict[str, np.ndarray], where: str
) -> dict[str, Tensor]:
    """``shapes`` (name -> the shape the model needs) filled from ``params``."""
    missing = sorted(set(shapes) - set(params))
    if missing:
        raise WeightsError(
            f"{where} has no weights for {missing[:4]}; it is not the model expected"
        )
    return {key: _fit(params[key], shape, where, key) for key, shape in shapes.items()}


def _shapes(state_dict: dict[str, Tensor]) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in state_dict.items()}


def _layer_params(layers: dict[str, CaffeLayer], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {f"{n}.{p}": v for n in names if n in layers for p, v in _params(layers[n]).items()}
