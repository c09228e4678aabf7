"""Callbacks: the latest checkpoint; pictures of validation predictions, per-class IU and
the confusion matrix, saved as PNGs beside the run and sent to W&B when it is a logger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger

from fcn_lightning.data.input_display import display_rgb
from fcn_lightning.heads import first_head
from fcn_lightning.run.rundir import BEST_FILENAME, RunDir
from fcn_lightning.visualize import sample_grid


class BestCheckpoint(ModelCheckpoint):
    """The best checkpoint by validation mean IU, where and as the run directory names it."""

    def __init__(self, run_dir: str, save_top_k: int = 1, **kwargs: Any):
        run = RunDir(run_dir)
        super().__init__(
            dirpath=str(run.checkpoints),
            filename=BEST_FILENAME,
            auto_insert_metric_name=False,
            monitor="val/mean_iu",
            mode="max",
            save_top_k=save_top_k,
            **kwargs,
        )


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: rewritten at every validation and when training ends.

    ModelCheckpoint's own ``save_last`` writes it only when a monitored checkpoint is
    saved, so a run whose mean IU stopped improving would resume from its last
    improvement and repeat everything since.
    """

    def __init__(self, run_dir: str):
        run = RunDir(run_dir)
        super().__init__(
            dirpath=str(run.checkpoints),
            filename=run.last_checkpoint.stem,
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


def _input_name(trainer, pl_module) -> str:
    """data.input of the batches (the datamodule's, else the module's record of it; rgb)."""
    datamodule = getattr(trainer, "datamodule", None)
    model = pl_module.hparams.get("model") or {}
    for hparams in (getattr(datamodule, "hparams", {}), pl_module.hparams, model):
        name = hparams.get("input")
        if isinstance(name, str):
            return name
    return "rgb"


class SegmentationSamples(pl.Callback):
    """Keeps the first ``num_samples`` validation images of each validation run."""

    def __init__(self, num_samples: int = 4, dirpath: str | None = None) -> None:
        self.num_samples = num_samples
        self.dirpath = Path(dirpath) if dirpath else None
        self.rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.rows = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        if trainer.sanity_checking or len(self.rows) >= self.num_samples:
            return
        images, labels = batch
        normalization = pl_module.hparams.normalization
        input_name = _input_name(trainer, pl_module)
        # Several heads: the first head's prediction and labels (as its logged names).
        heads = getattr(pl_module, "heads", None) or (("", outputs.shape[1]),)
        scores, labels = first_head(outputs, labels, heads)
        preds = scores.argmax(1)
        for image, label, pred in zip(images, labels, preds, strict=True):
            if len(self.rows) >= self.num_samples:
                break
            valid = label != 255
            rows, cols = valid.any(1).nonzero(), valid.any(0).nonzero()
            # Pad collation adds void margins; show only the image itself.
            h = int(rows.max()) + 1 if len(rows) else label.shape[0]
            w = int(cols.max()) + 1 if len(cols) else label.shape[1]
            shown = display_rgb(image[:, :h, :w], input_name, normalization)
            rgb = shown.permute(1, 2, 0).cpu().numpy()
            self.rows.append((rgb, label[:h, :w].cpu().numpy(), pred[:h, :w].cpu().numpy()))

    def on_validation_end(self, trainer, pl_module) -> None:
        # Not on_validation_epoch_end: Lightning calls callbacks' epoch-end hooks before the
        # module's, which is where this validation's scores are computed.
        if trainer.sanity_checking or not self.rows or not trainer.is_global_zero:
            return
        step = trainer.global_step
        grid = sample_grid(self.rows, palette=pl_module.hparams.get("palette"))
        if self.dirpath is not None:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            Image.fromarray(grid).save(self.dirpath / f"val_step{step:06d}.png")
        scores = pl_module.last_scores.get("val")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                _log_to_wandb(logger, self.rows, scores, pl_module.class_names, step)


def _log_to_wandb(logger: WandbLogger, rows, scores, class_names: list[str], step: int) -> None:
    import wandb

    labels = {**dict(enumerate(class_names)), 255: "void"}
    images = [
        wandb.Image(
            image,
            masks={
                "prediction": {"mask_data": pred.astype(np.uint8), "class_labels": labels},
                "ground_truth": {"mask_data": truth.astype(np.uint8), "class_labels": labels},
            },
        )
        for image, truth, pred in _same_size(rows)
    ]
    payload = {"val/samples": images}
    if scores is not None:
        payload["val/per_class_iu"] = wandb.Table(
            columns=["class", "iu"], data=[[name, iu] for name, iu in scores["iu"].items()]
        )
        payload["val/confusion_matrix"] = wandb.Image(
            confusion_image(scores["confusion"], class_names)
        )
    logger.experiment.log({**payload, "trainer/global_step": step})


def _same_size(rows):
    """Pad samples to one size (black image, void masks): W&B shows a list of images of
    unequal sizes incorrectly."""
    height = max(image.shape[0] for image, _, _ in rows)
    width = max(image.shape[1] for image, _, _ in rows)
    padded = []
    for image, truth, pred in rows:
        h, w = truth.shape
        canvas = np.zeros((height, width, 3), dtype=image.dtype)
        canvas[:h, :w] = image
        masks = []
        for mask in (truth, pred):
            full = np.full((height, width), 255, dtype=np.uint8)
            full[:h, :w] = mask
            masks.append(full)
        padded.append((canvas, *masks))
    return padded


def confusion_image(hist, class_names: list[str]) -> np.ndarray:
    """Row-normalised confusion matrix as an RGB picture (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = np.asarray(hist, dtype=np.float64)
    rates = hist / np.maximum(hist.sum(1, keepdims=True), 1)
    size = 2 + 0.35 * len(class_names)
    fig, ax = plt.subplots(figsize=(size, size), dpi=80)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90)
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.canvas.draw()
    picture = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return picture
