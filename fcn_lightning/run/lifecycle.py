"""The callback that carries a run's lifecycle through Lightning's fit: stopping on a
signal at a step every rank agrees on, with last.ckpt written there; a validation at the
last step, so the final scores are the final weights'; the config recorded in every
checkpoint; and settings allowed to change on resume applied to the optimiser."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from fcn_lightning.run.resume import CHANGES_KEY, CONFIG_KEY, Start
from fcn_lightning.run.rundir import RunDir
from fcn_lightning.run.signals import StopSignals

log = logging.getLogger("fcn_lightning")


class RunLifecycle(pl.Callback):
    def __init__(self, run: RunDir, config: dict[str, Any], start: Start, signals: StopSignals):
        self.run, self.config, self.start, self.signals = run, config, start, signals
        self.history = list(start.history)
        self.validated_step: int | None = None
        self.scores: dict[str, Any] | None = None
        self.stopped_at: int | None = None

    # Signals.

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.signals.install()  # over the SIGTERM handler Lightning set when fit began
        if self.start.changes:
            self._apply_changes(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop = self.signals.received is not None
        if trainer.world_size > 1:  # every rank stops after the same step
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop and self.stopped_at is None:
            self.stopped_at = trainer.global_step
            # A validation due at this step runs first (Lightning would cut it short), and
            # its last.ckpt is then the one to resume.
            if not _validates_now(trainer):
                _stop_after_this_step(trainer)
        elif not stop and 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True  # Lightning then validates at this last step

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or self.stopped_at is None:
            return
        for logger in trainer.loggers:  # the CSV record of this part, whole
            logger.save()
        if self.validated_step == trainer.global_step:
            return  # last.ckpt of this step's validation is already the state to resume
        trainer.save_checkpoint(self.run.last_checkpoint, weights_only=False)
        if trainer.is_global_zero:
            log.warning("saved %s at step %d", self.run.last_checkpoint, trainer.global_step)

    # Final scores.

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated_step = trainer.global_step
            self.scores = getattr(pl_module, "last_scores", {}).get("val")
            if self.stopped_at == trainer.global_step:
                _stop_after_this_step(trainer)

    # The config in every checkpoint, so a resume can compare with it.

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.config
        checkpoint[CHANGES_KEY] = self.history

    def _apply_changes(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning restored the optimiser and schedulers with the checkpoint's settings;
        put the allowed new ones in (the lr keeps its place in the schedule)."""
        fresh = pl_module.configure_optimizers()
        fresh = fresh["optimizer"] if isinstance(fresh, dict) else fresh
        for optimizer in trainer.optimizers:
            for group, new in zip(optimizer.param_groups, fresh.param_groups, strict=True):
                base = group.get("initial_lr", group["lr"])
                scale = group["lr"] / base if base else 1.0
                new_base = new.get("initial_lr", new["lr"])
                group.update({k: v for k, v in new.items() if k not in ("params", "lr")})
                group["lr"] = new_base * scale
                if "initial_lr" in group:
                    group["initial_lr"] = new_base
            for config in trainer.lr_scheduler_configs:
                if config.scheduler.optimizer is optimizer:
                    config.scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        entry = {
            "step": trainer.global_step,
            "changes": {k: {"old": a, "new": b} for k, (a, b) in self.start.changes.items()},
        }
        self.history.append(entry)
        if trainer.is_global_zero:
            self.run.changes_file.write_text(OmegaConf.to_yaml(OmegaConf.create(self.history)))
            listed = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in self.start.changes.items())
            log.warning("resumed at step %d with changed settings: %s", trainer.global_step, listed)


def _validates_now(trainer: pl.Trainer) -> bool:
    """Whether Lightning validates at the end of the step in progress (its own rule)."""
    loop = trainer.fit_loop
    try:
        return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))
    except (AttributeError, TypeError):  # another Lightning: stop now, validation or not
        return False


def _stop_after_this_step(trainer: pl.Trainer) -> None:
    """Lightning's own SIGTERM flag: at the end of this step (its schedulers stepped) every
    rank leaves the loop with a SIGTERMException, which `RunLifecycle.on_exception` and
    the entry point turn into last.ckpt and the signal's exit status."""
    trainer._signal_connector.received_sigterm = True
