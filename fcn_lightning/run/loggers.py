"""Loggers and callbacks from their config nodes; W&B online only with credentials."""

from __future__ import annotations

import netrc
import os
import urllib.parse
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger

from fcn_lightning.errors import ConfigError


def wandb_logged_in() -> bool:
    """True when W&B has credentials (WANDB_API_KEY, or the netrc entry `wandb login`
    writes); runs go offline otherwise and never need a network. Reads no network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc")).expanduser()
    try:
        return netrc.netrc(path).authenticators(host.hostname or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def build_loggers(cfg: DictConfig | None, output_dir: Path) -> list[Logger]:
    """Loggers from the `logger` node; a CSV logger is always added for a local record."""
    loggers: list[Logger] = []
    for name, node in (cfg or {}).items():
        node = OmegaConf.to_container(node, resolve=True)
        if node.get("mode") == "auto":
            node["mode"] = "online" if wandb_logged_in() else "offline"
        try:
            loggers.append(hydra.utils.instantiate(node))
        except Exception as error:
            raise ConfigError(f"logger.{name}: could not be created ({error})") from error
    if not any(isinstance(logger, CSVLogger) for logger in loggers):
        loggers.append(CSVLogger(save_dir=str(output_dir), name="csv", version=""))
    return loggers


def build_callbacks(cfg: DictConfig | None) -> list[pl.Callback]:
    callbacks = []
    for name, node in (cfg or {}).items():
        if node is None:
            continue  # a callback switched off with `callbacks.<name>=null`
        try:
            callbacks.append(hydra.utils.instantiate(node))
        except Exception as error:
            raise ConfigError(f"callbacks.{name}: could not be created ({error})") from error
    return callbacks


def finish_wandb(loggers: list[Logger]) -> None:
    """End this job's W&B run, so the next job of a multirun gets a run of its own (a W&B
    run otherwise lasts until the process exits)."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
