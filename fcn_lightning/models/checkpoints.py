"""Reading weights from files safely: Lightning checkpoints, pytorch-fcn checkpoints and
plain state dicts, always with ``torch.load(weights_only=True)`` so a file cannot run code;
and what a checkpoint fixes about its inputs and classes (`TrainedWith`, `settle`)."""

from __future__ import annotations

import inspect
import logging
import pickle
import zipfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fcn_lightning.errors import ConfigError, WeightsError

log = logging.getLogger("fcn_lightning")

# Where each checkpoint format keeps its weights.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def read_state_dict(path: str | Path, *, key: str) -> dict[str, Tensor]:
    """The tensors in ``path``; ``key`` is the config key users set to point at the file.
    Only the weights are used, so the hyperparameters a newer version wrote do not matter."""
    return extract_state_dict(_load(path, key=key), source=f"{key}={path}")


def read_checkpoint(path: str | Path, *, key: str, mmap: bool = False) -> Any:
    """Whatever ``path`` holds, loaded without running code; one-line errors name ``key``.

    ``mmap``: map the tensors instead of reading them (for a look at the metadata of a
    large checkpoint); files in torch's old format are read as usual. A fcn-lightning
    checkpoint with hyperparameters this version does not know (written by a newer one)
    is refused: what an unknown setting did cannot be honoured, and ignoring it could
    change the model's output without a word.
    """
    loaded = _load(path, key=key, mmap=mmap)
    unknown = unknown_hyperparameters(loaded)
    if unknown:
        from fcn_lightning import __version__

        path = Path(path).expanduser()
        raise WeightsError(
            f"{key}={path}: written by a newer fcn-lightning: its hyperparameters "
            f"{', '.join(unknown)} are unknown to fcn-lightning {__version__}; use it with the "
            "version that wrote it (pip install -U fcn-lightning), or copy its weights into a "
            f"new run with model.init_from={path}"
        )
    return loaded


def checkpoint_problem(path: str | Path, *, key: str) -> str | None:
    """Why `read_state_dict` would refuse ``path``, found without reading its tensors
    (a torch zip file is mapped; a file in torch's old format is only looked for)."""
    path = Path(path).expanduser()
    if path.is_file() and not zipfile.is_zipfile(path):
        return None
    try:
        extract_state_dict(_load(path, key=key, mmap=True), source=f"{key}={path}")
    except WeightsError as error:
        return str(error)
    return None


def unknown_hyperparameters(loaded: Any) -> list[str]:
    """The hyperparameters of a fcn-lightning checkpoint that this version would not
    know what to do with (dotted keys, e.g. ``model.new_option``); [] for other files."""
    if not isinstance(loaded, dict):
        return []
    hparams = loaded.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("model"), dict):
        return []
    # What this version reads them into, asked at call time (they import this module).
    from fcn_lightning.data.datamodule import SegmentationDataModule
    from fcn_lightning.models.build import build_fcn
    from fcn_lightning.module import NOT_BUILD_ARGS, FCNModule

    known = {
        "": _parameters(FCNModule.__init__),
        "model.": _parameters(build_fcn) | set(NOT_BUILD_ARGS),
    }
    unknown = [str(k) for k in hparams if k not in known[""]]
    unknown += [f"model.{k}" for k in hparams["model"] if k not in known["model."]]
    data = loaded.get("datamodule_hyper_parameters")
    if isinstance(data, dict):
        data_keys = _parameters(SegmentationDataModule.__init__)
        unknown += [f"datamodule.{k}" for k in data if k not in data_keys]
    return unknown


def _parameters(function: Any) -> set[str]:
    return set(inspect.signature(function).parameters) - {"self"}


def _load(path: str | Path, *, key: str, mmap: bool = False, advise: bool = True) -> Any:
    """``torch.load`` with one-line errors; ``advise``: an unreadable file's message
    names the intact checkpoints beside it."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise WeightsError(_folder_given(path, key))
    if not path.is_file():
        raise WeightsError(f"{key}={path}: no such file; check the path")
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        blocked = [line for line in str(error).splitlines() if "GLOBAL" in line]
        if blocked:
            raise WeightsError(
                f"{key}={path}: refused to load, it would import code "
                f"({blocked[0].strip()}); only weights and checkpoints are accepted"
            ) from None
        if _is_pickle(path) and "Weights only load failed" in str(error):
            # A pickle (protocol 2+) the safe loader cannot read: not a torch.save file.
            operand = [line for line in str(error).splitlines() if "Unsupported" in line]
            raise WeightsError(
                f"{key}={path}: refused to load, a Python pickle with more than weights in it "
                f"({(operand or ['not a torch.save file'])[0].strip()}); only weights and "
                "checkpoints are accepted"
            ) from None
        raise _unreadable(path, key, error, advise=advise) from None
    except Exception as error:  # zip/EOF errors for corrupt or truncated files
        raise _unreadable(path, key, error, advise=advise) from None
    return loaded


def _folder_given(path: Path, key: str) -> str:
    """A folder where a checkpoint file was due: a run directory's checkpoints, if any."""
    found = sorted(
        (p for p in (*path.glob("*.ckpt"), *path.glob("checkpoints/*.ckpt")) if p.is_file()),
        key=lambda p: (p.name != "last.ckpt", -p.stat().st_mtime),
    )
    if not found:
        return f"{key}={path}: is a folder with no checkpoints in it; name a .ckpt file"
    shown = ", ".join(str(p.relative_to(path)) for p in found[:3])
    return (
        f"{key}={path}: is a folder, not a checkpoint file; it holds {shown}: e.g. {key}={found[0]}"
    )


def _is_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"  # the PROTO opcode that starts a protocol 2+ pickle


def _unreadable(path: Path, key: str, error: Exception, *, advise: bool = True) -> WeightsError:
    what = f"{key}={path}: not a readable PyTorch weights file ({type(error).__name__})"
    intact = intact_checkpoints_beside(path) if advise else []
    if not intact:
        return WeightsError(f"{what}; re-download or re-export it")
    listed = ", ".join(f"{p.name} (step {step})" for p, step in intact[:3])
    more = f" and {len(intact) - 3} more" if len(intact) > 3 else ""
    return WeightsError(
        f"{what}, its write was cut short or the file was damaged; intact checkpoints beside "
        f"it, newest first: {listed}{more}: use the newest with {key}={intact[0][0]}"
    )


def intact_checkpoints_beside(path: Path) -> list[tuple[Path, int]]:
    """The other Lightning checkpoints in ``path``'s folder that load, with their step,
    furthest trained first (a run's best checkpoints beside a broken last.ckpt)."""
    if path.suffix != ".ckpt":
        return []
    found = []
    for other in path.parent.glob("*.ckpt"):
        if other.name == path.name or not other.is_file():
            continue
        try:
            loaded = _load(other, key="ckpt_path", mmap=True, advise=False)
        except WeightsError:
            continue
        if _is_training_checkpoint(loaded):
            found.append((other, loaded["global_step"], other.stat().st_mtime))
    found.sort(key=lambda item: (item[1], item[2]), reverse=True)
    return [(p, step) for p, step, _ in found]


def _is_training_checkpoint(loaded: Any) -> bool:
    """A checkpoint a run of this tool wrote: weights, the step, the model's settings."""
    return (
        isinstance(loaded, dict)
        and isinstance(loaded.get("state_dict"), dict)
        and bool(loaded["state_dict"])
        and isinstance(loaded.get("global_step"), int)
        and isinstance((loaded.get("hyper_parameters") or {}).get("model"), dict)
    )


def extract_state_dict(loaded: Any, *, source: str) -> dict[str, Tensor]:
    """The state dict inside a checkpoint object, whatever tool wrote it."""
    if isinstance(loaded, dict):
        for inner in STATE_DICT_KEYS:
            if isinstance(loaded.get(inner), dict):
                loaded = loaded[inner]
                break
    if not isinstance(loaded, dict) or not loaded:
        raise WeightsError(f"{source}: holds no state dict; expected a checkpoint or weights")
    tensors = {k: v for k, v in loaded.items() if isinstance(v, Tensor)}
    if not tensors:
        raise WeightsError(f"{source}: holds no tensors; expected a checkpoint or weights")
    return tensors


def strip_prefix(state_dict: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Drop ``prefix`` when every key has it (Lightning stores the net as ``model.*``)."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


@dataclass(frozen=True)
class TrainedWith:
    """What a checkpoint fixes about the images it takes and the classes it gives: in
    eval, predict and export the checkpoint is the one source of these."""

    normalization: str
    num_classes: int
    class_names: tuple[str, ...] | None  # None: the checkpoint names no classes

    @classmethod
    def of(cls, hparams: Mapping[str, Any]) -> TrainedWith:
        """From a checkpoint's ``hyper_parameters`` (FCNModule's defaults where absent)."""
        names = hparams.get("class_names")
        return cls(
            normalization=str(hparams.get("normalization", "caffe")),
            num_classes=int((hparams.get("model") or {}).get("num_classes", 21)),
            class_names=None if names is None else tuple(str(n) for n in names),
        )


def typed_keys(overrides: Sequence[str]) -> frozenset[str]:
    """The config keys that command-line overrides set (``key=v``, ``+key=v``, ``data=x``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return frozenset(o.key_or_group for o in parsed if not o.is_delete())


def command_line_keys() -> frozenset[str]:
    """The keys the user typed for this Hydra job (none outside a Hydra app): what tells
    a value the user chose from a preset's default."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return frozenset()
    return typed_keys(HydraConfig.get().overrides.task)


def settle(
    key: str, given: Any, trained: Any, *, ckpt_path: Any, typed: Collection[str], fix: str
) -> Any:
    """The checkpoint's ``trained`` value for config ``key``, whatever ``given`` says.

    ``given`` None or equal: nothing to say. Typed by the user and different: refused,
    since scoring with it would be silently wrong. Set by a preset and different: the
    checkpoint's value is used, with a log line.
    """
    if given is None or given == trained:
        return trained
    if key in typed:
        raise ConfigError(
            f"{key}={given}: ckpt_path={ckpt_path} was trained with {key.split('.')[-1]}="
            f"{trained}; {fix}"
        )
    log.info("%s=%s (a preset's default) replaced by the checkpoint's %s", key, given, trained)
    return trained
