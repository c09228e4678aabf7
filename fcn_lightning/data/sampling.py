"""The order in which training images are drawn.

The reference's data layer draws every image at random *with replacement* from Python's
`random` seeded with 1337 (`random.randint(0, n - 1)` per image); `replacement` draws the
same stream, so with the same list order the images come in the reference's order.
`shuffle` is the usual epoch permutation. Both depend on (seed, epoch) only, so a resumed
run sees the images it would have seen, and Lightning's `set_epoch` keeps them in step.

Exact resumption needs two more things, both here. `SeededDraws` gives each draw the seed
of its random augmentation, a function of (seed, epoch, position): a sample is flipped or
cropped the same way whichever worker loads it and whenever the loader was created, so
runs resume exactly and give the same batches with any number of workers.
`ResumableLoader` is a DataLoader that Lightning treats as resumable: resuming in the
middle of an epoch, it skips the batches the interrupted run had already trained on
(by index; nothing is read), instead of starting the epoch again.
"""

from __future__ import annotations

import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

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


def draw_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of draw `position` of `epoch`: distinct, and 63 bits."""
    return (((seed * 1_000_003) ^ epoch) * 1_000_003 + position) % (1 << 63)


class SeededDraws(Sampler[tuple[int, int]]):
    """`(index, augmentation seed)` for each index `sampler` draws; the dataset seeds the
    sample's random transforms with it."""

    def __init__(self, sampler: _EpochSampler):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, seed = self.sampler.epoch, self.sampler.seed
        for position, index in enumerate(self.sampler):
            yield index, draw_seed(seed, epoch, position)


class ResumableLoader(DataLoader):
    """A DataLoader whose first iteration skips `skip_batches` batches.

    It has `state_dict` / `load_state_dict`, so Lightning treats it as resumable; the
    position itself comes from the trainer's restored batch count (the datamodule passes
    it when it builds the loader), which is exact where a count kept here would be off by
    the batches Lightning prefetches. `skip_batches` is an argument so the loader survives
    Lightning re-creating it with a distributed sampler; the skip applies to this rank's
    batches.
    """

    def __init__(self, *args: Any, skip_batches: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.skip_batches = skip_batches
        self._skipping = 0  # the skip of the iterator being created, else 0

    def _get_iterator(self):
        # A multi-worker iterator reads the batch order twice while it is created (and
        # again each epoch when its workers persist): skip only within this creation.
        self._skipping, self.skip_batches = self.skip_batches, 0
        try:
            return super()._get_iterator()
        finally:
            self._skipping = 0

    @property
    def _index_sampler(self) -> Iterable:
        return _Skipping(self, super()._index_sampler)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to load: see the class docstring."""


class _Skipping:
    """The loader's batches of indices, less the first `loader._skipping` of them."""

    def __init__(self, loader: ResumableLoader, batches: Iterable):
        self.loader, self.batches = loader, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator:
        return itertools.islice(iter(self.batches), self.loader._skipping, None)
