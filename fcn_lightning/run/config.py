"""The config tree's location and the config as plain values, on the console and on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# The repo's Hydra config tree, as an absolute path: entry points then work whether they
# run with `python -m` or are imported and called.
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain, fully resolved Python values (what loggers and files get)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def save_config(cfg: DictConfig, run_dir: Path) -> None:
    """Keep the resolved config beside the run (``config_resolved.yaml``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
