"""`run_entry`'s one shortcut (tests/train_helpers.py, ``one_compose``): Hydra's
first composition, which only reads ``hydra.mode``, is skipped where no argument can set
the mode. These tests hold it to that: no shipped config but the hparams_search presets
sets the mode, every entry point's composed config leaves it unset (the pass would
return None), and the arguments that can set it are recognised."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from tests.train_helpers import CONF, ROOT, may_set_mode, tiny_overrides


def yaml_files() -> list[Path]:
    return sorted([*CONF.rglob("*.yaml"), *(ROOT / "experiments").rglob("*.yaml")])


def test_only_the_hparams_search_presets_set_hydras_mode():
    setters, chosen = [], []
    for path in yaml_files():
        node = yaml.safe_load(path.read_text()) or {}
        if isinstance(node.get("hydra"), dict) and "mode" in node["hydra"]:
            setters.append(path.relative_to(ROOT).as_posix())
        for entry in node.get("defaults") or []:  # a preset that pulls one in
            if isinstance(entry, dict):
                for key, value in entry.items():
                    if "hparams_search" in str(key) and value is not None:
                        chosen.append((path.relative_to(ROOT).as_posix(), key, value))
    assert setters == ["conf/hparams_search/lr_line_search.yaml"]
    assert chosen == []
    assert len(yaml_files()) > 40  # the scan saw the config tree


def mode_of(config: str, overrides: list[str]):
    """What Hydra's first pass (``Hydra.get_mode``) reads: the composed hydra.mode."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config, overrides=overrides, return_hydra_config=True)
    return cfg.hydra.mode


@pytest.mark.parametrize(
    "config, overrides",
    [("train", [*tiny_overrides(Path("/d"), Path("/r")), "ckpt_path=last", "optim.lr=-1"]),
     ("train", [*tiny_overrides(Path("/d"), Path("/r")), "experiment=study_skips"]),
     ("eval", ["ckpt_path=/x.ckpt", "trainer=cpu", "hydra.run.dir=/e"]),
     ("predict", ["ckpt_path=/x.ckpt", "inputs=/a.jpg", "hydra.run.dir=/p"]),
     ("export", ["ckpt_path=/x.ckpt", "opset=7", "hydra.run.dir=/x"])],
    ids=["train", "train experiment", "eval", "predict", "export"],
)  # fmt: skip
def test_without_a_mode_setter_the_first_pass_would_read_no_mode(config, overrides):
    assert not may_set_mode(overrides)
    assert mode_of(config, overrides) is None


def test_the_arguments_that_can_set_the_mode_are_recognised(monkeypatch):
    search = [*tiny_overrides(Path("/d"), Path("/r")), "hparams_search=lr_line_search"]
    assert may_set_mode(search)
    assert str(mode_of("train", search)) == "RunMode.MULTIRUN"  # the shortcut would be wrong
    for args in (["-m"], ["--multirun"], ["hydra.mode=MULTIRUN"], ["+hydra.mode=MULTIRUN"],
                 ["hydra.searchpath=[file:///mine]"], ["--config-name=eval"]):  # fmt: skip
        assert may_set_mode(["optim.lr=0.1", *args]), args
    monkeypatch.setenv("FCN_CONFIG_PATH", "/mine")
    assert may_set_mode(["optim.lr=0.1"])
