"""Rules across keys, per entry point: what no single key's type or range says (a workers
setting that needs workers, a count for a split the run reads, Lightning's fraction
limits, a GPU trainer on a machine without one, exactly one model source). Each rule
takes the resolved config and returns one problem line or None; `check_config` runs them
once every key has passed its own check."""

from __future__ import annotations

import difflib


def _train_steps(values: dict) -> str | None:
    steps = values["trainer"]["max_steps"]
    if steps < 1:
        return (
            f"trainer.max_steps={steps}: training needs a number of steps (at least 1); "
            "-1 would train forever"
        )
    return None


def _data(values: dict) -> str | None:
    data = values.get("data") or {}
    if data.get("num_workers") == 0 and data.get("persistent_workers"):
        return "data.persistent_workers=true needs data.num_workers > 0"
    if data.get("num_workers") == 0 and data.get("prefetch_factor") is not None:
        return "data.prefetch_factor needs data.num_workers > 0: set it to null"
    crop = data.get("crop_size")
    if isinstance(crop, list) and len(crop) != 2:
        return f"data.crop_size={crop}: give one size or [height, width]"
    scale = data.get("scale_range")
    if scale and scale[0] > scale[1]:
        return f"data.scale_range={scale}: give [low, high] with low <= high"
    return _expected_counts(data, values.get("split"))


def _expected_counts(data: dict, split: object) -> str | None:
    """A count for a split the data does not read would never be checked (a typo)."""
    splits = [data.get(k) for k in ("train_split", "val_split", "test_split")]
    used = sorted({str(s) for s in (*splits, split) if isinstance(s, str)})
    for name in data.get("expected_counts") or {}:
        if str(name) not in used:
            close = difflib.get_close_matches(str(name), used, n=1)
            near = f"; nearest: {close[0]}" if close else ""
            return (
                f"data.expected_counts.{name}: no split of this run is named {name} (its "
                f"splits: {', '.join(used)}{near}); a count for it would never be checked"
            )
    return None


def _trainer(values: dict) -> str | None:
    """Lightning's rules for the values the schema types loosely."""
    trainer = values["trainer"]
    if trainer.get("devices") == 0:
        return "trainer.devices=0: give a count (1, 2, ...), -1 for all devices, or auto"
    interval = trainer.get("val_check_interval")
    if isinstance(interval, float) and interval > 1:
        return (
            f"trainer.val_check_interval={interval}: a float is a fraction of an epoch (at "
            f"most 1.0); give a number of steps as an integer, e.g. {int(interval)}"
        )
    if isinstance(interval, float) and trainer.get("check_val_every_n_epoch") is None:
        return (
            f"trainer.val_check_interval={interval}: a fraction of an epoch needs "
            "trainer.check_val_every_n_epoch; give a number of steps as an integer instead"
        )
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches",
                "overfit_batches"):  # fmt: skip
        value = trainer.get(key)
        if isinstance(value, float) and value > 1:
            return (
                f"trainer.{key}={value}: a float is a fraction (at most 1.0); give a number "
                f"of batches as an integer, e.g. {int(value)}"
            )
    return None


def _gpu(values: dict) -> str | None:
    trainer = values["trainer"]
    if trainer["accelerator"] not in ("gpu", "cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return (
            f"trainer.accelerator={trainer['accelerator']}: this machine has no CUDA GPU "
            "(torch.cuda.is_available() is false); use trainer=cpu or trainer.accelerator=auto"
        )
    devices = trainer["devices"]
    if isinstance(devices, int) and devices > torch.cuda.device_count():
        return (
            f"trainer.devices={devices}: this machine has {torch.cuda.device_count()} CUDA "
            "GPU(s); use trainer.devices=-1 for all of them"
        )
    return None


def _model_source(values: dict) -> str | None:
    from fcn_lightning.interop.zoo_registry import model_source_problem

    return model_source_problem(values.get("ckpt_path"), values.get("model_zoo"))


def _predict_inputs(values: dict) -> str | None:
    if values.get("format", "images") == "images" and values.get("inputs") is None:
        return "inputs is required: give inputs=<an image, a folder or a list file>"
    return None


TASK_RULES = {
    "train": (_train_steps, _data, _trainer, _gpu),
    "eval": (_model_source, _data, _trainer, _gpu),
    "predict": (_model_source, _predict_inputs),
    "export": (_model_source,),
    "verify_data": (_data,),
}
