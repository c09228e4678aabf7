"""The DDP strategy's two timeouts: the rendezvous waits for slow-starting ranks, the
collectives give up on a hung rank after ``trainer.ddp_timeout_s``."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.demos.boring_classes import BoringModel

from fcn_lightning.run.processes import TimedDDPStrategy, apply_ddp_timeout, isolated_job


class RecordTimeouts(pl.Callback):
    def setup(self, trainer, pl_module, stage):
        store = dist.distributed_c10d._get_default_store()
        backend = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu"))
        self.store, self.collective = store.timeout, backend.options._timeout
        raise SystemExit(0)  # only the process group was wanted


def test_startup_and_collective_timeouts_are_set_apart():
    trainer_cfg = {"strategy": "ddp", "ddp_timeout_s": 7, "ddp_startup_timeout_s": 90}
    apply_ddp_timeout(trainer_cfg)
    strategy = trainer_cfg["strategy"]
    assert isinstance(strategy, TimedDDPStrategy)
    assert "ddp_timeout_s" not in trainer_cfg and "ddp_startup_timeout_s" not in trainer_cfg
    record = RecordTimeouts()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy=strategy, callbacks=[record], logger=False,
        enable_progress_bar=False, enable_model_summary=False, max_steps=1,
    )  # fmt: skip
    # isolated_job: no process group or rendezvous variables left behind
    with isolated_job(), contextlib.suppress(SystemExit):
        trainer.fit(BoringModel())
    assert record.store == timedelta(seconds=90)  # the rendezvous
    assert record.collective == timedelta(seconds=7)  # every collective after it
    assert not dist.is_initialized()


def test_the_startup_timeout_is_never_shorter_than_the_collective_one():
    trainer_cfg = {"strategy": "ddp", "ddp_timeout_s": 300, "ddp_startup_timeout_s": 10}
    apply_ddp_timeout(trainer_cfg)
    assert trainer_cfg["strategy"]._timeout == timedelta(seconds=300)
    plain = {"strategy": "auto", "ddp_timeout_s": 300, "ddp_startup_timeout_s": 10}
    apply_ddp_timeout(plain)  # no DDP: the keys go, nothing else changes
    assert plain == {"strategy": "auto"}
