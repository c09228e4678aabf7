"""The error boundary of every entry point.

- A user's mistake (`FCNError`) ends as one ``error:`` line and exit status 2; in a
  multirun, as a failed job listed at the end of the sweep.
- Anything else is a bug: its traceback, then one ``error: internal error`` line, and
  exit status 1; in a multirun the job is recorded as failed the same way and the sweep
  goes on.
- A run directory this launch created, that still holds nothing but Hydra's own notes
  when the launch fails, is removed: a failed start leaves nothing new on disk.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fcn_lightning.errors import ConfigError, FCNError

FAILED_MARKER = "FAILED.txt"
INTERNAL = "internal error"
USER_ERROR_STATUS = 2
INTERNAL_ERROR_STATUS = 1
# What a run directory holds before the task writes anything of its own: Hydra's notes,
# the task's log and the run's lock file (fcn_lightning/run/rundir.py).
HYDRA_NOTES = (".hydra", ".lock")

# Where this launch's run directory is and whether it existed before (RunDirRecord).
_launch: dict[str, Any] = {}


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """The boundary around an entry point's work (which starts with `run.check_config`).

    In a multirun, exiting would end the whole sweep at its first bad point; the job's
    failure is written to ``FAILED.txt`` in its directory instead, the other jobs run,
    and `SweepSummary` lists the failures at the end and exits 2 (1 if one was a bug).
    """
    job_dir = _multirun_job_dir()
    if job_dir is not None:
        (job_dir / FAILED_MARKER).unlink(missing_ok=True)  # from an earlier attempt
    try:
        yield
    except FCNError as error:
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        if job_dir is None:
            _remove_new_run_dir()
            sys.exit(USER_ERROR_STATUS)
        _record_failure(job_dir, str(error))
    except Exception as error:  # not KeyboardInterrupt or SystemExit (signals, exits)
        traceback.print_exc()
        first = (str(error).strip().splitlines() or [""])[0]
        name = type(error).__name__
        line = f"{INTERNAL} (a bug in fcn-lightning, not in your input): {name}: {first}"
        print(f"error: {line}; please report it with the traceback above", file=sys.stderr)
        if job_dir is None:
            sys.exit(INTERNAL_ERROR_STATUS)
        _record_failure(job_dir, f"{line}\n\n{traceback.format_exc()}")


def one_line(text: str) -> str:
    """A message on one line (a library's multi-line message folded)."""
    return " ".join(text.split())


@contextlib.contextmanager
def lightning_refusals(key: str) -> Iterator[None]:
    """Lightning's refusal of a setting it was handed unchecked (``+trainer.max_time=abc``,
    a float ``val_check_interval`` above 1) as a user error naming the config node."""
    from hydra.errors import InstantiationException
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        yield
    except (InstantiationException, MisconfigurationException, ValueError, TypeError) as err:
        cause = err.__cause__ or err
        raise ConfigError(f"{key}: Lightning refused the settings: {one_line(str(cause))}") from err


def _record_failure(job_dir: Path, text: str) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / FAILED_MARKER).write_text(f"{text}\n")


class RunDirRecord(Callback):
    """Notes, before Hydra creates it, whether this launch's run directory already exists
    (a resumed run, a rerun) or is new (and so may be removed if the start fails)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _launch.clear()
        try:
            run_dir = Path(str(config.hydra.run.dir)).absolute()
        except Exception:  # a run dir Hydra cannot resolve: it says so itself
            return
        # The highest folder this launch creates (logs/ on a first run): a refused start
        # removes the empty ones it made, up to that one, and no other.
        made = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
        _launch.update(run_dir=run_dir, existed=run_dir.exists(), top=made[-1] if made else None)
        try:  # Hydra would fail on it with a traceback
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            print(
                f"error: run directory {run_dir} cannot be created ({err.strerror or err}): "
                "give paths.log_dir or hydra.run.dir a folder you can write to",
                file=sys.stderr,
            )
            sys.exit(USER_ERROR_STATUS)


def _remove_new_run_dir() -> None:
    """Remove the run directory of a failed single run if this launch created it and it
    holds nothing but Hydra's notes and this task's log."""
    from hydra.core.hydra_config import HydraConfig

    if not _launch or _launch["existed"] or not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir).absolute()
    if run_dir != _launch["run_dir"] or not run_dir.is_dir():
        return
    own = [
        p for p in run_dir.rglob("*")
        if p.is_file() and p.relative_to(run_dir).parts[0] not in HYDRA_NOTES
        and not (p.parent == run_dir and p.suffix == ".log")
    ]  # fmt: skip
    if not own:  # Hydra's notes, the log, the lock and empty folders only
        _close_logs_in(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
        _remove_empty_parents(run_dir, _launch.get("top"))


def _remove_empty_parents(run_dir: Path, top: Path | None) -> None:
    """The folders above ``run_dir`` that this launch created, while they are empty."""
    if top is None or top == run_dir:
        return
    for folder in run_dir.parents:
        if not folder.is_relative_to(top):
            return
        try:
            folder.rmdir()  # only if empty: another run's folder stays
        except OSError:
            return
        if folder == top:
            return


def _close_logs_in(folder: Path) -> None:
    """Detach and close this process's log files inside ``folder`` (Hydra's job log), so
    nothing later in the process (a caller that runs on) tries to reopen them there."""
    import logging

    loggers = [
        logging.getLogger(),
        *(logging.getLogger(name) for name in logging.root.manager.loggerDict),
    ]
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", [])):
            filename = getattr(handler, "baseFilename", None)
            if filename and Path(filename).is_relative_to(folder):
                logger.removeHandler(handler)
                handler.close()


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
    """At the end of a multirun: every job that failed, with its message; exit status 2,
    or 1 when a job failed on a bug."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = sorted(Path(config.hydra.sweep.dir).glob(f"*/{FAILED_MARKER}"))
        if not failed:
            return
        print(f"error: {len(failed)} job(s) of this multirun failed:", file=sys.stderr)
        bug = False
        for marker in failed:
            first = (marker.read_text().strip().splitlines() or [""])[0]
            bug |= first.startswith(INTERNAL)
            print(f"  {marker.parent.name}: {first}", file=sys.stderr)
        sys.exit(INTERNAL_ERROR_STATUS if bug else USER_ERROR_STATUS)
