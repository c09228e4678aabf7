"""The typed config: one dataclass per config group, and one per entry point's root.

Each field is a key of the composed config, typed with the Python types the checker in
`fcn_lightning.run.check_config` understands (bool, int, float, str, Optional, Union,
Literal, list, dict and these dataclasses) and bounded with `spec`. A field without a
default must be in the config; one with a default may be left out. The YAML files under
conf/ stay the place where values are set; this module says which keys exist and which
values they may take, and `tests/run/test_config_schema.py` composes every preset against
it. Values stay primitives (checkpoints keep loading with ``weights_only=True``).
"""

# ruff: noqa: RUF009  (`spec` builds each field's bounds; they are read, never mutated)
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fcn_lightning.data.collate import COLLATES
from fcn_lightning.data.inputs import INPUTS
from fcn_lightning.data.sampling import SAMPLINGS
from fcn_lightning.loss import NORMALIZE
from fcn_lightning.models.build import BACKBONES
from fcn_lightning.models.dense import METHODS
from fcn_lightning.models.fcn import GEOMETRIES, UPSAMPLING, VARIANTS
from fcn_lightning.normalization import NORMS
from fcn_lightning.optim import SCHEDULES

OPTIONAL = object()  # `spec(default=OPTIONAL)`: the key may be absent


def spec(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | None = None,
    length: int | None = None,
    nonempty: bool = False,
    pattern: str | None = None,
    partial: bool = False,
    default: Any = dataclasses.MISSING,
) -> Any:
    """A field's bounds: ``ge``/``gt``/``le``/``lt`` for numbers (each item of a list),
    ``choices`` for strings, ``length`` for lists, ``nonempty`` for strings and lists,
    ``pattern`` (a regular expression, as words after ``|``) for strings; ``partial``
    for a group whose keys may each be left out."""
    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "length": length,
              "nonempty": nonempty, "pattern": pattern, "partial": partial}  # fmt: skip
    given = {k: v for k, v in bounds.items() if v is not None and v is not False}
    return field(default=default, metadata=given)


def optional(**bounds: Any) -> Any:
    return spec(default=OPTIONAL, **bounds)


Path = str  # a file or folder path, as the user gives it


@dataclass(kw_only=True)
class Paths:
    data_dir: Path = spec(nonempty=True)
    log_dir: Path = spec(nonempty=True)
    output_dir: Path = spec(nonempty=True)


@dataclass(kw_only=True)
class Synthetic:
    seed: int = optional(ge=0)
    num_train: int = optional(ge=1)
    num_val: int = optional(ge=1)
    image_size: int = optional(ge=8)
    overwrite: bool = optional()


@dataclass(kw_only=True)
class Head:
    """One entry of data.heads (fcn_lightning.data.heads) and of model.heads."""

    name: str = spec(pattern=r"[a-z][a-z0-9]*|a lower-case identifier")
    num_classes: int = spec(ge=1, le=254)
    classes: str | None = optional(nonempty=True)


@dataclass(kw_only=True)
class Data:
    _target_: str = spec(choices=("fcn_lightning.data.datamodule.SegmentationDataModule",))
    name: str = spec(nonempty=True)
    data_dir: Path = spec(nonempty=True)
    train_split: str = spec(nonempty=True)
    val_split: str = spec(nonempty=True)
    test_split: str | None = spec(nonempty=True)
    expected_counts: dict[str, int | None] | None = spec(ge=0)  # null: none checked
    num_classes: int = spec(ge=2)
    classes: str = spec(nonempty=True)  # pascal | synthetic | a class-names file
    heads: list[Head] | None = optional(nonempty=True)  # null: one head
    ignore_index: int = spec(ge=0, le=255)
    batch_size: int = spec(ge=1)
    val_batch_size: int = spec(ge=1)
    collate: str = spec(choices=COLLATES)
    sampling: str = spec(choices=SAMPLINGS)
    seed: int = spec(ge=0, lt=2**32)
    normalization: str = spec(choices=tuple(NORMS))
    input: str = spec(choices=tuple(INPUTS))  # what the network is fed (data/inputs.py)
    hflip: bool
    scale_range: list[float] | None = spec(gt=0, length=2)
    crop_size: int | list[int] | None = spec(ge=1)
    translate_px: int = spec(ge=0)
    num_workers: int = spec(ge=0)
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None = spec(ge=1)
    download: bool
    download_mirrors: list[str] = spec()
    generate: bool
    synthetic: Synthetic | None = spec()
    root: Path | None = optional(nonempty=True)  # data=folder: the dataset's folder
    layout: str = optional(choices=("auto", "folders", "voc"))


@dataclass(kw_only=True)
class Model:
    name: str = spec(nonempty=True)
    variant: str = spec(choices=tuple(VARIANTS))
    num_classes: int = spec(ge=2)
    backbone: str = spec(choices=tuple(BACKBONES))
    geometry: str = spec(choices=GEOMETRIES)
    pretrained: bool
    weights: str = spec(choices=tuple(NORMS))
    weights_path: Path | None = spec(nonempty=True)
    weights_url: str | None = spec(nonempty=True)
    width: float = spec(gt=0, le=4)
    upsampling: str = spec(choices=UPSAMPLING)
    frozen_backbone: bool
    dropout: float = spec(ge=0, lt=1)
    batch_norm: str = spec(choices=("frozen", "train"))
    init_from: Path | None = spec(nonempty=True)
    # Late fusion: stream -> a trained one-stream checkpoint (or zoo:<name>) to start it from.
    init_streams: dict[str, Path] | None = spec(nonempty=True)
    init_stages: list[str] | None = spec(choices=tuple(VARIANTS))
    input: str = optional(choices=tuple(INPUTS))  # follows data.input
    heads: list[Head] | None = optional(nonempty=True)  # follows data.heads


@dataclass(kw_only=True)
class Recipe:
    name: str = spec(nonempty=True)
    lr: dict[str, float] = spec(gt=0)
    steps: dict[str, int] = spec(ge=1)
    paper_lr: float | None = spec(gt=0)  # None: no entry for this model (optim.lr must be set)
    paper_steps: int | None = spec(ge=1)
    staged: bool
    fixed: bool
    name_suffix: str


@dataclass(kw_only=True)
class Optim:
    name: str = spec(nonempty=True)
    lr: float = spec(gt=0)
    momentum: float = spec(ge=0, lt=1)
    weight_decay: float = spec(ge=0)
    bias_lr_mult: float = spec(ge=0)
    schedule: str = spec(choices=SCHEDULES)
    poly_power: float = spec(gt=0)
    accumulate_grad_batches: int = optional(ge=1)


@dataclass(kw_only=True)
class Loss:
    normalize: str = spec(choices=NORMALIZE)
    keep_prob: float = spec(gt=0, le=1)
    class_weight: list[float] | None = spec(ge=0, nonempty=True)
    class_balance: str | None = spec(choices=("median_frequency",))


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")
PRECISIONS = ("64-true", "64", 64, "32-true", "32", 32, "16-true", "bf16-true", "16-mixed",
              "bf16-mixed", "16", 16, "bf16", "transformer-engine")  # fmt: skip


@dataclass(kw_only=True)
class Trainer:
    """The keys this project sets; any other `pytorch_lightning.Trainer` argument may be
    added (``+trainer.<name>=...``) and goes to Lightning unchecked."""

    _target_: str = spec(choices=("pytorch_lightning.Trainer",))
    default_root_dir: Path = spec(nonempty=True)
    accelerator: str = spec(choices=ACCELERATORS)
    devices: int | str | list[int] = spec(
        ge=-1, nonempty=True, pattern=r"auto|-1|\d+(,\d+)*,?|a count, -1, auto or GPU ids 0,1"
    )
    num_nodes: int = optional(ge=1)
    strategy: str = optional(nonempty=True)
    precision: str | int = spec(choices=PRECISIONS)
    max_steps: int = spec(ge=-1)
    max_epochs: int | None = spec(ge=-1)
    val_check_interval: int | float | None = spec(gt=0)
    check_val_every_n_epoch: int | None = spec(ge=1)
    accumulate_grad_batches: int = spec(ge=1)
    log_every_n_steps: int = spec(ge=1)
    num_sanity_val_steps: int = spec(ge=-1)
    deterministic: bool | str | None = spec(choices=(True, False, "warn"))
    benchmark: bool | None = spec()
    gradient_clip_val: float | None = spec(gt=0)
    enable_model_summary: bool
    ddp_timeout_s: float = spec(gt=0)
    ddp_startup_timeout_s: float | None = spec(gt=0)
    channels_last: bool
    compile: bool
    limit_train_batches: int | float = optional(ge=0)
    limit_val_batches: int | float = optional(ge=0)
    limit_test_batches: int | float = optional(ge=0)
    overfit_batches: int | float = optional(ge=0)
    profiler: str | None = optional(nonempty=True)
    sync_batchnorm: bool = optional()


@dataclass(kw_only=True)
class TTA:
    hflip: bool
    scales: list[float] = spec(gt=0, nonempty=True)


@dataclass(kw_only=True)
class Inference:
    dense: str = spec(choices=METHODS)
    factor: int = spec(ge=1)
    tta: TTA


@dataclass(kw_only=True)
class Resume:
    allow_changes: list[str] = spec()
    overwrite: bool


# logger / callbacks: named _target_ nodes, each null to switch it off
Targets = dict[str, dict[str, Any] | None] | None


@dataclass(kw_only=True)
class TrainConfig:
    task_name: str = spec(pattern=r"(?!\.\.?$)[^/\x00]+|a name without / (it names a folder)")
    seed: int = spec(ge=0, lt=2**32)
    ckpt_path: Path | None = spec(nonempty=True)  # auto | last | a file
    resume: Resume
    claim_gpu: bool
    test: bool
    run_name: str = spec(pattern=r"(?!\.\.?$)[^/\x00]+|a name without / (it names a folder)")
    group: str | None = spec()
    tags: list[str] = spec()
    print_config: bool
    paths: Paths
    data: Data
    model: Model
    recipe: Recipe
    optim: Optim
    loss: Loss
    trainer: Trainer
    logger: Targets = spec()
    callbacks: Targets = spec()


@dataclass(kw_only=True)
class EvalConfig:
    task_name: str = spec(pattern=r"(?!\.\.?$)[^/\x00]+|a name without / (it names a folder)")
    ckpt_path: Path | None = spec(nonempty=True)  # or model_zoo
    model_zoo: str | None = spec(nonempty=True)  # a zoo entry (fcn_lightning/interop/zoo.yaml)
    zoo_mirrors: list[str] = spec()
    split: str = spec(nonempty=True)
    data_dir: Path | None = spec(nonempty=True)
    batch_size: int = spec(ge=1)
    num_workers: int = spec(ge=0)
    worst_k: int = spec(ge=0, le=1000)  # predictions kept in memory: k masks
    run_name: str = spec(pattern=r"(?!\.\.?$)[^/\x00]+|a name without / (it names a folder)")
    print_config: bool
    paths: Paths
    trainer: Trainer
    inference: Inference
    # None: the checkpoint's data; a preset (data=voc2012); or keys over the checkpoint's
    # (+data.<key>=...), so every key may be left out.
    data: Data | None = optional(partial=True)


@dataclass(kw_only=True)
class VOCSubmission:
    year: int = spec(choices=(2012, 2011))
    comp: str = spec(choices=("comp6", "comp5"))
    split: str = spec(pattern=r"[\w.-]+|a list name such as test (no / or spaces)")
    root: Path | None = spec(nonempty=True)


@dataclass(kw_only=True)
class PredictConfig:
    task_name: str = spec(pattern=r"(?!\.\.?$)[^/\x00]+|a name without / (it names a folder)")
    ckpt_path: Path | None = spec(nonempty=True)  # or model_zoo
    model_zoo: str | None = spec(nonempty=True)  # a zoo entry (fcn_lightning/interop/zoo.yaml)
    zoo_mirrors: list[str] = spec()
    inputs: Path | None = spec(nonempty=True)  # an image, a folder or a list file
    format: str = spec(choices=("images", "voc"))
    voc: VOCSubmission
    out_dir: Path = spec(nonempty=True)
    device: str = spec(pattern=r"auto|cpu|cuda(:\d+)?|auto, cpu, cuda or cuda:<index>")
    alpha: float = spec(ge=0, le=1)
    normalization: str | None = spec(choices=tuple(NORMS))  # null: the checkpoint's
    run_name: str = spec(pattern=r"(?!\.\.?$)[^/\x00]+|a name without / (it names a folder)")
    print_config: bool
    paths: Paths
    inference: Inference


@dataclass(kw_only=True)
class ExportConfig:
    task_name: str = spec(pattern=r"(?!\.\.?$)[^/\x00]+|a name without / (it names a folder)")
    ckpt_path: Path | None = spec(nonempty=True)  # or model_zoo
    model_zoo: str | None = spec(nonempty=True)  # a zoo entry (fcn_lightning/interop/zoo.yaml)
    zoo_mirrors: list[str] = spec()
    format: str = spec(choices=("onnx", "torchscript"))
    out: Path | None = spec(nonempty=True)
    normalize_in_graph: bool
    normalization: str | None = spec(choices=tuple(NORMS))  # null: the checkpoint's
    example_size: list[int] = spec(ge=1, length=2)
    opset: int = spec(ge=11)  # the graph's Pad needs 11
    check: bool
    check_tolerance: float = spec(gt=0)
    run_name: str = spec(pattern=r"(?!\.\.?$)[^/\x00]+|a name without / (it names a folder)")
    paths: Paths
    inference: Inference


@dataclass(kw_only=True)
class VerifyDataConfig:
    num_workers: int = spec(ge=0)
    paths: Paths
    data: Data


SCHEMAS: dict[str, type] = {
    "train": TrainConfig,
    "eval": EvalConfig,
    "predict": PredictConfig,
    "export": ExportConfig,
    "verify_data": VerifyDataConfig,
}
