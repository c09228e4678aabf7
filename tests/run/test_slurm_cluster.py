"""The test SLURM cluster itself: batch jobs run, steps get their tasks, and a USR2 warning
followed by ``scontrol requeue`` reruns the job, the way submitit requeues on preemption or
time limit. If these fail, the launcher tests that rely on the cluster cannot be trusted."""

from __future__ import annotations

import time
from pathlib import Path

from tests.slurm_cluster import SlurmCluster

# The `slurm_cluster` fixture comes from tests/conftest.py (pytest_plugins).


def _wait_for_file(path: Path, cluster: SlurmCluster, job_id: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        state = cluster.job_state(job_id)
        assert time.monotonic() < deadline, f"{path} not written; job {job_id} is {state}"
        assert state in {"PENDING", "CONFIGURING", "RUNNING", ""}, f"job {job_id} is {state}"
        time.sleep(0.1)


def test_batch_job_runs_and_writes_its_file(slurm_cluster: SlurmCluster, tmp_path: Path):
    out = tmp_path / "out.txt"
    script = f'#!/bin/bash\necho "job $SLURM_JOB_ID on $SLURMD_NODENAME" > {out}\n'
    job = slurm_cluster.sbatch(script, "--wait")  # returns once the job has finished
    assert slurm_cluster.wait_job(job, timeout=10) == "COMPLETED"
    assert out.read_text() == f"job {job} on {slurm_cluster.node}\n"


def test_srun_runs_two_tasks(slurm_cluster: SlurmCluster):
    r = slurm_cluster.run(["srun", "-n", "2", "bash", "-c", "echo task $SLURM_PROCID"], timeout=30)
    assert sorted(r.stdout.splitlines()) == ["task 0", "task 1"]


def test_usr2_then_scontrol_requeue_reruns_the_job(slurm_cluster: SlurmCluster, tmp_path: Path):
    """As submitit does: the job's work runs as an srun step (a plain ``scancel --signal``
    reaches steps, not the batch shell), traps USR2 and requeues its own job; the second
    run sees SLURM_RESTART_COUNT=1."""
    log, started = tmp_path / "runs.log", tmp_path / "started"
    step = f"""
echo "run ${{SLURM_RESTART_COUNT:-0}}" >> {log}
if [ "${{SLURM_RESTART_COUNT:-0}}" -ge 1 ]; then exit 0; fi
trap 'echo USR2 >> {log}; scontrol requeue $SLURM_JOB_ID; exit 0' USR2
touch {started}
while true; do sleep 0.2 & wait $!; done
"""
    (tmp_path / "step.sh").write_text(step)
    job = slurm_cluster.sbatch(f"#!/bin/bash\nsrun bash {tmp_path / 'step.sh'}\n", "--time=2")
    try:
        _wait_for_file(started, slurm_cluster, job)
        slurm_cluster.run(["scancel", "--signal=USR2", job])
        assert slurm_cluster.wait_job(job, timeout=25) == "COMPLETED"
    finally:
        slurm_cluster.run(["scancel", job], check=False)
    assert log.read_text().splitlines() == ["run 0", "USR2", "run 1"]
    assert slurm_cluster.job_info(job)["Restarts"] == "1"
