"""Staged training as one job: FCN-32s, then FCN-16s from it, then FCN-8s from that.

``model.init_stages`` lists the variants to train first, in order, e.g. ``[fcn32s,
fcn16s]`` for the paper's staged FCN-8s (``model=fcn8s recipe=staged``). Each earlier stage is
the same configuration with the model variant (and its reference learning rate) swapped,
trained in ``<run dir>/stages/<i>_<variant>/`` and started from the best checkpoint of the
stage before it; the job's own model then starts from the last stage's best checkpoint.

Every stage starts with ``ckpt_path=auto``: a finished stage is not trained again and a
cut one resumes, so the same command resumes a staged job wherever it died, its final
stage included (`fcn_lightning.run.resume`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from fcn_lightning.errors import ConfigError
from fcn_lightning.run.config import CONF_DIR
from fcn_lightning.run.console import log
from fcn_lightning.run.rundir import RunDir


def stage_model_config(variant: str) -> DictConfig:
    """``conf/model/<variant>.yaml`` without its defaults list (its lr and length follow
    from the recipe's tables by variant)."""
    path = Path(CONF_DIR) / "model" / f"{variant}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"model.init_stages: no model config {variant!r}; choose from {choices}")
    node = OmegaConf.load(path)
    node.pop("defaults", None)
    return node


def best_checkpoint(run: RunDir) -> Path:
    """The best checkpoint a stage kept, else its ``last.ckpt``."""
    found = run.best_or_last()
    if found is None:
        raise ConfigError(f"stage run {run.path} left no checkpoint in {run.checkpoints}")
    return found


def stage_config(cfg: DictConfig, index: int, variant: str, init_from: Path | None) -> DictConfig:
    stage = copy.deepcopy(cfg)
    run = RunDir(cfg.paths.output_dir).stage(index, variant)
    with open_dict(stage):
        stage.model.merge_with(stage_model_config(variant))
        stage.model.name = variant
        stage.model.init_stages = None
        stage.model.init_from = None if init_from is None else str(init_from)
        if index > 0:  # per-stream starts are the first stage's; later ones start from it
            stage.model.init_streams = None
        stage.paths.output_dir = str(run.path)
        stage.ckpt_path = "auto"  # a finished stage is not trained again, a cut one resumes
        stage.run_name = f"{cfg.run_name}/{variant}"
        stage.test = False
    return stage


def run_earlier_stages(cfg: DictConfig, train: Callable[[DictConfig], object]) -> Path | None:
    """Train ``cfg.model.init_stages`` in order; the best checkpoint of the last one."""
    stages = list(cfg.model.get("init_stages") or [])
    init_from = Path(cfg.model.init_from) if cfg.model.get("init_from") else None
    for index, variant in enumerate(stages):
        stage = stage_config(cfg, index, variant, init_from)
        where = RunDir(stage.paths.output_dir)
        log.info("stage %d/%d: %s in %s", index + 1, len(stages) + 1, variant, where.path)
        train(stage)
        init_from = best_checkpoint(where)
    return init_from
