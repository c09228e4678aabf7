"""What a training run needs before it starts, all checked at once and before anything
is fetched or built: the dataset (its folder, the roots and split lists of the splits the
run uses, or the archives `data.download=true` will fetch), the pretrained weights (a
file, the cache, or a known download) and `model.init_from`.

A start that lacks several things says so in one line listing all of them, so that a
missing dataset is not noticed only after half a gigabyte of weights came down, and a
second missing thing not only on the second try. Each problem keeps the message of the
check that finds it (the data module's, the weights', the checkpoint reader's); this
module only gathers them.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from fcn_lightning.data.datamodule import data_problems
from fcn_lightning.data.splits import load_class_names
from fcn_lightning.errors import ConfigError, FCNError, WeightsError
from fcn_lightning.interop.zoo import init_from_problem
from fcn_lightning.models.build import backbone_weights
from fcn_lightning.models.checkpoints import checkpoint_problem
from fcn_lightning.models.weights import cache_path, weights_problem
from fcn_lightning.run.config import resolved

log = logging.getLogger("fcn_lightning")


def check_prerequisites(cfg: DictConfig, *, resuming: bool = False) -> None:
    """Raise one `FCNError` listing every missing prerequisite of training with `cfg`
    (`resuming`: from a checkpoint, so `model.init_from` is not read); log what will be
    downloaded or generated. Reads no tensors, downloads and builds nothing."""
    problems, notes = prerequisite_problems(cfg, resuming=resuming)
    for note in notes:
        log.info("%s", note)
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0]
    listed = "; ".join(f"({i}) {problem}" for i, problem in enumerate(problems, 1))
    kind = type(problems[0])  # the first problem's kind: DataError, WeightsError, ...
    raise kind(f"{len(problems)} problems before training can start: {listed}")


def prerequisite_problems(
    cfg: DictConfig, *, resuming: bool = False
) -> tuple[list[FCNError], list[str]]:
    """(problems, notes): what stops training with `cfg` from starting, and what will be
    fetched or generated first."""
    data = resolved(cfg.data)
    stages = ("train", "val", "test") if cfg.get("test") else ("train", "val")
    problems, notes = data_problems(data, stages)
    try:
        load_class_names(str(data.get("classes", "pascal")))
    except FCNError as err:
        problems.append(err)
    model = resolved(cfg.model)
    weights_problems, weights_notes = _weights_problems(model)
    problems += weights_problems
    notes += weights_notes
    init_from = model.get("init_from")
    if init_from and not resuming and not model.get("init_stages"):
        problem = (init_from_problem(init_from, data.get("num_classes"))
                   if str(init_from).startswith("zoo:")
                   else checkpoint_problem(init_from, key="model.init_from"))  # fmt: skip
        if problem is not None:
            problems.append(WeightsError(problem))
    streams = model.get("init_streams")
    if streams and not resuming:
        problems += _init_streams_problems(model, streams, data.get("num_classes"))
    return problems, notes


def _init_streams_problems(
    model: dict[str, Any], streams: dict[str, Any], num_classes: int | None
) -> list[FCNError]:
    """model.init_streams: streams of this model's input, each a readable checkpoint."""
    from fcn_lightning.data.inputs import input_streams

    try:
        names = [s.name for s in input_streams(str(model.get("input", "rgb")), "model.input")]
    except ConfigError as err:
        return [err]
    if len(names) < 2:
        return [ConfigError(
            f"model.init_streams is for late fusion (several input streams); model.input="
            f"{model.get('input')} has one: use model.init_from, or set data.input=color_hha"
        )]  # fmt: skip
    if model.get("init_from") and not model.get("init_stages"):
        return [ConfigError(
            "model.init_from and model.init_streams both say where to start: keep one"
        )]  # fmt: skip
    unknown = sorted(set(streams) - set(names))
    if unknown:
        return [ConfigError(
            f"model.init_streams.{unknown[0]}: not a stream of model.input={model.get('input')} "
            f"(its streams: {names})"
        )]  # fmt: skip
    problems: list[FCNError] = []
    for stream, path in streams.items():
        key = f"model.init_streams.{stream}"
        problem = (init_from_problem(path, num_classes, key=key) if str(path).startswith("zoo:")
                   else checkpoint_problem(path, key=key))  # fmt: skip
        if problem is not None:
            problems.append(WeightsError(problem))
    return problems


def _weights_problems(model: dict[str, Any]) -> tuple[list[FCNError], list[str]]:
    if not model.get("pretrained"):
        return [], []
    try:
        weights = backbone_weights(str(model.get("backbone", "vgg16")), str(model.get("weights")))
    except ConfigError as err:
        return [err], []
    path, url = model.get("weights_path"), model.get("weights_url")
    problem = weights_problem(weights, weights_path=path, weights_url=url)
    if problem is None and path is not None:
        problem = checkpoint_problem(path, key="model.weights_path")
    if problem is not None:
        return [WeightsError(problem)], []
    if path is None and not cache_path(weights).is_file():
        source = f"the mirror model.weights_url={url}" if url else (weights.url or "")
        return [], [
            f"model.pretrained=true: the {weights.name} {weights.model} weights are downloaded "
            f"from {source} to {cache_path(weights)}"
        ]
    return [], []
