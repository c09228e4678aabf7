"""What every entry point shares: one-line user errors, the config tree, loggers, callbacks."""

from __future__ import annotations

import contextlib
import logging
import netrc
import os
import signal
import sys
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import rich.syntax
import rich.tree
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_only

from fcn_lightning.errors import ConfigError, FCNError

log = logging.getLogger("fcn_lightning")
# The repo's Hydra config tree, as an absolute path: entry points then work whether they
# run with `python -m` or are imported and called.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


FAILED_MARKER = "FAILED.txt"


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn an `FCNError` into its one-line message on stderr and exit status 2.

    In a multirun, exiting would end the whole sweep at its first bad point; the job's
    failure is written to ``FAILED.txt`` in its directory instead, the other jobs run,
    and `SweepSummary` lists the failures at the end and exits 2.
    """
    job_dir = _multirun_job_dir()
    if job_dir is not None:
        (job_dir / FAILED_MARKER).unlink(missing_ok=True)  # from an earlier attempt
    try:
        yield
    except FCNError as error:
        print(f"error: {error}", file=sys.stderr)
        if job_dir is None:
            sys.exit(2)
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / FAILED_MARKER).write_text(f"{error}\n")


def _multirun_hydra_config() -> DictConfig | None:
    """The Hydra config of this job when it is one job of a multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return HydraConfig.get()


def _multirun_job_dir() -> Path | None:
    hydra_cfg = _multirun_hydra_config()
    return None if hydra_cfg is None else Path(hydra_cfg.runtime.output_dir)


class SweepSummary(Callback):
    """At the end of a multirun: every job that failed, with its message; exit status 2."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = sorted(Path(config.hydra.sweep.dir).glob(f"*/{FAILED_MARKER}"))
        if not failed:
            return
        print(f"error: {len(failed)} job(s) of this multirun failed:", file=sys.stderr)
        for marker in failed:
            print(f"  {marker.parent.name}: {marker.read_text().strip()}", file=sys.stderr)
        sys.exit(2)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain, fully resolved Python values (what loggers and files get)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


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


def save_config(cfg: DictConfig, run_dir: Path) -> None:
    """Keep the resolved config beside the run (``config_resolved.yaml``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


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


@rank_zero_only
def keep_csv_history(run_dir: Path) -> None:
    """Before a run resumes in its directory: set its CSV record aside as the next
    ``metrics.<n>.csv``, which Lightning's CSVLogger would otherwise overwrite. Rank 0
    only: DDP's re-launched ranks run this too and must not move the file again."""
    current = run_dir / "csv" / "metrics.csv"
    if current.is_file():
        current.rename(current.with_name(f"metrics.{len(csv_segments(run_dir)) - 1}.csv"))


def csv_segments(run_dir: Path) -> list[Path]:
    """A run's CSV records in the order they were written (one per resumption)."""
    folder = run_dir / "csv"
    earlier = sorted(folder.glob("metrics.*.csv"), key=lambda p: int(p.suffixes[0][1:]))
    current = folder / "metrics.csv"
    return [*earlier, current] if current.is_file() else earlier


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


def prepare_ddp_relaunch() -> None:
    """Make Lightning's DDP re-launch of ranks 1.. safe inside a Hydra multirun job.

    Lightning starts the other ranks by re-running this process's command line with
    ``hydra.run.dir`` set to the run directory. In a multirun job that command line holds
    ``-m`` and the whole sweep, so each rank would start a sweep of its own, and ``run.dir``
    is not this job's directory. Rewrite both to this one job: its own overrides, its own
    output directory.
    """
    hydra_cfg = _multirun_hydra_config()
    if hydra_cfg is None:
        return
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def die_with_launcher() -> None:
    """In a rank that Lightning started (``LOCAL_RANK`` > 0), ask Linux to SIGKILL this
    process when the process that started it dies. A launcher killed with SIGKILL (the OOM
    killer, a scheduler's hard kill) runs no cleanup, and a rank hung in I/O or a deadlock
    would otherwise live on, holding its device, until someone finds it."""
    if sys.platform != "linux" or int(os.environ.get("LOCAL_RANK", "0") or 0) <= 0:
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("could not tie this rank to its launcher (prctl errno %d)", ctypes.get_errno())
    elif os.getppid() == 1:  # the launcher died before the request took effect
        os._exit(1)


@contextlib.contextmanager
def isolated_job() -> Iterator[None]:
    """Leave no DDP state behind for the next job of a multirun: Lightning keeps the process
    group open and its rendezvous variables (MASTER_PORT, WORLD_SIZE, ...) in os.environ,
    and a second job would reuse them and wait for the first job's peers."""
    environ = dict(os.environ)
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)


def apply_ddp_timeout(trainer_cfg: dict[str, Any]) -> None:
    """Replace ``strategy: ddp`` by a DDP strategy with ``ddp_timeout_s`` (popped): a rank
    that hangs, or whose peer died without the launcher noticing, fails after this long in
    a collective instead of holding every device of the job forever."""
    timeout_s = trainer_cfg.pop("ddp_timeout_s", None)
    if trainer_cfg.get("strategy") == "ddp" and timeout_s:
        trainer_cfg["strategy"] = DDPStrategy(timeout=timedelta(seconds=timeout_s))


def stop_other_ranks(trainer: pl.Trainer) -> None:
    """This process failed: end the ranks Lightning started from it. Lightning ends them
    itself only on Ctrl+C; otherwise they wait in their next collective until its
    timeout, or forever if they hang, holding their devices."""
    from pytorch_lightning.strategies.launchers.subprocess_script import (
        _SubprocessScriptLauncher,
    )

    launcher = trainer.strategy.launcher
    if isinstance(launcher, _SubprocessScriptLauncher):
        launcher.kill(signal.SIGKILL)


def finish_wandb(loggers: list[Logger]) -> None:
    """End this job's W&B run, so the next job of a multirun gets a run of its own (a W&B
    run otherwise lasts until the process exits)."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
