"""What a run prints: the project's logger and the config."""

from __future__ import annotations

import logging
from pathlib import Path

import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

from fcn_lightning.run.config import save_config

log = logging.getLogger("fcn_lightning")


def print_config(cfg: DictConfig, save_to: Path | None = None) -> None:
    """Print the resolved config as a tree and keep a copy beside the run."""
    tree = rich.tree.Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = (
            OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        )
        tree.add(str(key)).add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to is not None:
        save_config(cfg, save_to)
