"""PASCAL-Context: labels and images against a re-implementation of the reference's layer,
the preset through the datamodule, verify_data, bad files, missing sources, the download."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcn_lightning.data import sources
from fcn_lightning.data.datamodule import SegmentationDataModule, build_datamodule
from fcn_lightning.data.splits import load_class_names
from fcn_lightning.errors import DataError
from fcn_lightning.verify_data import verify_data
from tests.data.test_download import closed_port_url, server  # noqa: F401  (fixture)
from tests.data_fakes import compose_config, fake_ids, make_tar, write_pascal_context_tree

TRAIN, VAL = fake_ids(1, 5, 2008), fake_ids(20, 4, 2010)
MEAN_BGR = np.array((104.007, 116.669, 122.679), dtype=np.float32)


def reference_label(context_dir, image_id) -> np.ndarray:
    """pascalcontext_layers.py's load_label, rule for rule (genfromtxt, renames, the loop)."""

    def names(path):
        rows = np.genfromtxt(path, delimiter=":", dtype=None, encoding="utf-8")
        return [str(label).replace(" ", "") for _, label in rows]

    labels_400 = names(context_dir / "labels.txt")
    labels_59 = names(context_dir / "59_labels.txt")
    renames = zip(
        ("table", "bedclothes", "cloth"), ("diningtable", "bedcloth", "clothes"), strict=True
    )
    for main, task in renames:
        labels_59[labels_59.index(task)] = main
    label_400 = scipy.io.loadmat(context_dir / "trainval" / f"{image_id}.mat")["LabelMap"]
    label = np.zeros_like(label_400, dtype=np.uint8)
    for idx, name in enumerate(labels_59):
        label[label_400 == labels_400.index(name) + 1] = idx + 1
    return label


def reference_image(voc_dir, image_id) -> np.ndarray:
    """pascalcontext_layers.py's load_image: RGB -> BGR, minus its mean, C x H x W."""
    in_ = np.array(Image.open(voc_dir / "JPEGImages" / f"{image_id}.jpg"), dtype=np.float32)
    return (in_[:, :, ::-1] - MEAN_BGR).transpose((2, 0, 1))


@pytest.fixture
def tree(tmp_path):
    return write_pascal_context_tree(tmp_path, TRAIN, VAL)


def preset(data_dir, *overrides):
    cfg = compose_config(
        ["data=pascal_context", f"paths.data_dir={data_dir}", "data.num_workers=0", *overrides],
        config_name="train",
    )
    return build_datamodule(cfg.data)


def test_the_preset_reads_labels_and_images_as_the_reference_layer(tree):
    dm = preset(tree.data_dir, "data.expected_counts=null")
    assert dm.hparams.normalization == "caffe_pascal_context"
    assert (dm.num_classes, dm.heads) == (60, (("", 60),))
    dm.setup("fit")
    assert dm.train_dataset.ids == TRAIN and dm.val_dataset.ids == VAL
    for image_id in VAL:
        image, label = dm.val_dataset[VAL.index(image_id)]
        want = reference_label(tree.context, image_id)
        assert np.array_equal(label.numpy(), want)
        assert np.array_equal(want, tree.expected(image_id))  # the fake agrees with both
        assert torch.allclose(
            image, torch.from_numpy(reference_image(tree.voc, image_id)), atol=1e-3
        )
    mapped = np.concatenate([tree.expected(i).ravel() for i in TRAIN + VAL])
    assert len(np.unique(mapped)) > 20  # many of the 59 classes, not only background
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (1, 3, *tree.raw[VAL[0]].shape) and labels.dtype == torch.int64


def test_renamed_spaced_and_decoy_names_map_as_the_reference_maps_them(tree):
    full = tree.full_names
    by_task = {k: full[i - 1] for i, k in tree.task_of_id.items()}
    task = load_class_names("pascal_context")
    assert task[0] == "background" and len(task) == 60
    assert by_task[task.index("diningtable")] == "table"
    assert by_task[task.index("bedcloth")] == "bedclothes"  # written "bed cloth" in the 59-list
    assert by_task[task.index("tvmonitor")] == "tv monitor"
    decoy = full.index("dining table") + 1  # "diningtable" once spaces go: not the task's
    dm = preset(tree.data_dir, "data.expected_counts=null")
    dm.setup("fit")
    for index, image_id in enumerate(TRAIN):
        raw = tree.raw[image_id]
        _, label = dm.train_dataset.load(index)
        assert (label.numpy()[raw == decoy] == 0).all()
        assert (label.numpy()[raw == 0] == 0).all()


def test_verify_data_prints_the_counts(tree, capsys):
    cfg = compose_config(
        ["data=pascal_context", f"paths.data_dir={tree.data_dir}", "num_workers=0",
         "data.expected_counts.pascal_context_train=5",
         "data.expected_counts.pascal_context_val=4"]
    )  # fmt: skip
    result = verify_data(cfg)
    assert result.ok, result.problems
    counts = {r.name: (r.count, r.expected, r.readable) for r in result.splits}
    assert counts == {"pascal_context_train": (5, 5, 5), "pascal_context_val": (4, 4, 4)}
    want = sum(np.bincount(tree.expected(i).ravel(), minlength=256) for i in VAL)
    assert np.array_equal(result.splits[1].histogram, want)
    out = capsys.readouterr().out
    for text in ("pascal_context_train", "pascal_context_val", "background", "wood"):
        assert text in out


def test_the_full_counts_are_expected(tree):
    dm = preset(tree.data_dir)
    with pytest.raises(DataError, match=r"pascal_context_train has 5 images but a full .* 4998"):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda t: (t.context / "59_labels.txt").unlink(), r"59_labels\.txt is missing: download"),
        (
            lambda t: (t.context / "labels.txt").write_text("0: nothing\n1: accordion\n"),
            r"labels\.txt, line 1: entry 0 where 1 belongs",
        ),
        (
            lambda t: (t.context / "59_labels.txt").write_text("1: aeroplane\n2: zebra crossing\n"),
            r"59_labels\.txt names 2 classes, the 59-class task's list names 59",
        ),
        (
            lambda t: (t.context / "labels.txt").write_text(
                (t.context / "labels.txt").read_text().replace(": sofa\n", ": couch\n")
            ),
            r"59_labels\.txt: class 18 \('sofa'\) is not in .*labels\.txt",
        ),
        (
            lambda t: (t.context / "labels.txt").write_text("accordion\n"),
            r"labels\.txt, line 1: 'accordion' is no 'N: name' entry",
        ),
    ],
)
def test_a_wrong_class_list_is_refused_naming_the_file(tree, edit, pattern):
    edit(tree)
    dm = preset(tree.data_dir, "data.expected_counts=null")
    with pytest.raises(DataError, match=pattern) as info:
        dm.setup("fit")
    assert "\n" not in str(info.value)


def test_bad_label_files_are_named(tree):
    from fcn_lightning.data.pascal_context import context_lookup

    context_lookup.cache_clear()
    raw = tree.raw[TRAIN[1]].copy()
    raw[2, 2] = 600  # not in labels.txt
    scipy.io.savemat(tree.context / "trainval" / f"{TRAIN[1]}.mat", {"LabelMap": raw})
    (tree.context / "trainval" / f"{TRAIN[2]}.mat").write_bytes(b"not a mat file")
    scipy.io.savemat(tree.context / "trainval" / f"{TRAIN[3]}.mat", {"S": raw})
    (tree.context / "trainval" / f"{TRAIN[4]}.mat").unlink()
    cfg = compose_config(
        ["data=pascal_context", f"paths.data_dir={tree.data_dir}", "num_workers=0",
         "data.expected_counts=null"]
    )  # fmt: skip
    result = verify_data(cfg)
    problems = "\n".join(result.problems)
    assert f"{TRAIN[1]}.mat: LabelMap holds ids [600]" in problems
    assert f"{TRAIN[2]}.mat: unreadable MATLAB label" in problems
    assert f"{TRAIN[3]}.mat: no 'LabelMap' in this MATLAB file" in problems
    assert f"{TRAIN[4]}.mat: missing label of ID {TRAIN[4]}" in problems
    assert len(result.problems) == 4
    dm = preset(tree.data_dir, "data.expected_counts=null")
    with pytest.raises(DataError, match=f"{TRAIN[4]}.mat: missing label"):
        dm.setup("fit")


def test_missing_sources_say_what_to_fetch(tmp_path):
    dm = preset(tmp_path)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "VOCtrainval_03-May-2010.tar (1.3 GB, md5 da459979d0c395079b5c75ee67908abb)" in message
    write_pascal_context_tree(tmp_path, TRAIN, VAL)
    (tmp_path / "pascal-context").rename(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "trainval").rename(tmp_path / "trainval")
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "\n" not in message
    assert f"PASCAL-Context annotations not found at {tmp_path / 'pascal-context'}" in message
    assert f"found trainval in {tmp_path}: move it into {tmp_path / 'pascal-context'}" in message
    assert "https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz" in message
    assert (
        "59_labels.txt (no published checksum) from https://cs.stanford.edu/~roozbeh/pascal-context/59_labels.txt"
        in message
    )
    assert "md5" not in message.split("trainval.tar.gz")[1]  # none is published


def test_an_unknown_list_names_the_splits_there(tree):
    dm = SegmentationDataModule(
        train_split="pascal_context_train", val_split="pascal_context_tset",
        data_dir=str(tree.data_dir), num_classes=60, classes="pascal_context",
    )  # fmt: skip
    with pytest.raises(DataError, match=r"splits of pascal_context here are \['pascal_context_tr"):
        dm.setup("validate")


def test_download_fetches_voc2010_the_annotations_and_the_59_list(server, tmp_path, monkeypatch):  # noqa: F811
    staging = tmp_path / "staging"
    tree = write_pascal_context_tree(staging, TRAIN, VAL)
    voc_tar = make_tar(tmp_path / "voc.tar", staging, ["VOCdevkit"])
    context_tgz = make_tar(tmp_path / "trainval.tar.gz", tree.context, ["trainval", "labels.txt"])
    server.files["/m/VOCtrainval_03-May-2010.tar"] = voc_tar.read_bytes()
    server.files["/m/trainval.tar.gz"] = context_tgz.read_bytes()
    server.files["/m/59_labels.txt"] = (tree.context / "59_labels.txt").read_bytes()
    voc = sources.SOURCES["voc2010"]
    voc_archive = dataclasses.replace(
        voc.archive, url=closed_port_url(), md5=hashlib.md5(voc_tar.read_bytes()).hexdigest()
    )
    monkeypatch.setitem(sources.SOURCES, "voc2010", dataclasses.replace(voc, archive=voc_archive))
    context = sources.SOURCES["pascal_context"]
    # No checksum is published for the Context files: they download unchecked (md5 "").
    assert context.archive.md5 == "" and context.extras[0].md5 == ""
    unhosted = {"url": closed_port_url()}
    monkeypatch.setitem(sources.SOURCES, "pascal_context", dataclasses.replace(
        context, archive=dataclasses.replace(context.archive, **unhosted),
        extras=(dataclasses.replace(context.extras[0], **unhosted),),
    ))  # fmt: skip
    data_dir = tmp_path / "data"
    dm = preset(data_dir, "data.expected_counts=null", "data.download=true",
                f"data.download_mirrors=[{server.url}/m/]")  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    assert dm.val_dataset.ids == VAL
    _, label = dm.val_dataset[0]
    assert np.array_equal(label.numpy(), tree.expected(VAL[0]))
    assert (data_dir / "pascal-context" / "59_labels.txt").is_file()
    assert (data_dir / "downloads" / "trainval.tar.gz").is_file()
    fetched = len(server.requests)
    dm.prepare_data()
    assert len(server.requests) == fetched


def test_annotations_unpacked_into_the_voc2010_tree_are_pointed_at(tree):
    for name in ("trainval", "labels.txt"):
        (tree.context / name).rename(tree.voc / name)
    (tree.context / "59_labels.txt").unlink()
    tree.context.rmdir()
    with pytest.raises(DataError) as info:
        preset(tree.data_dir).setup("fit")
    assert f"found trainval, labels.txt in {tree.voc}: move them into {tree.context}" in str(
        info.value
    )


def test_preflight_check_knows_a_download_brings_the_59_list(tree):
    from fcn_lightning.data.datamodule import data_problems

    (tree.context / "59_labels.txt").unlink()
    data = {"data_dir": str(tree.data_dir), "train_split": "pascal_context_train",
            "val_split": "pascal_context_val"}  # fmt: skip
    problems, notes = data_problems(data)
    assert [str(p) for p in problems] == [
        f"{tree.context / '59_labels.txt'} is missing: download 59_labels.txt from "
        f"https://cs.stanford.edu/~roozbeh/pascal-context/59_labels.txt into {tree.context} "
        "(data.download=true fetches it)"
    ]
    problems, notes = data_problems({**data, "download": True})
    assert problems == []
    assert notes == [
        "data.download=true: 59_labels.txt is downloaded from "
        "https://cs.stanford.edu/~roozbeh/pascal-context/59_labels.txt to "
        f"{tree.context / '59_labels.txt'}"
    ]
