"""The run directory: the one place that knows its layout, whether it can be resumed, its
CSV history and who holds it.

    <run>/
      checkpoints/last.ckpt              the latest state: every validation, every stop
      checkpoints/step<N>-miu<X>.ckpt    the best validation so far
      checkpoints/replaced-<n>/          checkpoints set aside by resume.overwrite=true
      csv/metrics.csv, metrics.<n>.csv   the CSV record, one file per (re)start
      config_resolved.yaml               the resolved config of the latest start
      config_changes.yaml                settings changed on resume, with the step
      metrics.md                         the final validation's scores
      samples/                           pictures of validation predictions
      stages/<i>_<variant>/              a staged job's earlier stages, each a run dir
      .lock                              held by the process training in it

Everything else asks `RunDir`: the checkpoint callbacks (their folder and names), the
entry points (resume detection, lock), staged training (stage folders, best checkpoint)
and the report (CSV segments).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities import rank_zero_only

from fcn_lightning.errors import ConfigError

# ModelCheckpoint's file name for the best checkpoint, and the glob that finds it.
BEST_FILENAME = "step{step:06d}-miu{val/mean_iu:.4f}"
BEST_GLOB = "step*-miu*.ckpt"
LAST_NAME = "last"
CONFIG_NAME = "config_resolved.yaml"
CHANGES_NAME = "config_changes.yaml"
METRICS_NAME = "metrics.md"
STAGES_DIR = "stages"
LOCK_NAME = ".lock"


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / f"{LAST_NAME}.ckpt"

    def best_checkpoints(self) -> list[Path]:
        return sorted(self.checkpoints.glob(BEST_GLOB))

    def best_or_last(self) -> Path | None:
        """The best checkpoint the run kept, else its last.ckpt, else None."""
        best = self.best_checkpoints()
        if best:
            return best[-1]
        return self.last_checkpoint if self.last_checkpoint.is_file() else None

    @property
    def csv_dir(self) -> Path:
        return self.path / "csv"

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def changes_file(self) -> Path:
        return self.path / CHANGES_NAME

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_NAME

    def stage(self, index: int, variant: str) -> RunDir:
        return RunDir(self.path / STAGES_DIR / f"{index}_{variant}")

    def is_stage(self) -> bool:
        return self.path.parent.name == STAGES_DIR

    def stage_index(self) -> int:
        """The position of a stage run directory in its job's chain."""
        return int(self.path.name.split("_", 1)[0])

    def job(self) -> RunDir:
        """The staged job a stage run directory belongs to."""
        return RunDir(self.path.parent.parent)

    # The CSV record: Lightning's CSVLogger rewrites csv/metrics.csv at every start, so
    # the record of earlier starts is set aside first.

    def csv_segments(self) -> list[Path]:
        """The CSV records in the order they were written (one per start)."""
        earlier = sorted(self.csv_dir.glob("metrics.*.csv"), key=lambda p: int(p.suffixes[0][1:]))
        current = self.csv_dir / "metrics.csv"
        return [*earlier, current] if current.is_file() else earlier

    @rank_zero_only
    def keep_csv_history(self) -> None:
        """Set the current CSV record aside as the next ``metrics.<n>.csv``. Rank 0 only:
        DDP's re-launched ranks run this too and must not move the file again."""
        current = self.csv_dir / "metrics.csv"
        if current.is_file():
            current.rename(current.with_name(f"metrics.{len(self.csv_segments()) - 1}.csv"))

    # What a start finds.

    def training_files(self) -> list[Path]:
        """Files a training run left here (Hydra's own .hydra/ and log files aside)."""
        found = []
        for folder in (self.checkpoints, self.csv_dir):
            if folder.is_dir():
                found += [p for p in folder.iterdir() if p.is_file() and p.suffix != ".part"]
        return found

    @rank_zero_only
    def set_aside_checkpoints(self) -> Path | None:
        """Move every checkpoint into ``checkpoints/replaced-<n>/`` (resume.overwrite)."""
        files = [p for p in self.checkpoints.glob("*.ckpt") if p.is_file()]
        if not files:
            return None
        n = len(list(self.checkpoints.glob("replaced-*")))
        target = self.checkpoints / f"replaced-{n}"
        target.mkdir()
        for path in files:
            path.rename(target / path.name)
        return target

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunLock]:
        """Hold the run directory for this process; a second one is refused in one line
        naming the holder. The lock is the kernel's (flock), so it dies with its holder,
        however that ends; the file stays and is reused. Taking it writes nothing into an
        existing lock file: the holder is written by `RunLock.announce`, once the run's
        inputs passed their checks."""
        if rank_zero_only.rank != 0:  # DDP ranks train in their rank 0's directory
            yield RunLock(None)
            return
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / LOCK_NAME
        handle = open(path, "a+")  # noqa: SIM115 (held for the whole run)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path, handle)
            handle.close()
            raise ConfigError(
                f"run directory {self.path} is in use by {holder}; wait for it to end, or "
                "give this run its own directory (hydra.run.dir=...)"
            ) from None
        try:
            yield RunLock(handle)
        finally:
            handle.close()


@dataclass
class RunLock:
    handle: Any

    def announce(self) -> None:
        """Name this process in the lock file, for the message a second one gets."""
        if self.handle is None:
            return
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self.handle.flush()


def _holder(path: Path, handle: Any) -> str:
    """Who holds the flock on ``path``: the kernel's word (/proc/locks) for a local file
    system, else what the holder wrote into the file."""
    handle.seek(0)
    written = handle.read().strip()
    inode = f":{os.stat(path).st_ino} "
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "FLOCK" in fields and inode in f"{line} ":
                pid = fields[fields.index("FLOCK") + 3]
                return written if written.startswith(f"pid {pid} ") else f"pid {pid}"
    return written or "another process"
