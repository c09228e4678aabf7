"""Interleaved timing: every side runs once per round (A B A B ...), after warm-up rounds,
so drift in the machine's speed (other jobs, clocks, caches) falls on all sides alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


class Clock:
    """Wall-clock seconds of a call, waiting for queued GPU work on both ends."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def seconds(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - start, out


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Timings:
    times: dict[str, list[float]]  # seconds per timed call, per side
    first: dict[str, float]  # seconds of each side's first call

    def median(self, name: str) -> float:
        return median(self.times[name])


def interleaved(
    sides: dict[str, Callable[[], Any]],
    clock: Clock,
    *,
    repeats: int,
    warmup: int = 1,
    on_warmup: Callable[[dict[str, Any]], None] | None = None,
) -> Timings:
    """Seconds per call of each side over ``repeats`` timed rounds, in the order given,
    after ``warmup`` untimed ones.

    Each side's first call is in ``first`` (compile time lives there); ``on_warmup``
    receives the first round's outputs (to check them before any timing counts).
    """
    first: dict[str, float] = {}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(warmup + repeats):
        outputs = {}
        for name, fn in sides.items():
            spent, outputs[name] = clock.seconds(fn)
            first.setdefault(name, spent)
            if round_ >= warmup:
                times[name].append(spent)
        if round_ == 0 and on_warmup is not None:
            on_warmup(outputs)
        del outputs
    return Timings(times, first)


def matmul(n: int, device: torch.device, dtype: torch.dtype = torch.float32):
    """A closure multiplying two ``n x n`` matrices, and its FLOPs (2 n^3)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    return (lambda: torch.mm(a, b, out=out)), 2 * n**3
