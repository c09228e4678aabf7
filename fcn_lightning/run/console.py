"""What a run prints: the project's logger; a header (the task, the overrides typed, the
config groups chosen, the run directory) and, with ``print_config=true``, the resolved
config; and, kept off the console, the Lightning chatter the project's own lines replace."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from fcn_lightning.run.config import save_config

log = logging.getLogger("fcn_lightning")

# Lightning's start-up lines that the device line (run/progress.py) replaces, and its
# advertising. `hydra.verbose=pytorch_lightning` shows them again.
LIGHTNING_CHATTER = (
    "GPU available: ",
    "TPU available: ",
    "HPU available: ",
    "💡 Tip: ",
    "Trainer already configured with model summary callbacks",
)


class _DropChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return True
        return not record.getMessage().startswith(LIGHTNING_CHATTER)


def quiet_lightning() -> None:
    """Keep Lightning's chatter (LIGHTNING_CHATTER) and the warnings below, which nobody can
    act on, off the console; every other message and warning is left as it is."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropChatter) for f in logger.filters):
            logger.addFilter(_DropChatter())
    if "SLURM_JOB_ID" not in os.environ:
        # Lightning gives this hint wherever srun is installed, even outside any SLURM job.
        warnings.filterwarnings("ignore", message="The `srun` command is available on your system")
    # Under DDP, for every epoch-end score: the module computes them from states already
    # summed over processes (FCNModule._log_epoch), so syncing them again would change nothing.
    warnings.filterwarnings(
        "ignore", message=r"It is recommended to use `self.log\('(val|test)(_iu)?/.*sync_dist=True"
    )
    # torch deprecated a class Lightning 2.6 still builds; it warns at the first validation.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )


# On import: every entry point imports this module before it builds a Trainer.
quiet_lightning()


def _hydra_choices() -> tuple[list[str], list[str]] | None:
    """The overrides typed and the config groups chosen, when Hydra started this run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    choices = reversed(list(hydra_cfg.runtime.choices.items()))  # the defaults list's order
    groups = [
        f"{group}={option}"
        for group, option in choices
        if option is not None and group != "hydra" and not group.startswith("hydra/")
    ]
    return overrides, groups


def header_lines(cfg: DictConfig, kept_in: str | None = None) -> list[str]:
    """The run in a few lines: task, overrides, config groups, run directory, and where
    the full config is (`kept_in`: its file name in the run directory)."""
    lines = [f"task       {cfg.get('task_name', '?')}"]
    chosen = _hydra_choices()
    if chosen is not None:
        overrides, groups = chosen
        lines.append(f"overrides  {' '.join(overrides) or '(none)'}")
        lines.append(f"groups     {' '.join(groups)}")
    try:
        run_dir = OmegaConf.select(cfg, "paths.output_dir")
    except Exception:  # ${hydra:runtime.output_dir} outside a Hydra run
        run_dir = None
    if run_dir is not None:
        lines.append(f"run dir    {run_dir}")
    if not cfg.get("print_config"):
        where = f"{Path(run_dir or '.') / kept_in} " if kept_in else ""
        lines.append(f"config     {where}(print_config=true prints it)")
    return lines


def print_tree(cfg: DictConfig) -> None:
    """The resolved config as a tree, one branch per top-level key."""
    tree = rich.tree.Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = (
            OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        )
        tree.add(str(key)).add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)


@rank_zero_only
def print_config(
    cfg: DictConfig, save_to: Path | None = None, kept_in: str | None = "config_resolved.yaml"
) -> None:
    """Print the run's header, and the resolved config with ``print_config=true``; keep a
    copy of the config in `save_to`, if given. `kept_in`: the file in the run directory
    that holds the resolved config (train's save_config), named in the header."""
    print("\n".join(header_lines(cfg, kept_in)), flush=True)
    if cfg.get("print_config"):
        print_tree(cfg)
    if save_to is not None:
        save_config(cfg, save_to)
