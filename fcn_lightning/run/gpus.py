"""One job per GPU on a multi-GPU machine: each job claims a free GPU for its whole run.

Parallel sweep jobs (``hydra/launcher=local_gpus``) start in whatever order the launcher
picks and end at different times, so a GPU is not a function of the job number. Each job
instead takes an exclusive lock on ``gpu<k>.lock`` for the first free k and makes only
that GPU visible to itself. The operating system releases the lock when the process ends,
so a crashed job never holds a GPU.

The launcher reuses its worker processes: joblib's loky workers run job after job, and
neither joblib nor the Hydra plugin can give each job a fresh process. CUDA reads
CUDA_VISIBLE_DEVICES once, when a process first uses it (torch caches the device count
then), so a worker whose job ran on GPU k can use no other GPU again, whatever the variable
says later. Its next job therefore claims k again, waiting for it if need be, instead of
locking a GPU it would not run on. A fresh worker chooses among the GPUs the launcher's
environment names (CUDA_VISIBLE_DEVICES is restored after every job), and the first round
leaves the workers on different GPUs, so every round runs one job per GPU.
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

# The GPU this process initialised CUDA on during a claim: the only one it can use.
_bound_gpu: str | None = None


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (all GPUs when it
    is unset; counted before CUDA starts in this process, as torch fixes the count then)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _cuda_initialized() -> bool:
    import torch

    return torch.cuda.is_initialized()


def _candidates(gpus: list[str] | None) -> list[str]:
    if _bound_gpu is not None:
        log.info("claim_gpu: this process ran a job on GPU %s and can use no other", _bound_gpu)
        return [_bound_gpu]
    if _cuda_initialized():
        log.warning(
            "claim_gpu: CUDA was started in this process before the claim, so the job runs "
            "on the GPU it started on, whichever one it claims"
        )
    return visible_gpus() if gpus is None else gpus


@contextlib.contextmanager
def claimed_gpu(
    gpus: list[str] | None = None, *, lock_dir: Path = LOCK_DIR, poll_s: float = 5.0
) -> Iterator[str]:
    """Wait for a free GPU among `gpus` (the visible ones; in a process that already ran
    a job on a GPU, that one), make it the only visible one, yield its name."""
    global _bound_gpu
    gpus = _candidates(gpus)
    if not gpus:
        raise ConfigError("claim_gpu=true: no GPU is visible to this job; set claim_gpu=false")
    lock_dir.mkdir(parents=True, exist_ok=True)
    started_before = _cuda_initialized()
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
                if not started_before and _cuda_initialized():
                    _bound_gpu = gpu
                if previous is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = previous
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if not waited:
            busy = f"GPU {gpus[0]} is" if len(gpus) == 1 else f"all {len(gpus)} GPUs are"
            log.info("claim_gpu: %s busy, waiting", busy)
            waited = True
        time.sleep(poll_s)
