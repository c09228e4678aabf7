"""What a user sees: the run header, the step-based bar (plain lines without a terminal, a
redrawn bar on one), no Lightning chatter; the debug presets."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fcn_lightning.eval import evaluate
from fcn_lightning.run.console import quiet_lightning
from fcn_lightning.run.progress import StepTqdm, metric_label
from tests.train_helpers import CONF, ROOT, run_module, tiny_overrides

# tiny_overrides' settings left to debug=fast (and Lightning's model summary left on, to
# see that it is gone).
LEFT_TO_DEBUG_FAST = (
    "trainer.enable_model_summary",
    "trainer.num_sanity_val_steps",
    "trainer.max_steps",
    "trainer.val_check_interval",
)
CHATTER = ("v_num", "Total FLOPs", "litlogger", "litmodels", "💡", "GPU available", "TPU available")


def run_overrides(data_dir, out_dir, *extra):
    kept = [o for o in tiny_overrides(data_dir, out_dir) if not o.startswith(LEFT_TO_DEBUG_FAST)]
    return ["debug=fast", *kept, *extra]


def assert_quiet(out: str) -> None:
    for text in CHATTER:
        assert text not in out
    if "SLURM_JOB_ID" not in os.environ:
        assert "srun" not in out


@pytest.fixture(scope="module")
def piped_run(data_dir, tmp_path_factory):
    """A `debug=fast` training of 6 steps with stdout a pipe, as in a SLURM .out file."""
    out_dir = tmp_path_factory.mktemp("piped")
    args = run_overrides(
        data_dir, out_dir, "trainer.max_steps=6", "trainer.val_check_interval=3",
        "callbacks.progress_bar.line_every=2",
    )  # fmt: skip
    done = run_module("fcn_lightning.train", *args, cwd=out_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return out_dir, done


def test_piped_training_prints_step_lines_and_a_short_header(piped_run):
    out_dir, done = piped_run
    out = done.stdout + done.stderr
    assert "\r" not in done.stdout  # lines, not carriage-return redraws
    steps = re.findall(r"^step (\d+)/6 .*\]$", done.stdout, flags=re.MULTILINE)
    assert steps == ["2", "3", "4", "6"]  # every 2 steps, and at each validation
    assert re.search(r"^step 6/6 100% \[.*loss [\d.]+, val mean IU [\d.]+\]$", done.stdout, re.M)
    # One line per validation, with its score; a 1-batch sanity check before training.
    assert len(re.findall(r"^val 2/2 100% \[.*, val mean IU [\d.]+\]$", done.stdout, re.M)) == 2
    assert re.search(r"^sanity check 1/1 ", done.stdout, re.M)
    assert re.search(r"^device: cpu", done.stdout, re.M)
    assert re.search(r"^model: fcn32s \(vgg16\), [\d.]+ K parameters", done.stdout, re.M)
    assert_quiet(out)
    # The header: the overrides as typed, the groups, the run dir; not the config tree.
    assert "overrides  debug=fast data=synthetic" in done.stdout
    assert "groups     paths=default data=synthetic" in done.stdout
    assert "debug=fast" in done.stdout.split("groups", 1)[1].splitlines()[0]
    assert f"run dir    {out_dir}" in done.stdout
    assert "├──" not in done.stdout and "_target_" not in done.stdout


def test_debug_fast_runs_as_a_debug_task(piped_run):
    out_dir, _ = piped_run
    cfg = OmegaConf.load(out_dir / "config_resolved.yaml")
    assert cfg.task_name == "debug" and list(cfg.logger) == ["csv"]
    assert cfg.trainer.limit_val_batches == 2 and cfg.trainer.deterministic == "warn"
    assert (out_dir / "checkpoints" / "last.ckpt").is_file()


def test_eval_prints_the_same_bar(piped_run, data_dir, capfd):
    out_dir, _ = piped_run
    overrides = [f"ckpt_path={out_dir}/checkpoints/last.ckpt", f"data_dir={data_dir}"]
    overrides += ["num_workers=0", "trainer=cpu", f"paths.output_dir={out_dir}/eval"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        evaluate(compose("eval", overrides=overrides))
    out, err = capfd.readouterr()
    assert re.search(r"^val 4/4 100% \[.*it/s, val mean IU [\d.]+\]$", out, re.M)
    assert "task       eval" in out and "\r" not in out
    assert_quiet(out + err)


def run_in_terminal(args: list[str], cwd, timeout: int = 300) -> str:
    """Run ``python -m fcn_lightning.train args`` with stdout and stderr a pseudo-terminal."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fcn_lightning.train", *args],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([leader], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    if proc.poll() is None and time.monotonic() >= deadline:
        proc.kill()
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


def test_terminal_training_redraws_one_bar_and_print_config_prints_the_tree(data_dir, tmp_path):
    out = run_in_terminal(run_overrides(data_dir, tmp_path, "print_config=true"), cwd=tmp_path)
    # The bar is redrawn in place (carriage returns) with its bar and the step count.
    frames = [f for f in out.split("\r") if re.match(r"step \d+/4 \|.*\| +\d+% \[", f)]
    assert frames and frames[-1].startswith("step 4/4 |")
    assert "val mean IU" in frames[-1]
    assert_quiet(out)
    assert "├──" in out and "max_steps" in out  # print_config=true: the resolved tree too


def test_line_bar_prints_at_multiples_and_its_last_state_on_close():
    out = io.StringIO()
    bar = StepTqdm(desc="step", total=10, initial=3, file=out, line_every=4, unit="step")
    for n in range(4, 11):
        bar.move(n, lambda: {"loss": 0.51234})
    bar.set_postfix({"loss": 0.5, "val mean IU": 0.25}, refresh=False)
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["4/10", "8/10", "10/10"]
    assert lines[0].endswith("step/s, loss 0.512]") and "\r" not in out.getvalue()
    assert lines[-1].endswith("loss 0.5, val mean IU 0.25]")


def test_lightning_chatter_is_dropped_unless_its_logger_is_verbose():
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    quiet_lightning()
    logger.addHandler(handler)
    try:
        logger.info("GPU available: False, used: False")
        logger.info("Seed set to 1")
        assert seen == ["Seed set to 1"]
        logging.getLogger("pytorch_lightning").setLevel(logging.DEBUG)  # hydra.verbose=...
        logger.info("GPU available: False, used: False")
        assert seen[-1] == "GPU available: False, used: False"
    finally:
        logger.removeHandler(handler)
        logging.getLogger("pytorch_lightning").setLevel(logging.INFO)


def test_metric_labels():
    assert metric_label("train/loss") == "loss"
    assert metric_label("val/mean_iu") == "val mean IU"
    assert metric_label("test/fw_iu") == "test f.w. IU"


@pytest.mark.parametrize("preset", ["default", "fast", "overfit", "limit", "profiler"])
def test_debug_presets_compose_over_an_experiment(preset, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        overrides = ["experiment=quickstart", f"debug={preset}", f"paths.output_dir={tmp_path}"]
        cfg = compose("train", overrides=overrides)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["task_name"] == "debug" and list(container["logger"]) == ["csv"]
    assert container["trainer"]["deterministic"] == "warn"
    if preset != "default":
        assert container["trainer"]["max_steps"] < 1000  # the preset wins over the experiment
