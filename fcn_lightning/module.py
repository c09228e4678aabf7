"""The LightningModule: an FCN, its loss, the reference's SGD and the paper's metrics.

Constructed from primitive dicts (the Hydra ``model``, ``optim`` and ``loss`` nodes), which
are saved as hyperparameters, so checkpoints load with ``torch.load(weights_only=True)``
and loggers show readable values.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import Metric

from fcn_lightning.errors import ConfigError, DivergedError
from fcn_lightning.heads import describe, log_prefix, model_heads, split_labels, split_scores
from fcn_lightning.loss import heads_loss, loss_normaliser, sample_cells
from fcn_lightning.metrics import LOGGED_SCORES, SegmentationMetrics
from fcn_lightning.models import build_fcn
from fcn_lightning.models.checkpoints import extract_state_dict, read_checkpoint
from fcn_lightning.optim import build_optimizer, build_schedule
from fcn_lightning.run.rng_state import (
    collect_rng_states_of_all_ranks,
    restore_rng_states,
    states_for_rank,
)

# Keys of the `model` node that are not build_fcn arguments.
NOT_BUILD_ARGS = ("name", "init_from", "init_streams", "init_stages", "paper_lr", "paper_steps")


class SplitLoss(Metric):
    """The loss of a whole split as if it were one batch: the summed loss over the summed
    normalisers (images for loss.normalize=sum, valid pixels for mean), both summed over
    processes, so DDP gives what one process gives.

    Not ``self.log(..., sync_dist=True)``: Lightning averages the per-rank image counts as
    integers (8 and 7 images make 7), biasing the loss whenever ranks hold unequal shares.
    Not ``MeanMetric``: with ``nan_strategy="disable"`` it drops the weights, and otherwise
    it drops NaN losses, which should show."""

    full_state_update = False
    total: Tensor
    weight: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Double: VOC's val split has ~3e8 pixels, past float32's exact integers.
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("total", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("weight", default=zero.clone(), dist_reduce_fx="sum")

    def update(self, loss: Tensor, weight: Tensor | int) -> None:
        self.total += loss.detach() * weight
        self.weight += weight

    def compute(self) -> Tensor:
        return self.total / self.weight


class FCNModule(pl.LightningModule):
    """Several heads (``model.heads``): the loss is the sum of the heads' losses, each head
    has its own metrics; the first head logs under today's names (``val/mean_iu``,
    ``val_iu/<class>``), a further head ``geo`` under ``val/geo/<score>`` and
    ``val_iu/geo/<class>`` (docs/training.md). ``class_names`` and ``palette`` are the first
    head's; ``head_class_names`` maps each further head to its class names."""

    def __init__(
        self,
        model: dict[str, Any],
        optim: dict[str, Any],
        loss: dict[str, Any] | None = None,
        *,
        class_names: list[str] | None = None,
        palette: list[list[int]] | None = None,  # [R, G, B] per class: predict's colours
        head_class_names: dict[str, list[str]] | None = None,  # heads after the first
        ignore_index: int = 255,
        normalization: str = "caffe",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        loss = dict(loss or {})
        build_args = {k: v for k, v in model.items() if k not in NOT_BUILD_ARGS}
        self.model = build_fcn(**build_args)
        self.heads = model_heads(self.model)
        self.num_classes = self.heads[0][1]  # the first head's, as class_names
        if class_names is not None and len(class_names) != self.num_classes:
            raise ConfigError(
                f"model.num_classes={self.num_classes} but the data has {len(class_names)} "
                "classes; set model.num_classes to match data.num_classes"
            )
        self.class_names = list(class_names or [str(i) for i in range(self.num_classes)])
        self.head_class_names = [self.class_names] + [
            list((head_class_names or {}).get(name) or [str(i) for i in range(classes)])
            for name, classes in self.heads[1:]
        ]
        wrong = next(
            (k for k, names in enumerate(self.head_class_names) if len(names) != self.heads[k][1]),
            None,
        )
        if wrong is not None:
            name, classes = self.heads[wrong]
            raise ConfigError(
                f"model.heads: head {name} has {classes} classes but its class list names "
                f"{len(self.head_class_names[wrong])}; make data.heads' num_classes match its "
                "classes"
            )
        self.ignore_index = ignore_index
        self.optim_cfg = dict(optim)
        self.loss_normalize = loss.get("normalize", "sum")
        self.keep_prob = float(loss.get("keep_prob", 1.0))
        if not 0 < self.keep_prob <= 1:
            raise ConfigError(f"loss.keep_prob={self.keep_prob}: must be in (0, 1]")
        weight = loss.get("class_weight")
        if weight is not None and len(self.heads) > 1:
            raise ConfigError(
                f"loss.class_weight (or loss.class_balance) weighs the classes of one head; "
                f"this model has the heads {describe(self.heads)}: drop it (the reference "
                "weighs no head)"
            )
        if weight is not None and len(weight) != self.num_classes:
            raise ConfigError(
                f"loss.class_weight has {len(weight)} entries for {self.num_classes} classes"
            )
        self.register_buffer(
            "class_weight", None if weight is None else torch.tensor(weight, dtype=torch.float32)
        )
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Not a submodule: the state dict keeps the plain `model.*` names.
        self.__dict__["_net"] = torch.compile(self.model) if compile else self.model
        # One metric and one split loss per head and stage (their states are not saved).
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleList(
                SegmentationMetrics(classes, ignore_index) for _, classes in self.heads
            )
            for stage in ("val", "test")
        })  # fmt: skip
        self.split_losses = nn.ModuleDict(
            {stage: nn.ModuleList(SplitLoss() for _ in self.heads) for stage in ("val", "test")}
        )
        self.last_scores: dict[str, dict[str, Any]] = {}
        self._rng_to_restore: dict[str, Any] | None = None

    def forward(self, images: Tensor) -> Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self._net(images)

    def head_losses(self, scores: Tensor, labels: Tensor) -> list[Tensor]:
        """Each head's loss on its label plane; the loss is their sum (weight 1 each)."""
        return heads_loss(
            split_scores(scores, self.heads),
            split_labels(labels, self.heads),
            normalize=self.loss_normalize,
            ignore_index=self.ignore_index,
            class_weight=self.class_weight,
        )

    def loss(self, scores: Tensor, labels: Tensor) -> Tensor:
        return torch.stack(self.head_losses(scores, labels)).sum()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        if self.keep_prob < 1:
            labels = sample_cells(
                labels, self.keep_prob, self.model.output_stride, self.ignore_index
            )
        losses = self.head_losses(self(images), labels)
        loss = torch.stack(losses).sum()
        if not torch.isfinite(loss):
            raise DivergedError(self._divergence_message(float(loss)))
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        if len(self.heads) > 1:
            for (name, _), head_loss in zip(self.heads, losses, strict=True):
                self.log(f"train/{name}/loss", head_loss, batch_size=images.shape[0])
        return loss

    def _divergence_message(self, value: float) -> str:
        lr = self.optim_cfg["lr"]
        cause = (
            f"the summed loss (loss.normalize=sum) grows with the pixels per image, so "
            f"optim.lr={lr:g} may be too large for it: lower optim.lr (the reference uses "
            f"1e-10 for FCN-32s) or use loss=mean"
            if self.loss_normalize == "sum"
            else f"optim.lr={lr:g} may be too large: lower it"
        )
        return f"train/loss became {value} at step {self.global_step}; {cause}. {self._kept()}"

    def _kept(self) -> str:
        """What a diverged run leaves to resume from: last.ckpt only if one was written."""
        callback = self._trainer.checkpoint_callback if self._trainer is not None else None
        folder = getattr(callback, "dirpath", None)
        if folder is not None and (Path(folder) / "last.ckpt").is_file():
            return (
                f"Nothing was saved after this step: {Path(folder) / 'last.ckpt'} holds the "
                "last validation before it"
            )
        return "Nothing was saved: no checkpoint was written before this step"

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, labels = batch
        scores = self(images)
        head_scores = split_scores(scores, self.heads)
        head_labels = split_labels(labels, self.heads)
        losses = self.head_losses(scores, labels)
        for k, (metric, split_loss) in enumerate(
            zip(self.metrics[stage], self.split_losses[stage], strict=True)
        ):
            weight = self.class_weight if k == 0 else None
            normaliser = loss_normaliser(
                head_labels[k], normalize=self.loss_normalize, ignore_index=self.ignore_index,
                class_weight=weight,
            )  # fmt: skip
            split_loss.update(losses[k], normaliser)
            metric.update(head_scores[k].detach(), head_labels[k])
        return scores

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._eval_step(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        """Log every head's scores (the first under today's names) and the summed loss;
        ``last_scores[stage]``: the first head's scores, ``loss`` (the sum), ``step``, and
        with several heads ``heads``: {name: that head's scores, loss, iu, confusion}."""
        records = []
        for k, (metric, split_loss) in enumerate(
            zip(self.metrics[stage], self.split_losses[stage], strict=True)
        ):
            records.append(self._head_record(stage, k, metric, split_loss))
        total = sum(record["loss"] for record in records)
        self.log(f"{stage}/loss", torch.tensor(total, dtype=torch.float32))
        first = dict(records[0])
        self.last_scores[stage] = {**first, "loss": total, "step": self.global_step}
        if len(self.heads) > 1:
            self.last_scores[stage]["heads"] = {
                name: record for (name, _), record in zip(self.heads, records, strict=True)
            }

    def _head_record(
        self, stage: str, k: int, metric: SegmentationMetrics, split_loss: SplitLoss
    ) -> dict[str, Any]:
        scores = metric.compute()  # already summed over processes
        head_loss = split_loss.compute()  # likewise
        split_loss.reset()
        prefix = log_prefix(self.heads, k)
        for name in LOGGED_SCORES:
            self.log(
                f"{stage}/{prefix}{name}", scores[name].float(),
                prog_bar=k == 0 and name == "mean_iu",
            )  # fmt: skip
        if len(self.heads) > 1:
            self.log(f"{stage}/{self.heads[k][0]}/loss", head_loss.float())
        names = self.head_class_names[k]
        iu = scores["iu"].tolist()
        record = {
            **{name: scores[name].item() for name in LOGGED_SCORES},
            "loss": head_loss.item(),
            "iu": dict(zip(names, iu, strict=True)),
            "confusion": metric.hist.cpu().clone(),
        }
        for name, value in zip(names, iu, strict=True):
            if not math.isnan(value):
                self.log(f"{stage}_iu/{prefix}{name}", value)
        metric.reset()
        return record

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    # Exact resumption: the random state goes into every checkpoint and comes back just
    # before the first training batch after a resume, when the run it continues drew its
    # next dropout masks (loaders and sanity checks built in between draw from it too).

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = collect_rng_states_of_all_ranks()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("rng_states")
        trainer = self._trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        self._rng_to_restore = None if saved is None else states_for_rank(saved, rank, world)
        if saved is not None and self._rng_to_restore is None:
            count = 1 if isinstance(saved, dict) else len(saved)
            rank_zero_warn(
                f"the checkpoint holds the random state of {count} process(es) and this "
                f"run has {world}: training goes on with fresh random streams, so it will not "
                "repeat exactly what an uninterrupted run would have done"
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._rng_to_restore is not None:
            restore_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        cfg = self.optim_cfg
        optimizer = build_optimizer(
            self.model,
            lr=cfg["lr"],
            momentum=cfg.get("momentum", 0.99),
            weight_decay=cfg.get("weight_decay", 5e-4),
            bias_lr_mult=cfg.get("bias_lr_mult", 2.0),
        )
        max_steps = self.trainer.max_steps if self.trainer.max_steps > 0 else -1
        if max_steps < 0 and cfg.get("schedule", "fixed") == "poly":
            max_steps = self.trainer.estimated_stepping_batches
        scheduler = build_schedule(
            optimizer,
            schedule=cfg.get("schedule", "fixed"),
            max_steps=max_steps,
            power=cfg.get("poly_power", 0.9),
        )
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def load_module(checkpoint: str | Path, **overrides: Any) -> FCNModule:
    """An FCNModule from a Lightning checkpoint, without re-fetching pretrained weights."""
    path = Path(checkpoint)
    loaded = read_checkpoint(path, key="ckpt_path")
    state = extract_state_dict(loaded, source=f"ckpt_path={path}")
    hparams = dict(loaded.get("hyper_parameters") or {}) if isinstance(loaded, dict) else {}
    if "model" not in hparams:
        raise ConfigError(
            f"ckpt_path={path}: not a fcn-lightning checkpoint (no model hyperparameters)"
        )
    hparams["model"] = {**hparams["model"], "pretrained": False, "init_from": None,
                        "init_streams": None}  # fmt: skip
    hparams.update(overrides)
    module = FCNModule(**hparams)
    shapes = module.state_dict()
    wrong = [
        k for k, v in state.items() if k in shapes and tuple(v.shape) != tuple(shapes[k].shape)
    ]
    if wrong:
        raise ConfigError(
            f"ckpt_path={path}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)} but the "
            f"model in its hyperparameters needs {tuple(shapes[wrong[0]].shape)} "
            f"({len(wrong)} such tensor(s)): the file was altered or is from another model; "
            "use the checkpoint the run wrote"
        )
    missing, unexpected = module.load_state_dict(state, strict=False)
    if [k for k in missing if not k.endswith("class_weight")] or unexpected:
        raise ConfigError(
            f"ckpt_path={path}: weights do not fit the model in its hyperparameters "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return module
