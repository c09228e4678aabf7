"""Checkpoint files that are either the old one or the new one, never half of either.

Lightning's own writer serialises into memory, writes a temporary file in the system's
temp folder and moves it over the target. When that folder is on another file system
than the run (a node's local /tmp, the run on NFS or Lustre: the usual cluster set-up)
the move is a copy into the target, so a job killed during it leaves a truncated
``last.ckpt`` and nothing to resume from. Here the temporary file sits beside the target,
is flushed to the disk, and `os.replace` swaps it in: one rename on one file system,
which a kill cannot split. A kill before the rename leaves ``.<name>.part`` behind; the
next run of that directory deletes it (`remove_partial_checkpoints`).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO
from typing_extensions import override

from fcn_lightning.errors import WeightsError

PART_SUFFIX = ".part"


def partial_path(path: Path) -> Path:
    """Where `path` is written before it replaces the file of that name."""
    return path.with_name(f".{path.name}{PART_SUFFIX}")


class CheckpointWriteError(WeightsError, OSError):
    """A checkpoint the disk refused (full, over a size limit): an OSError too, for
    callers that catch those."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` that a crash or kill cannot leave half-written. A write
    the file system refuses raises `CheckpointWriteError` naming the file and the reason;
    the file of that name is then as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(path)
    try:
        with open(part, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except BaseException as error:
        part.unlink(missing_ok=True)
        refused = _os_error(error)
        if refused is None:
            raise
        raise CheckpointWriteError(_refused_message(path, refused)) from None
    _fsync_dir(path.parent)  # the rename itself survives a power cut


def _os_error(error: BaseException) -> OSError | None:
    """The file system's refusal behind `error`: torch raises it as it is, or as a
    RuntimeError of its zip writer with the OSError as its context."""
    seen = 0
    while error is not None and seen < 5:
        if isinstance(error, OSError) and error.errno is not None:
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def _refused_message(path: Path, error: OSError) -> str:
    reason = error.strerror or os.strerror(error.errno)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = (
            f"free space on the disk of {path.parent} (or give the run a folder with room, "
            "hydra.run.dir=...)"
        )
    elif error.errno == errno.EFBIG:
        fix = "raise the shell's file size limit (ulimit -f unlimited)"
    else:
        fix = f"check that {path.parent} is writable and has room"
    name = errno.errorcode.get(error.errno, str(error.errno))
    kept = "it is as it was" if path.is_file() else "it was not written"
    return (
        f"could not write checkpoint {path}: {reason} ({name}); {kept} and the other "
        f"checkpoints are unchanged: {fix}, then rerun the same command to resume from the "
        "last checkpoint"
    )


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every OS or file system can sync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_partial_checkpoints(folder: Path) -> list[Path]:
    """Delete what a killed write left in `folder`; returns the deleted files."""
    leftovers = sorted(Path(folder).glob(f".*.ckpt{PART_SUFFIX}"))
    for part in leftovers:
        part.unlink(missing_ok=True)
    return leftovers


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint the Trainer writes (best, last) through `atomic_torch_save`;
    remote paths (``s3://``...) keep Lightning's writer."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        protocol = get_filesystem(path).protocol
        local = "file" in ((protocol,) if isinstance(protocol, str) else protocol)
        if storage_options is not None or not local:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)
