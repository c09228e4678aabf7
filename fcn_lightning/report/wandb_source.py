"""W&B as a source for `fcn_lightning.report.results`: the same table and plots from a project's
runs, e.g. a sweep that ran on a cluster whose disks you cannot read.

    python -m fcn_lightning.report --wandb ENTITY/PROJECT --group study_skips

Each W&B run holds what the CSV record holds (our `WandbLogger` logs ``val/<score>`` and
``val_iu/<class>`` with ``trainer/global_step``, and the resolved config under
``config``), so a run becomes the same `RunResult`. A staged job's stages are the runs
named ``<job>/<variant>``; their curves are drawn one after another, as from disk.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from fcn_lightning.report.results import (
    ReportError,
    RunResult,
    continue_curves,
    run_result,
    sort_runs,
)

STEP_KEY = "trainer/global_step"


def _history(run) -> list[dict]:
    """The run's logged rows with a ``step`` (Lightning's global step) as the CSV has."""
    return [
        {**row, "step": row[STEP_KEY]}
        for row in run.scan_history()
        if row.get(STEP_KEY) is not None
    ]


def _continue_stage_curves(runs: list[RunResult], stages_of: dict[str, list[str]]) -> None:
    """A staged job's stage runs (``<job>/<variant>``), then the job's own run."""
    by_name = {run.name: run for run in runs}
    for job, variants in stages_of.items():
        continue_curves([*(by_name.get(f"{job}/{v}") for v in variants), by_name.get(job)])


def wandb_runs(project: str, group: str | None = None, api=None) -> list[RunResult]:
    """Every validated run of ``project`` (``entity/project``), or of one group of it."""
    if api is None:
        import wandb

        try:
            api = wandb.Api(timeout=60)
        except Exception as error:  # no credentials, no network: wandb raises several kinds
            raise ReportError(
                f"--wandb {project}: cannot reach W&B ({error}); run `wandb login`, or report "
                "from the local run directories instead"
            ) from None
    filters = {"group": group} if group else {}
    try:
        found = list(api.runs(project, filters=filters))
    except Exception as error:
        raise ReportError(f"--wandb {project}: cannot list its runs ({error})") from None
    runs, stages_of = [], {}
    for wandb_run in found:
        cfg = OmegaConf.create(dict(wandb_run.config).get("config") or {})
        if OmegaConf.select(cfg, "task_name", default="train") != "train":
            continue
        stages = OmegaConf.select(cfg, "model.init_stages")
        if stages:
            stages_of[str(cfg.run_name)] = list(stages)
        path = getattr(wandb_run, "url", None) or f"{project}/{wandb_run.id}"
        result = run_result(_history(wandb_run), cfg, default_name=wandb_run.name, path=path)
        if result is not None:
            runs.append(result)
    if not runs:
        where = f"group {group!r} of {project}" if group else project
        raise ReportError(f"--wandb {project}: no validated training runs in {where}")
    _continue_stage_curves(runs, stages_of)
    return sort_runs(runs)
