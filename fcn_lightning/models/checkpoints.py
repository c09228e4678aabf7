"""Reading weights from files safely: Lightning checkpoints, pytorch-fcn checkpoints and
plain state dicts, always with ``torch.load(weights_only=True)`` so a file cannot run code."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fcn_lightning.errors import WeightsError

# Where each checkpoint format keeps its weights.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def read_state_dict(path: str | Path, *, key: str) -> dict[str, Tensor]:
    """The tensors in ``path``; ``key`` is the config key users set to point at the file."""
    return extract_state_dict(read_checkpoint(path, key=key), source=f"{key}={path}")


def read_checkpoint(path: str | Path, *, key: str, mmap: bool = False) -> Any:
    """Whatever ``path`` holds, loaded without running code; one-line errors name ``key``.

    ``mmap``: map the tensors instead of reading them (for a look at the metadata of a
    large checkpoint); files in torch's old format are read as usual.
    """
    path = Path(path).expanduser()
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
        raise _unreadable(path, key, error) from None
    except Exception as error:  # zip/EOF errors for corrupt or truncated files
        raise _unreadable(path, key, error) from None
    return loaded


def _is_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"  # the PROTO opcode that starts a protocol 2+ pickle


def _unreadable(path: Path, key: str, error: Exception) -> WeightsError:
    return WeightsError(
        f"{key}={path}: not a readable PyTorch weights file ({type(error).__name__}); "
        "re-download or re-export it"
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
