"""Train an FCN: ``python -m fcn_lightning.train model=fcn16s [key=value ...]``.

The data flows one way: config -> DataModule, LightningModule, Trainer -> fit (-> test).
"""

from __future__ import annotations

import contextlib

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from fcn_lightning import resolvers  # noqa: F401  (registers ${uid:} and ${mul:} for Hydra)
from fcn_lightning.data import folder
from fcn_lightning.data.datamodule import SegmentationDataModule, build_datamodule
from fcn_lightning.errors import ConfigError
from fcn_lightning.interop.zoo import resolve_init_from
from fcn_lightning.loss import median_frequency_weights
from fcn_lightning.metrics import markdown_table
from fcn_lightning.models import init_from_checkpoint
from fcn_lightning.models.staged import init_streams_from_checkpoints
from fcn_lightning.module import FCNModule
from fcn_lightning.prerequisites import check_prerequisites
from fcn_lightning.report.results import read_run
from fcn_lightning.run.boundary import lightning_refusals, user_errors
from fcn_lightning.run.check_config import check_config
from fcn_lightning.run.checkpoint_io import AtomicCheckpointIO, remove_partial_checkpoints
from fcn_lightning.run.config import resolved, save_config
from fcn_lightning.run.console import log, print_config
from fcn_lightning.run.gpus import claimed_gpu
from fcn_lightning.run.lifecycle import RunLifecycle
from fcn_lightning.run.loggers import build_callbacks, build_loggers, finish_wandb
from fcn_lightning.run.overrides import fcn_main
from fcn_lightning.run.processes import (
    apply_ddp_timeout,
    die_with_launcher,
    isolated_job,
    prepare_ddp_relaunch,
    stop_other_ranks,
)
from fcn_lightning.run.resume import Start, plan_start
from fcn_lightning.run.rundir import RunDir, RunLock
from fcn_lightning.run.signals import StopSignals
from fcn_lightning.run.stages import run_earlier_stages

# Trainer-node keys the LightningModule applies itself.
MODULE_SWITCHES = ("channels_last", "compile")


def class_pixel_counts(datamodule: SegmentationDataModule) -> torch.Tensor:
    """Pixels per class over the training labels (for class balancing)."""
    from rich.progress import track

    from fcn_lightning.data.readers import read_sample_label

    counts = torch.zeros(datamodule.num_classes, dtype=torch.long)
    samples = datamodule.samples(datamodule.splits["train"])
    for sample in track(samples, description="counting class pixels"):
        label = read_sample_label(sample)
        label = (label[0] if label.ndim == 3 else label).flatten().long()  # the first head
        counts += torch.bincount(label[label < datamodule.num_classes], minlength=len(counts))
    return counts


def head_class_names(data: DictConfig) -> dict[str, list[str]] | None:
    """The class names of each head after the first (``data.heads``' ``classes``; index
    names where a head names no list); None for one head."""
    heads = data.get("heads")
    if not heads or len(heads) < 2:
        return None
    from fcn_lightning.data.splits import load_class_names

    names = {}
    for head in list(heads)[1:]:
        classes = head.get("classes")
        count = int(head["num_classes"])
        names[str(head["name"])] = (
            load_class_names(str(classes)) if classes else [str(i) for i in range(count)]
        )
    return names


def build_module(cfg: DictConfig, datamodule: SegmentationDataModule) -> FCNModule:
    loss = resolved(cfg.loss)
    balance = loss.pop("class_balance", None)
    heads = cfg.data.get("heads")
    if balance is not None and heads and len(heads) > 1:
        raise ConfigError(
            f"loss.class_balance={balance}: weighs the classes of one head, and data.heads "
            f"names {len(heads)} ({', '.join(str(h['name']) for h in heads)}); drop it (the "
            "reference weighs no head)"
        )
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
        palette=datamodule.palette,
        head_class_names=head_class_names(cfg.data),
        ignore_index=datamodule.ignore_index,
        normalization=cfg.data.normalization,
        **{key: trainer.get(key, False) for key in MODULE_SWITCHES},
    )


def build_trainer(cfg: DictConfig, run: RunDir, lifecycle: RunLifecycle) -> pl.Trainer:
    trainer_cfg = {k: v for k, v in resolved(cfg.trainer).items() if k not in MODULE_SWITCHES}
    apply_ddp_timeout(trainer_cfg)
    callbacks = [*build_callbacks(cfg.get("callbacks")), lifecycle]
    loggers = build_loggers(cfg.get("logger"), run.path)
    with lightning_refusals("trainer"):
        return hydra.utils.instantiate(
            trainer_cfg, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()]
        )


@rank_zero_only
def start_record(cfg: DictConfig, run: RunDir, start: Start) -> None:
    """The first writes into the run directory, once the config, data and model passed
    their checks: a run that fails on bad input, even one resumed into an existing run
    directory, leaves the config, CSV record and checkpoints there as they were."""
    for part in remove_partial_checkpoints(run.checkpoints):
        log.warning("removed %s, left by a checkpoint write that was killed", part)
    if start.set_aside:
        kept = run.set_aside_checkpoints()
        if kept is not None:
            log.warning("resume.overwrite=true: the earlier checkpoints are in %s", kept)
    run.keep_csv_history()
    save_config(cfg, run.path)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and optionally test) one configuration; returns the final metrics."""
    run = RunDir(cfg.paths.output_dir)
    with run.lock() as held:
        return _train(cfg, run, held)


def _train(cfg: DictConfig, run: RunDir, held: RunLock) -> dict[str, float]:
    folder.check_root(cfg.data)  # before a resume compares its placeholder class count
    start = plan_start(cfg, run)
    if start.finished:
        return finished_run(run, start)
    check_prerequisites(cfg, resuming=start.ckpt_path is not None)  # all at once, none fetched
    if start.ckpt_path is not None:
        log.info("resuming %s at step %d", start.ckpt_path, start.step)
    elif cfg.model.get("init_stages"):
        init_from = run_earlier_stages(cfg, train)
        with open_dict(cfg):
            cfg.model.init_from = str(init_from)
            cfg.model.init_streams = None  # the first stage started from them
    print_config(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule)
    if cfg.model.get("init_from") and start.ckpt_path is None:
        # model.init_from=zoo:<name>: that zoo model's converted checkpoint
        report = init_from_checkpoint(module.model, resolve_init_from(cfg.model.init_from))
        log.info("model.init_from=%s: %s", cfg.model.init_from, report.summary())
    if cfg.model.get("init_streams") and start.ckpt_path is None:
        sources = {s: resolve_init_from(p) for s, p in cfg.model.init_streams.items()}
        report = init_streams_from_checkpoints(module.model, sources)
        log.info("model.init_streams: %s", report.summary())
    datamodule.check_before_fit()
    prepare_ddp_relaunch()
    signals = StopSignals()
    lifecycle = RunLifecycle(run, resolved(cfg), start, signals)
    trainer = build_trainer(cfg, run, lifecycle)
    held.announce()
    start_record(cfg, run, start)
    for logger in trainer.loggers:
        logger.log_hyperparams({"config": resolved(cfg)})
    signals.install()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=start.ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if cfg.get("test"):
            checkpoint = trainer.checkpoint_callback
            best = checkpoint.best_model_path if checkpoint else ""
            results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
            metrics.update(results[0] if results else {})
    except SIGTERMException:
        if signals.received is None:
            raise
        finish_wandb(trainer.loggers)  # the W&B run is kept before the exit
        signals.exit()
    except BaseException:
        stop_other_ranks(trainer)
        raise
    finally:
        signals.uninstall()
        finish_wandb(trainer.loggers)
    if trainer.is_global_zero:
        report_final(lifecycle, trainer, run)
    return metrics


def finished_run(run: RunDir, start: Start) -> dict[str, float]:
    """A rerun of a run that reached trainer.max_steps: nothing to train, nothing written."""
    log.info(
        "%s already reached trainer.max_steps (step %d): nothing to train; raise "
        "trainer.max_steps to train on", start.ckpt_path, start.step,
    )  # fmt: skip
    if run.metrics_file.is_file():
        print(f"\n{run.metrics_file.read_text()}")
    recorded = read_run(run.path)  # the scores of its last validation, from its CSV record
    return {} if recorded is None else {f"val/{k}": v / 100 for k, v in recorded.scores.items()}


def report_final(lifecycle: RunLifecycle, trainer: pl.Trainer, run: RunDir) -> None:
    """Print the final validation's scores and keep them beside the run (metrics.md)."""
    if lifecycle.scores is None or lifecycle.validated_step != trainer.global_step:
        log.warning(
            "no validation ran at the last step (%d), so there are no final scores; "
            "metrics.md was not written", trainer.global_step,
        )  # fmt: skip
        return
    table = markdown_table(lifecycle.scores)
    run.metrics_file.write_text(f"step {trainer.global_step}\n\n{table}")
    print(f"\nvalidation at step {trainer.global_step}:\n\n{table}")
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_path:
        log.info("best checkpoint: %s", checkpoint.best_model_path)
    log.info("run directory: %s", run.path)


@fcn_main("train")
def main(cfg: DictConfig) -> float | None:
    die_with_launcher()
    metrics = None
    with user_errors(), isolated_job():
        check_config(cfg, "train")  # before anything is written or fetched
        gpu = claimed_gpu() if cfg.get("claim_gpu") else contextlib.nullcontext()
        with gpu:
            metrics = train(cfg)
    # A sweep's failed job (recorded by user_errors) scores NaN: Optuna marks it failed.
    return float("nan") if metrics is None else metrics.get("val/mean_iu")


if __name__ == "__main__":
    main()
