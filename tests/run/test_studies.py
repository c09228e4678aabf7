"""The paper's studies: every preset sweeps what it says, staged training in one job, and
the report's table and plots from the runs' CSV records. Plumbing only: a step or two of
tiny nets, never the numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from fcn_lightning.report.cli import main as report_main
from fcn_lightning.report.results import PAPER_SKIPS
from fcn_lightning.report.results import STUDIES as STUDIES_OF_REPORT
from fcn_lightning.train import train
from tests.data_fakes import (
    fake_ids,
    write_nyud_tree,
    write_pascal_context_tree,
    write_siftflow_tree,
)
from tests.train_helpers import ROOT, compose_train, run_in_process, run_module, sweep_overrides

# study -> the run names its sweep must produce (job dirs are <n>_<run_name>)
STUDIES = {
    "study_skips": ["fcn8s_staged", "fcn8s_atonce", "fcn32s_fixed", "pool5", "pool4", "pool3"],
    "mini_paper": ["fcn8s_staged", "fcn8s_atonce", "fcn32s_fixed", "pool5", "pool4", "pool3"],
    "study_optim": ["accum", "online", "heavy"],
    "study_loss_sampling": ["p1.0", "p0.5", "p0.25"],
    "study_class_balance": ["balance_None", "balance_median_frequency"],
    "study_augmentation": [
        "flip_False_jitter_0", "flip_False_jitter_32", "flip_True_jitter_0", "flip_True_jitter_32"
    ],
    "study_upsampling": ["fixed", "learned"],
    "study_weights": ["caffe", "torchvision"],
    "study_geometry": ["caffe", "aligned"],
}  # fmt: skip


# The other benchmarks' tables, on fake trees in their archives' layouts:
# study -> (the tree's writer, data_dir -> None; the run names its sweep must produce).
BENCHMARK_STUDIES = {
    "study_pascal_context": (
        lambda d: write_pascal_context_tree(d, fake_ids(0, 3), fake_ids(3, 2), size=(32, 40)),
        ["fcn8s_staged"],
    ),
    "study_nyud": (
        lambda d: write_nyud_tree(d, size=(32, 40)),
        ["color_fcn32s", "hha_fcn32s", "color_depth_fcn32s", "color_hha_fcn32s",
         "color_hha_fcn16s_staged"],
    ),
    "study_siftflow": (lambda d: write_siftflow_tree(d, size=(32, 32)), ["fcn16s_staged"]),
}  # fmt: skip


def test_every_study_preset_is_tested():
    # Presets that run one configuration rather than sweep a study.
    single = {"quickstart", "fcn_alexnet"}
    presets = {p.stem for p in (ROOT / "experiments").glob("*.yaml")} - single
    assert presets == set(STUDIES) | set(BENCHMARK_STUDIES)


@pytest.mark.slow
@pytest.mark.parametrize("study", sorted(BENCHMARK_STUDIES))
def test_benchmark_study_sweeps_its_table_and_reports_the_papers_numbers(
    study, tmp_path, monkeypatch, capfd
):
    write_tree, names = BENCHMARK_STUDIES[study]
    data_dir = tmp_path / "data"
    write_tree(data_dir)
    sweep = tmp_path / "sweep"
    done = run_in_process(
        "fcn_lightning.train", "-m", f"experiment={study}", f"paths.data_dir={data_dir}",
        "data.expected_counts=null", "model.width=0.03125", "model.pretrained=false",
        "trainer=cpu", "trainer.max_steps=1", "trainer.val_check_interval=1",
        "+trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0", "logger=csv",
        "data.num_workers=0", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(
        (p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0])
    )
    assert [p.name.split("_", 1)[1] for p in jobs] == names
    for job in jobs:
        cfg = OmegaConf.load(job / "config_resolved.yaml")
        assert cfg.group == study and cfg.data.name == study.removeprefix("study_")
        assert (job / "checkpoints" / "last.ckpt").is_file(), job
    out = tmp_path / "report"
    assert report_main([str(sweep), "--out", str(out)]) == 0
    table = (out / "report.md").read_text()
    paper = STUDIES_OF_REPORT[study][0]
    for label, *_, miu, _ in paper.values():
        assert label in table and f"{miu:.1f}" in table, (label, miu)


@pytest.mark.slow
@pytest.mark.parametrize("study", sorted(STUDIES))
def test_study_runs_its_whole_sweep(study, data_dir, tmp_path, monkeypatch, capfd):
    # Command-line values win over a sweep's: leave out the tiny settings the study sweeps
    # (and the normalisation, which follows the swept weights).
    swept = set(OmegaConf.load(ROOT / "experiments" / f"{study}.yaml").hydra.sweeper.params)
    swept |= {"data.normalization"} if "model.weights" in swept else set()
    keep = sweep_overrides(data_dir, tmp_path, leave_out=swept)
    sweep = tmp_path / "sweep"
    # In this process (Hydra's basic launcher runs the jobs one after another in one
    # process either way); the `python -m` multirun is test_launchers.py's.
    done = run_in_process(
        "fcn_lightning.train", "-m", f"experiment={study}", *keep, "trainer.max_steps=1",
        "trainer.val_check_interval=1", "data.batch_size=1", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path, monkeypatch=monkeypatch, capfd=capfd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(
        (p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0])
    )
    assert [p.name.split("_", 1)[1] for p in jobs] == STUDIES[study]
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file(), job
        cfg = OmegaConf.load(job / "config_resolved.yaml")
        assert cfg.group == study
    if study == "study_weights":  # the normalisation follows the weights
        norms = [OmegaConf.load(j / "config_resolved.yaml").data.normalization for j in jobs]
        assert norms == ["caffe", "torchvision"]
    # The report reads the sweep it produced.
    assert report_main([str(sweep), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").is_file()


def test_staged_fcn8s_trains_its_stages_in_one_job_and_resumes_them(data_dir, tmp_path):
    run = tmp_path / "run"
    train(compose_train(data_dir, run, "row=fcn8s_staged", "optim.lr=0.05"))
    stages = run / "stages"
    assert sorted(p.name for p in stages.iterdir()) == ["0_fcn32s", "1_fcn16s"]
    first_cfg = OmegaConf.load(stages / "0_fcn32s" / "config_resolved.yaml")
    second_cfg = OmegaConf.load(stages / "1_fcn16s" / "config_resolved.yaml")
    first, second = first_cfg.model, second_cfg.model
    final = OmegaConf.load(run / "config_resolved.yaml").model
    # Each stage's own reference lr, from the recipe's table.
    assert (first.variant, first.init_from, first_cfg.recipe.paper_lr) == ("fcn32s", None, 1e-10)
    assert (second.variant, second_cfg.recipe.paper_lr) == ("fcn16s", 1e-12)
    assert Path(second.init_from).parent == stages / "0_fcn32s" / "checkpoints"
    assert final.variant == "fcn8s" and Path(final.init_from).parent.parent == stages / "1_fcn16s"
    # (init_from_checkpoint itself is tested in test_staged.py.) The stages trained:
    # their score layers start at zero.
    stage_sd = torch.load(final.init_from, weights_only=True)["state_dict"]
    assert stage_sd["model.score_fr.weight"].abs().sum() > 0
    # The job restarted (as after dying in its last stage): finished stages are not
    # trained again, the last stage starts over from the same FCN-16s checkpoint.
    before = {p.name: _last(p) for p in stages.iterdir()}
    train(compose_train(data_dir, run, "row=fcn8s_staged", "optim.lr=0.05"))
    for stage in stages.iterdir():
        assert _last(stage)["global_step"] == before[stage.name]["global_step"] == 2
        for name, tensor in before[stage.name]["state_dict"].items():
            assert torch.equal(_last(stage)["state_dict"][name], tensor), name
    assert OmegaConf.load(run / "config_resolved.yaml").model.init_from == final.init_from


@pytest.mark.slow
def test_staged_fcn8s_under_ddp_chains_its_stages_on_every_rank(data_dir, tmp_path):
    """Two gloo ranks (Lightning relaunches the command for rank 1): both ranks start each
    stage from the same previous-stage checkpoint, one set of files is written, and a
    restarted job trains none of the finished stages again."""
    run = tmp_path / "run"
    overrides = [o for o in sweep_overrides(data_dir, tmp_path) if o != "trainer=cpu"]
    command = ("fcn_lightning.train", *overrides, f"hydra.run.dir={run}", "trainer=ddp_cpu",
               "row=fcn8s_staged", "optim.lr=0.05", "trainer.max_steps=2")  # fmt: skip
    done = run_module(*command, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    stages = run / "stages"
    assert sorted(p.name for p in stages.iterdir()) == ["0_fcn32s", "1_fcn16s"]
    chain = [OmegaConf.load(d / "config_resolved.yaml").model.init_from
             for d in (stages / "0_fcn32s", stages / "1_fcn16s", run)]  # fmt: skip
    assert chain[0] is None
    assert Path(chain[1]).parent == stages / "0_fcn32s" / "checkpoints"
    assert Path(chain[2]).parent == stages / "1_fcn16s" / "checkpoints"
    logged = done.stdout + done.stderr
    for source in chain[1:]:  # each rank logs the checkpoint it copied from
        assert logged.count(f"model.init_from={source}: copied") == 2, source
    for job in (stages / "0_fcn32s", stages / "1_fcn16s", run):
        assert _last(job)["global_step"] == 2, job
    before = {p: _last(p)["state_dict"] for p in (*stages.iterdir(), run)}
    again = run_module(*command, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    # The job is finished, its last stage included: nothing is trained or copied again.
    assert "copied" not in again.stdout + again.stderr
    assert "already reached trainer.max_steps" in again.stdout + again.stderr
    for job, state in before.items():
        after = _last(job)["state_dict"]
        assert all(torch.equal(after[k], v) for k, v in state.items()), job


def _last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


def _fake_run(root: Path, name: str, group: str, model: str, rows: list[dict[str, float]]):
    run = root / name
    (run / "csv").mkdir(parents=True)
    OmegaConf.save(
        {"group": group, "run_name": name, "model": {"name": model}, "optim": {"name": "heavy"}},
        run / "config_resolved.yaml",
    )
    keys = sorted({k for r in rows for k in r} | {"step", "train/loss"})
    with open(run / "csv" / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerow({"step": 0, "train/loss": 2.0})  # a train row: not a validation
        for row in rows:
            writer.writerow(row)


def test_report_table_plots_and_paper_numbers(tmp_path, capsys):
    def val(step, miu, background, disc):
        scores = {"val/pixel_acc": 0.9, "val/mean_acc": 0.8, "val/mean_iu": miu, "val/fw_iu": 0.85}
        return {"step": step, **scores, "val_iu/background": background, "val_iu/disc": disc}

    sweep = tmp_path / "sweep"
    _fake_run(sweep, "1_pool3", "study_skips", "pool3", [val(99, 0.10, 0.5, 0.0)])
    _fake_run(sweep, "0_fcn8s_staged", "study_skips", "fcn8s_staged",
              [val(99, 0.5, 0.9, 0.1), val(199, 0.6123, 0.95, 0.2745)])  # fmt: skip
    _fake_run(sweep, "2_other", "my_study", "fcn16s", [val(9, 0.3, 0.6, 0.0)])
    (sweep / "3_unfinished" / "csv").mkdir(parents=True)  # no records yet: skipped
    out = tmp_path / "out"
    assert report_main([str(sweep), "--out", str(out)]) == 0
    table = (out / "report.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    # Rows in the paper's order, the last validation's numbers in percent, the paper beside.
    staged = PAPER_SKIPS["fcn8s_staged"]
    assert lines[1] == (
        "| 0_fcn8s_staged | 200 | 90.0 | 80.0 | 61.2 | 85.0 | FCN-8s staged | "
        + " | ".join(f"{v:.1f}" for v in staged[1:])
        + " |"
    )
    assert lines[2].startswith("| 1_pool3 | 100 | 90.0 | 80.0 | 10.0 | 85.0 | FCN-pool3 |")
    assert lines[3] == "| 2_other | 10 | 90.0 | 80.0 | 30.0 | 85.0 |  |  |  |  |  |"
    saved = {r["name"]: r for r in json.loads((out / "report.json").read_text())}
    assert saved["0_fcn8s_staged"]["curve"] == [[100, 50.0], [200, 61.23]]
    assert saved["0_fcn8s_staged"]["per_class"] == pytest.approx(
        {"background": 95.0, "disc": 27.45}
    )
    for picture in ("miou_curves.png", "per_class_iu.png"):
        assert Image.open(out / picture).size[0] > 300
    assert "61.2" in capsys.readouterr().out


def test_report_without_runs_is_a_one_line_error(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    assert report_main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "no validated runs" in err[0] and "no such directory" in err[1]


def test_report_plots_a_staged_job_as_one_training(tmp_path):
    def val(step):
        return {"step": step, "val/pixel_acc": 0.9, "val/mean_acc": 0.8, "val/mean_iu": 0.5,
                "val/fw_iu": 0.85}  # fmt: skip

    job = tmp_path / "0_fcn8s_staged"
    _fake_run(job / "stages", "0_fcn32s", "study_skips", "fcn32s", [val(99), val(199)])
    _fake_run(job / "stages", "1_fcn16s", "study_skips", "fcn16s", [val(149)])
    _fake_run(tmp_path, "0_fcn8s_staged", "study_skips", "fcn8s_staged", [val(49), val(99)])
    _fake_run(tmp_path, "1_pool5", "study_skips", "pool5", [val(99)])
    assert report_main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    saved = {r["name"]: r for r in json.loads((tmp_path / "out" / "report.json").read_text())}
    assert [s for s, _ in saved["0_fcn32s"]["curve"]] == [100, 200]
    assert [s for s, _ in saved["1_fcn16s"]["curve"]] == [350]
    assert [s for s, _ in saved["0_fcn8s_staged"]["curve"]] == [400, 450]
    assert [s for s, _ in saved["1_pool5"]["curve"]] == [100]
    assert saved["0_fcn8s_staged"]["step"] == 100  # the table keeps each run's own steps


def test_an_unknown_stage_is_a_config_error_naming_the_key(data_dir, tmp_path):
    from fcn_lightning.errors import ConfigError

    cfg = compose_train(data_dir, tmp_path, "row=fcn8s_staged", "model.init_stages=[fcn64s]")
    with pytest.raises(ConfigError, match=r"model\.init_stages: no model config 'fcn64s'"):
        train(cfg)
    assert not (tmp_path / "stages").exists()  # nothing started


@pytest.mark.parametrize(
    ("overrides", "steps", "fraction"),
    [
        ([], 100_000, 1),
        (["model=fcn8s_atonce"], 300_000, 1),  # PAMI trained at-once three times longer
        (["experiment=study_optim", "optim=accum"], 5_000, 1),  # 100k images in 20s
        (["experiment=study_optim", "optim=heavy"], 100_000, 1),
        (["model=fcn8s_atonce", "optim=accum"], 15_000, 1),
        (["experiment=mini_paper"], 1_500, 0.015),  # 1.5% of the paper's, for a CPU
        (["experiment=mini_paper", "model=fcn8s_atonce"], 4_500, 0.015),
    ],
)
def test_training_length_follows_the_reference_recipe(overrides, steps, fraction):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert cfg.trainer.max_steps == steps
    # The reference's iterations are batches (of one image); an update takes `accum` of them.
    batches = cfg.trainer.max_steps * cfg.trainer.accumulate_grad_batches
    assert batches == round(cfg.recipe.paper_steps * fraction)
