"""Faults injected into real training processes: SIGKILL mid-run, SIGKILL in the middle of
a checkpoint write, a diverging loss, a DDP rank that dies or hangs. Each test checks the
run can go on (or fails in bounded time) and that no checkpoint already written is lost.

`FAULTS` names every fault this file and the tests it points to inject (for the figures in
docs/notes/reliability.md).
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from fcn_lightning.errors import DivergedError
from fcn_lightning.report.results import read_run
from fcn_lightning.run.checkpoint_io import atomic_torch_save, partial_path
from fcn_lightning.train import train
from tests.fault_helpers import processes_mentioning
from tests.train_helpers import compose_train, run_in_process, run_module, tiny_overrides

FAULTS = [  # with the multirun test (test_launchers.py) and the DDP eval and resume tests
    # (test_distributed_logging.py)
    "SIGKILL mid-run, then resume with ckpt_path=last",
    "SIGKILL in the middle of a checkpoint write",
    "an error (disk full) in the middle of a checkpoint write",
    "a NaN/inf loss",
    "a DDP rank that exits",
    "a DDP rank that hangs",
    "a SIGKILLed DDP launcher whose other rank hangs",
    "a failing job in a multirun",
    "a corrupt image in rank 0's share of a DDP eval",
    "a DDP job stopped and resumed with ranks whose random streams differ",
]

# Deterministic CPU training: 7 steps, validation (and checkpoints) at steps 3 and 6.
RUN = ["trainer.max_steps=7", "trainer.val_check_interval=3", "trainer.deterministic=true"]


def train_cli(data_dir: Path, run: Path, *extra: str, cwd: Path, timeout: int = 300):
    return run_module(
        "fcn_lightning.train", *tiny_overrides(data_dir, run), *extra, cwd=cwd, timeout=timeout
    )


def train_here(data_dir: Path, run: Path, *extra: str, cwd: Path, monkeypatch, capfd):
    """`train_cli` in this process, for the runs that resume after the killed one."""
    return run_in_process("fcn_lightning.train", *tiny_overrides(data_dir, run), *extra,
                          cwd=cwd, monkeypatch=monkeypatch, capfd=capfd)  # fmt: skip


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


SIGKILLED = -9


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_ends_as_an_uninterrupted_run(
    data_dir, tmp_path, monkeypatch, capfd
):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(compose_train(data_dir, whole, *RUN))

    kill = ["+callbacks.kill._target_=tests.fault_helpers.KillAt", "+callbacks.kill.step=4"]
    killed = train_cli(data_dir, parts, *RUN, *kill, cwd=tmp_path)
    assert killed.returncode == SIGKILLED, killed.stderr[-3000:]
    # Killed halfway through step 5: the checkpoint of step 3 is what is left.
    assert torch.load(parts / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3

    resumed = train_here(data_dir, parts, *RUN, "ckpt_path=last", cwd=tmp_path,
                         monkeypatch=monkeypatch, capfd=capfd)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(parts / "checkpoints" / "last.ckpt", weights_only=True)
    assert got["global_step"] == expected["global_step"] == 7
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][name], tensor), name
    momenta = [got["optimizer_states"][0]["state"], expected["optimizer_states"][0]["state"]]
    for index, state in momenta[1].items():
        assert torch.equal(momenta[0][index]["momentum_buffer"], state["momentum_buffer"])
    assert (parts / "metrics.md").read_text() == (whole / "metrics.md").read_text()
    assert read_run(parts).curve == read_run(whole).curve
    assert [step for step, _ in read_run(whole).curve] == [3, 6, 7]  # and the last step


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(
    data_dir, tmp_path, monkeypatch, capfd
):
    run = tmp_path / "run"
    # The validation at step 6 writes last.ckpt; the process dies with 4 KiB of it on disk.
    kill = [
        "+callbacks.kill._target_=tests.fault_helpers.KillDuringCheckpointWrite",
        "+callbacks.kill.step=6",
    ]
    killed = train_cli(data_dir, run, *RUN, *kill, cwd=tmp_path)
    assert killed.returncode == SIGKILLED, killed.stderr[-3000:]
    folder = run / "checkpoints"
    part = partial_path(folder / "last.ckpt")
    assert 0 < part.stat().st_size < (folder / "last.ckpt").stat().st_size  # died mid-write
    for ckpt in folder.glob("*.ckpt"):  # both files whole: the checkpoints of step 3
        assert torch.load(ckpt, weights_only=True)["global_step"] == 3, ckpt

    resumed = train_here(data_dir, run, *RUN, "ckpt_path=last", cwd=tmp_path,
                         monkeypatch=monkeypatch, capfd=capfd)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not part.exists()  # the leftover is removed, with a warning
    assert "left by a checkpoint write that was killed" in resumed.stdout + resumed.stderr
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 7


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, target)
    before = target.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_torch_save({"step": 2}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_divergence_leaves_the_last_good_checkpoints_byte_for_byte(data_dir, tmp_path):
    run = tmp_path / "run"
    common = ["loss=sum", "optim.lr=1e-3", "trainer.val_check_interval=2"]
    train(compose_train(data_dir, run, *common, "trainer.max_steps=2"))
    before = digests(run / "checkpoints")
    assert len(before) == 2  # best and last, of step 2
    poison = [
        "+callbacks.poison._target_=tests.train_helpers.PoisonWeightsAt",
        "+callbacks.poison.step=3",
    ]
    cfg = compose_train(data_dir, run, *common, *poison, "trainer.max_steps=8", "ckpt_path=last")
    with pytest.raises(DivergedError, match=r"loss\.normalize=sum.*optim\.lr=0\.001"):
        train(cfg)
    assert digests(run / "checkpoints") == before
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


DDP_BOUND_S = 120  # with start-up of two processes on a loaded 2-core machine


@pytest.mark.slow
@pytest.mark.parametrize("how", ["exit", "hang"])
def test_a_failed_ddp_rank_ends_the_job_in_bounded_time(how, data_dir, tmp_path):
    run = tmp_path / f"ddp_{how}"
    overrides = [o for o in tiny_overrides(data_dir, run) if o != "trainer=cpu"]
    start = time.monotonic()
    done = run_module(
        "fcn_lightning.train", *overrides, "trainer=ddp_cpu", *RUN[:2],
        "trainer.ddp_timeout_s=10",  # how long the healthy rank waits for a hung one
        "+callbacks.fail._target_=tests.fault_helpers.FailRank", "+callbacks.fail.rank=1",
        "+callbacks.fail.step=4", f"+callbacks.fail.how={how}",  # after step 3's checkpoint
        cwd=tmp_path, timeout=DDP_BOUND_S,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    assert done.returncode != 0, done.stderr[-3000:]
    assert elapsed < DDP_BOUND_S
    assert "gloo" in done.stderr  # the healthy rank's collective failed, naming why
    # No rank outlives the job (a hung one would hold its device forever).
    deadline = time.monotonic() + 10
    while processes_mentioning(str(run)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(str(run)) == []
    for ckpt in (run / "checkpoints").glob("*.ckpt"):  # what was written before is whole
        assert torch.load(ckpt, weights_only=True)["global_step"] == 3
    assert (run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_a_sigkilled_launcher_takes_its_hung_rank_with_it(data_dir, tmp_path):
    """Rank 0 (which started rank 1) is SIGKILLed while rank 1 hangs: no cleanup code runs
    in rank 0, and the kernel ends rank 1 because it asked to die with its launcher."""
    run = tmp_path / "ddp_sigkill"
    overrides = [o for o in tiny_overrides(data_dir, run) if o != "trainer=cpu"]
    fail = [
        f"+callbacks.{name}.{key}={value}"
        for name, rank, how in (("hang", 1, "hang"), ("kill", 0, "sigkill"))
        for key, value in (("_target_", "tests.fault_helpers.FailRank"), ("rank", rank),
                           ("step", 4), ("how", how))
    ]  # fmt: skip
    try:
        done = run_module(
            "fcn_lightning.train", *overrides, "trainer=ddp_cpu", *RUN[:2], *fail,
            cwd=tmp_path, timeout=DDP_BOUND_S,
        )  # fmt: skip
        assert done.returncode == SIGKILLED, done.stderr[-3000:]
        deadline = time.monotonic() + 10
        while processes_mentioning(str(run)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_mentioning(str(run)) == []
    finally:  # never leave an orphan behind, whatever failed
        for pid in processes_mentioning(str(run)):
            os.kill(pid, signal.SIGKILL)
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        assert torch.load(ckpt, weights_only=True)["global_step"] == 3
