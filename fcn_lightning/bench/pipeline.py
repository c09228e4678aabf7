"""Data pipeline throughput per worker: this project's reader (torchvision.io decoding,
label checks, Caffe normalisation, collate) against a plain PIL pipeline doing the same
work, on VOC-size JPEG/PNG pairs written by `fcn_lightning.bench.loader`."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from fcn_lightning.bench.loader import write_pairs
from fcn_lightning.bench.timing import Clock, interleaved
from fcn_lightning.data.collate import stack_collate
from fcn_lightning.data.readers import SegmentationDataset
from fcn_lightning.data.splits import voc_samples
from fcn_lightning.data.transforms import build_transforms
from fcn_lightning.normalization import get_input_norm


class PlainPIL(Dataset):
    """What a from-scratch script does: PIL decode, numpy BGR mean subtraction, PIL label."""

    def __init__(self, samples):
        self.samples = samples
        self.mean = np.asarray(get_input_norm("caffe").mean, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        with Image.open(sample.image) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
        with Image.open(sample.label) as im:
            label = np.asarray(im, dtype=np.int64)
        bgr = rgb[:, :, ::-1] - self.mean
        return torch.from_numpy(bgr.transpose(2, 0, 1).copy()), torch.from_numpy(label)


@contextmanager
def pairs(count: int, height: int, width: int) -> Iterator[list]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        yield voc_samples(root, write_pairs(root, count, width, height))


@contextmanager
def one_thread() -> Iterator[None]:
    """A DataLoader worker's budget: one core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def datasets(samples) -> dict[str, tuple[Dataset, Callable]]:
    ours = SegmentationDataset(
        samples, num_classes=21, transforms=build_transforms(normalization="caffe")
    )
    return {"ours": (ours, stack_collate), "PIL": (PlainPIL(samples), default_collate)}


def check_alike(sides: dict[str, tuple[Dataset, Callable]]) -> None:
    """Both pipelines deliver the same tensors (up to JPEG decoder rounding)."""
    (ours, collate_a), (plain, collate_b) = sides["ours"], sides["PIL"]
    image_a, label_a = collate_a([ours[0]])
    image_b, label_b = collate_b([plain[0]])
    if image_a.shape != image_b.shape or not torch.equal(label_a, label_b):
        raise AssertionError("the two pipelines deliver different batches")
    if float((image_a - image_b).abs().mean()) > 2.0:
        raise AssertionError("the two pipelines decode different images")


def in_process_rates(samples, clock: Clock, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Images/s of read + decode + transform + collate at batch 1, one thread."""
    sides = datasets(samples)
    check_alike(sides)

    def run(dataset, collate) -> Callable[[], None]:
        return lambda: [collate([dataset[i]]) for i in range(len(dataset))]

    with one_thread():
        timings = interleaved(
            {name: run(*side) for name, side in sides.items()},
            clock,
            repeats=repeats,
            warmup=warmup,
        )
    return {name: len(samples) / timings.median(name) for name in sides}


def loader_rates(samples, clock: Clock, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Images/s through a DataLoader with one worker process (adds the hand-over)."""
    sides = datasets(samples)
    loaders = {
        name: DataLoader(dataset, batch_size=1, num_workers=1, collate_fn=collate,
                         persistent_workers=True)
        for name, (dataset, collate) in sides.items()
    }  # fmt: skip

    def run(loader) -> Callable[[], None]:
        return lambda: sum(1 for _ in loader)

    timings = interleaved({name: run(loader) for name, loader in loaders.items()}, clock,
                          repeats=repeats, warmup=warmup)  # fmt: skip
    return {name: len(samples) / timings.median(name) for name in loaders}
