"""SIFT Flow: two labellings per image against a re-implementation of the reference's layer,
K x H x W labels through transforms and collates, data.heads, verify_data, the download."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torchvision import tv_tensors

from fcn_lightning.data import sources
from fcn_lightning.data.collate import pad_collate, stack_collate
from fcn_lightning.data.datamodule import SegmentationDataModule, build_datamodule
from fcn_lightning.data.readers import SegmentationDataset
from fcn_lightning.data.siftflow import siftflow_sample
from fcn_lightning.data.splits import load_class_names
from fcn_lightning.data.transforms import build_transforms
from fcn_lightning.errors import ConfigError, DataError
from fcn_lightning.verify_data import verify_data
from tests.data.test_download import closed_port_url, server  # noqa: F401  (fixture)
from tests.data_fakes import SIFTFLOW_FOLDER, compose_config, siftflow_list, write_siftflow_tree

MEAN_BGR = np.array((114.578, 115.294, 108.353), dtype=np.float32)
HEADS = [
    {"name": "sem", "num_classes": 33, "classes": "siftflow"},
    {"name": "geo", "num_classes": 3, "classes": "siftflow_geo"},
]
_TREES: dict[str, object] = {}


def reference_label(root, image_id, label_type) -> np.ndarray:
    """siftflow_layers.py's load_label, rule for rule (without the leading axis)."""
    folder = "SemanticLabels" if label_type == "semantic" else "GeoLabels"
    label = scipy.io.loadmat(root / folder / SIFTFLOW_FOLDER / f"{image_id}.mat")["S"]
    if label_type == "geometric":
        label[label == -1] = 0
    label = label.astype(np.uint8)
    label -= 1
    return label


def reference_image(root, image_id) -> np.ndarray:
    in_ = np.array(Image.open(root / "Images" / SIFTFLOW_FOLDER / f"{image_id}.jpg"), np.float32)
    return (in_[:, :, ::-1] - MEAN_BGR).transpose((2, 0, 1))


@pytest.fixture
def full_tree(tmp_path_factory):
    """Every image of the shipped lists (2,686, 8 x 8 px); shared, do not modify."""
    if "tree" not in _TREES:
        _TREES["tree"] = write_siftflow_tree(tmp_path_factory.mktemp("siftflow"))
    return _TREES["tree"]


def preset(data_dir, *overrides):
    cfg = compose_config(
        ["data=siftflow", f"paths.data_dir={data_dir}", "data.num_workers=0", *overrides],
        config_name="train",
    )
    return build_datamodule(cfg.data)


def test_shipped_lists_and_class_lists():
    trainval, test = siftflow_list("trainval"), siftflow_list("test")
    assert (len(trainval), len(set(trainval)), len(test), len(set(test))) == (2486, 2486, 200, 200)
    assert not set(trainval) & set(test)
    assert not {"highway_bost181", "street_urb506"} & set(trainval + test)  # unannotated
    semantic = load_class_names("siftflow")
    assert (len(semantic), semantic[0], semantic[27], semantic[-1]) == (
        33,
        "awning",
        "sky",
        "window",
    )
    assert load_class_names("siftflow_geo") == ["sky", "horizontal", "vertical"]


def test_the_preset_reads_both_labellings_as_the_reference_layer(full_tree):
    dm = preset(full_tree.root.parent)
    assert dm.hparams.normalization == "caffe_siftflow"
    assert dm.heads == (("sem", 33), ("geo", 3))
    assert dm.head_class_names["geo"] == ["sky", "horizontal", "vertical"]
    dm.setup("fit")
    assert len(dm.train_dataset) == 2486 and dm.val_dataset.ids == siftflow_list("test")
    for index, image_id in enumerate(dm.val_dataset.ids[:40]):
        image, label = dm.val_dataset[index]
        assert label.shape == (2, 8, 8)
        assert np.array_equal(
            label[0].numpy(), reference_label(full_tree.root, image_id, "semantic")
        )
        assert np.array_equal(
            label[1].numpy(), reference_label(full_tree.root, image_id, "geometric")
        )
        want = torch.from_numpy(reference_image(full_tree.root, image_id))
        assert torch.allclose(image, want, atol=1e-3)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (1, 3, 8, 8) and labels.shape == (1, 2, 8, 8)
    assert labels.dtype == torch.int64


def test_void_wraps_to_255_in_both_heads(tmp_path):
    image_id = siftflow_list("test")[0]
    tree = write_siftflow_tree(tmp_path, [image_id], size=(4, 4))
    sem = np.array([[0, 1, 33, 2]] * 4, dtype=float)
    geo = np.array([[-1, 0, 1, 3]] * 4, dtype=float)
    tree.write(image_id, sem, geo)
    _, label = dataset_on(tmp_path, [image_id]).load(0)
    assert label[0, 0].tolist() == [255, 0, 32, 1]  # hand-computed: k - 1, void 0 -> 255
    assert label[1, 0].tolist() == [255, 255, 0, 2]  # -1 and 0 are void


@pytest.mark.parametrize(
    ("head", "values", "pattern"),
    [
        ("sem", [[34.0]], r"SemanticLabels/.*\.mat: label values \[34\] of head sem"),
        ("sem", [[-1.0]], r"label values \[-1\] of head sem are none of SIFT Flow's 0\.\.33"),
        ("geo", [[4.0]], r"GeoLabels/.*\.mat: label values \[4\] of head geo"),
        ("geo", [[1.5]], r"GeoLabels/.*\.mat: S holds values that are no class numbers"),
    ],
)
def test_a_value_no_class_of_its_head_is_refused(tmp_path, head, values, pattern):
    image_id = siftflow_list("test")[0]
    tree = write_siftflow_tree(tmp_path, [image_id], size=(4, 4))
    sem, geo = tree.sem[image_id].copy(), tree.geo[image_id].copy()
    (sem if head == "sem" else geo)[1:2, 1:2] = values
    tree.write(image_id, sem, geo)
    with pytest.raises(DataError, match=pattern) as info:
        dataset_on(tmp_path, [image_id])[0]
    assert "\n" not in str(info.value)


def dataset_on(data_dir, ids, heads=(("sem", 33), ("geo", 3))):
    """A dataset of the SIFT Flow samples `ids` alone (the split's other files are absent)."""
    samples = [siftflow_sample(data_dir / "SiftFlowDataset", i) for i in ids]
    return SegmentationDataset(samples, num_classes=33, heads=heads)


def test_label_sizes_that_differ_and_a_head_config_that_does_not_fit(tmp_path):
    ids = siftflow_list("test")[:2]
    tree = write_siftflow_tree(tmp_path, ids, size=(4, 4))
    tree.write(ids[1], tree.sem[ids[1]], np.ones((4, 8)))
    with pytest.raises(DataError, match=r"GeoLabels/.*\.mat: geometric label is 4x8 \(HxW\) but"):
        dataset_on(tmp_path, ids)[1]
    tree.write(ids[0], tree.sem[ids[0]], np.full((4, 4), 3.0))
    narrow = (("sem", 33), ("geo", 2))
    with pytest.raises(
        DataError, match=r"GeoLabels/.*: label values \[2\] of head geo are neither"
    ):
        dataset_on(tmp_path, ids, heads=narrow)[0]
    with pytest.raises(DataError, match=r"holds 2 labelling\(s\) but data.heads names 1"):
        dataset_on(tmp_path, ids, heads=None)[0]


@pytest.mark.parametrize(
    ("heads", "pattern"),
    [
        (
            [{"name": "sem", "num_classes": 21}, HEADS[1]],
            r"heads\[0\]\.num_classes=21 but data\.num",
        ),
        ([HEADS[0], {"name": "sem", "num_classes": 3}], r"heads\[1\]\.name='sem': another head"),
        ([HEADS[0], {"name": "Geo-1", "num_classes": 3}], r"a lower-case identifier"),
        ([HEADS[0], {"name": "geo"}], r"heads\[1\]=.*give name and num_classes"),
        ([{**HEADS[0], "classes": "pascal"}, HEADS[1]], r"heads\[0\]\.classes='pascal' but"),
        ("sem", r"data\.heads='sem': give null"),
    ],
)
def test_bad_heads_are_refused_naming_the_key(heads, pattern):
    with pytest.raises(ConfigError, match=pattern):
        SegmentationDataModule(
            train_split="siftflow_trainval", val_split="siftflow_test", num_classes=33,
            classes="siftflow", heads=heads,
        )  # fmt: skip


def aligned_pair(rng, h=12, w=10):
    """A 2-head label whose geometric head is a function of its semantic one (sem % 3),
    and an image whose pixels encode the semantic class: any misalignment shows."""
    sem = np.kron(rng.integers(0, 33, (h // 2, w // 2)), np.ones((2, 2), np.int64)).astype(np.uint8)
    label = np.stack([sem, sem % 3])
    image = np.stack([sem * 7, sem * 7, sem * 7]).astype(np.uint8)
    return tv_tensors.Image(torch.from_numpy(image)), tv_tensors.Mask(torch.from_numpy(label))


@pytest.mark.parametrize("scale", [None, [0.5, 2.0]])
def test_transforms_move_both_heads_with_the_image(scale):
    transforms = build_transforms(
        normalization="caffe_siftflow", hflip=True, scale_range=scale, crop_size=9,
        translate_px=3,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    padded = 0
    for seed in range(30):
        torch.manual_seed(seed)
        image, label = transforms(*aligned_pair(rng))
        assert label.shape == (2, 9, 9) and label.dtype == torch.int64
        sem, geo = label
        assert torch.equal(sem == 255, geo == 255)  # padding in both heads alike
        valid = sem != 255
        assert torch.equal(geo[valid], sem[valid] % 3)
        if scale is None:  # bilinear resizing blends the image at class edges
            channel0 = image[0] + float(MEAN_BGR[0])  # caffe: BGR - mean; channels equal
            assert torch.allclose(channel0[valid], sem[valid].float() * 7, atol=1e-3)
        padded += int((~valid).sum())
    assert padded > 0  # some draws padded (translate / crop of a scaled-down image)


def test_collates_batch_k_heads():
    a = (torch.zeros(3, 4, 5), torch.full((2, 4, 5), 1))
    b = (torch.ones(3, 6, 3), torch.full((2, 6, 3), 2))
    images, labels = pad_collate([a, b], ignore_index=255)
    assert images.shape == (2, 3, 6, 5) and labels.shape == (2, 2, 6, 5)
    assert (labels[0, :, :4, :5] == 1).all() and (labels[0, :, 4:] == 255).all()
    assert (labels[1, :, :6, :3] == 2).all() and (labels[1, :, :, 3:] == 255).all()
    images, labels = stack_collate([a, (torch.ones(3, 4, 5), torch.full((2, 4, 5), 2))])
    assert labels.shape == (2, 2, 4, 5) and labels[1].unique().tolist() == [2]


def test_verify_data_counts_and_histograms_per_head(full_tree, capsys):
    cfg = compose_config(
        ["data=siftflow", f"paths.data_dir={full_tree.root.parent}", "num_workers=0"]
    )
    result = verify_data(cfg)
    assert result.ok, result.problems[:3]
    counts = {r.name: (r.count, r.expected, r.readable) for r in result.splits}
    assert counts == {"siftflow_trainval": (2486, 2486, 2486), "siftflow_test": (200, 200, 200)}
    test = next(r for r in result.splits if r.name == "siftflow_test")
    sem = np.concatenate([full_tree.sem[i].ravel() for i in siftflow_list("test")])
    geo = np.concatenate([full_tree.geo[i].ravel() for i in siftflow_list("test")])
    want_sem = np.bincount(np.where(sem == 0, 255, sem - 1).astype(int), minlength=256)
    want_geo = np.bincount(np.where(geo <= 0, 255, geo - 1).astype(int), minlength=256)
    assert np.array_equal(test.histogram, want_sem)
    assert np.array_equal(test.head_histograms, np.stack([want_sem, want_geo]))
    out = capsys.readouterr().out
    for text in ("head sem", "head geo", "horizontal", "awning", "2486"):
        assert text in out


def test_missing_dataset_and_its_download(server, tmp_path, monkeypatch):  # noqa: F811
    dm = preset(tmp_path / "data")
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert f"SIFT Flow not found at {tmp_path / 'data' / 'SiftFlowDataset'}" in message
    assert (
        "SiftFlowDataset.zip (no published checksum) from "
        "http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/" in message
    )
    ids = siftflow_list("test")
    tree = write_siftflow_tree(tmp_path / "staging", ids)
    archive = tmp_path / "SiftFlowDataset.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tree.root.rglob("*")):
            zf.write(path, path.relative_to(tree.root.parent))
    server.files["/m/SiftFlowDataset.zip"] = archive.read_bytes()
    source = sources.SOURCES["siftflow"]
    assert source.archive.md5 == ""  # none published: the download is not checked
    unhosted = dataclasses.replace(source.archive, url=closed_port_url())
    monkeypatch.setitem(sources.SOURCES, "siftflow", dataclasses.replace(source, archive=unhosted))
    dm = preset(tmp_path / "data", "data.download=true", f"data.download_mirrors=[{server.url}/m/]",
                "data.train_split=siftflow_test")  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    _, label = dm.val_dataset[0]
    assert np.array_equal(label[1].numpy(), reference_label(tree.root, ids[0], "geometric"))


def test_class_balancing_counts_the_semantic_head(full_tree):
    from fcn_lightning.train import class_pixel_counts

    dm = preset(full_tree.root.parent)
    sem = np.concatenate([full_tree.sem[i].ravel() for i in siftflow_list("trainval")])
    want = np.bincount(sem[sem > 0].astype(int) - 1, minlength=33)  # void 0 is not counted
    assert np.array_equal(class_pixel_counts(dm).numpy(), want)


def test_verify_data_names_every_bad_file(tmp_path):
    tree = write_siftflow_tree(tmp_path)
    test_ids = siftflow_list("test")
    tree.label_path("GeoLabels", test_ids[0]).unlink()
    tree.label_path("SemanticLabels", test_ids[1]).write_bytes(b"")
    (tree.root / "Images" / SIFTFLOW_FOLDER / f"{test_ids[2]}.jpg").write_bytes(b"\xff\xd8\xffjunk")
    sem = tree.sem[test_ids[3]].copy()
    sem[0, 0] = 40
    tree.write(test_ids[3], sem, tree.geo[test_ids[3]])
    cfg = compose_config(["data=siftflow", f"paths.data_dir={tmp_path}", "num_workers=0"])
    result = verify_data(cfg)
    problems = result.problems
    assert len(problems) == 4, problems
    geo0 = tree.label_path("GeoLabels", test_ids[0])
    assert problems[0] == f"{geo0}: missing label of ID {test_ids[0]}"
    assert f"SemanticLabels/{SIFTFLOW_FOLDER}/{test_ids[1]}.mat: unreadable MATLAB" in problems[1]
    assert f"{test_ids[2]}.jpg: corrupt or unreadable image" in problems[2]
    assert f"{test_ids[3]}.mat: label values [40] of head sem" in problems[3]
    test = next(r for r in result.splits if r.name == "siftflow_test")
    assert (test.count, test.readable) == (200, 196)


def test_a_flat_unpack_is_pointed_at(tmp_path):
    tree = write_siftflow_tree(tmp_path, siftflow_list("test")[:1])
    for name in ("Images", "SemanticLabels", "GeoLabels"):
        (tree.root / name).rename(tmp_path / name)
    tree.root.rmdir()
    with pytest.raises(DataError) as info:
        preset(tmp_path).setup("fit")
    assert (
        f"found Images, SemanticLabels, GeoLabels in {tmp_path}: move them into {tree.root}"
        in str(info.value)
    )
