"""Sweeping beyond one process: GPU claims for parallel local jobs, the SLURM and joblib
launcher presets, and the Optuna learning-rate search."""

from __future__ import annotations

import os
import threading
import time

import pytest
import yaml
from hydra import compose, initialize_config_dir

from fcn_lightning.errors import ConfigError
from fcn_lightning.run.gpus import claimed_gpu
from tests.train_helpers import CONF, run_in_process, run_module, sweep_overrides, tiny_dataset


def test_parallel_jobs_claim_different_gpus_and_wait_for_a_free_one(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    events = []
    with claimed_gpu(lock_dir=tmp_path) as first:
        assert os.environ["CUDA_VISIBLE_DEVICES"] == first == "3"
        # (Another job: its own process would still see both; here they are passed.)
        with claimed_gpu(["3", "5"], lock_dir=tmp_path) as second:
            assert os.environ["CUDA_VISIBLE_DEVICES"] == second == "5"

            def third_job():
                with claimed_gpu(["3", "5"], lock_dir=tmp_path, poll_s=0.05) as gpu:
                    events.append(("third got", gpu))

            waiter = threading.Thread(target=third_job)
            waiter.start()
            time.sleep(0.3)
            assert events == []  # both GPUs busy: the third job waits
            events.append(("second done", second))
        waiter.join(timeout=5)
        assert events == [("second done", "5"), ("third got", "5")]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"  # restored


def test_claiming_without_a_gpu_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="claim_gpu=true"), claimed_gpu([], lock_dir=tmp_path):
        pass


def _hydra_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_slurm_preset_composes_for_submitit():
    cfg = _hydra_cfg("hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 1, 1)
    assert launcher.timeout_min == 4320 and launcher.max_num_timeout == 3


def test_local_gpus_preset_runs_one_process_per_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    cfg = _hydra_cfg("hydra/launcher=local_gpus", "claim_gpu=true")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 3
    assert cfg.claim_gpu is True


@pytest.mark.slow
def test_optuna_lr_search_runs_trials_and_reports_the_best(tmp_path, monkeypatch, capfd):
    keep = sweep_overrides(tiny_dataset(tmp_path / "data"), tmp_path)
    sweep = tmp_path / "sweep"
    done = run_in_process(  # the sweeper's plumbing; the process is the next test's
        "fcn_lightning.train", "hparams_search=lr_line_search", *keep,
        "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=3",
        "trainer.max_steps=1", "trainer.val_check_interval=1", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 3
    lrs = [yaml.safe_load((j / "config_resolved.yaml").read_text())["optim"]["lr"] for j in jobs]
    assert len(set(lrs)) == 3 and all(1e-15 <= lr <= 1e-8 for lr in lrs)
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_params"]["optim.lr"] in lrs


@pytest.mark.slow
def test_a_failing_sweep_point_does_not_stop_the_others(tmp_path):
    keep = sweep_overrides(tiny_dataset(tmp_path / "data"), tmp_path)
    sweep = tmp_path / "sweep"
    done = run_module(
        "fcn_lightning.train", "-m", *keep, "optim.lr=0.01,-1,0.02", "trainer.max_steps=1",
        "trainer.val_check_interval=1", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    failed = (sweep / "1_fcn32s" / "FAILED.txt").read_text()
    assert failed == "optim.lr=-1: must be greater than 0\n"
    for job in ("0_fcn32s", "2_fcn32s"):  # the points before and after it ran to the end
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert not (sweep / job / "FAILED.txt").exists()
    summary = done.stderr[done.stderr.index("error: 1 job(s) of this multirun failed:") :]
    assert summary.splitlines()[1] == "  1_fcn32s: optim.lr=-1: must be greater than 0"
