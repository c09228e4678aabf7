"""Collate, sampling, and the batch configurations that cannot work."""

from __future__ import annotations

import random

import pytest
import torch

from fcn_lightning.data.collate import build_collate, pad_collate, stack_collate
from fcn_lightning.data.datamodule import SegmentationDataModule
from fcn_lightning.data.sampling import ReplacementSampler, ShuffleSampler, build_train_sampler
from fcn_lightning.data.synthetic import ensure_synthetic
from fcn_lightning.errors import ConfigError


def pair(h: int, w: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, h, w, generator=g), torch.randint(0, 21, (h, w), generator=g)


def test_pad_collate_pads_to_the_largest_image_with_ignore_labels():
    batch = [pair(5, 7, 0), pair(8, 4, 1), pair(6, 6, 2)]
    images, labels = pad_collate(batch, ignore_index=255)
    assert images.shape == (3, 3, 8, 7) and labels.shape == (3, 8, 7)
    assert labels.dtype == torch.int64
    for i, (image, label) in enumerate(batch):
        h, w = label.shape
        assert torch.equal(images[i, :, :h, :w], image)
        assert torch.equal(labels[i, :h, :w], label)
        padded = torch.ones(8, 7, dtype=torch.bool)
        padded[:h, :w] = False
        assert (labels[i][padded] == 255).all()
        assert (images[i][:, padded] == 0).all()
        assert padded.sum() == 8 * 7 - h * w


def test_stack_collate_stacks_equal_sizes_and_names_the_fix_otherwise():
    images, labels = stack_collate([pair(4, 5, 0), pair(4, 5, 1)])
    assert images.shape == (2, 3, 4, 5) and labels.shape == (2, 4, 5)
    with pytest.raises(ConfigError, match=r"data\.collate=pad"):
        stack_collate([pair(4, 5, 0), pair(5, 4, 1)])
    with pytest.raises(ConfigError, match=r"data\.collate"):
        build_collate("concat")


def test_replacement_sampling_replays_the_reference_stream():
    n = 37
    random.seed(1337)  # the reference data layer: random.seed(1337); random.randint(0, n-1)
    reference = [random.randint(0, n - 1) for _ in range(3 * n)]
    sampler = ReplacementSampler(n, seed=1337)
    drawn = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        drawn += list(sampler)
    assert drawn == reference
    assert len(sampler) == n
    assert len(set(reference[:n])) < n  # with replacement: repeats within an epoch


def test_replacement_sampling_is_resumable_at_any_epoch():
    uninterrupted = ReplacementSampler(10, seed=1337)
    stream = [list(uninterrupted) for _ in range(4)]  # epochs advance without set_epoch
    resumed = ReplacementSampler(10, seed=1337)
    resumed.set_epoch(3)
    assert list(resumed) == stream[3]


def test_shuffle_sampling_permutes_each_epoch_deterministically():
    sampler = ShuffleSampler(50, seed=7)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
    assert all(sorted(e) == list(range(50)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    again = ShuffleSampler(50, seed=7)
    again.set_epoch(1)
    assert list(again) == epochs[1]
    with pytest.raises(ConfigError, match=r"data\.sampling"):
        build_train_sampler("random", 5, seed=0)


def make(**kwargs) -> SegmentationDataModule:
    return SegmentationDataModule(train_split="voc2012_train", val_split="voc2012_val", **kwargs)


def test_batches_above_one_need_padding_or_crops():
    with pytest.raises(ConfigError) as info:
        make(batch_size=4)
    message = str(info.value)
    assert "data.batch_size=4" in message
    assert "data.collate=pad" in message and "data.crop_size" in message
    make(batch_size=4, collate="pad")
    make(batch_size=4, crop_size=[64, 64])
    with pytest.raises(ConfigError, match=r"data\.val_batch_size=2"):
        make(batch_size=4, crop_size=64, val_batch_size=2)
    make(batch_size=4, crop_size=64, val_batch_size=2, collate="pad")


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"sampling": "random"}, "data.sampling"),
        ({"collate": "concat"}, "data.collate"),
        ({"normalization": "imagenet"}, "data.normalization"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"num_classes": 300}, "data.num_classes"),
        ({"crop_size": [1, 2, 3]}, "data.crop_size"),
        ({"generate": True}, "data.generate"),
    ],
)
def test_impossible_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError) as info:
        make(**kwargs)
    assert key in str(info.value) and "\n" not in str(info.value)


def _train_batches(root, workers: int, **options) -> list[tuple[torch.Tensor, torch.Tensor]]:
    dm = SegmentationDataModule(
        train_split="synthetic_train", val_split="synthetic_val", data_dir=str(root),
        classes="synthetic", num_classes=7, expected_counts={}, num_workers=workers,
        hflip=True, translate_px=8, scale_range=[0.75, 1.25], crop_size=40, batch_size=2,
        **options,
    )  # fmt: skip
    dm.setup("fit")
    return list(dm.train_dataloader())


def test_augmentation_follows_the_draw_not_the_worker_or_the_global_seed(tmp_path):
    root = tmp_path
    ensure_synthetic(root / "synthetic", num_train=6, num_val=2, image_size=48, progress=False)
    torch.manual_seed(0)
    alone = _train_batches(root, 0)
    torch.manual_seed(1)  # another global state: dropout's, not the augmentation's
    again = _train_batches(root, 0)
    workers = _train_batches(root, 2)
    for (a, la), (b, lb), (c, lc) in zip(alone, again, workers, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
        assert torch.equal(la, lb) and torch.equal(la, lc)
    # ...and the augmentation is really random: another seed gives other batches.
    other = _train_batches(root, 0, seed=7)
    assert any(not torch.equal(a, b) for (a, _), (b, _) in zip(alone, other, strict=True))


def test_resumable_loader_skips_only_its_first_iteration():
    from torch.utils.data import TensorDataset

    from fcn_lightning.data.sampling import ResumableLoader

    data = TensorDataset(torch.arange(10))
    for workers, persistent in ((0, False), (2, False), (2, True)):
        loader = ResumableLoader(
            data, batch_size=3, skip_batches=2, num_workers=workers, persistent_workers=persistent
        )
        assert len(loader) == 4
        first = [b[0].tolist() for b in loader]
        second = [b[0].tolist() for b in loader]
        assert first == [[6, 7, 8], [9]], (workers, persistent)
        assert second == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]], (workers, persistent)
