"""Composing the real Hydra config for tests: tiny synthetic data, tiny nets, CPU."""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from fcn_lightning import resolvers  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


TINY_DATA = {"num_train": 8, "num_val": 4, "image_size": 48}


def tiny_dataset(data_dir: Path, num_val: int = TINY_DATA["num_val"], **spec: int) -> Path:
    """The synthetic tree `tiny_overrides` trains on, under `data_dir`; returns `data_dir`."""
    from fcn_lightning.data.synthetic import ensure_synthetic

    spec = {**TINY_DATA, "num_val": num_val, **spec}
    ensure_synthetic(data_dir / "synthetic", **spec, progress=False)
    return data_dir


def tiny_overrides(data_dir: Path, out_dir: Path) -> list[str]:
    return [
        "data=synthetic",
        f"paths.data_dir={data_dir}",
        *(f"data.synthetic.{key}={value}" for key, value in TINY_DATA.items()),
        "data.num_workers=0",
        "data.normalization=torchvision",
        "model.pretrained=false",
        "model.width=0.0625",
        "model.geometry=aligned",
        "model.weights=torchvision",
        "optim=sgd_poly",
        "loss=mean",
        "trainer=cpu",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_model_summary=false",
        "logger=csv",
        f"hydra.run.dir={out_dir}",
    ]


def sweep_overrides(data_dir: Path, out_dir: Path, leave_out: set[str] = frozenset()) -> list[str]:
    """`tiny_overrides` for a command-line multirun: no run dir, and none of the keys in
    `leave_out` (a sweep's own keys: on the command line they would win over the sweep)."""
    return [
        o
        for o in tiny_overrides(data_dir, out_dir)
        if o.split("=")[0] not in leave_out and not o.startswith("hydra.run.dir")
    ]


def compose_train(
    data_dir: Path, out_dir: Path, *overrides: str, config: str = "train"
) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config, overrides=[*tiny_overrides(data_dir, out_dir), *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
    return cfg


def run_module(
    module: str, *args: str, cwd: Path, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would, capturing output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


# Where a run's Hydra mode (RUN or MULTIRUN) can come from other than the command line's
# -m: a config that sets hydra.mode. Of the shipped ones only the hparams_search presets
# do (tests/test_in_process_entry.py scans every config); a user's config folders
# (hydra.searchpath, FCN_CONFIG_PATH) are not known here.
MODE_SETTERS = ("hydra.mode", "hparams_search", "hydra.searchpath")


def may_set_mode(args: list[str]) -> bool:
    """Whether these command-line arguments could make Hydra's mode anything but RUN."""
    if os.environ.get("FCN_CONFIG_PATH"):
        return True
    for arg in args:
        if arg.startswith("-"):  # -m, --multirun, --config-name, ...: ask Hydra
            return True
        key = arg.split("=", 1)[0].lstrip("+~")
        if key.startswith(MODE_SETTERS):
            return True
    return False


@contextlib.contextmanager
def one_compose(args: list[str]):
    """Hydra's main composes the whole config twice: once only to read ``hydra.mode``
    (``Hydra.get_mode``, which returns None on any error and has no other effect), then
    for the run. Where no argument can set the mode, that first pass would return None
    (the mode stays RUN), so it is skipped: the run's own composition, and every error
    it raises, is unchanged. Half of each in-process entry point call is that pass."""
    if may_set_mode(args):
        yield
        return
    from hydra._internal.hydra import Hydra

    real = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: None
    try:
        yield
    finally:
        Hydra.get_mode = real


def run_entry(entry: str, args: list[str], monkeypatch) -> int:
    """``python -m fcn_lightning.<entry> args`` in this process: its exit status."""
    main = importlib.import_module(f"fcn_lightning.{entry}").main
    monkeypatch.setattr(sys, "argv", [entry, *args])
    try:
        with one_compose(args):
            main()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


def run_in_process(
    module: str, *args: str, cwd: Path, monkeypatch, capfd
) -> subprocess.CompletedProcess:
    """`run_module` without a new interpreter (whose imports cost ~10 s of CPU): the same
    ``main`` Hydra runs for ``python -m module args``, in `cwd`, with its output. For
    tests of what a run does, not of the process (signals, exit by a signal, DDP ranks)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    capfd.readouterr()  # only this command's output
    status = run_entry(module.removeprefix("fcn_lightning."), list(args), monkeypatch)
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess([module, *args], status, out, err)


class StopAfterValidation(pl.Callback):
    """Ends fitting at the first validation at or after `step`, as an interrupted job
    would end (its checkpoint of that validation written, nothing after)."""

    def __init__(self, step: int):
        self.step = step

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.global_step >= self.step:
            trainer.should_stop = True


class PoisonWeightsAt(pl.Callback):
    """From training step `step` on, the model's weights hold an infinity: the loss
    diverges as a too-large learning rate would make it."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            import torch

            with torch.no_grad():
                next(pl_module.model.parameters()).fill_(float("inf"))
