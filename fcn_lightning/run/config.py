"""The config tree's location and the config as plain values, on the console and on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fcn_lightning.run.rundir import RunDir


def _conf_dir() -> Path:
    """The Hydra config tree: ``fcn_lightning/conf`` inside an installed wheel, else the
    repo's top-level ``conf/`` (a checkout or an editable install).

    The tree stays at the top of the repo, where people edit it, and pyproject maps it into
    the wheel as the package ``fcn_lightning.conf``; only the wheel has that folder beside
    this package's code, so its presence says which of the two layouts this is.
    """
    package = Path(__file__).resolve().parents[1]
    packaged = package / "conf"
    return packaged if packaged.is_dir() else package.parent / "conf"


# An absolute path: entry points then work whether they run as `fcn-train`, with
# `python -m`, or are imported and called, from any folder.
CONF_DIR = str(_conf_dir())


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain, fully resolved Python values (what loggers and files get)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def save_config(cfg: DictConfig, run_dir: Path) -> None:
    """Keep the resolved config beside the run (``config_resolved.yaml``)."""
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    run.config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
