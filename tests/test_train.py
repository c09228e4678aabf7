"""The training system end to end on tiny synthetic data: configs, fit, resume, eval, predict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from fcn_lightning.errors import ConfigError, DivergedError
from fcn_lightning.eval import evaluate
from fcn_lightning.module import load_module
from fcn_lightning.predict import predict
from fcn_lightning.report.results import read_run
from fcn_lightning.run.rng_state import collect_rng_states_of_all_ranks, states_for_rank
from fcn_lightning.train import train
from tests.train_helpers import CONF, compose_train

VARIANTS = ["fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce", "pool5", "pool4", "pool3"]
# Every model, and the recipe that changes what trains (FCN-32s fixed).
MODELS = [*(f"model={v}" for v in VARIANTS), "row=fcn32s_fixed"]


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    ("group", "option"),
    [
        (g, o)
        for g in (
            "model",
            "recipe",
            "row",
            "optim",
            "loss",
            "trainer",
            "logger",
            "callbacks",
            "data",
        )
        for o in group_options(g)
    ]
    + [("experiment", o) for o in group_options("experiment")],
)
def test_every_config_option_composes_and_resolves(group, option, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={option}", f"paths.output_dir={tmp_path}"])
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["model"]["num_classes"] == container["data"]["num_classes"]
    # Hyperparameters stay primitives (no objects), so checkpoints load weights-only.
    json.dumps({k: container[k] for k in ("model", "optim", "loss")})


def test_variant_defaults_are_the_paper_recipe(tmp_path):
    lrs = {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14, "fcn8s_atonce": 1e-10}
    for variant, lr in lrs.items():
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=[f"model={variant}", f"paths.output_dir={tmp_path}"])
        assert cfg.optim.lr == lr and cfg.optim.momentum == 0.99
        assert cfg.loss.normalize == "sum" and cfg.data.batch_size == 1
        assert cfg.data.name == "paper" and cfg.data.normalization == "caffe"


def _compose(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.output_dir={tmp_path}"])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize(
    ("overrides", "name", "stages", "fixed", "lr"),
    [
        (["model=fcn8s", "recipe=staged"], "fcn8s_staged", ["fcn32s", "fcn16s"], False, 1e-14),
        (["model=fcn16s", "recipe=staged"], "fcn16s_staged", ["fcn32s"], False, 1e-12),
        (["model=fcn32s", "recipe=fixed"], "fcn32s_fixed", None, True, 1e-10),
        (["model=fcn_alexnet"], "fcn_alexnet", None, False, 5e-10),  # backbone/variant entry
        (["model=pool4"], "pool4", None, False, 1e-10),
    ],
)
def test_recipes_give_each_model_its_reference_schedule(
    overrides, name, stages, fixed, lr, tmp_path
):
    cfg = _compose(tmp_path, *overrides)
    model = cfg["model"]
    assert (model["name"], model["init_stages"], model["frozen_backbone"]) == (name, stages, fixed)
    assert cfg["optim"]["lr"] == lr


@pytest.mark.parametrize("row", ["fcn8s_staged", "fcn32s_fixed", "fcn8s_atonce", "pool3"])
def test_a_row_is_the_same_run_as_its_model_and_recipe(row, tmp_path):
    recipe = {"fcn8s_staged": ("fcn8s", "staged"), "fcn32s_fixed": ("fcn32s", "fixed")}
    model, chosen = recipe.get(row, (row, "paper"))
    by_row = _compose(tmp_path, f"row={row}")
    by_parts = _compose(tmp_path, f"model={model}", f"recipe={chosen}")
    assert by_row == by_parts


@pytest.mark.parametrize("model", MODELS)
def test_fast_dev_run_every_variant(model, data_dir, tmp_path):
    cfg = compose_train(data_dir, tmp_path, model, "+trainer.fast_dev_run=true")
    metrics = train(cfg)
    assert np.isfinite(metrics["train/loss"])


def read_csv_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def val_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r.get("val/mean_iu")]


def test_fit_checkpoints_eval_reproduces_and_predict_writes(data_dir, tmp_path):
    run = tmp_path / "run"
    cfg = compose_train(
        data_dir, run, "model=fcn8s", "trainer.max_steps=4", "trainer.val_check_interval=2",
        "data.batch_size=2", "data.collate=pad", "optim.lr=0.01",
    )  # fmt: skip
    train(cfg)
    ckpts = run / "checkpoints"
    assert (ckpts / "last.ckpt").is_file()
    best = [p for p in ckpts.glob("step*.ckpt")]
    assert len(best) == 1
    rows = val_rows(read_csv_metrics(run))
    assert len(rows) == 2  # validated every 2 of 4 steps
    assert (run / "config_resolved.yaml").is_file()
    assert sorted((run / "samples").glob("val_step*.png"))
    # The final validation, printed and kept as a table (percent, one decimal).
    summary = (run / "metrics.md").read_text()
    assert summary.startswith("step 4")
    assert f"| {100 * float(rows[-1]['val/mean_acc']):.1f} |" in summary

    # The checkpoint holds primitives only.
    raw = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert raw["hyper_parameters"]["model"]["variant"] == "fcn8s"

    # eval on the last checkpoint reproduces the last validation.
    eval_dir = tmp_path / "eval"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        ecfg = compose(
            "eval",
            overrides=[f"ckpt_path={ckpts / 'last.ckpt'}", "num_workers=0", "trainer=cpu",
                       f"paths.output_dir={eval_dir}"],
        )  # fmt: skip
    scores = evaluate(ecfg)
    last = rows[-1]
    for name in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert scores[name] == pytest.approx(float(last[f"val/{name}"]), abs=1e-6)
    saved = json.loads((eval_dir / "metrics.json").read_text())
    assert saved["mean_iu"] == pytest.approx(scores["mean_iu"])
    assert "| class | IU |" in (eval_dir / "metrics.md").read_text()

    # predict: palette PNGs whose values are the argmax of the model's scores.
    images = data_dir / "synthetic" / "JPEGImages"
    out = tmp_path / "pred"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        pcfg = compose(
            "predict",
            overrides=[f"ckpt_path={ckpts / 'last.ckpt'}", f"inputs={images}", f"out_dir={out}",
                       "device=cpu", f"paths.output_dir={tmp_path / 'p'}"],
        )  # fmt: skip
    written = predict(pcfg)
    assert len(written) == 12
    module = load_module(ckpts / "last.ckpt").eval()
    first = sorted(images.glob("*.jpg"))[0]
    mask = Image.open(out / f"{first.stem}.png")
    assert mask.mode == "P"
    rgb = np.array(Image.open(first).convert("RGB"))
    x = (
        torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
        - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    ) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():
        expected = module(x[None]).argmax(1)[0].numpy()
    np.testing.assert_array_equal(np.asarray(mask), expected)
    assert (out / f"{first.stem}_overlay.jpg").is_file()


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_ends_exactly_where_an_uninterrupted_run_does(workers, data_dir, tmp_path):
    # Dropout, random flips and shifts, draws with replacement, a poly schedule: a resumed
    # run gets all of them right only if it restores data order, augmentation and RNG.
    common = [
        "model=fcn32s", "data.hflip=true", "data.translate_px=4", "optim.lr=0.05",
        f"data.num_workers={workers}", "trainer.max_steps=11", "trainer.val_check_interval=3",
    ]  # fmt: skip
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(compose_train(data_dir, whole, *common))
    stop = [
        "+callbacks.stop._target_=tests.train_helpers.StopAfterValidation",
        "+callbacks.stop.step=3",
        "+trainer.min_epochs=0",  # else Lightning finishes the first epoch regardless
    ]
    train(compose_train(data_dir, parts, *common, *stop))
    interrupted = torch.load(parts / "checkpoints" / "last.ckpt", weights_only=True)
    assert interrupted["global_step"] == 3  # 3 of the epoch's 8 batches
    train(compose_train(data_dir, parts, *common, "ckpt_path=last"))

    expected = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(parts / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == expected["global_step"] == 11  # into the second epoch
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
    # The resumed run's record (set aside before the resume, plus the new one) tells the
    # same story as the uninterrupted run's, validation by validation.
    assert (parts / "csv" / "metrics.0.csv").is_file()
    assert read_run(parts).curve == read_run(whole).curve
    assert [step for step, _ in read_run(whole).curve] == [3, 6, 9, 11]  # and the last step


def test_each_rank_takes_its_own_random_state_and_only_from_a_job_of_its_size():
    one, two = {"torch": torch.tensor([1])}, {"torch": torch.tensor([2])}
    assert states_for_rank([one, two], 1, 2) is two
    assert states_for_rank([one, two], 0, 2) is one
    assert states_for_rank([one], 0, 1) is one
    assert states_for_rank(one, 0, 1) is one  # a checkpoint from before per-rank states
    assert states_for_rank([one, two], 0, 1) is None  # 2 processes -> 1: no exact replay
    assert states_for_rank(one, 1, 2) is None
    # One process gathers just its own states, as a list.
    assert len(collect_rng_states_of_all_ranks()) == 1


def test_staged_init_from_previous_stage(data_dir, tmp_path):
    stage1 = tmp_path / "fcn32s"
    train(compose_train(data_dir, stage1, "model=fcn32s", "optim.lr=0.01"))
    ckpt = stage1 / "checkpoints" / "last.ckpt"
    stage2 = tmp_path / "fcn16s"
    cfg = compose_train(
        data_dir, stage2, "model=fcn16s", f"model.init_from={ckpt}", "trainer.max_steps=0"
    )
    from fcn_lightning.data.datamodule import build_datamodule
    from fcn_lightning.models import init_from_checkpoint
    from fcn_lightning.train import build_module

    module = build_module(cfg, build_datamodule(cfg.data))
    init_from_checkpoint(module.model, ckpt)
    source = torch.load(ckpt, weights_only=True)["state_dict"]
    torch.testing.assert_close(module.model.score_fr.weight, source["model.score_fr.weight"])
    assert torch.count_nonzero(module.model.score_pool4.weight) == 0


def test_mismatched_classes_and_missing_checkpoint_are_config_errors(data_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"model\.num_classes=5"):
        train(compose_train(data_dir, tmp_path, "model.num_classes=5"))
    with pytest.raises(ConfigError, match="ckpt_path=last"):
        train(compose_train(data_dir, tmp_path / "fresh", "ckpt_path=last"))


def diverge_at(data_dir, run, step: int) -> str:
    """Train with the weights poisoned at ``step`` (a NaN loss there): the message."""
    cfg = compose_train(
        data_dir, run, "loss=sum", "optim.lr=1e-3", "trainer.max_steps=8",
        "+callbacks.poison._target_=tests.train_helpers.PoisonWeightsAt",
        f"+callbacks.poison.step={step}",
    )  # fmt: skip
    with pytest.raises(DivergedError) as caught:
        train(cfg)
    return str(caught.value)


def test_a_diverging_loss_stops_with_its_likely_cause_and_keeps_the_last_checkpoint(
    data_dir, tmp_path
):
    run = tmp_path / "run"
    message = diverge_at(data_dir, run, 3)
    assert "\n" not in message
    assert "train/loss became nan at step 3" in message or "inf at step 3" in message
    assert "loss.normalize=sum" in message and "optim.lr=0.001" in message
    assert message.endswith(f"{run}/checkpoints/last.ckpt holds the last validation before it")
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2  # the validation before the divergence
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_a_loss_diverging_before_any_checkpoint_says_nothing_was_kept(data_dir, tmp_path):
    run = tmp_path / "run"
    message = diverge_at(data_dir, run, 1)
    assert not (run / "checkpoints" / "last.ckpt").exists()
    assert message.endswith("Nothing was saved: no checkpoint was written before this step")
