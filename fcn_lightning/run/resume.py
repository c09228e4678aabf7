"""Where a training run starts: fresh, or from a checkpoint, and with which settings.

``ckpt_path=auto`` (the default) makes a rerun, a SLURM requeue and a second preemption
all resume: a run directory with a resumable ``last.ckpt`` resumes it, an empty one
starts fresh, and one with training files but no checkpoint is refused (it would be
overwritten). ``ckpt_path=null`` starts fresh, but refuses a directory holding
checkpoints unless ``resume.overwrite=true`` (they are then set aside, not deleted).

A resume continues exactly what the checkpoint's run did, so the settings that change
training are compared with the ones recorded in the checkpoint; each difference is
refused unless named in ``resume.allow_changes`` (then it takes effect at the resumed
step, and ``config_changes.yaml`` records it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig
from pytorch_lightning.utilities import rank_zero_only

from fcn_lightning.data.class_list import changed_classes
from fcn_lightning.errors import ConfigError
from fcn_lightning.models.checkpoints import read_checkpoint
from fcn_lightning.run.config import resolved
from fcn_lightning.run.rundir import RunDir

# The key under which checkpoints record the resolved config that trained them.
CONFIG_KEY = "fcn_config"
CHANGES_KEY = "fcn_config_changes"

# Model settings no resume can change: they change the parameters' shapes.
SHAPE_KEYS = (
    "model.variant", "model.num_classes", "model.backbone", "model.width", "model.input",
)  # fmt: skip
# Shape keys the data preset sets (conf/model_base.yaml): a refusal names what was typed.
FOLLOWS = {"model.num_classes": "data.num_classes", "model.input": "data.input"}
# Settings that change what training does from here on (prefixes of dotted keys) ...
GUARDED = (
    "model.",
    "optim.",
    "loss.",
    *(
        f"data.{key}"
        for key in (
            "name", "train_split", "classes", "num_classes", "ignore_index", "batch_size",
            "collate", "sampling", "seed", "normalization", "hflip", "scale_range",
            "crop_size", "translate_px", "synthetic", "heads", "input",
        )
    ),
    "trainer.accumulate_grad_batches",
    "trainer.precision",
    "trainer.gradient_clip_val",
    "trainer.max_steps",
)  # fmt: skip
# ... except these, which only say where weights came from before the first step.
NOT_GUARDED = (
    "model.name",
    "model.pretrained",
    "model.weights_path",
    "model.weights_url",
    "model.init_from",
    "model.init_streams",
    "model.init_stages",
)


@dataclass
class Start:
    """How this run starts: ``ckpt_path`` None is fresh; ``changes`` are allowed settings
    that differ from the checkpoint's (``key: (old, new)``)."""

    ckpt_path: str | None
    step: int = 0
    finished: bool = False
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    set_aside: bool = False


def plan_start(cfg: DictConfig, run: RunDir) -> Start:
    """Decide, before anything is written, how the run in ``run`` starts."""
    requested = cfg.get("ckpt_path", "auto")
    resume_cfg = cfg.get("resume") or {}
    _check_resume_keys(resume_cfg)
    # Rank 0 decides for a DDP job; the other ranks start after it may have written its
    # first files (csv/hparams.yaml), and before any checkpoint of this start exists.
    other_rank = rank_zero_only.rank != 0
    if requested == "auto":
        if run.last_checkpoint.is_file():
            return _resume(cfg, str(run.last_checkpoint))
        leftovers = [] if other_rank else run.training_files()
        if leftovers:
            names = ", ".join(str(p.relative_to(run.path)) for p in sorted(leftovers)[:3])
            raise ConfigError(
                f"ckpt_path=auto: run directory {run.path} holds training files ({names}) "
                f"but no {run.last_checkpoint.relative_to(run.path)} to resume; start it over "
                "with ckpt_path=null resume.overwrite=true (its checkpoints are set aside), "
                "or give this run another hydra.run.dir"
            )
        return Start(None)
    if requested is None:
        overwrite = resume_cfg.get("overwrite", False)
        if any(run.checkpoints.glob("*.ckpt")) and not overwrite and not other_rank:
            raise ConfigError(
                f"ckpt_path=null: run directory {run.path} already holds checkpoints; resume it "
                "with ckpt_path=auto (the default), or start over with resume.overwrite=true "
                "(its checkpoints are moved to checkpoints/replaced-<n>/, none deleted)"
            )
        return Start(None, set_aside=bool(resume_cfg.get("overwrite", False)))
    path = run.last_checkpoint if requested == "last" else Path(str(requested)).expanduser()
    if not path.is_file():
        raise ConfigError(f"ckpt_path={requested}: no checkpoint at {path}")
    return _resume(cfg, str(path))


def _check_resume_keys(resume_cfg: Any) -> None:
    allowed = resume_cfg.get("allow_changes")
    if allowed is not None and (
        not isinstance(allowed, (list, ListConfig)) or not all(isinstance(k, str) for k in allowed)
    ):
        raise ConfigError(
            f"resume.allow_changes={allowed!r}: give a list of config keys, "
            "e.g. resume.allow_changes=[optim.lr,optim.momentum]"
        )
    overwrite = resume_cfg.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise ConfigError(f"resume.overwrite={overwrite!r}: choose true or false")


def _resume(cfg: DictConfig, path: str) -> Start:
    checkpoint = read_checkpoint(path, key="ckpt_path", mmap=True)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance((hparams or {}).get("model"), dict) or "loops" not in checkpoint:
        raise ConfigError(
            f"ckpt_path={path}: not a fcn-lightning training checkpoint, so there is no run to "
            "resume; to start from its weights, set model.init_from instead"
        )
    saved = checkpoint.get(CONFIG_KEY) or {k: hparams[k] for k in ("model", "optim", "loss")}
    requested = resolved(cfg)
    old, new = flatten(saved), flatten(requested)
    step = int(checkpoint.get("global_step", 0))
    allowed = [str(key) for key in (cfg.get("resume") or {}).get("allow_changes") or []]
    # Before the shapes: an edited classes.txt is what changed model.num_classes.
    _check_class_list(cfg, hparams, path, step, allowed)
    # The shapes: from the model's own record (hyper_parameters), what its weights are.
    shapes = {**old, **flatten({"model": hparams["model"]})}
    for key in SHAPE_KEYS:
        if key in shapes and shapes[key] != new.get(key):
            source = FOLLOWS.get(key)
            now = f"{key}={new.get(key)}"
            if source in new and new[source] == new.get(key):
                now = f"{source}={new[source]} ({key} follows it)"
            raise ConfigError(
                f"ckpt_path={path}: the checkpoint was trained with {key}={shapes[key]} but this "
                f"run has {now}; resume with the settings it was trained with, "
                "or start a new run with model.init_from to copy the layers that fit"
            )
    changes = guarded_changes(old, new)
    unknown = [name for name in allowed if not any(_named(key, [name]) for key in new)]
    if unknown:
        raise ConfigError(
            f"resume.allow_changes: {', '.join(unknown)} is no config key; name keys as the "
            "refusal lists them, e.g. optim.lr"
        )
    refused = {k: v for k, v in changes.items() if not _named(k, allowed)}
    if refused:
        listed = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in refused.items())
        raise ConfigError(
            f"ckpt_path={path}: resuming at step {step} with settings that differ from the "
            f"checkpoint's ({listed}); rerun with the checkpoint's settings, or allow them "
            f"with resume.allow_changes=[{','.join(refused)}]"
        )
    max_steps = new.get("trainer.max_steps")
    finished = isinstance(max_steps, int) and 0 <= max_steps <= step
    history = list(checkpoint.get(CHANGES_KEY) or [])
    return Start(path, step=step, finished=finished, changes=changes, history=history)


def _check_class_list(
    cfg: DictConfig, hparams: dict[str, Any], path: str, step: int, allowed: list[str]
) -> None:
    """The lines of data.classes as the checkpoint's run read them: the same path may hold
    another list now (classes.txt edited), which the config comparison cannot see."""
    classes = (cfg.get("data") or {}).get("classes")
    if classes is None or _named("data.classes", allowed):
        return
    changed = changed_classes(str(classes), hparams.get("class_names"), hparams.get("palette"))
    if changed is not None:
        raise ConfigError(
            f"ckpt_path={path}: resuming at step {step}, but data.classes={classes} changed "
            f"since the checkpoint's run read it ({changed}); restore that file, or allow it "
            "with resume.allow_changes=[data.classes]"
        )


def guarded_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys that change training and differ (only keys the checkpoint recorded; a longer
    ``trainer.max_steps`` just trains on)."""
    changes = {}
    for key in sorted(set(old) | set(new)):
        if key not in old or not key.startswith(GUARDED) or key.startswith(NOT_GUARDED):
            continue
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if key == "trainer.max_steps" and _longer(before, after):
            continue
        changes[key] = (before, after)
    return changes


def _longer(before: Any, after: Any) -> bool:
    if not isinstance(before, int) or not isinstance(after, int):
        return False
    return after < 0 or 0 <= before <= after


def _named(key: str, allowed: list[str]) -> bool:
    return any(key == name or key.startswith(f"{name}.") for name in allowed)


def _show(value: Any) -> str:
    return "(unset)" if value is None else str(value)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat
