"""The order in which training images are drawn.

The reference's data layer draws every image at random *with replacement* from Python's
`random` seeded with 1337 (`random.randint(0, n - 1)` per image); `replacement` draws the
same stream, so with the same list order the images come in the reference's order.
`shuffle` is the usual epoch permutation. Both depend on (seed, epoch) only, so a resumed
run sees the images it would have seen, and Lightning's `set_epoch` keeps them in step.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from fcn_lightning.errors import ConfigError

SAMPLINGS = ("replacement", "shuffle")


class _EpochSampler(Sampler[int], ABC):
    """`num_items` indices per epoch, a function of (seed, epoch)."""

    def __init__(self, num_items: int, *, seed: int):
        if num_items < 1:
            raise ConfigError("cannot sample from an empty training split")
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[int]:
        indices = self.indices(self.epoch)
        # Advancing here too keeps epochs distinct where nobody calls set_epoch (a
        # distributed wrapper that re-reads this sampler every epoch).
        self.epoch += 1
        return iter(indices)

    @abstractmethod
    def indices(self, epoch: int) -> list[int]:
        """The indices of `epoch`."""


class ReplacementSampler(_EpochSampler):
    """Epoch `e` yields draws `e * n ... (e + 1) * n - 1` of the reference's stream."""

    def indices(self, epoch: int) -> list[int]:
        rng = random.Random(self.seed)
        last = self.num_items - 1
        for _ in range(epoch * self.num_items):
            rng.randint(0, last)
        return [rng.randint(0, last) for _ in range(self.num_items)]


class ShuffleSampler(_EpochSampler):
    """A fresh permutation of all items each epoch, from (seed, epoch)."""

    def indices(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_items, generator=generator).tolist()


def build_train_sampler(kind: str, num_items: int, *, seed: int) -> Sampler[int]:
    if kind == "replacement":
        return ReplacementSampler(num_items, seed=seed)
    if kind == "shuffle":
        return ShuffleSampler(num_items, seed=seed)
    raise ConfigError(f"data.sampling={kind!r}: choose one of {list(SAMPLINGS)}")
