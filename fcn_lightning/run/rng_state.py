"""The random state of a training process, as checkpoint-safe values.

Lightning checkpoints hold the weights, optimiser, schedulers and loop counters but not
the random generators, so a resumed run would draw other dropout masks than the run it
continues. `FCNModule` stores these states in its checkpoints and puts them back just
before the first training batch after a resume. Everything is tensors, lists and numbers,
so checkpoints still load with ``torch.load(weights_only=True)``.

Under DDP each process has its own streams, and they part ways as soon as the processes
draw different amounts (loss sampling draws one number per output cell, and each process
sees other image sizes). Checkpoints therefore hold every process's states in rank order,
and each process of the resumed job takes its own.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def collect_rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (global state)
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def collect_rng_states_of_all_ranks() -> list[dict[str, Any]]:
    """Every process's `collect_rng_states`, in rank order. Under torch.distributed this is
    a collective: every rank must call it (Lightning builds a checkpoint on every rank)."""
    states = collect_rng_states()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [states]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, states)
    return gathered


def states_for_rank(
    saved: dict[str, Any] | list[dict[str, Any]], rank: int, world_size: int
) -> dict[str, Any] | None:
    """This rank's saved states; None when the checkpoint was written by another number of
    processes (no exact continuation is possible then). A dict is one process's states
    (checkpoints written before states were kept per rank)."""
    if isinstance(saved, dict):
        return saved if world_size == 1 else None
    return saved[rank] if len(saved) == world_size else None


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    numpy_state = (kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
    np.random.set_state(numpy_state)  # noqa: NPY002 (the global state)
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _to_lists(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]
