"""The two lines a run prints about itself when fitting starts: the device it runs on, and
the model with its parameter count and size."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelSummary
from pytorch_lightning.utilities.model_summary import summarize
from pytorch_lightning.utilities.model_summary.model_summary import get_human_readable_count


def device_line(trainer: pl.Trainer) -> str:
    """One line for what Lightning's `GPU available: ... / TPU available: ...` said."""
    device = trainer.strategy.root_device
    name = device.type
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    elif device.type == "cpu":
        threads = torch.get_num_threads()
        name += f" ({threads} thread{'s' if threads > 1 else ''})"
    parts = [name]
    if trainer.world_size > 1:
        strategy = type(trainer.strategy).__name__.removesuffix("Strategy").lower()
        parts = [f"{trainer.world_size} processes x {name}", strategy]
        if trainer.num_nodes > 1:
            parts.append(f"{trainer.num_nodes} nodes")
    return f"device: {', '.join(parts)}, precision {trainer.precision}"


class ModelSummaryLine(ModelSummary):
    """Lightning's model summary in one line: the model, its parameters and size. No layer
    table, and no FLOPs: Lightning counts them only for a model with an example input, so
    it printed ``Total FLOPs: 0`` (``python -m fcn_lightning.bench.flops`` counts them)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._max_depth or not trainer.is_global_zero:
            return
        summary = summarize(pl_module, max_depth=1)
        model = dict(pl_module.hparams.get("model") or {}) if pl_module.hparams else {}
        name = model.get("name") or type(pl_module).__name__
        if model.get("backbone"):
            name += f" ({model['backbone']})"
        total, trainable = summary.total_parameters, summary.trainable_parameters
        print(
            f"model: {name}, {get_human_readable_count(total).strip()} parameters "
            f"({get_human_readable_count(trainable).strip()} trainable), "
            f"{summary.model_size:.1f} MB",
            flush=True,
        )
