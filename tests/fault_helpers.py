"""Faults injected into real training processes, at deterministic points.

Each is a Lightning callback that a test adds on the command line
(``+callbacks.kill._target_=tests.fault_helpers.KillAt +callbacks.kill.step=4``), so the
process under test is the real ``python -m fcn_lightning.train`` and it dies the way a
cluster kills jobs: SIGKILL, no handler, no cleanup, no flush.
"""

from __future__ import annotations

import builtins
import os
import signal
import time
from pathlib import Path

import pytorch_lightning as pl


def sigkill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(pl.Callback):
    """SIGKILL in the middle of training step `step` (after its backward pass, before the
    optimiser applies it): that step's work and everything after the last checkpoint is lost."""

    def __init__(self, step: int):
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step:
            sigkill_self()


class KillDuringCheckpointWrite(pl.Callback):
    """SIGKILL in the middle of writing the checkpoints of step `step` to disk.

    From the moment that checkpoint is assembled, every file opened for binary writing
    is one whose writes stop the process once `after_bytes` bytes have reached the disk:
    whatever the checkpoint writer does (a temporary file, a copy, the target itself),
    it dies halfway through putting the bytes on disk.
    """

    def __init__(self, step: int, after_bytes: int = 4096):
        self.step = step
        self.after_bytes = after_bytes

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.global_step != self.step:
            return
        real_open, limit = builtins.open, self.after_bytes

        class DyingFile:
            def __init__(self, f):
                self._f, self._written = f, 0

            def write(self, data) -> int:
                n = self._f.write(data)
                self._written += n
                if self._written >= limit:
                    self._f.flush()
                    os.fsync(self._f.fileno())
                    sigkill_self()
                return n

            def __getattr__(self, name):
                return getattr(self._f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._f.close()

        def dying_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            return DyingFile(f) if "b" in mode and ("w" in mode or "+" in mode) else f

        builtins.open = dying_open


class FailRank(pl.Callback):
    """Under DDP, rank `rank` fails at training step `step`: ``exit`` ends the process at
    once (no cleanup, as a crash would), ``sigkill`` is SIGKILL (the OOM killer, a
    scheduler's hard kill), ``hang`` never returns (a deadlock, a stuck file system). The
    other ranks go on into the step's gradient all-reduce and wait there for it."""

    def __init__(self, rank: int, step: int, how: str = "exit"):
        self.rank, self.step, self.how = rank, step, how

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank != self.rank or trainer.global_step != self.step:
            return
        if self.how == "exit":
            os._exit(3)
        if self.how == "sigkill":
            sigkill_self()
        while True:
            time.sleep(1)


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line holds `text` (Linux /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_text():
                status = (proc / "status").read_text()
                if "State:\tZ" not in status:
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


class SignalAt(pl.Callback):
    """Sends this process `signum` (a name: TERM, INT, USR1, USR2) in the middle of training
    step `step`, as a scheduler would at a random moment; with `variant`, only in the
    training of that model variant (a stage of a staged job)."""

    def __init__(self, step: int, signum: str, variant: str | None = None):
        self.step = step
        self.signum = getattr(signal, f"SIG{signum}")
        self.variant = variant

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.variant is not None and pl_module.hparams.model["variant"] != self.variant:
            return
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class RaiseAt(pl.Callback):
    """A bug at training step `step`: an exception no user input explains."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"a bug planted at step {self.step}")
