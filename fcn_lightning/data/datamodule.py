"""The LightningDataModule: a data preset (`conf/data/*.yaml`) turned into DataLoaders.

Construction only checks the configuration, so a bad value fails before any work and
building the module never touches the disk. `prepare_data` downloads or generates what is
missing (when allowed); `setup` reads the split lists and checks that every file is there
and every count is right, so a broken dataset fails at once with the file named, not an
hour into training inside a worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from fcn_lightning.data import class_list, folder
from fcn_lightning.data.collate import build_collate
from fcn_lightning.data.heads import check_heads
from fcn_lightning.data.inputs import input_channels, input_streams
from fcn_lightning.data.nyud import select_input
from fcn_lightning.data.nyud_readers import NYUDDataset
from fcn_lightning.data.readers import IGNORE_INDEX, SegmentationDataset
from fcn_lightning.data.sampling import (
    SAMPLINGS,
    ResumableLoader,
    SeededDraws,
    build_train_sampler,
)
from fcn_lightning.data.sources import (
    Roots,
    archive_path,
    data_dir_problem,
    ensure_sources,
    get_source,
)
from fcn_lightning.data.splits import (
    Sample,
    check_split,
    load_class_names,
    load_split,
    split_sources,
)
from fcn_lightning.data.transforms import build_stream_transforms, build_transforms, crop_hw
from fcn_lightning.heads import head_spec
from fcn_lightning.errors import ConfigError, DataError, FCNError


class SegmentationDataModule(pl.LightningDataModule):
    """Train / val / test splits of one dataset preset, batched for an FCN.

    Batches are `(images float32 B x C x H x W normalised, labels int64 B x H x W)` with
    `ignore_index` marking void and padding; C = 3 for `input="rgb"`, else the channels
    of the input's streams (`data/inputs.py`: NYUDv2's colour, HHA, depth). With K >= 2
    `heads` (data.heads) the labels are B x K x H x W, one labelling per head in
    data.heads order.
    """

    def __init__(
        self,
        *,
        train_split: str,
        val_split: str,
        test_split: str | None = None,
        name: str = "custom",
        data_dir: str = "data",
        expected_counts: Mapping[str, int | None] | None = None,
        num_classes: int = 21,
        classes: str = "pascal",
        heads: Sequence[Mapping[str, Any]] | None = None,
        ignore_index: int = IGNORE_INDEX,
        batch_size: int = 1,
        val_batch_size: int = 1,
        collate: str = "stack",
        sampling: str = "replacement",
        seed: int = 1337,
        normalization: str = "caffe",
        hflip: bool = False,
        scale_range: Sequence[float] | None = None,
        crop_size: int | Sequence[int] | None = None,
        translate_px: int = 0,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        download: bool = False,
        download_mirrors: Sequence[str] = (),
        generate: bool = False,
        synthetic: Mapping[str, int] | None = None,
        root: str | None = None,
        layout: str = "auto",
        input: str = "rgb",  # data.input: fcn_lightning.data.inputs
    ):
        super().__init__()
        test_split = test_split or val_split
        hparams: dict[str, Any] = {
            "name": name,
            "data_dir": str(data_dir),
            "train_split": train_split,
            "val_split": val_split,
            "test_split": test_split,
            "expected_counts": {str(k): v for k, v in (expected_counts or {}).items()},
            "num_classes": int(num_classes),
            "classes": classes,
            "heads": check_heads(heads, int(num_classes), classes, int(ignore_index)),
            "ignore_index": int(ignore_index),
            "batch_size": int(batch_size),
            "val_batch_size": int(val_batch_size),
            "collate": collate,
            "sampling": sampling,
            "seed": int(seed),
            "normalization": normalization,
            "hflip": bool(hflip),
            "scale_range": None if scale_range is None else [float(s) for s in scale_range],
            "crop_size": None if crop_size is None else _int_or_list(crop_size),
            "translate_px": int(translate_px),
            "num_workers": int(num_workers),
            "pin_memory": bool(pin_memory),
            "persistent_workers": bool(persistent_workers),
            "prefetch_factor": prefetch_factor,
            "download": bool(download),
            "download_mirrors": [str(m) for m in download_mirrors],
            "generate": bool(generate),
            "synthetic": None if synthetic is None else dict(synthetic),
            # A user's own dataset (fcn_lightning.data.folder): its splits are its folders.
            "root": folder.absolute_root(root),
            "layout": layout,
            "input": str(input),
        }
        self.save_hyperparameters(hparams)
        self._check_config()
        h = self.hparams
        if h.input == "rgb":
            build, kind = build_transforms, {"normalization": h.normalization}
        else:  # the dataset normalises each stream; the geometry follows on all channels
            build, kind = build_stream_transforms, {"channels": input_channels(h.input)}
        self.train_transforms = build(
            **kind,
            ignore_index=h.ignore_index,
            hflip=h.hflip,
            scale_range=h.scale_range,
            crop_size=h.crop_size,
            translate_px=h.translate_px,
        )
        self.eval_transforms = build(**kind, ignore_index=h.ignore_index)
        self.train_dataset: SegmentationDataset | None = None
        self.val_dataset: SegmentationDataset | None = None
        self.test_dataset: SegmentationDataset | None = None
        self._datasets: dict[tuple[str, bool], SegmentationDataset] = {}
        self._class_names: list[str] | None = None

    def _check_config(self) -> None:
        h = self.hparams
        if not h.data_dir.strip():  # Path("") is the current folder: never read or write it
            raise ConfigError(data_dir_problem(h.data_dir))
        if h.root is not None:
            folder.check_layout(h.layout)
        input_streams(h.input)
        if h.root is not None and h.input != "rgb":
            raise ConfigError(f"data.input={h.input!r}: a folder dataset feeds rgb images only")
        for key in ("train_split", "val_split", "test_split") if h.root is None else ():
            try:
                sources = split_sources(h[key])
            except ConfigError as err:
                raise ConfigError(f"data.{key}: {err}") from None
            for source in map(get_source, sources):
                if h.input not in source.inputs:
                    raise ConfigError(
                        f"data.input={h.input!r}: {source.title} ({h[key]}) has no such input; "
                        f"choose one of {list(source.inputs)}"
                    )
        if h.sampling not in SAMPLINGS:
            raise ConfigError(f"data.sampling={h.sampling!r}: choose one of {list(SAMPLINGS)}")
        build_collate(h.collate)
        crop_hw(h.crop_size)
        if not 1 <= h.num_classes <= h.ignore_index:
            raise ConfigError(
                f"data.num_classes={h.num_classes} must be between 1 and data.ignore_index="
                f"{h.ignore_index}"
            )
        for key in ("batch_size", "val_batch_size"):
            if h[key] < 1:
                raise ConfigError(f"data.{key}={h[key]} must be at least 1")
        if h.batch_size > 1 and h.collate == "stack" and h.crop_size is None:
            raise ConfigError(
                f"data.batch_size={h.batch_size} needs images of one size: set data.collate=pad "
                "(pad to the largest image; padding is ignored) or data.crop_size (fixed crops)"
            )
        if h.val_batch_size > 1 and h.collate == "stack":
            raise ConfigError(
                f"data.val_batch_size={h.val_batch_size}: validation images keep their own "
                "sizes, so set data.collate=pad or data.val_batch_size=1"
            )
        if h.num_workers < 0:
            raise ConfigError(f"data.num_workers={h.num_workers} must be >= 0")
        if h.generate and h.synthetic is None:
            raise ConfigError("data.generate=true needs data.synthetic (the generator's settings)")

    # -- what the model and the loggers need ------------------------------------------

    @property
    def num_classes(self) -> int:
        return self.hparams.num_classes

    @property
    def ignore_index(self) -> int:
        return self.hparams.ignore_index

    @property
    def heads(self) -> tuple[tuple[str, int], ...]:
        """(name, num_classes) per head, as the model's `heads`: one head is `("", C)`."""
        return head_spec(self.hparams.heads, self.num_classes)

    @property
    def head_class_names(self) -> dict[str, list[str]]:
        """Class names per head name (one head: {"": class_names})."""
        if self.hparams.heads is None:
            return {"": self.class_names}
        names = {}
        for k, head in enumerate(self.hparams.heads):
            listed = self.class_names if k == 0 else _head_names(head, k)
            names[head["name"]] = listed
        return names

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            names = load_class_names(self.hparams.classes)
            if len(names) != self.num_classes:
                raise ConfigError(
                    f"data.classes={self.hparams.classes!r} names {len(names)} classes but "
                    f"data.num_classes={self.num_classes}"
                )
            self._class_names = names
        return self._class_names

    @property
    def palette(self) -> list[list[int]] | None:
        """One [R, G, B] per class from a class-list file (None: a shipped list's VOC map)."""
        return class_list.file_palette(self.hparams.classes, self.class_names)

    @property
    def data_dir(self) -> Path:
        return Path(self.hparams.data_dir).expanduser()

    @property
    def splits(self) -> dict[str, str]:
        """Stage -> split name."""
        h = self.hparams
        return {"train": h.train_split, "val": h.val_split, "test": h.test_split}

    def expected_count(self, split: str) -> int | None:
        return self.hparams.expected_counts.get(split)

    # -- Lightning hooks ----------------------------------------------------------------

    def prepare_data(self) -> None:
        if self.hparams.generate or self.hparams.download:
            unusable = data_dir_problem(self.data_dir)
            if unusable is not None:
                raise DataError(unusable)
        if self.hparams.generate:
            from fcn_lightning.data.synthetic import ensure_synthetic

            ensure_synthetic(self.data_dir / "synthetic", **self.hparams.synthetic)
        if self.hparams.download:
            sources = dict.fromkeys(s for n in self.splits.values() for s in split_sources(n))
            roots = Roots(self.data_dir)
            ensure_sources(list(sources), roots, mirrors=self.hparams.download_mirrors)

    def samples(self, split: str) -> list[Sample]:
        """The checked samples of split `split` (lists read, files present, count right)."""
        if self.hparams.root is not None:  # the folder's own counts are the truth
            return folder.folder_split(self.hparams.root, split, self.hparams.layout)
        samples = select_input(load_split(split, Roots(self.data_dir)), self.hparams.input)
        check_split(split, samples, self.expected_count(split))
        return samples

    def check_before_fit(self) -> None:
        """Read the training and validation lists and find every file now, before a run
        writes anything (`setup` then reuses them). Data that `prepare_data` is to
        download or generate is checked when fitting starts, once it is there."""
        if not (self.hparams.generate or self.hparams.download):
            self.setup("fit")

    def setup(self, stage: str | None = None) -> None:
        _ = self.head_class_names  # a class list that does not fit fails here, before any work
        if stage in (None, "fit"):
            self.train_dataset = self._dataset("train")
        if stage in (None, "fit", "validate"):
            self.val_dataset = self._dataset("val")
        if stage in (None, "test"):
            self.test_dataset = self._dataset("test")

    def _dataset(self, stage: str) -> SegmentationDataset:
        split, train = self.splits[stage], stage == "train"
        if (split, train) not in self._datasets:  # val and test often share one split
            options: dict[str, Any] = {
                "num_classes": self.num_classes,
                "ignore_index": self.ignore_index,
                "transforms": self.train_transforms if train else self.eval_transforms,
            }
            h = self.hparams
            if h.input == "rgb":
                dataset = SegmentationDataset(self.samples(split), heads=self.heads, **options)
            else:
                dataset = NYUDDataset(
                    self.samples(split),
                    input_name=h.input,
                    normalization=h.normalization,
                    **options,
                )
            self._datasets[split, train] = dataset
        return self._datasets[split, train]

    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        dataset = self._ready("train_dataset", "fit")
        sampler = SeededDraws(build_train_sampler(h.sampling, len(dataset), seed=h.seed))
        batches = -(-len(sampler) // h.batch_size)
        return ResumableLoader(
            dataset,
            batch_size=h.batch_size,
            sampler=sampler,
            collate_fn=build_collate(h.collate, ignore_index=h.ignore_index),
            skip_batches=self._batches_done() % batches,
            **self._loader_options(),
        )

    def _batches_done(self) -> int:
        """Batches of the current epoch a resumed run had trained on (0 when not resuming).
        At an epoch's end this is the whole epoch, which the caller maps to 0."""
        trainer = self.trainer
        if trainer is None or not trainer.fit_loop.restarting:
            return 0
        return trainer.fit_loop.epoch_loop.batch_progress.current.completed

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self._ready("val_dataset", "validate"))

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self._ready("test_dataset", "test"))

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        h = self.hparams
        return DataLoader(
            dataset,
            batch_size=h.val_batch_size,
            sampler=_eval_sampler(dataset),
            collate_fn=build_collate(h.collate, ignore_index=h.ignore_index),
            **self._loader_options(),
        )

    def _ready(self, attribute: str, stage: str) -> SegmentationDataset:
        if getattr(self, attribute) is None:
            self.setup(stage)
        return getattr(self, attribute)

    def _loader_options(self) -> dict[str, Any]:
        h = self.hparams
        workers = h.num_workers
        options: dict[str, Any] = {
            "num_workers": workers,
            # Pinning only pays (and only works without a warning) with a GPU to copy to.
            "pin_memory": h.pin_memory and torch.cuda.is_available(),
            "persistent_workers": h.persistent_workers and workers > 0,
        }
        if workers > 0 and h.prefetch_factor is not None:
            options["prefetch_factor"] = h.prefetch_factor
        return options


def _eval_sampler(dataset: Dataset) -> Sampler | None:
    """Under DDP, each image on exactly one rank: Lightning's default DistributedSampler
    repeats images to even out the ranks, and repeated images would change the metrics."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None  # Lightning falls back to sequential order
    if torch.distributed.get_world_size() == 1:
        return None
    return UnrepeatedDistributedSampler(dataset, shuffle=False)


def data_problems(
    data: Mapping[str, Any], stages: Sequence[str] = ("train", "val")
) -> tuple[list[FCNError], list[str]]:
    """Every reason the splits that `stages` use cannot be read now, found on the disk
    without downloading, generating or building anything, from the `data` config node;
    and what `prepare_data` will fetch or generate first (notes, for the log).

    The checks are the ones `setup` makes (dataset roots, split lists, counts, files),
    each problem with the message `setup` would raise, but all of them at once.
    """
    if data.get("root") is not None:
        return folder.folder_problems(data, stages), []
    data_dir = data.get("data_dir")
    unusable = data_dir_problem(data_dir)
    if unusable is not None:
        kind = ConfigError if not str(data_dir or "").strip() else DataError
        return [kind(unusable)], []
    roots = Roots(data_dir)
    download, generate = bool(data.get("download")), bool(data.get("generate"))
    expected = dict(data.get("expected_counts") or {})
    problems: dict[str, FCNError] = {}
    notes: dict[str, str] = {}
    checked: set[str] = set()
    splits = {stage: data.get(f"{stage}_split") or data.get("val_split") for stage in stages}
    for stage, split in splits.items():
        try:
            names = split_sources(split)
        except ConfigError as err:
            problems.setdefault(str(stage), ConfigError(f"data.{stage}_split: {err}"))
            continue
        if generate and "synthetic" in names:
            notes["synthetic"] = f"data.generate=true: {roots.data_dir / 'synthetic'} is generated"
            continue
        if split in checked:
            continue
        checked.add(split)
        absent = any(roots.find(name) is None for name in names)
        for name in names:
            source = get_source(name)
            fetched = [e for e in source.extras if not archive_path(e, roots.data_dir).is_file()]
            if download and fetched:  # a further file (59_labels.txt) comes first
                absent = True
                for extra in fetched:
                    notes[extra.filename] = (
                        f"data.download=true: {extra.filename} is downloaded from {extra.url} "
                        f"to {archive_path(extra, roots.data_dir)}"
                    )
            if roots.find(name) is not None:
                continue
            if download and source.archive is not None:
                archive = source.archive
                kept = archive_path(archive, roots.data_dir)
                facts = f" ({archive.size})" if archive.size else ""
                notes[archive.filename] = (
                    f"data.download=true: {archive.filename}{facts} is extracted from {kept}"
                    if kept.is_file()
                    else f"data.download=true: {archive.filename}{facts} is "
                    f"downloaded from {archive.url} to {kept}"
                )
                continue
            message = roots.problem(name)
            problems.setdefault(message, DataError(message))
        if absent:
            continue
        try:
            samples = select_input(load_split(split, roots), data.get("input") or "rgb")
            check_split(split, samples, expected.get(split))
        except DataError as err:
            problems.setdefault(str(err), err)
    return list(problems.values()), list(notes.values())


def build_datamodule(cfg: Any) -> SegmentationDataModule:
    """Instantiate the `data` config node, re-raising our own errors as they are.

    Hydra wraps any error raised while instantiating in an InstantiationException with a
    multi-line message; a configuration mistake should reach the user as its one line.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(cfg)
    except InstantiationException as err:
        if isinstance(err.__cause__, FCNError):
            raise err.__cause__ from None
        raise


def _head_names(head: Mapping[str, Any], k: int) -> list[str]:
    """The class names of head `k` >= 1 (numbered when its list is not named)."""
    if head["classes"] is None:
        return [str(i) for i in range(head["num_classes"])]
    names = load_class_names(head["classes"])
    if len(names) != head["num_classes"]:
        raise ConfigError(
            f"data.heads[{k}].classes={head['classes']!r} names {len(names)} classes but "
            f"data.heads[{k}].num_classes={head['num_classes']}"
        )
    return names


def _int_or_list(value: int | Sequence[int]) -> int | list[int]:
    return value if isinstance(value, int) else list(value)
