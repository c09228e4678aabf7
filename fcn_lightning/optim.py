"""SGD as the reference solvers set it up: parameter groups and learning-rate schedules.

Caffe's FCN nets give every weight lr x1 with weight decay and every bias lr x2 without
weight decay; frozen parameters (fixed upsampling, a frozen backbone) are left out.
PyTorch's SGD applies the lr after the momentum buffer and Caffe's before; with a fixed lr
(the paper) the two are the same update.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from fcn_lightning.errors import ConfigError

SCHEDULES = ("fixed", "poly")


def parameter_groups(
    model: nn.Module, *, lr: float, weight_decay: float, bias_lr_mult: float = 2.0
) -> list[dict]:
    weights, biases = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (biases if name.endswith("bias") else weights).append(param)
    groups = [{"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"}]
    if biases:
        groups.append(
            {"params": biases, "lr": lr * bias_lr_mult, "weight_decay": 0.0, "name": "biases"}
        )
    return groups


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    bias_lr_mult: float = 2.0,
    nesterov: bool = False,
) -> torch.optim.SGD:
    if not lr > 0:
        raise ConfigError(f"optim.lr={lr!r}: must be positive")
    if not 0 <= momentum < 1:
        raise ConfigError(f"optim.momentum={momentum!r}: must be in [0, 1)")
    groups = parameter_groups(model, lr=lr, weight_decay=weight_decay, bias_lr_mult=bias_lr_mult)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)


def build_schedule(
    optimizer: torch.optim.Optimizer, *, schedule: str, max_steps: int, power: float = 0.9
) -> LambdaLR | None:
    """``fixed`` (the reference) or ``poly``: lr x (1 - step / max_steps) ^ power."""
    if schedule == "fixed":
        return None
    if schedule == "poly":
        if max_steps <= 0:
            raise ConfigError("optim.schedule=poly needs trainer.max_steps > 0")
        return LambdaLR(optimizer, lambda step: max(0.0, 1 - step / max_steps) ** power)
    raise ConfigError(f"optim.schedule={schedule!r}: choose one of {list(SCHEDULES)}")
