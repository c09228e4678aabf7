"""`hydra/launcher=local_gpus claim_gpu=true` on a machine with two (fake) GPUs: the launcher
reuses its worker processes, and in every round its two jobs run at the same time, each on
its own GPU, the one it claimed; a process claims again the GPU it started CUDA on."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback

from fcn_lightning.run import gpus
from fcn_lightning.run.gpus import claimed_gpu
from tests.train_helpers import ROOT, sweep_overrides, tiny_dataset


def test_a_process_claims_again_the_gpu_it_started_cuda_on(tmp_path, monkeypatch):
    cuda_started = []
    monkeypatch.setattr(gpus, "_cuda_initialized", lambda: bool(cuda_started))
    monkeypatch.setattr(gpus, "_bound_gpu", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with claimed_gpu(lock_dir=tmp_path) as gpu:
        cuda_started.append(gpu)  # the job starts CUDA on the GPU it claimed
    assert gpu == "0" and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    with open(tmp_path / "gpu0.lock", "w") as other_job:
        fcntl.flock(other_job, fcntl.LOCK_EX)  # another process took GPU 0 meanwhile
        got = []
        waiter = threading.Thread(target=lambda: got.append(claim(tmp_path)))
        waiter.start()
        time.sleep(0.3)
        assert got == []  # GPU 1 is free, but this process could not use it: it waits
    waiter.join(timeout=5)
    assert got == ["0"]


def test_a_claim_after_cuda_started_elsewhere_binds_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(gpus, "_cuda_initialized", lambda: True)
    monkeypatch.setattr(gpus, "_bound_gpu", None)
    with claimed_gpu(["3", "5"], lock_dir=tmp_path) as gpu:
        assert gpu == "3"
    assert gpus._bound_gpu is None  # its GPU is unknown: the next claim is free to choose


def claim(lock_dir):
    with claimed_gpu(lock_dir=lock_dir, poll_s=0.05) as gpu:
        return gpu


class FakeCuda:
    """CUDA as a job process sees it, on a machine with `count` GPUs: the first use binds the
    process to the GPUs CUDA_VISIBLE_DEVICES names then, and torch's device count stays what
    it was then, whatever the variable says later. (torch.cuda.is_available() now says yes:
    the jobs train on the CPU, without pinned memory.)"""

    def __init__(self, count: int):
        self.gpus = [str(i) for i in range(count)]
        self.bound: list[str] | None = None

    def visible(self) -> list[str]:
        names = os.environ.get("CUDA_VISIBLE_DEVICES")
        return self.gpus if names is None else [n for n in names.split(",") if n in self.gpus]

    def device_count(self) -> int:
        return len(self.visible() if self.bound is None else self.bound)

    def initialized(self) -> bool:
        return self.bound is not None

    def init(self) -> str:
        """Start CUDA as training on a GPU would; returns the GPU the job's `cuda:0` is."""
        if self.bound is None:
            self.bound = self.visible()
        return self.bound[0]


_fake: FakeCuda | None = None


class FakeGpuMachine(Callback):
    """A Hydra callback: every job process, before its job, sees `count` fake GPUs (once per
    process, as a reused process keeps its CUDA state from one job to the next)."""

    def __init__(self, count: int):
        self.count = count

    def on_job_start(self, config, **kwargs) -> None:
        global _fake
        if _fake is None:
            _fake = FakeCuda(self.count)
            torch.cuda.device_count = _fake.device_count
            # Not torch.cuda.is_initialized itself: torch's own code asks it, and would then
            # run CUDA calls this machine has no device for.
            gpus._cuda_initialized = _fake.initialized


class GpuProbe(pl.Callback):
    """Inside the job's GPU claim: starts (fake) CUDA as a GPU job would, records the GPU the
    job claimed and the one it runs on, and waits up to `wait_s` for the other job of its
    round (jobs 2r and 2r+1) to be running too, as it would when each has its own GPU."""

    def __init__(self, record_dir: str, wait_s: float = 20.0):
        self.dir, self.wait_s = Path(record_dir), wait_s

    def on_fit_start(self, trainer, pl_module) -> None:
        job = HydraConfig.get().job.num
        record = {
            "job": job,
            "pid": os.getpid(),
            "claimed": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "runs_on": _fake.init(),
        }
        write(self.dir / f"running_{job}", json.dumps(record))
        partner, deadline = job ^ 1, time.monotonic() + self.wait_s
        while not self._running(partner) and time.monotonic() < deadline:
            time.sleep(0.1)
        record["ran_with"] = json.loads(self._running(partner) or "null")
        write(self.dir / f"job_{job}.json", json.dumps(record))

    def on_fit_end(self, trainer, pl_module) -> None:
        (self.dir / f"done_{HydraConfig.get().job.num}").touch()

    def _running(self, job: int) -> str | None:
        started, done = self.dir / f"running_{job}", self.dir / f"done_{job}"
        return started.read_text() if started.exists() and not done.exists() else None


def write(path: Path, text: str) -> None:
    """Whole or not at all, for the other job reading it."""
    path.with_suffix(".part").write_text(text)
    path.with_suffix(".part").replace(path)


@pytest.mark.slow
def test_every_round_runs_one_job_per_gpu_on_the_gpu_it_claimed(tmp_path):
    data_dir = tiny_dataset(tmp_path / "data")
    records, sweep = tmp_path / "records", tmp_path / "sweep"
    records.mkdir()
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(PYTHONPATH=str(ROOT), WANDB_MODE="offline", TMPDIR=str(tmp_path / "tmp"))
    start = time.monotonic()
    done = subprocess.run(
        [
            sys.executable, "-m", "fcn_lightning.train", "-m", *sweep_overrides(data_dir, tmp_path),
            "hydra/launcher=local_gpus", "hydra.launcher.n_jobs=2", "claim_gpu=true",
            "seed=1,2,3,4", "trainer.max_steps=1", "trainer.val_check_interval=1",
            "data.pin_memory=false", f"hydra.sweep.dir={sweep}",
            "+hydra.callbacks.fake_gpus._target_=tests.run.test_local_gpus.FakeGpuMachine",
            "+hydra.callbacks.fake_gpus.count=2",
            "+callbacks.gpu_probe._target_=tests.run.test_local_gpus.GpuProbe",
            f"+callbacks.gpu_probe.record_dir={records}",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = [json.loads((records / f"job_{n}.json").read_text()) for n in range(4)]
    print(f"\n{time.monotonic() - start:.0f} s:", *jobs, sep="\n")
    assert len({job["pid"] for job in jobs}) == 2  # the launcher reused its two workers
    for job in jobs:
        assert job["claimed"] == job["runs_on"], job
    for first, second in (jobs[0:2], jobs[2:4]):
        together = first["ran_with"] or second["ran_with"]
        assert together, f"jobs {first['job']} and {second['job']} did not run together"
        assert first["claimed"] != second["claimed"]
