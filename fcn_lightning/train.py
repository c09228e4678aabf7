"""Train an FCN: ``python -m fcn_lightning.train model=fcn16s [key=value ...]``.

The data flows one way: config -> DataModule, LightningModule, Trainer -> fit (-> test).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict
from pytorch_lightning.utilities import rank_zero_only

from fcn_lightning import resolvers  # noqa: F401  (registers ${uid:} and ${mul:} for Hydra)
from fcn_lightning.data.datamodule import SegmentationDataModule, build_datamodule
from fcn_lightning.errors import ConfigError
from fcn_lightning.loss import median_frequency_weights
from fcn_lightning.metrics import markdown_table
from fcn_lightning.models import init_from_checkpoint
from fcn_lightning.models.checkpoints import read_checkpoint
from fcn_lightning.module import FCNModule
from fcn_lightning.run.boundary import user_errors
from fcn_lightning.run.checkpoint_io import AtomicCheckpointIO, remove_partial_checkpoints
from fcn_lightning.run.config import CONF_DIR, resolved, save_config
from fcn_lightning.run.console import log, print_config
from fcn_lightning.run.gpus import claimed_gpu
from fcn_lightning.run.loggers import build_callbacks, build_loggers, finish_wandb
from fcn_lightning.run.processes import (
    apply_ddp_timeout,
    die_with_launcher,
    isolated_job,
    prepare_ddp_relaunch,
    stop_other_ranks,
)
from fcn_lightning.run.rundir import keep_csv_history
from fcn_lightning.run.stages import run_earlier_stages

# Trainer-node keys the LightningModule applies itself.
MODULE_SWITCHES = ("channels_last", "compile")


def class_pixel_counts(datamodule: SegmentationDataModule) -> torch.Tensor:
    """Pixels per class over the training labels (for class balancing)."""
    from rich.progress import track

    from fcn_lightning.data.readers import read_label

    counts = torch.zeros(datamodule.num_classes, dtype=torch.long)
    samples = datamodule.samples(datamodule.splits["train"])
    for sample in track(samples, description="counting class pixels"):
        label = read_label(sample.label).flatten().long()
        counts += torch.bincount(label[label < datamodule.num_classes], minlength=len(counts))
    return counts


def build_module(cfg: DictConfig, datamodule: SegmentationDataModule) -> FCNModule:
    loss = resolved(cfg.loss)
    balance = loss.pop("class_balance", None)
    if balance == "median_frequency":
        loss["class_weight"] = median_frequency_weights(class_pixel_counts(datamodule)).tolist()
    elif balance is not None:
        raise ConfigError(f"loss.class_balance={balance!r}: choose null or median_frequency")
    trainer = resolved(cfg.trainer)
    return FCNModule(
        model=resolved(cfg.model),
        optim=resolved(cfg.optim),
        loss=loss,
        class_names=datamodule.class_names,
        ignore_index=datamodule.ignore_index,
        normalization=cfg.data.normalization,
        **{key: trainer.get(key, False) for key in MODULE_SWITCHES},
    )


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``last`` means this run directory's checkpoints/last.ckpt."""
    if ckpt_path is None:
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: no checkpoint at {path}")
    return str(path)


# Model settings a resumed run must share with its checkpoint: the others change no shape.
RESUME_MUST_MATCH = ("variant", "num_classes", "backbone", "width")


def check_resumable(path: str, model_cfg: DictConfig) -> None:
    """Refuse, before anything is written, a checkpoint this run cannot continue: not a
    checkpoint, a pickle that would run code, or one of another model."""
    checkpoint = read_checkpoint(path, key="ckpt_path", mmap=True)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    model = (hparams or {}).get("model")
    if not isinstance(model, dict) or "loops" not in checkpoint:
        raise ConfigError(
            f"ckpt_path={path}: not a fcn-lightning training checkpoint, so there is no run to "
            "resume; to start from its weights, set model.init_from instead"
        )
    for key in RESUME_MUST_MATCH:
        if key in model and model[key] != model_cfg.get(key):
            raise ConfigError(
                f"ckpt_path={path}: the checkpoint was trained with model.{key}={model[key]} "
                f"but this run has model.{key}={model_cfg.get(key)}; resume with the settings "
                "it was trained with, or start a new run with model.init_from to copy the "
                "layers that fit"
            )


def build_trainer(cfg: DictConfig, run_dir: Path, **extra: Any) -> pl.Trainer:
    trainer_cfg = {k: v for k, v in resolved(cfg.trainer).items() if k not in MODULE_SWITCHES}
    apply_ddp_timeout(trainer_cfg)
    return hydra.utils.instantiate(
        trainer_cfg,
        callbacks=build_callbacks(cfg.get("callbacks")),
        logger=build_loggers(cfg.get("logger"), run_dir),
        plugins=[AtomicCheckpointIO()],
        **extra,
    )


@rank_zero_only
def start_record(cfg: DictConfig, run_dir: Path, resuming: bool) -> None:
    """The first writes into the run directory, once the config, data and model passed
    their checks: a run that fails on bad input, even one resumed into an existing run
    directory, leaves the config, CSV record and checkpoints there as they were."""
    for part in remove_partial_checkpoints(run_dir / "checkpoints"):
        log.warning("removed %s, left by a checkpoint write that was killed", part)
    if resuming:
        keep_csv_history(run_dir)
    save_config(cfg, run_dir)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and optionally test) one configuration; returns the final metrics."""
    run_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
    if ckpt_path is not None:
        check_resumable(ckpt_path, cfg.model)
    if cfg.model.get("init_stages") and ckpt_path is None:
        init_from = run_earlier_stages(cfg, train)
        with open_dict(cfg):
            cfg.model.init_from = str(init_from)
    print_config(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule)
    if cfg.model.get("init_from") and ckpt_path is None:
        report = init_from_checkpoint(module.model, cfg.model.init_from)
        log.info("model.init_from=%s: %s", cfg.model.init_from, report.summary())
    datamodule.check_before_fit()
    prepare_ddp_relaunch()
    trainer = build_trainer(cfg, run_dir)
    start_record(cfg, run_dir, resuming=ckpt_path is not None)
    for logger in trainer.loggers:
        logger.log_hyperparams({"config": resolved(cfg)})
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if cfg.get("test"):
            checkpoint = trainer.checkpoint_callback
            best = checkpoint.best_model_path if checkpoint else ""
            results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
            metrics.update(results[0] if results else {})
    except BaseException:
        stop_other_ranks(trainer)
        raise
    finally:
        finish_wandb(trainer.loggers)
    if trainer.is_global_zero:
        report_final(module, trainer, run_dir)
    return metrics


def report_final(module: FCNModule, trainer: pl.Trainer, run_dir: Path) -> None:
    """Print the last validation's scores and keep them beside the run (metrics.md)."""
    scores = module.last_scores.get("val")
    if scores is None:
        return
    table = markdown_table(scores)
    (run_dir / "metrics.md").write_text(f"step {trainer.global_step}\n\n{table}")
    print(f"\nvalidation at step {trainer.global_step}:\n\n{table}")
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_path:
        log.info("best checkpoint: %s", checkpoint.best_model_path)
    log.info("run directory: %s", run_dir)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    die_with_launcher()
    metrics = None
    with user_errors(), isolated_job():
        gpu = claimed_gpu() if cfg.get("claim_gpu") else contextlib.nullcontext()
        with gpu:
            metrics = train(cfg)
    # A sweep's failed job (recorded by user_errors) scores NaN: Optuna marks it failed.
    return float("nan") if metrics is None else metrics.get("val/mean_iu")


if __name__ == "__main__":
    main()
