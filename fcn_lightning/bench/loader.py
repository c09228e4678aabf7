"""Loader throughput on PASCAL-sized pairs: images per second, per DataLoader worker.

    python -m fcn_lightning.bench.loader --images 200 --workers 0 1 2

Writes VOC-like pairs (500x375 JPEGs of photo-like content, about the size of VOC's, and
palette PNG labels) to a temporary directory, then times: decoding alone (torchvision.io
against PIL), one full sample (decode, label, checks, Caffe normalisation) in this process,
and DataLoaders with each number of workers at batch 1, the paper's setting.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader

from fcn_lightning.data.readers import SegmentationDataset, read_image
from fcn_lightning.data.splits import voc_samples
from fcn_lightning.data.transforms import build_transforms


def write_pairs(root: Path, count: int, width: int, height: int, seed: int = 0) -> list[str]:
    """Photo-like JPEGs (smooth fields, shapes, sensor noise) and palette PNG labels."""
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir(parents=True)
    ids = [f"2012_{i:06d}" for i in range(count)]
    for image_id in ids:
        # Detail and noise tuned so files average ~100 KB, like VOC's (1.9 GB / 17,125).
        coarse = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        label = Image.new("L", (width, height), 0)
        draw_image, draw_label = ImageDraw.Draw(image), ImageDraw.Draw(label)
        for _ in range(rng.integers(2, 6)):
            x0, y0 = rng.integers(0, width - 40), rng.integers(0, height - 40)
            box = [x0, y0, x0 + rng.integers(30, width // 2), y0 + rng.integers(30, height // 2)]
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw_image.ellipse(box, fill=colour)
            draw_label.ellipse(box, fill=int(rng.integers(1, 21)), outline=255, width=3)
        image = image.filter(ImageFilter.GaussianBlur(0.8))
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (height, width, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(
            root / "JPEGImages" / f"{image_id}.jpg", quality=92
        )
        png = Image.fromarray(np.asarray(label), mode="P")
        png.putpalette(_palette())
        png.save(root / "SegmentationClass" / f"{image_id}.png")
    return ids


def _palette() -> list[int]:
    """Any 256-colour palette: label values are indices, the colours only show them."""
    return [int(v) for v in np.random.default_rng(0).integers(0, 256, 768)]


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def decode_rates(paths: list[Path]) -> dict[str, float]:
    start = time.perf_counter()
    for path in paths:
        read_image(path)
    torchvision_rate = _rate(len(paths), time.perf_counter() - start)
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    pil_rate = _rate(len(paths), time.perf_counter() - start)
    return {"torchvision.io": torchvision_rate, "PIL": pil_rate}


def loader_rate(dataset: SegmentationDataset, workers: int) -> float:
    loader = DataLoader(dataset, batch_size=1, num_workers=workers)
    iterator = iter(loader)
    next(iterator)  # workers started and warm
    start = time.perf_counter()
    count = sum(1 for _ in iterator)
    return _rate(count, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fcn_lightning.bench.loader")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core per loader process, as in a DataLoader worker
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = write_pairs(root, args.images, args.width, args.height)
        samples = voc_samples(root, ids)
        size_kb = np.mean([s.image.stat().st_size for s in samples]) / 1024
        print(f"{args.images} pairs of {args.width}x{args.height}, JPEG {size_kb:.0f} KB mean")
        for name, rate in decode_rates([s.image for s in samples]).items():
            print(f"decode only, {name:>14}: {rate:7.1f} images/s")
        dataset = SegmentationDataset(
            samples, num_classes=21, transforms=build_transforms(normalization="caffe")
        )
        start = time.perf_counter()
        for index in range(len(dataset)):
            dataset[index]
        full = _rate(len(dataset), time.perf_counter() - start)
        print(f"full sample, in process:  {full:7.1f} images/s")
        for workers in args.workers:
            rate = loader_rate(dataset, workers)
            per_worker = rate / max(workers, 1)
            print(
                f"DataLoader, {workers} workers: {rate:7.1f} images/s ({per_worker:.1f} per worker)"
            )


if __name__ == "__main__":
    main()
