"""What a cluster's signals do to a training run.

SIGTERM (scancel, preemption), SIGINT (Ctrl-C), SIGUSR1 and SIGUSR2 (a scheduler's
warning before a time limit, e.g. the SLURM preset's ``--signal=USR2@120``) all end
training at the end of the step in progress: every DDP rank agrees on that step, last.ckpt
is written there (atomically), and the process exits with 128 + the signal's number (143,
130, 138, 140), as a shell reports a process killed by it, so ``train && eval`` and a
scheduler see a run that did not finish. The same command then resumes exactly
(``ckpt_path=auto``). Under submitit, the launcher's own handler of its signal then
requeues the job; under a plain SLURM batch job, USR1/USR2 requeue it with ``scontrol
requeue``. A second Ctrl-C stops at once, saving nothing more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any, NoReturn

log = logging.getLogger("fcn_lightning")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def exit_code(signum: int) -> int:
    return 128 + signum


class StopSignals:
    """Catches the stop signals for one run; `received` is the first one caught."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Before fitting; again once Lightning has put its own SIGTERM handler in place
        (it would end the run without a checkpoint)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            current = signal.getsignal(signum)
            if current != self._handle:
                self._previous.setdefault(signum, current)
                signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now
            return
        self.received = signum
        if signum in REQUEUE_SIGNALS and callable(self._previous.get(signum)):
            then = "the launcher's handler takes over (submitit requeues the job, which resumes)"
        elif signum in REQUEUE_SIGNALS and os.environ.get("SLURM_JOB_ID"):
            then = "the SLURM job is requeued (scontrol requeue) and resumes"
        else:
            then = (
                f"it exits with status {exit_code(signum)}; the same command in the same run "
                "directory (hydra.run.dir, or hydra.sweep.dir for a multirun) resumes"
            )
        log.warning(
            "received %s: training stops at the end of this step and saves last.ckpt; then %s",
            signal.Signals(signum).name,
            then,
        )

    def exit(self) -> NoReturn:
        """After last.ckpt is written: hand over to a launcher's own handler (submitit
        requeues the job and exits), requeue a SLURM batch job, or exit 128 + signal."""
        signum = self.received
        assert signum is not None
        previous = self._previous.get(signum)
        self.uninstall()
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, None)
        elif signum in REQUEUE_SIGNALS and os.environ.get("SLURM_JOB_ID"):
            requeue_slurm_job(os.environ["SLURM_JOB_ID"])
        sys.exit(exit_code(signum))


def requeue_slurm_job(job_id: str) -> None:
    done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    if done.returncode == 0:
        log.warning("requeued SLURM job %s: it resumes from last.ckpt", job_id)
    else:
        log.warning("scontrol requeue %s failed: %s", job_id, done.stderr.strip())


class Interrupted(BaseException):
    """A stop signal received by a command that is not a training run (predict): it ends
    the work where it is, like Ctrl-C, so the command can say what was done."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Every stop signal (SIGINT, SIGTERM, USR1, USR2) raises `Interrupted` while inside:
    without it SIGTERM would end the process with no word and half a file."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def stopped(stop: BaseException, done: str) -> NoReturn:
    """One line on an interrupted command (`Interrupted` or Ctrl-C) saying what it had
    done; exit 128 + the signal's number, as a shell reports a process it stopped."""
    signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
    print(f"error: interrupted by {signal.Signals(signum).name}: {done}", file=sys.stderr)
    sys.exit(exit_code(signum))
