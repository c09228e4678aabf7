"""Score a checkpoint: ``python -m fcn_lightning.eval ckpt_path=... [split=val]``."""

from __future__ import annotations

import inspect
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from fcn_lightning import resolvers  # noqa: F401  (registers the config resolvers)
from fcn_lightning.data.datamodule import SegmentationDataModule, build_datamodule
from fcn_lightning.errors import ConfigError
from fcn_lightning.eval_outputs import PerImageScores, write_eval_outputs
from fcn_lightning.heads import describe, head_spec, same_heads
from fcn_lightning.interop.zoo import resolve_checkpoint
from fcn_lightning.metrics import markdown_table
from fcn_lightning.models.checkpoints import (
    TrainedWith,
    command_line_keys,
    read_checkpoint,
    settle,
)
from fcn_lightning.models.inference import apply_inference
from fcn_lightning.module import load_module
from fcn_lightning.run.boundary import lightning_refusals, user_errors
from fcn_lightning.run.check_config import check_config
from fcn_lightning.run.config import resolved
from fcn_lightning.run.console import log, print_config
from fcn_lightning.run.overrides import fcn_main
from fcn_lightning.run.processes import (
    apply_ddp_timeout,
    die_with_launcher,
    isolated_job,
    prepare_ddp_relaunch,
    stop_other_ranks,
)
from fcn_lightning.run.progress import StepProgressBar

DEVICE_KEYS = (
    "accelerator", "devices", "num_nodes", "strategy", "precision",
    "ddp_timeout_s", "ddp_startup_timeout_s",
)  # fmt: skip


def eval_datamodule(
    cfg: DictConfig, checkpoint: dict[str, Any], typed: Collection[str] = ()
) -> SegmentationDataModule:
    """The configured data, or else the data the checkpoint was trained on; either way
    with the checkpoint's normalisation and class count (`typed`: the keys the user set).

    A normalisation or class list the user typed that differs from the checkpoint's is
    refused; one that a preset merely defaults to is replaced by the checkpoint's. Data
    with another class count is refused: its labels cannot be scored by this model.
    """
    trained = TrainedWith.of(checkpoint.get("hyper_parameters") or {})
    given = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") is not None else {}
    assert isinstance(given, dict)
    if "_target_" in given:  # data=<preset>
        hparams = given
        # Scoring reads data, never writes it: a preset's generate/download would otherwise
        # regenerate (overwrite) a synthetic tree made with other settings, or fetch.
        for key in ("generate", "download"):
            if f"data.{key}" not in typed:
                hparams[key] = False
    else:  # the checkpoint's data, with any +data.<key>=... on top
        hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
        if not hparams:
            raise ConfigError(
                f"ckpt_path={cfg.ckpt_path}: holds no data settings; choose the data with "
                "data=<preset>"
            )
        hparams.update(batch_size=cfg.batch_size, val_batch_size=cfg.batch_size)
        hparams.update(num_workers=cfg.num_workers, download=False, generate=False)
        unknown = sorted(set(given) - set(inspect.signature(SegmentationDataModule).parameters))
        if unknown:
            raise ConfigError(f"data.{unknown[0]}: no such data setting; see conf/data_base.yaml")
        hparams.update(given)
    if cfg.get("data_dir"):
        hparams["data_dir"] = cfg.data_dir
    hparams["normalization"] = settle(
        "data.normalization", hparams.get("normalization"), trained.normalization,
        ckpt_path=cfg.ckpt_path, typed=typed,
        fix="drop the override: eval feeds the model as it was trained",
    )  # fmt: skip
    trained_model = (checkpoint.get("hyper_parameters") or {}).get("model") or {}
    trained_input = str(trained_model.get("input") or "rgb")
    data_input = settle(
        "data.input", hparams.get("input"), trained_input, ckpt_path=cfg.ckpt_path,
        typed=typed, fix="drop the override: eval feeds the model the inputs it was trained on",
    )  # fmt: skip
    if "input" in hparams or data_input != "rgb":
        hparams["input"] = data_input
    check_heads(cfg, hparams, trained_model)
    check_class_count(cfg, hparams.get("num_classes", 21), trained, typed)
    target = {"_target_": f"{SegmentationDataModule.__module__}.SegmentationDataModule"}
    datamodule = build_datamodule({**target, **hparams})
    check_class_names(cfg, datamodule, trained, typed)
    return datamodule


def check_zoo_data(cfg: DictConfig) -> None:
    """``model_zoo=<name>``: the registry knows the model's classes and a converted release
    holds no data settings, so data that cannot fit is refused before the download."""
    name = cfg.get("model_zoo")
    if not name or cfg.get("ckpt_path"):
        return  # ckpt_path alone; both given is refused by resolve_checkpoint
    from fcn_lightning.interop.zoo import usable_entry

    entry = usable_entry(str(name), key="model_zoo", task="evaluate")
    data = cfg.get("data")
    if data is None or "_target_" not in data:
        raise ConfigError(
            f"model_zoo={name}: a zoo model holds no data settings; choose the data with "
            f"data=<preset> (e.g. data=paper split=seg11valid for a PASCAL VOC model)"
        )
    num_classes = data.get("num_classes", 21)
    if entry.num_classes is not None and num_classes != entry.num_classes:
        raise ConfigError(
            f"model_zoo={name} predicts {entry.num_classes} classes but the data has "
            f"{num_classes} (data={data.get('name', '?')}); choose data with "
            f"{entry.num_classes} classes"
        )


def check_heads(cfg: DictConfig, data: dict[str, Any], trained_model: dict[str, Any]) -> None:
    """Data whose labels hold other heads than the checkpoint predicts cannot be scored by
    it (SIFT Flow's two label planes against a one-head model, or the other way round)."""
    trained = head_spec(trained_model.get("heads"), trained_model.get("num_classes", 21))
    given = head_spec(data.get("heads"), data.get("num_classes", 21))
    if len(trained) == len(given) == 1 or same_heads(trained, given):
        return  # one head each: check_class_count compares the classes
    raise ConfigError(
        f"ckpt_path={cfg.ckpt_path} predicts the heads {describe(trained)} but the data has "
        f"{describe(given)} (data.heads); choose matching data: leave data= out to score on "
        "the data it was trained on"
    )


def check_class_count(
    cfg: DictConfig, num_classes: int, trained: TrainedWith, typed: Collection[str]
) -> None:
    if num_classes == trained.num_classes:
        return
    source = (
        "data.num_classes" if "data.num_classes" in typed
        else f"data={cfg.data.name}" if cfg.get("data") is not None and "name" in cfg.data
        else "the checkpoint's data settings"
    )  # fmt: skip
    raise ConfigError(
        f"ckpt_path={cfg.ckpt_path} predicts {trained.num_classes} classes but the data has "
        f"{num_classes} (data.num_classes={num_classes}, from {source}); choose matching "
        f"data: leave data= out to score on the data it was trained on, or data with "
        f"{trained.num_classes} classes"
    )


def check_class_names(
    cfg: DictConfig, datamodule: SegmentationDataModule, trained: TrainedWith,
    typed: Collection[str],
) -> None:  # fmt: skip
    """The table shows the checkpoint's class names; a class list typed that names
    them otherwise is refused (one that names none: the data's are used)."""
    names = tuple(datamodule.class_names)
    if trained.class_names is None or names == trained.class_names:
        return
    if "data.classes" in typed:
        raise ConfigError(
            f"data.classes={datamodule.hparams.classes}: names the classes {_few(names)} but "
            f"ckpt_path={cfg.ckpt_path} was trained with {_few(trained.class_names)}; drop "
            "the override: the table uses the checkpoint's class names"
        )
    if datamodule.hparams.root is not None:  # data=folder: its masks mean its own list's
        raise ConfigError(
            f"{datamodule.hparams.classes} names the classes {_few(names)} (data.classes of "
            f"data.root={datamodule.hparams.root}) but ckpt_path={cfg.ckpt_path} was trained "
            f"with {_few(trained.class_names)}: its masks' values mean other classes; score "
            "on a folder labelled with the checkpoint's classes, or restore that classes.txt"
        )
    log.info(
        "data.classes=%s (a preset's default) replaced by the checkpoint's class names",
        datamodule.hparams.classes,
    )


def _few(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"[{shown}] ({len(names)})"


def evaluate(cfg: DictConfig, typed: Collection[str] = ()) -> dict[str, Any]:
    """Validate the checkpoint on the chosen split and write metrics.json / metrics.md.

    ``typed``: the config keys the user set on the command line (`command_line_keys`);
    only those are refused when they contradict the checkpoint.
    """
    check_zoo_data(cfg)  # before a zoo model's download
    resolve_checkpoint(cfg, "evaluate")  # model_zoo=<name>: its converted checkpoint
    print_config(cfg, kept_in=None)
    checkpoint = read_checkpoint(cfg.ckpt_path, key="ckpt_path")
    module = load_module(cfg.ckpt_path)
    inference = apply_inference(module, resolved(cfg.inference) if "inference" in cfg else None)
    datamodule = eval_datamodule(cfg, checkpoint, typed)
    if module.hparams.get("class_names") is None:  # a checkpoint that names no classes
        module.class_names = list(datamodule.class_names)
        module.head_class_names[0] = module.class_names
    if cfg.split not in ("val", "test"):
        datamodule.hparams.val_split = cfg.split
    elif cfg.split == "test":
        datamodule.hparams.val_split = datamodule.hparams.test_split
    # Devices and strategy from the trainer node, so `trainer=ddp_cpu` or `trainer=ddp`
    # scores a split with several processes (each image on exactly one of them).
    trainer_cfg = {k: v for k, v in resolved(cfg.trainer).items() if k in DEVICE_KEYS}
    apply_ddp_timeout(trainer_cfg)
    per_image = PerImageScores(
        module.num_classes, worst_k=cfg.get("worst_k", 8), heads=module.heads
    )
    with lightning_refusals("trainer"):
        trainer = pl.Trainer(
            **trainer_cfg, logger=False, enable_checkpointing=False,
            callbacks=[StepProgressBar(), per_image],
        )  # fmt: skip
    prepare_ddp_relaunch()
    try:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    except BaseException:
        stop_other_ranks(trainer)  # a failed rank 0 leaves no rank waiting on it
        raise
    scores = without_confusion(module.last_scores["val"])
    scores.update(
        checkpoint=str(Path(cfg.ckpt_path).resolve()),
        split=datamodule.hparams.val_split,
        step=int(checkpoint.get("global_step", 0)),
        inference=inference.summary(),
    )
    if not trainer.is_global_zero:
        return scores
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(scores, indent=2))
    table = markdown_table(scores)
    (run_dir / "metrics.md").write_text(table)
    print(table)
    log.info("wrote %s and %s", run_dir / "metrics.json", run_dir / "metrics.md")
    extra = write_eval_outputs(run_dir, per_image, list(module.class_names),
                               datamodule.val_dataset, module.hparams.get("palette"),
                               module.head_class_names)  # fmt: skip
    log.info("wrote %s in %s", ", ".join(extra), run_dir)
    return scores


def without_confusion(scores: dict[str, Any]) -> dict[str, Any]:
    """A stage's ``last_scores`` for metrics.json: every head's section without its
    confusion matrix (a tensor; confusion*.csv holds it)."""
    kept = {k: v for k, v in scores.items() if k != "confusion"}
    if "heads" in kept:
        kept["heads"] = {name: without_confusion(head) for name, head in kept["heads"].items()}
    return kept


@fcn_main("eval")
def main(cfg: DictConfig) -> None:
    die_with_launcher()
    with user_errors(), isolated_job():
        check_config(cfg, "eval")  # before anything is written or fetched
        evaluate(cfg, command_line_keys())


if __name__ == "__main__":
    main()
