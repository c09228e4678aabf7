"""A study's runs as results: rows of the four metrics, curves, the paper's numbers, and the
Markdown table and plots written from them (the command line is `fcn_lightning.report.cli`).

Every run (a folder holding ``csv/metrics.csv`` and ``config_resolved.yaml``; staged jobs'
stage runs included) becomes a row with the four metrics of its last validation, beside the
paper's numbers where the study has them (docs/paper.md section 6: VOC seg11valid, and the
other benchmarks' tables, which record fewer columns: a missing one stays blank). A run that
logs more than the four metrics (``val/mean_iu_present``; a further head's
``val/<head>/pixel_acc``, SIFT Flow's geometric accuracy) gets those columns too.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fcn_lightning.errors import FCNError
from fcn_lightning.metrics import LOGGED_SCORES, SCORE_NAMES
from fcn_lightning.run.rundir import STAGES_DIR, RunDir

# The paper's rows (pixel acc, mean acc, mean IU, f.w. IU), keyed by the config value
# that names a row in each study.
PAPER_SKIPS = {
    "fcn32s": ("FCN-32s", 90.5, 76.5, 63.6, 83.5),
    "fcn16s": ("FCN-16s", 91.0, 78.1, 65.0, 84.3),
    "fcn8s_atonce": ("FCN-8s at-once", 91.1, 78.5, 65.4, 84.4),
    "fcn8s_staged": ("FCN-8s staged", 91.2, 77.6, 65.5, 84.5),
    "fcn32s_fixed": ("FCN-32s fixed", 82.9, 64.6, 46.6, 72.3),
    "pool5": ("FCN-pool5", 87.4, 60.5, 50.0, 78.5),
    "pool4": ("FCN-pool4", 78.7, 31.7, 22.4, 67.0),
    "pool3": ("FCN-pool3", 70.9, 13.7, 9.2, 57.6),
}
PAPER_OPTIM = {
    "accum": ("FCN-accum", 86.0, 66.5, 51.9, 76.5),
    "online": ("FCN-online", 89.3, 76.2, 60.7, 81.8),
    "heavy": ("FCN-heavy", 90.5, 76.5, 63.6, 83.5),
}
# The other benchmarks (docs/paper.md section 6 records their mean IU, and SIFT Flow's other
# columns); None: a column the paper's table has but this project does not record.
PAPER_CONTEXT = {
    "fcn32s": ("FCN-32s", None, None, 31.8, None),
    "fcn16s": ("FCN-16s", None, None, 34.8, None),
    "fcn8s_staged": ("FCN-8s", None, None, 35.1, None),
    "fcn8s": ("FCN-8s", None, None, 35.1, None),
}
PAPER_NYUD = {  # keyed by <data.input>/<model.name>
    "color/fcn32s": ("FCN-32s RGB", None, None, 29.2, None),
    "color_depth/fcn32s": ("FCN-32s RGB-D", None, None, 30.5, None),
    "hha/fcn32s": ("FCN-32s HHA", None, None, 24.2, None),
    "color_hha/fcn32s": ("FCN-32s RGB-HHA", None, None, 32.8, None),
    "color_hha/fcn16s_staged": ("FCN-16s RGB-HHA", 65.4, None, 34.0, None),
    "color_hha/fcn16s": ("FCN-16s RGB-HHA", 65.4, None, 34.0, None),
}
PAPER_SIFTFLOW = {
    "fcn16s_staged": ("FCN-16s", 85.2, 51.7, 39.5, 76.1),
    "fcn16s": ("FCN-16s", 85.2, 51.7, 39.5, 76.1),
}
# Paper values of the extra columns, by study and row.
PAPER_EXTRA = {"study_siftflow": {"fcn16s_staged": {"geo/pixel_acc": 94.3},
                                  "fcn16s": {"geo/pixel_acc": 94.3}}}  # fmt: skip
# study (the run's `group`) -> (paper table, config keys naming the row, joined by "/")
STUDIES = {
    "study_skips": (PAPER_SKIPS, ("model.name",)),
    "mini_paper": (PAPER_SKIPS, ("model.name",)),
    "study_optim": (PAPER_OPTIM, ("optim.name",)),
    "study_pascal_context": (PAPER_CONTEXT, ("model.name",)),
    "study_nyud": (PAPER_NYUD, ("data.input", "model.name")),
    "study_siftflow": (PAPER_SIFTFLOW, ("model.name",)),
}
PAPER_SOURCE = {
    "study_pascal_context": "PASCAL-Context, 59 classes + background",
    "study_nyud": "NYUDv2 test, 40 classes",
    "study_siftflow": "SIFT Flow test; geo = the geometric head",
}
# Each key at its first place (the benchmarks reuse the VOC table's net names).
ROW_ORDER = list(dict.fromkeys([*PAPER_SKIPS, *PAPER_OPTIM, *PAPER_CONTEXT, *PAPER_NYUD,
                                *PAPER_SIFTFLOW]))  # fmt: skip
EXTRA_SCORES = tuple(n for n in LOGGED_SCORES if n not in SCORE_NAMES)  # mean_iu_present
EXTRA_ORDER = EXTRA_SCORES  # then the further heads' columns, by name


class ReportError(FCNError):
    """Nothing to report, or records that cannot be read."""


@dataclass
class RunResult:
    name: str
    path: str
    study: str | None
    key: str | None
    step: int
    scores: dict[str, float]
    per_class: dict[str, float]
    curve: list[tuple[int, float]] = field(default_factory=list)
    paper: tuple[str, float | None, float | None, float | None, float | None] | None = None
    # Scores beyond the four (mean_iu_present, "<head>/pixel_acc", ...) and the paper's.
    extra: dict[str, float] = field(default_factory=dict)
    paper_extra: dict[str, float] = field(default_factory=dict)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def read_run(run_dir: Path) -> RunResult | None:
    """The run's last validation, or None when it has not validated yet."""
    rows = []
    for segment in RunDir(run_dir).csv_segments():  # a resumed run's later record wins a step
        with open(segment, newline="") as f:
            rows += list(csv.DictReader(f))
    cfg = OmegaConf.load(RunDir(run_dir).config_file)
    return run_result(rows, cfg, default_name=run_dir.name, path=str(run_dir))


def run_result(
    rows: list[dict], cfg: DictConfig, *, default_name: str, path: str
) -> RunResult | None:
    """A run's result from its logged rows (``step``, ``val/<score>``, ``val_iu/<class>``;
    a later row wins a step) and its resolved config; None before its first validation."""
    by_step: dict[int, dict] = {}
    for row in rows:
        if _float(row.get("val/mean_iu")) is not None:
            by_step[int(row["step"])] = row
    rows = [by_step[step] for step in sorted(by_step)]
    if not rows:
        return None
    study = OmegaConf.select(cfg, "group")
    table, key_paths = STUDIES.get(study, (None, ()))
    parts = [OmegaConf.select(cfg, path) for path in key_paths]
    key = "/".join(map(str, parts)) if parts and None not in parts else None
    last = rows[-1]
    # Lightning logs a validation at the index of the step before it (0-based).
    curve = [(int(r["step"]) + 1, 100 * float(r["val/mean_iu"])) for r in rows]
    per_class = {
        k.split("/", 1)[1]: 100 * v
        for k, value in last.items()
        # the first head's classes: a further head logs val_iu/<head>/<class>
        if k.startswith("val_iu/") and k.count("/") == 1 and (v := _float(value)) is not None
    }
    order = [c for c in _class_order(cfg) if c in per_class]  # the logs sort them by name
    per_class = {**{c: per_class[c] for c in order}, **per_class}
    return RunResult(
        name=str(OmegaConf.select(cfg, "run_name") or default_name),
        path=path,
        study=study,
        key=key,
        step=curve[-1][0],
        scores={
            **{n: 100 * float(last[f"val/{n}"]) for n in SCORE_NAMES},
            **{n: 100 * v for n in EXTRA_SCORES if (v := _float(last.get(f"val/{n}"))) is not None},
        },
        per_class=per_class,
        curve=curve,
        paper=table.get(key) if table and key else None,
        extra=_extra_scores(last),
        paper_extra=PAPER_EXTRA.get(study, {}).get(key, {}),
    )


def _extra_scores(row: dict) -> dict[str, float]:
    """The logged scores beyond the four: ``val/mean_iu_present`` and every further head's
    ``val/<head>/<score>`` (in %)."""
    extra = {}
    for column, value in row.items():
        name = column.removeprefix("val/")
        if column == name or (v := _float(value)) is None or name in SCORE_NAMES:
            continue
        head_score = name.split("/", 1)[-1]
        if name in EXTRA_ORDER or head_score in (*SCORE_NAMES, *EXTRA_ORDER):
            extra[name] = 100 * v
    return extra


def sort_runs(runs: list[RunResult]) -> list[RunResult]:
    """The paper's row order, then by name."""
    order = {key: i for i, key in enumerate(ROW_ORDER)}
    return sorted(runs, key=lambda r: (order.get(r.key, len(order)), r.name))


def find_runs(roots: list[Path]) -> list[RunResult]:
    runs = []
    for root in roots:
        if not root.is_dir():
            raise ReportError(f"{root}: no such directory; give a run or multirun directory")
        found = {}
        for run_dir in sorted({p.parent.parent for p in root.rglob("csv/metrics*.csv")}):
            if RunDir(run_dir).config_file.is_file() and (run := read_run(run_dir)):
                run.path = str(run_dir.relative_to(root))  # the report travels with its table
                found[run_dir] = run
        _continue_stage_curves(found)
        runs += found.values()
    if not runs:
        raise ReportError(
            f"no validated runs under {', '.join(map(str, roots))} (looked for "
            "<run>/csv/metrics.csv with a val/mean_iu row and <run>/config_resolved.yaml)"
        )
    return sort_runs(runs)


def continue_curves(chain: list[RunResult | None]) -> None:
    """Plot the stages of one training as one curve: each run's curve starts where the runs
    before it in ``chain`` ended (their steps summed). Missing stages (None) are skipped."""
    offset = 0
    for run in chain:
        if run is not None:
            run.curve = [(step + offset, value) for step, value in run.curve]
            offset += run.step


def _continue_stage_curves(runs: dict[Path, RunResult]) -> None:
    """A staged job's stages (``<job>/stages/<i>_<variant>``), then the job's own run."""
    stages_of: dict[Path, list[RunDir]] = {d: [] for d in runs if (d / STAGES_DIR).is_dir()}
    for stage in (RunDir(d) for d in runs):
        if stage.is_stage():
            stages_of.setdefault(stage.job().path, []).append(stage)
    for job, stages in stages_of.items():
        chain = sorted(stages, key=RunDir.stage_index)
        continue_curves([*(runs[s.path] for s in chain), runs.get(job)])


def _pct(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.1f}"


def extra_columns(runs: list[RunResult]) -> list[str]:
    """The extra score columns any run has: mean_iu_present first, then the heads'."""
    names = {name for run in runs for name in run.extra}
    return [n for n in EXTRA_ORDER if n in names] + sorted(names - set(EXTRA_ORDER))


def markdown(runs: list[RunResult], title: str) -> str:
    with_paper = any(r.paper for r in runs)
    extra = extra_columns(runs)
    paper_extra = [n for n in extra if any(n in r.paper_extra for r in runs)]
    head = "| run | steps | pixel acc | mean acc | mean IU | f.w. IU |"
    head += "".join(f" {n.replace('_', ' ')} |" for n in extra)
    rule = "|---|---|---|---|---|---|" + "---|" * len(extra)
    if with_paper:
        head += " paper row | pixel acc | mean acc | mean IU | f.w. IU |"
        head += "".join(f" {n.replace('_', ' ')} |" for n in paper_extra)
        rule += "---|---|---|---|---|" + "---|" * len(paper_extra)
    lines = [f"# {title}", "", head, rule]
    for run in runs:
        cells = [run.name, str(run.step), *(_pct(run.scores[n]) for n in SCORE_NAMES)]
        cells += [_pct(run.extra.get(n)) for n in extra]
        if with_paper:
            paper = run.paper or ("", None, None, None, None)
            cells += [paper[0], *(_pct(v) for v in paper[1:])]
            cells += [_pct(run.paper_extra.get(n)) for n in paper_extra]
        lines.append("| " + " | ".join(cells) + " |")
    if with_paper:
        where = {PAPER_SOURCE.get(r.study, "PASCAL VOC seg11valid") for r in runs if r.paper}
        sources = sorted(where)
        lines += ["", f"Paper: {'; '.join(sources)} (docs/paper.md section 6; a blank paper "
                  "cell is a column not recorded there)."]  # fmt: skip
    lines += ["", "![validation mean IU](miou_curves.png)", "", "![per-class IU](per_class_iu.png)"]
    return "\n".join(lines) + "\n"


def plot_curves(runs: list[RunResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for run in runs:
        steps, values = zip(*run.curve, strict=True)
        ax.plot(steps, values, marker="o", markersize=3, label=run.name)
    ax.set_xlabel("iteration (a staged job's stages one after another)")
    ax.set_ylabel("validation mean IU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _class_order(cfg: DictConfig) -> list[str]:
    """The run's class names in class-index order, or [] where its list is not readable."""
    from fcn_lightning.data.splits import load_class_names
    from fcn_lightning.errors import FCNError

    classes = OmegaConf.select(cfg, "data.classes")
    try:
        return list(load_class_names(str(classes))) if classes is not None else []
    except (FCNError, OSError):
        return []


def plot_per_class(runs: list[RunResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(dict.fromkeys(c for run in runs for c in run.per_class))
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(7, 0.6 * len(classes) * max(1, len(runs) / 3)), 4.5))
    for i, run in enumerate(runs):
        xs = [c + (i - (len(runs) - 1) / 2) * width for c in range(len(classes))]
        ax.bar(xs, [run.per_class.get(c, 0.0) for c in classes], width, label=run.name)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_ylabel("IU (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(runs: list[RunResult], out: Path, title: str) -> list[RunResult]:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(runs, title)
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(json.dumps([asdict(r) for r in runs], indent=2))
    plot_curves(runs, out / "miou_curves.png")
    plot_per_class(runs, out / "per_class_iu.png")
    print(text)
    print(f"wrote {out / 'report.md'}, report.json, miou_curves.png, per_class_iu.png")
    return runs
