"""hydra/launcher=slurm and slurm_cpu against a real single-node SLURM (tests/slurm_cluster.py):
a sweep runs as one array job; a USR2 warning saves last.ckpt, submitit requeues the job and
the requeued job resumes exactly; a DDP job takes its two ranks from srun and writes its run
once; a job that sbatch refuses ends as one `error:` line naming the key, exit status 2.

The launcher runs as a user runs it, in a subprocess with the cluster's SLURM_CONF; submitit
starts each job with this interpreter (sys.executable) and the job inherits PYTHONPATH.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from fcn_lightning.run.lifecycle import RunLifecycle
from fcn_lightning.run.rundir import RunDir
from fcn_lightning.run.slurm import (
    refusal_line,
    sbatch_message,
    submission_errors,
    tasks_per_node,
)
from fcn_lightning.train import train
from tests.slurm_cluster import SlurmCluster
from tests.train_helpers import CONF, ROOT, compose_train, sweep_overrides

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

# What one job books on the test node (2 CPUs, no GPUs).
CPU_JOB = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
           "hydra.launcher.timeout_min=10"]  # fmt: skip
# Deterministic CPU training long enough to be stopped: validations at steps 5, 10, 15.
LONG = ["trainer.max_steps=15", "trainer.val_check_interval=5", "trainer.deterministic=true"]
TARGET = "hydra_plugins.fcn_lightning_slurm.fcn_lightning_slurm.SlurmLauncher"
# Seconds a whole multirun may take on a busy 2-core machine (each process imports torch).
LAUNCH_TIMEOUT = 300


class WaitForSignal(pl.Callback):
    """In the first run of a SLURM job (not after a requeue): in the middle of training step
    `step`, write the job's id to `marker` and wait there until the run has caught a stop
    signal, so the signal lands mid-step at a known step however slow the machine is."""

    def __init__(self, step: int, marker: str, timeout_s: float = 240):
        self.step, self.marker, self.timeout_s = step, Path(marker), timeout_s

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step != self.step or os.environ.get("SLURM_RESTART_COUNT", "0") != "0":
            return
        lifecycle = next(c for c in trainer.callbacks if isinstance(c, RunLifecycle))
        array = os.environ.get("SLURM_ARRAY_JOB_ID")  # submitit's id: <array>_<task>
        job = (
            f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
        )
        self.marker.write_text(job)
        deadline = time.monotonic() + self.timeout_s
        while lifecycle.signals.received is None and time.monotonic() < deadline:
            time.sleep(0.05)


def launcher_env(cluster: SlurmCluster) -> dict[str, str]:
    paths = [str(ROOT), *filter(None, [cluster.env.get("PYTHONPATH")])]
    return {**cluster.env, "PYTHONPATH": os.pathsep.join(paths),
            "WANDB_MODE": "offline", "WANDB_SILENT": "true"}  # fmt: skip


def multirun(
    cluster: SlurmCluster, data_dir: Path, sweep: Path, *extra: str, launcher: str = "slurm_cpu"
) -> list[str]:
    return [
        sys.executable, "-m", "fcn_lightning.train", "-m", f"hydra/launcher={launcher}",
        *sweep_overrides(data_dir, sweep.parent), *CPU_JOB, f"hydra.sweep.dir={sweep}", *extra,
    ]  # fmt: skip


def launch(cluster: SlurmCluster, data_dir: Path, sweep: Path, *extra: str, **kw: str):
    try:
        return subprocess.run(
            multirun(cluster, data_dir, sweep, *extra, **kw), cwd=sweep.parent,
            env=launcher_env(cluster), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT,
        )  # fmt: skip
    finally:
        settle(cluster)


def settle(cluster: SlurmCluster, timeout: float = 30) -> None:
    """Let the jobs end (the launcher returns once their results are written, before their
    processes have exited), then cancel what is left: it would hold the node's CPUs."""
    deadline = time.monotonic() + timeout
    while cluster.run(["squeue", "-h"]).stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.2)
    cluster.cancel_all()


def runs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def last(run: Path) -> dict:
    return torch.load(RunDir(run).last_checkpoint, weights_only=True)


def job_log(sweep: Path, job: str, task: int = 0, kind: str = "out") -> str:
    """What task `task` of submitit job `job` printed (stdout: out, stderr: err)."""
    return (sweep / ".submitit" / job / f"{job}_{task}_log.{kind}").read_text()


def job_folders(sweep: Path) -> list[Path]:
    return sorted(p for p in (sweep / ".submitit").iterdir() if p.is_dir())


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# Sizing a job from the trainer, and the presets (no cluster needed).


@pytest.mark.parametrize(
    ("devices", "gpus", "tasks"),
    [(1, 1, 1), (2, None, 2), ([0, 1, 2], 4, 3), ("0,1", 4, 2), ("2", None, 2), (-1, 4, 4),
     ("auto", 8, 8), ("auto", None, 1), (-1, 0, 1), (None, None, 1)],
)  # fmt: skip
def test_tasks_per_node_follow_the_trainers_devices(devices, gpus, tasks):
    assert tasks_per_node(devices, gpus) == tasks


def test_the_presets_size_the_job_from_the_trainer_and_keep_requeueing():
    from hydra import compose, initialize_config_dir

    gpu = ["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2",
           "hydra.launcher.gpus_per_node=4"]  # fmt: skip
    cpu = ["hydra/launcher=slurm_cpu", "trainer=ddp_cpu"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        gpu, cpu = (compose("train", o, return_hydra_config=True) for o in (gpu, cpu))
    for cfg, (nodes, tasks, gpus) in ((gpu, (2, 4, 4)), (cpu, (1, 2, None))):
        launcher = cfg.hydra.launcher
        assert launcher._target_ == TARGET
        sizes = (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node)
        assert sizes == (nodes, tasks, gpus)
        assert (launcher.signal_delay_s, launcher.max_num_timeout) == (120, 3)


def test_a_refusal_is_the_only_line_and_exit_2_and_other_errors_pass_through(capsys):
    from submitit.core.utils import FailedJobError

    stderr = "sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job ..."
    with pytest.raises(SystemExit) as refused, submission_errors({"partition": "gpu"}):
        print(stderr, file=sys.stderr)  # as submitit does before raising
        raise FailedJobError(stderr)
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: hydra.launcher.partition=gpu: sbatch refused the job: invalid partition "
        "specified: gpu; name a partition the cluster has (`sinfo -s` lists them), or null "
        "for its default"
    ]
    with pytest.raises(SystemExit), submission_errors({}, "slurm_cpu"):
        raise RuntimeError('Could not detect "srun", are you indeed on a slurm cluster?')
    assert capsys.readouterr().err.startswith("error: hydra/launcher=slurm_cpu: no SLURM ")
    with pytest.raises(OSError, match="disk full"), submission_errors({}):
        print("what submitit said", file=sys.stderr)
        raise OSError("disk full")
    assert capsys.readouterr().err == "what submitit said\n"  # held back, then shown
    with submission_errors({}):
        print("a warning", file=sys.stderr)
    assert capsys.readouterr().err == "a warning\n"


# Against the cluster.


@pytest.mark.slow
def test_a_sweep_is_one_array_job_and_a_point_warned_with_usr2_requeues_and_resumes_exactly(
    slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path
):
    """Two points of one sweep, the same training: point 0 gets SLURM's time-limit warning
    (USR2) in the middle of step 7 and is requeued, point 1 runs through. Both end with the
    weights of the same training run here without SLURM."""
    sweep, marker = tmp_path / "sweep", tmp_path / "waiting"
    wait = [f"+callbacks.wait._target_={__name__}.WaitForSignal", "+callbacks.wait.step=6,-1",
            f"+callbacks.wait.marker={marker}"]  # fmt: skip
    launcher = subprocess.Popen(
        multirun(slurm_cluster, data_dir, sweep, *LONG, "trainer.log_every_n_steps=1", *wait),
        cwd=tmp_path, env=launcher_env(slurm_cluster), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Meanwhile, here: the same training without SLURM.
        whole = tmp_path / "whole"
        train(compose_train(data_dir, whole, *LONG))
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while not marker.exists():
            assert launcher.poll() is None, launcher.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "point 0 did not reach step 7"
            time.sleep(0.2)
        job = marker.read_text()  # point 0: <array job>_0
        slurm_cluster.run(["scancel", "--signal=USR2", job])
        while slurm_cluster.job_info(job).get("Restarts") != "1":  # requeued: what it left
            assert launcher.poll() is None, launcher.communicate()[1][-3000:]
            time.sleep(0.1)
        run = next(sweep.glob("0_*"))
        left = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
        stopped_at = last(run)["global_step"]
        _, stderr = launcher.communicate(timeout=LAUNCH_TIMEOUT)
        array = job.split("_")[0]
        states = [slurm_cluster.wait_job(f"{array}_{i}", timeout=60) for i in (0, 1)]
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        slurm_cluster.cancel_all()
    assert launcher.returncode == 0, stderr[-3000:]
    assert states == ["COMPLETED", "COMPLETED"]
    submission = (sweep / ".submitit" / array / f"{array}_submission.sh").read_text()
    assert "#SBATCH --array=0-1%2" in submission  # one array job, both points at once
    assert f"{sys.executable} -u -m submitit.core._submit" in submission
    assert [slurm_cluster.job_info(f"{array}_{i}")["Restarts"] for i in (0, 1)] == ["1", "0"]

    # What USR2 left: last.ckpt of the step reached (global_step 6 was the step in progress:
    # it was finished, then saved), not of the last validation (5), whose best checkpoint
    # stays.
    assert stopped_at == 7
    best = [p for p in left if p.startswith("checkpoints/step")]
    assert len(best) == 1 and best[0].startswith("checkpoints/step000005-"), left
    assert [p for p in left if not p.startswith((".hydra/", "samples/", *best))] == [
        ".lock", "checkpoints/last.ckpt", "config_resolved.yaml", "csv/hparams.yaml",
        "csv/metrics.csv", "train.log",
    ]  # fmt: skip
    # Then submitit requeued it, and the requeued job resumed there by itself.
    log = job_log(sweep, job)  # both runs: submitit appends
    assert "received SIGUSR2" in log
    assert f"saved {RunDir(run).last_checkpoint} at step 7" in log
    assert f"Requeued job {job}" in log
    assert f"resuming {RunDir(run).last_checkpoint} at step 7" in log
    first, second = RunDir(run).csv_segments()
    assert (first.name, second.name) == ("metrics.0.csv", "metrics.csv")
    steps = [[int(r["step"]) for r in rows(p) if r.get("train/loss")] for p in (first, second)]
    assert steps == [list(range(7)), list(range(7, 15))]

    points = runs(sweep)
    assert [p.name.split("_")[0] for p in points] == ["0", "1"]
    assert "received SIG" not in job_log(sweep, f"{array}_1")
    for point in points:
        assert last(point)["global_step"] == 15
        for name, tensor in last(whole)["state_dict"].items():
            assert torch.equal(last(point)["state_dict"][name], tensor), (point.name, name)
        assert (point / "metrics.md").read_text() == (whole / "metrics.md").read_text()
        assert len(RunDir(point).best_checkpoints()) == 1


@pytest.mark.slow
def test_a_ddp_job_runs_one_rank_per_slurm_task_and_writes_its_run_once(
    slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path
):
    sweep = tmp_path / "sweep"
    # trainer=ddp_cpu has devices=2: the preset asks for 2 tasks, Lightning reads srun's ranks.
    done = launch(slurm_cluster, data_dir, sweep, "trainer=ddp_cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    (job,) = job_folders(sweep)
    assert "#SBATCH --ntasks-per-node=2" in (job / f"{job.name}_submission.sh").read_text()
    for rank in (0, 1):  # two srun tasks, each its own process and rank of one world
        out, err = (job_log(sweep, job.name, rank, kind) for kind in ("out", "err"))
        assert f"local_rank={rank}(2), node=0(1), global_rank={rank}(2)" in out
        assert f"Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in err
        assert ("run directory: " in out) == (rank == 0)  # the final report: rank 0's
    (run,) = runs(sweep)
    assert last(run)["global_step"] == 2
    assert len(RunDir(run).best_checkpoints()) == 1
    assert [p.name for p in RunDir(run).csv_segments()] == ["metrics.csv"]
    validations = [r for r in rows(run / "csv" / "metrics.csv") if r.get("val/mean_iu")]
    assert len(validations) == 1  # rank 0 alone writes the record
    assert (run / "metrics.md").read_text().startswith("step 2\n")


def _refused(cluster: SlurmCluster, tmp_path: Path, *args: str) -> str:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    done = cluster.run(["sbatch", *args, str(script)], check=False, cwd=tmp_path)
    assert done.returncode != 0, f"sbatch {' '.join(args)} was not refused"
    return done.stderr


@pytest.mark.parametrize(
    ("args", "params", "named"),
    [
        (["--partition=nope"], {"partition": "nope"}, "hydra.launcher.partition=nope:"),
        (["--mem=100000G"], {"mem_gb": 100000}, "hydra.launcher.mem_gb=100000:"),
        (["--gpus-per-node=1"], {"gpus_per_node": 1}, "hydra.launcher.gpus_per_node=1:"),
        (["--time=4320"], {"timeout_min": 4320}, "hydra.launcher.timeout_min=4320:"),
        (["--cpus-per-task=64"], {"cpus_per_task": 64}, "hydra.launcher.cpus_per_task=64:"),
        (["--ntasks-per-node=8", "--cpus-per-task=1"], {"cpus_per_task": 1, "tasks_per_node": 8},
         "hydra.launcher.cpus_per_task=1 x hydra.launcher.tasks_per_node=8:"),
    ],
)  # fmt: skip
def test_each_sbatch_refusal_names_its_launcher_key(
    slurm_cluster: SlurmCluster, tmp_path: Path, args, params, named
):
    message = sbatch_message(_refused(slurm_cluster, tmp_path, *args))
    line = refusal_line(message, params)
    assert line.startswith(f"{named} sbatch refused the job: {message}; "), line


@pytest.mark.slow
def test_a_job_sbatch_refuses_is_one_error_line_and_exit_2(
    slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path
):
    # The GPU preset on a cluster without GPUs: the mistake a CPU cluster's user makes first.
    done = launch(slurm_cluster, data_dir, tmp_path / "sweep", launcher="slurm")
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines() == [
        "error: hydra.launcher.gpus_per_node=1: sbatch refused the job: Invalid generic "
        "resource (gres) specification; the partition's nodes have no such GPUs (`sinfo -o "
        "'%P %G'` lists them): choose a GPU partition with hydra.launcher.partition, or train "
        "on CPUs with hydra/launcher=slurm_cpu trainer=cpu"
    ]
    assert slurm_cluster.run(["squeue", "-h"]).stdout == ""
