"""Command-line overrides Hydra would refuse: one ``error:`` line and exit 2 before Hydra
starts (its own message is several lines and exits 1, the status of a bug), naming the
override, the nearest valid choice and the fix. Valid command lines are left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fcn_lightning.run.config import CONF_DIR
from fcn_lightning.run.overrides import override_problem
from tests.train_helpers import ROOT

CONF = Path(CONF_DIR)


def presets(group: str) -> list[str]:
    """The group's presets, listed from the config tree itself."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    ("config", "argv", "expected"),
    [
        ("train", ["model=fcn9s"], ["model=fcn9s: no such model preset", "nearest: model=fcn8s"]),
        ("train", ["data=voc2013"], ["data=voc2013: no such data preset", "nearest: data=voc2012"]),
        ("eval", ["ckpt_path=x", "data=paperr"], ["data=paperr:", "nearest: data=paper"]),
        ("train", ["experiment=nope"], ["experiment=nope: no such experiment preset"]),
        ("train", ["hydra/launcher=slurmm"], ["hydra/launcher=slurmm:", "submitit_slurm"]),
        # a sweep is checked value by value: the bad value is named, not the first one
        ("train", ["-m", "model=fcn8s,fcn16s,fcn4s"], ["model=fcn4s: no such model preset"]),
        ("train", ["data=synthetic", "data=voc2013"], ["data=voc2013: no such data preset"]),
        ("train", ["model.widht=0.5"],
         ["model.widht=0.5: no such key model.widht (nearest: model.width)", "+model.widht=0.5"]),
        ("train", ["trainer.devics=2"], ["nearest: trainer.devices"]),
        ("train", ["hydra.runn.dir=/tmp/x"], ["nearest: hydra.run.dir"]),
        ("eval", ["ckpt_path=x", "dat=paper"], ["dat=paper: no such key dat (nearest: data=paper"]),
        ("train", ["~model.widht"], ["~model.widht: there is no key model.widht to delete",
                                     "nearest: model.width"]),
        ("train", ["+model=fcn8s"], ["+model=fcn8s: model already has a preset", "model=fcn8s"]),
        ("train", ["model.width=[1"], ["model.width=[1: Hydra cannot read this override",
                                       "override_grammar"]),
        ("predict", ["ckpt_path=x", "inputs=y", "inference.tta.hfip=true"],
         ["nearest: inference.tta.hflip"]),
        # the preset's params hold "optim.lr" as one key: before, "no such key
        # hydra.sweeper.params.optim.lr (nearest: hydra.sweeper.params.optim.lr)"
        ("train", ["hparams_search=lr_line_search",
                   "hydra.sweeper.params.optim.lr='tag(log, interval(1e-12, 1e-8))'"],
         ["hydra.sweeper.params.optim.lr='tag(log, interval(1e-12, 1e-8))': ",
          "on the command line: 'optim.lr=tag(log, interval(1e-12, 1e-8))'"]),
    ],
)  # fmt: skip
def test_a_refused_override_is_named_with_its_fix(config, argv, expected):
    problem = override_problem(argv, config)
    assert problem is not None
    assert "\n" not in problem
    key = argv[-1].lstrip("+~").split("=")[0]
    assert f"nearest: {key})" not in problem  # a key is never its own nearest
    for part in expected:
        assert part in problem, problem


def test_an_unknown_preset_lists_every_preset_of_its_group():
    problem = override_problem(["model=fcn9s"], "train")
    assert problem.endswith("choose one of " + ", ".join(presets("model")))


@pytest.mark.parametrize(
    ("config", "argv"),
    [
        ("train", ["model=fcn16s", "optim.lr=1e-4", "+trainer.max_time=00:01:00"]),
        ("train", ["-m", "model=fcn8s,fcn16s", "optim.lr=interval(1e-5,1e-3)"]),
        ("train", ["hydra.run.dir=/tmp/x", "paths.data_dir=${oc.env:HOME}/data"]),
        ("train", ["+model.extra=1"]),  # a new key on purpose: the schema check decides
        ("train", ["hparams_search=lr_line_search", "optim.lr=tag(log,interval(1e-12,1e-8))"]),
        ("train", ["--help"]),
        ("train", ["--config-dir", "/nowhere", "model=anything"]),  # not modelled: Hydra's
        ("eval", ["ckpt_path=x", "data=paper", "split=seg11valid"]),
        ("predict", ["ckpt_path=x", "inputs=y", "inference=tta"]),
        ("export", ["ckpt_path=x"]),
        ("verify_data", ["data=voc2012"]),
    ],
)
def test_valid_command_lines_pass(config, argv):
    assert override_problem(argv, config) is None


def test_every_experiment_preset_passes_as_a_multirun():
    for name in presets("experiment"):
        assert override_problem(["-m", f"experiment={name}"], "train") is None, name


def test_the_real_entry_point_exits_2_in_one_line_and_writes_nothing(tmp_path):
    command = [sys.executable, "-m", "fcn_lightning.train", "-m", "model=fcn8s,fcn9s",
               f"paths.log_dir={tmp_path}/logs"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: model=fcn9s: no such model preset (nearest: model=fcn8s); choose one of "
        + ", ".join(presets("model"))
    ]
    assert list(tmp_path.iterdir()) == []  # no multirun folder, no log


def test_a_long_sweep_of_a_value_is_composed_once_not_per_value(monkeypatch):
    # A key's existence does not depend on its value: `-m seed=range(0,200)` took a
    # composition (~0.5 s) per value before the run started. Presets are still each checked.
    from fcn_lightning.run import overrides

    composed = []
    real = overrides._composition_problem
    monkeypatch.setattr(
        overrides, "_composition_problem", lambda o, c: composed.append(o) or real(o, c)
    )
    argv = ["-m", "seed=range(0,200)", "model=fcn8s,fcn16s,fcn4s"]
    assert "model=fcn4s: no such model preset" in override_problem(argv, "train")
    assert len(composed) <= 3
