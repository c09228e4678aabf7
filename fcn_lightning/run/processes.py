"""DDP and process control: relaunched ranks, ranks that die with their launcher, jobs that
leave no process group behind."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import open_dict, read_write
from pytorch_lightning.strategies import DDPStrategy

from fcn_lightning.run.boundary import _multirun_hydra_config

log = logging.getLogger("fcn_lightning")


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


class TimedDDPStrategy(DDPStrategy):
    """DDP with two timeouts: ``startup`` for the rendezvous (every rank started and
    connected; a rank's start-up is imports plus data checks, slow on a loaded node) and
    ``collective`` for each collective once running (how long the healthy ranks wait for a
    hung or silently dead one). One timeout for both would make a short hang bound fail
    jobs whose ranks merely start slowly."""

    def __init__(self, *, startup: timedelta, collective: timedelta, **kwargs: Any) -> None:
        super().__init__(timeout=startup, **kwargs)
        self.collective_timeout = collective

    def setup_distributed(self) -> None:
        super().setup_distributed()  # rendezvous under the start-up timeout
        torch.distributed.set_timeout(self.collective_timeout)
        self._timeout = self.collective_timeout


def apply_ddp_timeout(trainer_cfg: dict[str, Any]) -> None:
    """Replace ``strategy: ddp`` by a DDP strategy with ``ddp_timeout_s`` for collectives
    and ``ddp_startup_timeout_s`` for the rendezvous (both popped): a rank that hangs, or
    whose peer died without the launcher noticing, fails after ``ddp_timeout_s`` in a
    collective instead of holding every device of the job forever."""
    timeout_s = trainer_cfg.pop("ddp_timeout_s", None)
    startup_s = trainer_cfg.pop("ddp_startup_timeout_s", None) or timeout_s
    if trainer_cfg.get("strategy") == "ddp" and timeout_s:
        trainer_cfg["strategy"] = TimedDDPStrategy(
            startup=timedelta(seconds=max(startup_s, timeout_s)),
            collective=timedelta(seconds=timeout_s),
        )


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
