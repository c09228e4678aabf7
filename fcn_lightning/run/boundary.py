"""The error boundary: a user's mistake ends as one ``error:`` line and exit status 2;
in a multirun, as a failed job listed at the end of the sweep."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fcn_lightning.errors import FCNError

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
