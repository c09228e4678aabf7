"""Score a checkpoint: ``python -m fcn_lightning.eval ckpt_path=... [split=val]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from fcn_lightning import resolvers  # noqa: F401  (registers the config resolvers)
from fcn_lightning.data.datamodule import SegmentationDataModule, build_datamodule
from fcn_lightning.errors import ConfigError
from fcn_lightning.metrics import markdown_table
from fcn_lightning.models.checkpoints import read_checkpoint
from fcn_lightning.models.inference import apply_inference
from fcn_lightning.module import load_module
from fcn_lightning.run.boundary import user_errors
from fcn_lightning.run.config import CONF_DIR, resolved
from fcn_lightning.run.console import log, print_config
from fcn_lightning.run.processes import (
    apply_ddp_timeout,
    die_with_launcher,
    isolated_job,
    prepare_ddp_relaunch,
    stop_other_ranks,
)
from fcn_lightning.run.progress import StepProgressBar

DEVICE_KEYS = (
    "accelerator", "devices", "num_nodes", "strategy", "precision",
    "ddp_timeout_s", "ddp_startup_timeout_s",
)  # fmt: skip


def eval_datamodule(cfg: DictConfig, checkpoint: dict[str, Any]) -> SegmentationDataModule:
    """The configured data, or else the data the checkpoint was trained on."""
    if cfg.get("data") is not None:
        return build_datamodule(cfg.data)
    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    if not hparams:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path}: holds no data settings; choose the data with data=<preset>"
        )
    if cfg.get("data_dir"):
        hparams["data_dir"] = cfg.data_dir
    hparams.update(batch_size=cfg.batch_size, val_batch_size=cfg.batch_size)
    hparams.update(num_workers=cfg.num_workers, download=False, generate=False)
    return SegmentationDataModule(**hparams)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Validate the checkpoint on the chosen split and write metrics.json / metrics.md."""
    print_config(cfg, kept_in=None)
    checkpoint = read_checkpoint(cfg.ckpt_path, key="ckpt_path")
    module = load_module(cfg.ckpt_path)
    inference = apply_inference(module, resolved(cfg.inference) if "inference" in cfg else None)
    datamodule = eval_datamodule(cfg, checkpoint)
    if cfg.split not in ("val", "test"):
        datamodule.hparams.val_split = cfg.split
    elif cfg.split == "test":
        datamodule.hparams.val_split = datamodule.hparams.test_split
    if datamodule.num_classes != module.num_classes:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} predicts {module.num_classes} classes but the data "
            f"has {datamodule.num_classes}; choose matching data"
        )
    # Devices and strategy from the trainer node, so `trainer=ddp_cpu` or `trainer=ddp`
    # scores a split with several processes (each image on exactly one of them).
    trainer_cfg = {k: v for k, v in resolved(cfg.trainer).items() if k in DEVICE_KEYS}
    apply_ddp_timeout(trainer_cfg)
    trainer = pl.Trainer(
        **trainer_cfg, logger=False, enable_checkpointing=False, callbacks=[StepProgressBar()]
    )
    prepare_ddp_relaunch()
    try:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    except BaseException:
        stop_other_ranks(trainer)  # a failed rank 0 leaves no rank waiting on it
        raise
    scores = {k: v for k, v in module.last_scores["val"].items() if k != "confusion"}
    scores.update(
        checkpoint=str(Path(cfg.ckpt_path).resolve()),
        split=datamodule.hparams.val_split,
        step=int(checkpoint.get("global_step", 0)),
        inference=inference.summary(),
    )
    if not trainer.is_global_zero:
        return scores
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(scores, indent=2))
    table = markdown_table(scores)
    (run_dir / "metrics.md").write_text(table)
    print(table)
    log.info("wrote %s and %s", run_dir / "metrics.json", run_dir / "metrics.md")
    return scores


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    die_with_launcher()
    with user_errors(), isolated_job():
        evaluate(cfg)


if __name__ == "__main__":
    main()
