"""Presets and splits: which files each preset reads, their counts, and bad split input."""

from __future__ import annotations

import re

import numpy as np
import pytest
from omegaconf import OmegaConf

from fcn_lightning.data.datamodule import SegmentationDataModule, build_datamodule
from fcn_lightning.data.sources import Roots
from fcn_lightning.errors import ConfigError, DataError
from tests.data_fakes import (
    REPO,
    SHIPPED_SEG11VALID,
    FakeTree,
    compose_config,
    fake_ids,
    paper_tree,
    write_list,
)

PASCAL_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return paper_tree(tmp_path_factory)


def datamodule(preset: str, data_dir, *overrides: str) -> SegmentationDataModule:
    cfg = compose_config([f"data={preset}", f"paths.data_dir={data_dir}", *overrides])
    return build_datamodule(cfg.data)


def test_shipped_lists_are_the_reference_lists():
    ids = SHIPPED_SEG11VALID.read_text().split()
    assert len(ids) == len(set(ids)) == 736 and ids == sorted(ids)
    assert all(len(i) == 11 and i[4] == "_" for i in ids)
    reference = REPO.parent / "shared" / "data" / "pascal" / "seg11valid.txt"
    if reference.is_file():
        assert ids == reference.read_text().split()
    dm = SegmentationDataModule(train_split="sbd_train", val_split="seg11valid")
    assert dm.class_names == PASCAL_CLASSES


def test_paper_preset_is_reference_exact():
    data = compose_config(["data=paper"]).data
    assert data.train_split == "sbd_train" and data.val_split == data.test_split == "seg11valid"
    assert OmegaConf.to_container(data.expected_counts) == {"sbd_train": 8498, "seg11valid": 736}
    assert (data.batch_size, data.sampling, data.seed, data.normalization) == (
        1,
        "replacement",
        1337,
        "caffe",
    )
    assert not data.hflip and data.scale_range is None and data.crop_size is None
    assert data.translate_px == 0 and data.num_classes == 21


@pytest.mark.parametrize(
    "preset, counts",
    [
        ("voc_aug", {"voc_aug_train": 10582, "voc2012_val": 1449}),
        ("voc2012", {"voc2012_train": 1464, "voc2012_val": 1449}),
        ("sbd", {"sbd_train": 8498, "sbd_val": 2857}),
    ],
)
def test_full_download_counts(preset, counts):
    data = compose_config([f"data={preset}"]).data
    assert OmegaConf.to_container(data.expected_counts) == counts
    assert {data.train_split, data.val_split} == set(counts)


def labels_match(dataset, tree: FakeTree, source_of) -> None:
    for index in range(len(dataset)):
        sample = dataset.samples[index]
        _, label = dataset.load(index)
        assert np.array_equal(label.numpy(), tree.labels[source_of(sample.id), sample.id])


def test_paper_preset(tree):
    dm = datamodule("paper", tree.data_dir, "data.expected_counts.sbd_train=8")
    dm.setup()
    assert dm.train_dataset.ids == tree.sbd_train  # file order: the reference's draws
    assert dm.val_dataset.ids == tree.seg11valid  # 736, the real count
    assert dm.test_dataset is dm.val_dataset
    assert not set(dm.val_dataset.ids) & set(dm.train_dataset.ids)
    labels_match(dm.train_dataset, tree, lambda i: "sbd")
    index = dm.val_dataset.ids.index(tree.seg11valid[100])
    _, label = dm.val_dataset.load(index)
    assert np.array_equal(label.numpy(), tree.labels["voc2011", tree.seg11valid[100]])


def test_paper_preset_reports_a_count_mismatch(tree):
    dm = datamodule("paper", tree.data_dir)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "sbd_train" in message and "8498" in message and "has 8 images" in message
    assert "data.expected_counts.sbd_train" in message


def test_voc_aug_preset(tree):
    expected = (set(tree.voc12_train) | set(tree.sbd_train) | set(tree.sbd_val)) - set(
        tree.voc12_val
    )
    dm = datamodule(
        "voc_aug",
        tree.data_dir,
        f"data.expected_counts.voc_aug_train={len(expected)}",
        f"data.expected_counts.voc2012_val={len(tree.voc12_val)}",
    )
    dm.setup()
    assert sorted(dm.train_dataset.ids) == sorted(expected)
    assert dm.val_dataset.ids == tree.voc12_val
    # VOC's own label wins where an image has both.
    labels_match(dm.train_dataset, tree, lambda i: "voc2012" if i in tree.voc12_train else "sbd")


def test_voc2012_and_sbd_presets(tree):
    voc = datamodule("voc2012", tree.data_dir, "data.expected_counts=null")
    voc.setup()
    assert (voc.train_dataset.ids, voc.val_dataset.ids) == (tree.voc12_train, tree.voc12_val)
    labels_match(voc.val_dataset, tree, lambda i: "voc2012")
    sbd = datamodule("sbd", tree.data_dir, "data.expected_counts=null")
    sbd.setup()
    assert (sbd.train_dataset.ids, sbd.val_dataset.ids) == (tree.sbd_train, tree.sbd_val)
    labels_match(sbd.val_dataset, tree, lambda i: "sbd")


def test_synthetic_preset_generates_its_data(tmp_path):
    dm = datamodule(
        "synthetic",
        tmp_path,
        "data.synthetic.num_train=3",
        "data.synthetic.num_val=2",
        "data.synthetic.image_size=48",
        "data.num_workers=0",
    )
    assert not (tmp_path / "synthetic").exists()  # construction writes nothing
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_dataset) == 3 and len(dm.val_dataset) == 2
    assert dm.num_classes == len(dm.class_names) == 7
    root = tmp_path / "synthetic"
    assert dm.train_dataset.ids == (root / "ImageSets/Segmentation/train.txt").read_text().split()
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape[:2] == (1, 3) and labels.max() <= 255


def test_voc2011_is_read_from_a_voc2012_tree_when_there_is_no_2011_tree(tmp_path):
    (tmp_path / "VOCdevkit" / "VOC2012").mkdir(parents=True)
    assert Roots(tmp_path).find("voc2011") == tmp_path / "VOCdevkit" / "VOC2012"
    (tmp_path / "TrainVal" / "VOCdevkit" / "VOC2011").mkdir(parents=True)
    assert Roots(tmp_path).find("voc2011") == tmp_path / "TrainVal" / "VOCdevkit" / "VOC2011"


def test_seg11valid_composition_is_checked_against_the_downloaded_lists(tmp_path):
    seg11valid = SHIPPED_SEG11VALID.read_text().split()
    leaked = fake_ids(500, 2, 2011)
    voc = tmp_path / "VOCdevkit" / "VOC2011" / "ImageSets" / "Segmentation"
    write_list(voc / "val.txt", seg11valid + leaked)
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    write_list(sbd / "train.txt", leaked[:1])  # leaked[1] would end up in seg11valid
    dm = SegmentationDataModule(
        train_split="sbd_train", val_split="seg11valid", data_dir=str(tmp_path)
    )
    with pytest.raises(DataError, match=r"seg11valid.*737 IDs"):
        dm.setup("validate")
    write_list(sbd / "train.txt", leaked)
    with pytest.raises(DataError, match="missing image of ID"):  # lists agree; files absent
        dm.setup("validate")


def small_voc(tmp_path, train=3, val=2) -> tuple[FakeTree, list[str], list[str]]:
    tree = FakeTree(tmp_path)
    train_ids, val_ids = fake_ids(1, train), fake_ids(50, val)
    tree.voc({"train": train_ids, "val": val_ids})
    return tree, train_ids, val_ids


def voc_dm(data_dir, **kwargs) -> SegmentationDataModule:
    return SegmentationDataModule(
        train_split="voc2012_train", val_split="voc2012_val", data_dir=str(data_dir), **kwargs
    )


def test_missing_split_list_is_named(tmp_path):
    small_voc(tmp_path)
    path = tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"
    path.unlink()
    with pytest.raises(DataError, match=re.escape(f"{path} is missing") + ".*'voc2012_val'"):
        voc_dm(tmp_path).setup("fit")
    typo = SegmentationDataModule(
        train_split="voc2012_tran", val_split="voc2012_val", data_dir=str(tmp_path)
    )
    with pytest.raises(DataError, match=r"tran\.txt is missing"):
        typo.setup("fit")


def test_empty_split_is_named(tmp_path):
    small_voc(tmp_path)
    path = tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"
    path.write_text("\n")
    with pytest.raises(DataError, match=re.escape(f"{path} lists no image IDs")):
        voc_dm(tmp_path).setup("validate")


@pytest.mark.parametrize(
    "what, folder, suffix", [("image", "JPEGImages", "jpg"), ("label", "SegmentationClass", "png")]
)
def test_id_without_image_or_label_is_named(tmp_path, what, folder, suffix):
    _, train_ids, _ = small_voc(tmp_path)
    path = tmp_path / "VOCdevkit/VOC2012" / folder / f"{train_ids[1]}.{suffix}"
    path.unlink()
    with pytest.raises(DataError) as info:
        voc_dm(tmp_path).setup("fit")
    message = str(info.value)
    assert message.startswith(f"{path}: missing {what} of ID {train_ids[1]}")
    assert "\n" not in message


@pytest.mark.parametrize("split", ["voc2012_", "coco_train", "voc_aug"])
def test_unknown_split_is_a_config_error(split):
    with pytest.raises(ConfigError, match=r"data\.train_split"):
        SegmentationDataModule(train_split=split, val_split="voc2012_val")


SEGMENTATION = "VOCdevkit/VOC2012/ImageSets/Segmentation"


def test_bom_crlf_and_spaces_are_not_part_of_the_ids(tmp_path):
    _, train_ids, _ = small_voc(tmp_path)
    path = tmp_path / SEGMENTATION / "train.txt"
    lines = [f"{train_ids[0]} ", f"\t{train_ids[1]}", "  ", f"{train_ids[2]}\t "]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    dm = voc_dm(tmp_path)
    dm.setup("fit")
    assert dm.train_dataset.ids == train_ids
    assert dm.train_dataset.load(0)[1].shape[-2:] == (12, 16)  # the files were found


@pytest.mark.parametrize("content", [b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n \r\n"])
def test_a_list_that_is_only_a_bom_lists_no_ids(tmp_path, content):
    small_voc(tmp_path)
    path = tmp_path / SEGMENTATION / "val.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(f"split list {path} lists no image IDs")):
        voc_dm(tmp_path).setup("validate")


def split_error(tmp_path, stage: str) -> str:
    with pytest.raises(DataError) as info:
        voc_dm(tmp_path).setup(stage)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("split, stage", [("train", "fit"), ("val", "validate")])
def test_an_id_listed_twice_is_refused_with_its_lines(tmp_path, split, stage):
    _, train_ids, val_ids = small_voc(tmp_path)
    ids = {"train": train_ids, "val": val_ids}[split]
    path = tmp_path / SEGMENTATION / f"{split}.txt"
    write_list(path, [ids[0], *ids, ids[0]])
    message = split_error(tmp_path, stage)
    assert message.startswith(f"split list {path}: 1 ID(s) listed more than once")
    assert f"{ids[0]} (lines 1, 2, {len(ids) + 2})" in message
    assert "delete the repeated lines" in message


def test_many_repeated_ids_are_counted_and_the_first_named(tmp_path):
    _, train_ids, _ = small_voc(tmp_path, train=5)
    write_list(tmp_path / SEGMENTATION / "train.txt", train_ids + train_ids)
    message = split_error(tmp_path, "fit")
    assert "5 ID(s) listed more than once" in message
    assert f"{train_ids[0]} (lines 1, 6); {train_ids[1]} (lines 2, 7)" in message
    assert "and 2 more" in message


def test_voc_aug_counts_an_id_repeated_in_its_lists_once(tmp_path):
    tree = FakeTree(tmp_path)
    voc_train, voc_val, sbd_train = fake_ids(1, 2), fake_ids(10, 1), fake_ids(20, 2)
    voc = tree.voc({"train": voc_train + voc_train[:1], "val": voc_val})
    tree.sbd({"train": [*sbd_train, voc_train[0]], "val": sbd_train[:1]})
    dm = datamodule("voc_aug", tmp_path, "data.expected_counts=null")
    dm.setup("fit")
    assert sorted(dm.train_dataset.ids) == sorted(voc_train + sbd_train)
    assert voc / "SegmentationClass" in dm.train_dataset.samples[0].label.parents


def test_a_list_not_in_utf8_is_named(tmp_path):
    _, train_ids, _ = small_voc(tmp_path)
    path = tmp_path / SEGMENTATION / "train.txt"
    path.write_bytes("\n".join(train_ids).encode("utf-16"))  # Notepad's "Unicode"
    message = split_error(tmp_path, "fit")
    assert message.startswith(f"split list {path} is not UTF-8 text")
    assert "save it as UTF-8" in message


def test_a_list_that_is_a_directory_is_named(tmp_path):
    small_voc(tmp_path)
    path = tmp_path / SEGMENTATION / "val.txt"
    path.unlink()
    path.mkdir()
    assert split_error(tmp_path, "validate") == (
        f"split list {path} is a directory: put the text file of image IDs there"
    )


@pytest.mark.parametrize("make, why", [
    (lambda p: (p.unlink(), p.mkdir()), "label of ID {id} is a directory, not a file"),
    (lambda p: (p.unlink(), p.symlink_to(p.name)),
     "label of ID {id} is a symbolic link that loops (to {id}.png)"),
    (lambda p: (p.unlink(), p.symlink_to("elsewhere.png")),
     "label of ID {id} is a symbolic link to elsewhere.png, which does not exist"),
])  # fmt: skip
def test_a_label_path_that_is_no_file_is_named(tmp_path, make, why):
    _, train_ids, _ = small_voc(tmp_path)
    path = tmp_path / "VOCdevkit/VOC2012/SegmentationClass" / f"{train_ids[1]}.png"
    make(path)
    message = split_error(tmp_path, "fit")
    assert message.startswith(f"{path}: {why.format(id=train_ids[1])}, in split voc2012_train")
