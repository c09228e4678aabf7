"""The run lifecycle through the real entry point: stop signals leave last.ckpt at the step
reached and a non-zero exit, and the same command resumes exactly; ckpt_path=auto; the
resume guard; one process per run directory; final scores from the final weights."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fcn_lightning.errors import ConfigError
from fcn_lightning.report.results import read_run
from fcn_lightning.run.rundir import RunDir
from fcn_lightning.train import train
from tests.train_helpers import ROOT, compose_train, run_in_process, run_module, tiny_overrides

# Deterministic CPU training: 7 steps, validation (and checkpoints) at steps 3 and 6.
RUN = ["trainer.max_steps=7", "trainer.val_check_interval=3", "trainer.deterministic=true"]
# Steps where a signal lands: drawn once (seeded), never a validation step.
STEPS = random.Random(12).sample([1, 2, 4, 5], 4)
SIGNALS = {"TERM": 143, "INT": 130, "USR1": 138, "USR2": 140}


def train_cli(data_dir: Path, run: Path, *extra: str, cwd: Path):
    return run_module("fcn_lightning.train", *tiny_overrides(data_dir, run), *extra, cwd=cwd)


def train_here(data_dir: Path, run: Path, *extra: str, cwd: Path, monkeypatch, capfd):
    """`train_cli` in this process: the same command, for the runs that resume (what
    the signal did to the process is the first, `train_cli`, part's)."""
    return run_in_process("fcn_lightning.train", *tiny_overrides(data_dir, run), *extra,
                          cwd=cwd, monkeypatch=monkeypatch, capfd=capfd)  # fmt: skip


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log" and p.name != ".lock"
    }


def last(run: Path) -> dict:
    return torch.load(RunDir(run).last_checkpoint, weights_only=True)


def assert_same_weights(got: dict, expected: dict) -> None:
    assert got["global_step"] == expected["global_step"]
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][name], tensor), name
    momenta = expected["optimizer_states"][0]["state"]
    for index, state in momenta.items():
        got_state = got["optimizer_states"][0]["state"][index]
        assert torch.equal(got_state["momentum_buffer"], state["momentum_buffer"])


@pytest.fixture(scope="module")
def whole(data_dir, tmp_path_factory):
    """An uninterrupted run of `RUN`."""
    run = tmp_path_factory.mktemp("whole")
    train(compose_train(data_dir, run, *RUN))
    return run


@pytest.mark.slow
@pytest.mark.parametrize(("name", "step"), list(zip(SIGNALS, STEPS, strict=True)))
def test_a_signal_saves_the_step_reached_and_the_rerun_resumes_exactly(
    name, step, whole, data_dir, tmp_path, monkeypatch, capfd
):
    run = tmp_path / "run"
    send = ["+callbacks.signal._target_=tests.fault_helpers.SignalAt",
            f"+callbacks.signal.step={step}", f"+callbacks.signal.signum={name}"]  # fmt: skip
    stopped = train_cli(data_dir, run, *RUN, *send, cwd=tmp_path)
    assert stopped.returncode == SIGNALS[name], stopped.stderr[-3000:]
    # The signal came during step `step + 1` (global_step counts finished steps): that
    # step is finished, then saved.
    assert last(run)["global_step"] == step + 1
    assert f"received SIG{name}" in stopped.stdout + stopped.stderr
    assert not (run / "metrics.md").exists()  # no final scores from an unfinished run

    # The same command, with the signal's callback gone (a requeue runs it unchanged; here
    # the callback would stop it again).
    resumed = train_here(data_dir, run, *RUN, cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {step + 1}" in resumed.stdout + resumed.stderr
    assert_same_weights(last(run), last(whole))
    assert (run / "metrics.md").read_text() == (whole / "metrics.md").read_text()
    # The CSV record of both parts, kept: the same validations as the uninterrupted run.
    assert read_run(run).curve == read_run(whole).curve
    assert len(RunDir(run).best_checkpoints()) == 1


def test_auto_starts_fresh_resumes_and_leaves_a_finished_run_alone(data_dir, tmp_path):
    run = tmp_path / "run"
    train(compose_train(data_dir, run))  # empty: fresh
    assert last(run)["global_step"] == 2
    before = digests(run)
    # The same command again: the run is finished, nothing is trained or written.
    train(compose_train(data_dir, run))
    assert digests(run) == before
    # A longer run resumes it.
    train(compose_train(data_dir, run, "trainer.max_steps=4"))
    assert last(run)["global_step"] == 4


def test_auto_refuses_a_run_dir_with_files_but_no_checkpoint(data_dir, tmp_path):
    run = tmp_path / "run"
    (run / "csv").mkdir(parents=True)
    (run / "csv" / "metrics.csv").write_text("step,train/loss\n0,1.0\n")
    before = digests(run)
    with pytest.raises(ConfigError, match=r"ckpt_path=auto: run directory .* holds training"):
        train(compose_train(data_dir, run))
    assert digests(run) == before


def test_null_refuses_checkpoints_unless_overwrite_which_sets_them_aside(data_dir, tmp_path):
    run = tmp_path / "run"
    train(compose_train(data_dir, run))
    before = digests(run)
    with pytest.raises(ConfigError, match=r"ckpt_path=null: .* resume.overwrite=true"):
        train(compose_train(data_dir, run, "ckpt_path=null"))
    assert digests(run) == before
    train(compose_train(data_dir, run, "ckpt_path=null", "resume.overwrite=true"))
    kept = run / "checkpoints" / "replaced-0"
    for name, digest in before.items():  # every earlier checkpoint, byte for byte
        if name.startswith("checkpoints/"):
            moved = kept / Path(name).name
            assert hashlib.sha256(moved.read_bytes()).hexdigest() == digest
    assert last(run)["global_step"] == 2


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ("optim.lr=0.5", "optim.lr"),
        ("model.geometry=caffe", "model.geometry"),
        ("loss.normalize=sum", "loss.normalize"),
        ("data.hflip=true", "data.hflip"),
        ("optim.momentum=0.5", "optim.momentum"),
        ("trainer.max_steps=1", "trainer.max_steps"),
    ],
)
def test_resuming_with_a_changed_setting_is_refused_naming_it(change, key, data_dir, tmp_path):
    run = tmp_path / "run"
    train(compose_train(data_dir, run, "trainer.max_steps=2"))
    before = digests(run)
    with pytest.raises(ConfigError, match=rf"\({key}: .* -> .*\).*allow_changes=\[{key}\]"):
        train(compose_train(data_dir, run, "trainer.max_steps=4", change))
    assert digests(run) == before


def test_an_allowed_change_takes_effect_in_the_optimiser(data_dir, tmp_path):
    run = tmp_path / "run"
    fixed = ["optim=heavy", "optim.lr=0.001", "optim.momentum=0.9"]
    train(compose_train(data_dir, run, *fixed, "trainer.max_steps=2"))
    old = last(run)["optimizer_states"][0]["param_groups"]
    assert [g["lr"] for g in old] == [0.001, 0.002]  # weights, biases (lr x2)
    allow = "resume.allow_changes=[optim.lr,optim.momentum]"
    changed = [*fixed[:-1], "optim.momentum=0.5", "optim.lr=0.01"]
    train(compose_train(data_dir, run, *changed, "trainer.max_steps=4", allow))
    new = last(run)["optimizer_states"][0]["param_groups"]
    assert [g["lr"] for g in new] == [0.01, 0.02]
    assert [g["momentum"] for g in new] == [0.5, 0.5]
    record = (run / "config_changes.yaml").read_text()
    assert "step: 2" in record and "optim.lr" in record and "new: 0.01" in record
    # The next resume compares with the changed settings: no second allowance needed.
    train(compose_train(data_dir, run, *changed, "trainer.max_steps=5"))
    assert last(run)["global_step"] == 5


def test_an_allowed_lr_change_keeps_its_place_in_the_poly_schedule(data_dir, tmp_path):
    run = tmp_path / "run"
    poly = ["optim=sgd_poly", "optim.lr=0.01", "trainer.max_steps=8"]
    train(compose_train(data_dir, run, *poly[:-1], "trainer.max_steps=8",
                        "+callbacks.stop._target_=tests.train_helpers.StopAfterValidation",
                        "+callbacks.stop.step=2", "trainer.val_check_interval=2"))  # fmt: skip
    assert last(run)["global_step"] == 2
    allow = "resume.allow_changes=[optim.lr]"
    train(compose_train(data_dir, run, "optim=sgd_poly", "optim.lr=0.04", "trainer.max_steps=8",
                        "trainer.val_check_interval=2", allow))  # fmt: skip
    groups = last(run)["optimizer_states"][0]["param_groups"]
    power = 0.9  # sgd_poly's default
    expected = 0.04 * max(0.0, 1 - 8 / 8) ** power
    assert groups[0]["initial_lr"] == 0.04 and groups[1]["initial_lr"] == 0.08
    assert groups[0]["lr"] == pytest.approx(expected)


def test_a_second_process_in_the_same_run_dir_is_refused(data_dir, tmp_path):
    run = tmp_path / "run"
    train(compose_train(data_dir, run))
    before = digests(run)
    with RunDir(run).lock():  # this process holds it, as a running job would
        second = train_cli(data_dir, run, "trainer.max_steps=4", cwd=tmp_path)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert lines[-1].startswith("error: run directory") and f"pid {os.getpid()}" in lines[-1]
    assert digests(run) == before


def test_the_lock_dies_with_its_holder(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fcn_lightning.run.rundir import RunDir\n"
         f"with RunDir({str(run)!r}).lock():\n print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=f"pid {holder.pid}"), RunDir(run).lock():
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    deadline = time.monotonic() + 5
    while True:
        try:
            with RunDir(run).lock():
                break
        except ConfigError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def _val_steps(run: Path) -> list[int]:
    """The steps the CSV record holds validations at (as the report reads them)."""
    return [step for step, _ in read_run(run).curve]


def test_the_final_scores_are_the_last_steps(data_dir, tmp_path):
    run = tmp_path / "run"
    train(compose_train(data_dir, run, "trainer.max_steps=5", "trainer.val_check_interval=3"))
    assert _val_steps(run) == [3, 5]
    assert (run / "metrics.md").read_text().startswith("step 5\n")


def test_a_run_shorter_than_the_validation_interval_still_validates_at_its_end(data_dir, tmp_path):
    run = tmp_path / "run"
    short = [
        "trainer.max_steps=2",
        "trainer.val_check_interval=4",
        "trainer.num_sanity_val_steps=2",
    ]
    train(compose_train(data_dir, run, *short))
    assert _val_steps(run) == [2]  # the sanity check is not a validation
    assert (run / "metrics.md").read_text().startswith("step 2\n")


@pytest.mark.slow
def test_a_staged_job_stopped_in_its_last_stage_resumes_there_and_trains_nothing_twice(
    data_dir, tmp_path, monkeypatch, capfd
):
    run = tmp_path / "run"
    staged = ["model=fcn8s", "recipe=staged", "trainer.max_steps=3", "trainer.val_check_interval=2"]
    send = ["+callbacks.signal._target_=tests.fault_helpers.SignalAt", "+callbacks.signal.step=0",
            "+callbacks.signal.signum=TERM", "+callbacks.signal.variant=fcn8s"]  # fmt: skip
    stopped = train_cli(data_dir, run, *staged, *send, cwd=tmp_path)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert last(run)["global_step"] == 1  # the final stage, cut after its first step
    stages = {p.name: digests(p) for p in (run / "stages").iterdir()}
    assert sorted(stages) == ["0_fcn32s", "1_fcn16s"]

    resumed = train_here(data_dir, run, *staged, cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 1" in resumed.stdout + resumed.stderr
    assert last(run)["global_step"] == 3
    for name, before in stages.items():  # the finished stages: not trained again
        assert digests(run / "stages" / name) == before, name
    # Once more, finished: nothing trained, nothing written.
    before = digests(run)
    again = train_here(data_dir, run, *staged, cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert digests(run) == before


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("resume.allow_changes=optim.lr", r"resume.allow_changes='optim.lr': give a list"),
        ("resume.allow_changes=[optim.lrr]", r"resume.allow_changes: optim.lrr is no config key"),
        ("resume.overwrite=maybe", r"resume.overwrite='maybe': choose true or false"),
    ],
)
def test_a_wrong_resume_setting_is_one_error_and_writes_nothing(
    override, message, data_dir, tmp_path
):
    run = tmp_path / "run"
    train(compose_train(data_dir, run))
    before = digests(run)
    with pytest.raises(ConfigError, match=message):
        train(compose_train(data_dir, run, "trainer.max_steps=4", override))
    assert digests(run) == before
