"""Check a dataset before training on it: every image/label pair of every split of a preset.

    python -m fcn_lightning.verify_data data=paper paths.data_dir=/datasets

For each split: the list is readable, not empty and names each image once, its count
matches a full download, every file exists and decodes, image and label sizes match, and
label values are classes or 255 (per head, for a dataset of several: SIFT Flow); for
NYUDv2, every modality the input reads and every one whose folder is there (colour, 16-bit
depth, HHA), with the depth pixels that are 0 (missing) counted. Prints per-split counts and
the class pixel histogram (one table per head),
then every problem as `file: what is wrong`. Exit status: 0 clean, 1 problems found, 2
unusable configuration.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from fcn_lightning import resolvers  # noqa: F401  (data=folder counts its classes with one)
from fcn_lightning.data.datamodule import SegmentationDataModule, build_datamodule
from fcn_lightning.data.nyud import input_modalities, present_modalities, select_input
from fcn_lightning.data.nyud_readers import sample_problems
from fcn_lightning.data.readers import SampleError, pair_problems, read_image, read_sample_label
from fcn_lightning.data.sources import Roots, get_source, missing_message
from fcn_lightning.data.splits import (
    RepeatedIds,
    Sample,
    load_split,
    missing_files,
    split_sources,
)
from fcn_lightning.errors import DataError, FCNError
from fcn_lightning.run.check_config import check_config
from fcn_lightning.run.file_progress import file_progress
from fcn_lightning.run.overrides import fcn_main


@dataclass
class SplitReport:
    name: str
    stages: list[str]
    count: int = 0  # IDs in the list
    expected: int | None = None
    readable: int = 0  # pairs that decoded and passed every check
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    modalities: tuple[str, ...] = ()  # NYUDv2: the files checked per image
    missing_depth: int = 0  # NYUDv2: depth pixels that are 0 (no measurement)
    missing_depth_images: int = 0
    # K >= 2 heads: one row per head (row 0 is `histogram`), else None
    head_histograms: np.ndarray | None = None


@dataclass
class VerifyResult:
    splits: list[SplitReport]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


class _PairCheck(Dataset):
    """Checks one pair per item, in DataLoader workers: (problems, label value counts)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        num_classes: int,
        ignore_index: int,
        heads,
        modalities: Sequence[str] = (),
    ):
        self.samples = list(samples)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.heads = heads if len(heads) > 1 else None
        self.modalities = tuple(modalities)  # NYUDv2's; () for image/label pairs

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[list[str], torch.Tensor | None, int]:
        sample = self.samples[index]
        if self.modalities:
            problems, label, zeros = sample_problems(sample, self.modalities, self.num_classes)
            if label is None:
                return problems, None, zeros
            return problems, torch.bincount(label.flatten().long(), minlength=256)[None], zeros
        problems = []
        image = label = None
        try:
            image = read_image(sample.image)
        except SampleError as err:
            problems.append(str(err))
        try:
            label = read_sample_label(sample)
        except SampleError as err:
            problems.append(str(err))
        if image is None or label is None:
            return problems, None, 0
        problems += pair_problems(
            sample, image, label, self.num_classes, self.ignore_index, self.heads
        )
        if problems:
            return problems, None, 0
        per_head = label.reshape(-1 if label.ndim == 3 else 1, label.shape[-2] * label.shape[-1])
        histogram = torch.stack([torch.bincount(h.long(), minlength=256) for h in per_head])
        return problems, histogram, 0


def _unbatched(item):
    return item


def _stages_by_split(dm: SegmentationDataModule) -> dict[str, list[str]]:
    by_split: dict[str, list[str]] = {}
    for stage, split in dm.splits.items():
        by_split.setdefault(split, []).append(stage)
    return by_split


def check_split(
    report: SplitReport,
    dm: SegmentationDataModule,
    num_workers: int,
    progress: Progress,
) -> list[str]:
    """Fill `report` for one split and return its problems."""
    if dm.hparams.root is not None:  # a folder dataset: its own counts are the truth
        try:
            samples = dm.samples(report.name)
        except DataError as err:
            return [str(err)]
        report.count = len(samples)
        return _check_pairs(report, samples, dm, num_workers, progress)
    roots = Roots(dm.data_dir)
    report.expected = dm.expected_count(report.name)
    absent = [s for s in split_sources(report.name) if roots.find(s) is None]
    if absent:  # every missing dataset at once, not one per run
        return [missing_message(get_source(s), roots.data_dir) for s in absent]
    problems = []
    try:
        samples = load_split(report.name, roots)
    except RepeatedIds as err:  # said once; the files are checked all the same
        problems.append(str(err))
        samples = load_split(report.name, roots, repeats_ok=True)
    except DataError as err:
        return [str(err)]
    report.count = len(samples)
    try:
        samples = _with_modalities(report, samples, dm.hparams.input)
    except DataError as err:
        return [str(err)]
    if report.expected is not None and report.count != report.expected:
        problems.append(
            f"split {report.name}: {report.count} IDs, a full download has {report.expected} "
            f"(data.expected_counts.{report.name}): complete the download, or set "
            f"data.expected_counts.{report.name}=null to accept it"
        )
    missing = missing_files(samples)
    problems += [f"{path}: {what}" for path, what in missing]
    gone = {path for path, _ in missing}
    present = [
        s for s in samples
        if gone.isdisjoint((s.image, s.label, *s.more_labels, *dict(s.extra).values()))
    ]  # fmt: skip
    return problems + _check_pairs(report, present, dm, num_workers, progress)


def _with_modalities(report: SplitReport, samples: list[Sample], input_name: str) -> list[Sample]:
    """NYUDv2 samples with the files to check: the input's, then any other modality that is
    there (a missing one the input needs raises); other samples as they are."""
    if input_name == "rgb":
        return samples
    needed = input_modalities(input_name)
    report.modalities = (*needed, *(m for m in present_modalities(samples) if m not in needed))
    return select_input(samples, input_name, modalities=report.modalities)


def _check_pairs(
    report: SplitReport,
    present: list[Sample],
    dm: SegmentationDataModule,
    num_workers: int,
    progress: Progress,
) -> list[str]:
    """Read every pair of `present` with its progress bar; count the readable ones."""
    problems: list[str] = []
    loader = DataLoader(
        _PairCheck(present, dm.num_classes, dm.ignore_index, dm.heads, report.modalities),
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_unbatched,
    )
    task = progress.add_task(f"checking {report.name}", total=len(present))
    for found, histogram, zero_depth in loader:
        problems += found
        if histogram is not None:
            report.readable += 1
            report.histogram += histogram[0].numpy()
            if len(histogram) > 1:
                if report.head_histograms is None:
                    report.head_histograms = np.zeros((len(histogram), 256), dtype=np.int64)
                report.head_histograms += histogram.numpy()
        report.missing_depth += zero_depth
        report.missing_depth_images += zero_depth > 0
        progress.advance(task)
    return problems


def verify_data(cfg: DictConfig) -> VerifyResult:
    """Check every split of the data preset in `cfg.data`; print the report."""
    dm = build_datamodule(cfg.data)
    dm.prepare_data()  # downloads or generates, when the preset allows it
    class_names = dm.head_class_names
    reports = [SplitReport(name, stages) for name, stages in _stages_by_split(dm).items()]
    problems: list[str] = []
    progress = file_progress()
    with progress:
        for report in reports:
            problems += check_split(report, dm, int(cfg.get("num_workers", 0)), progress)
    problems = list(dict.fromkeys(problems))  # splits sharing a missing root say it once
    print_report(reports, class_names, dm.ignore_index, Console())
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem{'s' * (len(problems) > 1)} found", file=sys.stderr)
    return VerifyResult(reports, problems)


def print_report(
    reports: list[SplitReport],
    class_names: list[str] | dict[str, list[str]],
    ignore_index: int,
    console: Console,
) -> None:
    """The counts table, then a class pixel table per head (`class_names` per head name)."""
    heads = class_names if isinstance(class_names, dict) else {"": class_names}
    counts = Table(title="splits")
    for column in ("split", "used for", "images", "expected", "ok"):
        counts.add_column(column, justify="left" if column in ("split", "used for") else "right")
    for r in reports:
        expected = "-" if r.expected is None else str(r.expected)
        counts.add_row(r.name, ", ".join(r.stages), str(r.count), expected, str(r.readable))
    console.print(counts)
    for r in reports:
        if r.modalities:
            console.print(f"{r.name}: checked {', '.join(r.modalities)} and the label per image")
        if r.missing_depth:
            console.print(
                f"{r.name}: {r.missing_depth} depth pixels in {r.missing_depth_images} images "
                "are 0 (no measurement); the network sees them as the mean log depth (0)"
            )
    if not any(r.readable for r in reports):
        return
    for k, (head, names) in enumerate(heads.items()):
        rows = [(r.name, _head_histogram(r, k)) for r in reports]
        _print_pixels(rows, names, ignore_index, console, head)


def _head_histogram(report: SplitReport, k: int) -> np.ndarray:
    if k == 0 or report.head_histograms is None:
        return report.histogram if k == 0 else np.zeros(256, dtype=np.int64)
    return report.head_histograms[k]


def _print_pixels(
    rows: list[tuple[str, np.ndarray]],
    class_names: list[str],
    ignore_index: int,
    console: Console,
    head: str,
) -> None:
    of_head = f", head {head}" if head else ""
    pixels = Table(title=f"label pixels per class (readable pairs{of_head})")
    pixels.add_column("index", justify="right")
    pixels.add_column("class")
    for split, _ in rows:
        pixels.add_column(split, justify="right")
        pixels.add_column("%", justify="right")
    classes = [(str(i), name, i) for i, name in enumerate(class_names)]
    classes.append((str(ignore_index), "(ignore)", ignore_index))
    for index, name, value in classes:
        cells = []
        for _, histogram in rows:
            total = int(histogram.sum())
            count = int(histogram[value])
            cells += [str(count), f"{100 * count / total:.2f}" if total else "-"]
        pixels.add_row(index, name, *cells)
    console.print(pixels)


# The repository's conf/, as an absolute path: a relative one would make Hydra look for a
# Python package "conf" whenever this module is imported rather than run as a script.


@fcn_main("verify_data")
def main(cfg: DictConfig) -> None:
    try:
        check_config(cfg, "verify_data")
        result = verify_data(cfg)
    except FCNError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
