"""One job per GPU on a multi-GPU machine: each job claims a free GPU for its whole run.

Parallel sweep jobs (``hydra/launcher=local_gpus``) start in whatever order the launcher
picks and end at different times, so a GPU is not a function of the job number. Each job
instead takes an exclusive lock on ``gpu<k>.lock`` for the first free k and makes only
that GPU visible to itself. The operating system releases the lock when the process ends,
so a crashed job never holds a GPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fcn_lightning.errors import ConfigError
from fcn_lightning.run.console import log

LOCK_DIR = Path(tempfile.gettempdir()) / "fcn_lightning_gpus"


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


@contextlib.contextmanager
def claimed_gpu(
    gpus: list[str] | None = None, *, lock_dir: Path = LOCK_DIR, poll_s: float = 5.0
) -> Iterator[str]:
    """Wait for a free GPU among `gpus`, make it the only visible one, yield its name."""
    gpus = visible_gpus() if gpus is None else gpus
    if not gpus:
        raise ConfigError("claim_gpu=true: no GPU is visible to this job; set claim_gpu=false")
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for gpu in gpus:
            handle = open(lock_dir / f"gpu{gpu}.lock", "w")  # noqa: SIM115 (held while we run)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            previous = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            log.info("claim_gpu: this job runs on GPU %s", gpu)
            try:
                yield gpu
            finally:
                if previous is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = previous
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if not waited:
            log.info("claim_gpu: all %d GPUs busy, waiting for one", len(gpus))
            waited = True
        time.sleep(poll_s)
