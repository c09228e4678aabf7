"""SLURM through hydra-submitit-launcher (``hydra/launcher=slurm`` or ``slurm_cpu``).

Two things the plugin does not do: size a job's tasks from the trainer (the
``${slurm_tasks:...}`` resolver: Lightning takes the DDP ranks from srun, one task per
device), and turn a job that sbatch refuses (a partition that does not exist, more memory
or GPUs than a node has) into one ``error:`` line naming the launcher key to change, exit
status 2, instead of a traceback. What a job does on a preemption or time-limit warning is
the run's own business (fcn_lightning/run/signals.py): it saves last.ckpt, submitit
requeues it, and the requeued job resumes by itself (``ckpt_path=auto``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as SubmititSlurmLauncher,
    )
except ImportError:  # the optional extra (pip install -e ".[slurm]"): without it the preset
    SubmititSlurmLauncher = object  # does not compose, so this class is never built

TASKS_RESOLVER = "slurm_tasks"
# The plugin's logger: the submission's lines look as they always did.
log = logging.getLogger("hydra_plugins.hydra_submitit_launcher.submitit_launcher")


def tasks_per_node(devices: Any = 1, gpus_per_node: Any = None) -> int:
    """SLURM tasks per node for ``trainer.devices``: one per device Lightning trains on.

    A count is itself, a list of device ids (or ``"0,1"``) its length; ``-1`` and
    ``"auto"`` mean every device of the node, which in a SLURM job is the GPUs it booked
    (``gpus_per_node``; one task without GPUs: Lightning's CPU ``auto`` is one device).
    """
    if OmegaConf.is_config(devices):
        devices = OmegaConf.to_container(devices)
    if isinstance(devices, list | tuple):
        return max(1, len(devices))
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return max(1, len([d for d in text.split(",") if d.strip()]))
        devices = int(text) if text.lstrip("-").isdigit() else -1
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return devices
    return max(1, int(gpus_per_node or 0))


def register_resolvers() -> None:
    if not OmegaConf.has_resolver(TASKS_RESOLVER):
        OmegaConf.register_new_resolver(TASKS_RESOLVER, tasks_per_node)


# What sbatch's refusals are about: (words in its message, the launcher key, what to do).
# The first match wins, so the more specific come first ("account/partition combination"
# is about the account).
REFUSALS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("account",),
        "account",
        "name an account you may charge (`sacctmgr show associations user=$USER` lists them)",
    ),
    (("qos",), "qos", "name a QOS of your account (`sacctmgr show qos` lists them)"),
    (
        ("partition",),
        "partition",
        "name a partition the cluster has (`sinfo -s` lists them), or null for its default",
    ),
    (
        ("memory",),
        "mem_gb",
        "ask for at most the memory of one node of the partition (`sinfo -o '%P %m'` lists "
        "it in MB)",
    ),
    (
        ("gres", "gpu"),
        "gpus_per_node",
        "the partition's nodes have no such GPUs (`sinfo -o '%P %G'` lists them): choose a GPU "
        "partition with hydra.launcher.partition, or train on CPUs with "
        "hydra/launcher=slurm_cpu trainer=cpu",
    ),
    (
        ("time limit",),
        "timeout_min",
        "ask for at most the partition's time limit (`sinfo -o '%P %l'`); a longer run is "
        "requeued at its limit and resumes (hydra.launcher.max_num_timeout)",
    ),
    (
        ("processors", "cpu"),
        "cpus_per_task",
        "ask for at most the CPUs of one node (`sinfo -o '%P %c'`), counting "
        "cpus_per_task x tasks_per_node",
    ),
    (("node count",), "nodes", "ask for at most the nodes of the partition (`sinfo -s`)"),
    (("feature",), "constraint", "name features the nodes have (`sinfo -o '%P %f'`)"),
)
GENERIC_ADVICE = (
    "check the resources the job asks for (hydra.launcher.*: partition, gpus_per_node, "
    "cpus_per_task, mem_gb, timeout_min) against what `sinfo` lists for the partition"
)


def sbatch_message(stderr: str) -> str:
    """sbatch's reason, from its stderr: the first error line, without the prefixes."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line] or lines
    if not errors:
        return "(no message)"
    message = errors[0].split("error:", 1)[-1].strip()
    return message.removeprefix("Batch job submission failed:").strip()


def refusal_line(message: str, params: dict[str, Any]) -> str:
    """The ``error:`` line (without ``error: ``) for a job sbatch refused with `message`."""
    lowered = message.lower()
    for words, key, advice in REFUSALS:
        if any(word in lowered for word in words):
            if key == "gpus_per_node" and params.get("gres") and not params.get(key):
                key = "gres"
            keys = [key]
            if key == "cpus_per_task":  # a job's CPUs: per task, tasks per node, nodes
                keys += [k for k in ("tasks_per_node", "nodes") if (params.get(k) or 1) > 1]
            named = " x ".join(f"hydra.launcher.{k}={params.get(k)}" for k in keys)
            return f"{named}: sbatch refused the job: {message}; {advice}"
    return f"hydra.launcher: sbatch refused the job: {message}; {GENERIC_ADVICE}"


@contextlib.contextmanager
def submission_errors(params: dict[str, Any], preset: str = "slurm") -> Iterator[None]:
    """Around submitting: sbatch's refusal (or no SLURM at all) as one ``error:`` line and
    exit status 2; `preset` is the ``hydra/launcher`` choice, for the message.

    submitit prints sbatch's stderr itself before raising it; that copy is held back (and
    shown only if something else goes wrong), so the error line is the only one.
    """
    from submitit.core.utils import FailedJobError

    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    except FailedJobError as error:
        print(f"error: {refusal_line(sbatch_message(str(error)), params)}", file=sys.stderr)
        raise SystemExit(2) from None
    except RuntimeError as error:
        if "srun" not in str(error):
            sys.stderr.write(held.getvalue())
            raise
        print(
            f"error: hydra/launcher={preset}: no SLURM on this machine (srun not found); "
            "submit from a login node of the cluster, or leave hydra/launcher out to run here",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise
    sys.stderr.write(held.getvalue())


class SlurmLauncher(SubmititSlurmLauncher):  # type: ignore[misc,valid-type]
    """hydra-submitit-launcher's SLURM launcher, with sbatch's refusals as `error:` lines.

    `launch` is the plugin's (1.2.0), split in two so that only the submission is inside
    `submission_errors`: the wait for results, hours long, keeps its stderr and its
    errors (a job's own failure is the job's, not a refusal).
    """

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        assert self.config is not None
        preset = self.config.hydra.runtime.choices.get("hydra/launcher", "slurm")
        with submission_errors(self.params, preset):
            jobs = self._submit(job_overrides, initial_job_idx)
        return [job.results()[0] for job in jobs]

    def _submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        assert self.config is not None and len(job_overrides) > 0
        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=self.params["submitit_folder"],
            **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]},
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                key if key in base else f"{self._EXECUTOR}_{key}": value
                for key, value in self.params.items()
                if key not in init_keys
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            sweep_dir.chmod(int(str(self.config.hydra.sweep.mode), 8))
        state = Singleton.get_state()
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state))
        return executor.map_array(self, *zip(*job_params, strict=True))


register_resolvers()
