"""The LightningDataModule end to end: loaders, workers, and a real Trainer."""

from __future__ import annotations

import random
from pathlib import Path
from unittest import mock

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import nn

from fcn_lightning.data.datamodule import SegmentationDataModule
from tests.data_fakes import FakeTree, fake_ids, paper_tree

CAFFE_MEAN_BGR = torch.tensor([104.00698793, 116.66876762, 122.67891434]).view(3, 1, 1)


def test_construction_reads_no_file(tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("the datamodule touched the disk while being built")

    with mock.patch("builtins.open", refuse), mock.patch.object(Path, "stat", refuse):
        dm = SegmentationDataModule(
            train_split="voc_aug_train",
            val_split="seg11valid",
            data_dir=str(tmp_path / "nowhere"),
            batch_size=2,
            collate="pad",
            hflip=True,
            scale_range=[0.5, 1.5],
        )
    assert dm.num_classes == 21 and dm.hparams.test_split == "seg11valid"
    assert not (tmp_path / "nowhere").exists()


def test_padded_batches_from_worker_processes(tmp_path_factory):
    tree = paper_tree(tmp_path_factory)
    dm = SegmentationDataModule(
        train_split="sbd_train",
        val_split="seg11valid",
        data_dir=str(tree.data_dir),
        batch_size=3,
        val_batch_size=4,
        collate="pad",
        sampling="shuffle",
        num_workers=2,
    )
    # Without an explicit setup: the loaders set themselves up.
    images, labels = next(iter(dm.val_dataloader()))
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    for i, image_id in enumerate(tree.seg11valid[:4]):  # validation keeps the list order
        written = torch.from_numpy(tree.labels["voc2011", image_id].astype(np.int64))
        h, w = written.shape
        assert torch.equal(labels[i, :h, :w], written)
        assert (labels[i, h:] == 255).all() and (labels[i, :, w:] == 255).all()
    seen = []
    for images, labels in dm.train_dataloader():
        assert images.shape[0] == labels.shape[0] <= 3
        seen += [labels[i] for i in range(labels.shape[0])]
    assert len(seen) == len(tree.sbd_train)


class Recorder(pl.LightningModule):
    """The smallest model that trains: a 1x1 conv; it records the labels it is fed."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.score = nn.Conv2d(3, num_classes, 1)
        self.train_labels: list[torch.Tensor] = []
        self.val_batches = 0

    def training_step(self, batch, batch_idx):
        images, labels = batch
        self.train_labels.append(labels[0].clone())
        return nn.functional.cross_entropy(self.score(images), labels, ignore_index=255)

    def validation_step(self, batch, batch_idx):
        self.val_batches += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def test_trainer_draws_the_reference_sequence_across_epochs(tmp_path):
    tree = FakeTree(tmp_path)
    train_ids, val_ids = fake_ids(1, 5), fake_ids(50, 2)
    tree.voc({"train": train_ids, "val": val_ids})
    dm = SegmentationDataModule(
        train_split="voc2012_train",
        val_split="voc2012_val",
        data_dir=str(tmp_path),
        num_workers=0,
    )
    model = Recorder(dm.num_classes)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    random.seed(1337)
    draws = [random.randint(0, len(train_ids) - 1) for _ in range(2 * len(train_ids))]
    assert len(model.train_labels) == len(draws)
    for got, index in zip(model.train_labels, draws, strict=True):
        assert torch.equal(got, torch.from_numpy(tree.labels["voc2012", train_ids[index]]).long())
    assert model.val_batches == 2 * len(val_ids)


def test_test_split_defaults_to_the_validation_split(tmp_path):
    tree = FakeTree(tmp_path)
    tree.voc({"train": fake_ids(1, 2), "val": fake_ids(50, 2), "trainval": fake_ids(1, 2)})
    dm = SegmentationDataModule(
        train_split="voc2012_train", val_split="voc2012_val", data_dir=str(tmp_path)
    )
    dm.setup("test")
    assert dm.test_dataset.ids == fake_ids(50, 2)
    other = SegmentationDataModule(
        train_split="voc2012_train",
        val_split="voc2012_val",
        test_split="voc2012_trainval",
        data_dir=str(tmp_path),
    )
    other.setup("test")
    assert other.test_dataset.ids == fake_ids(1, 2)
    image, _ = other.test_dataset[0]
    with Image.open(other.test_dataset.samples[0].image) as im:
        rgb = torch.from_numpy(np.array(im.convert("RGB")))
    expected = rgb.permute(2, 0, 1).flip(0).float() - CAFFE_MEAN_BGR
    assert torch.allclose(image, expected, atol=1e-4)
