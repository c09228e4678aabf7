"""NYUDv2: every input value for value against the reference's data layer, labels, bad files.

`reference_*` re-implement nyud_layers.py's load_* with PIL and NumPy, as the reference
does, reading the files the fake tree wrote.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcn_lightning.data.datamodule import SegmentationDataModule
from fcn_lightning.data.nyud_readers import read_depth, read_hha, read_nyud_label
from fcn_lightning.errors import DataError
from tests.data_fakes import nyud_reference_ids, nyud_tree, write_nyud_tree

MEAN_BGR = np.array((116.190, 97.203, 92.318), dtype=np.float32)
MEAN_HHA = np.array((132.431, 94.076, 118.477), dtype=np.float32)
MEAN_LOGD = np.array((7.844,), dtype=np.float32)


def reference_color(tree, i):
    in_ = np.array(Image.open(tree.path("color", i)), dtype=np.float32)
    in_ = in_[:, :, ::-1]
    in_ -= MEAN_BGR
    return in_.transpose((2, 0, 1))


def reference_depth(tree, i):
    d = np.array(Image.open(tree.path("depth", i)), dtype=np.float32)
    with np.errstate(divide="ignore"):
        d = np.log(d)
    d -= MEAN_LOGD
    return d[np.newaxis, ...]


def reference_hha(tree, i):
    hha = np.array(Image.open(tree.path("hha", i)), dtype=np.float32)
    hha -= MEAN_HHA
    return hha.transpose((2, 0, 1))


def reference_label(tree, i):
    label = scipy.io.loadmat(tree.path("label", i))["segmentation"].astype(np.uint8)
    label -= 1  # uint8 wrap-around: void 0 -> 255
    return label


REFERENCE = {"color": reference_color, "depth": reference_depth, "hha": reference_hha}
MODALITIES = {
    "color": ["color"],
    "hha": ["hha"],
    "depth": ["depth"],
    "color_depth": ["color", "depth"],
    "color_hha": ["color", "hha"],
}


def nyud_module(data_dir, input_name, **options):
    settings = {
        "name": "nyud",
        "data_dir": str(data_dir),
        "train_split": "nyud_trainval",
        "val_split": "nyud_test",
        "num_classes": 40,
        "classes": "nyud",
        "normalization": "caffe_nyud",
        "input": input_name,
        "num_workers": 0,
        "expected_counts": {"nyud_trainval": 795, "nyud_test": 654},
    }
    return SegmentationDataModule(**{**settings, **options})


@pytest.mark.parametrize("input_name", list(MODALITIES))
def test_every_input_is_the_reference_layers_value_for_value(tmp_path_factory, input_name):
    tree = nyud_tree(tmp_path_factory)
    dm = nyud_module(tree.root.parent, input_name)
    dm.setup("validate")
    test_ids = nyud_reference_ids()["test"]
    assert dm.val_dataset.ids == test_ids  # scored in the list's order
    for index in (0, 1, test_ids.index(next(i for i in test_ids if i.endswith("7")))):
        image, label = dm.val_dataset[index]
        i = test_ids[index]
        expected = np.concatenate([REFERENCE[m](tree, i) for m in MODALITIES[input_name]])
        assert image.dtype == torch.float32 and image.shape == expected.shape
        got = image.numpy()
        finite = np.isfinite(expected)
        assert np.array_equal(got[finite], expected[finite])
        # The reference's -inf for a depth of 0 is the mean log depth (0) here.
        assert np.array_equal(got[~finite], np.zeros((~finite).sum(), np.float32))
        assert (~finite).sum() == ("depth" in MODALITIES[input_name] and i.endswith("7"))
        assert torch.equal(label, torch.from_numpy(reference_label(tree, i).astype(np.int64)))


def test_colour_with_torchvision_weights_takes_torchvision_normalisation(tmp_path_factory):
    tree = nyud_tree(tmp_path_factory)
    dm = nyud_module(tree.root.parent, "color_hha", normalization="torchvision")
    dm.setup("validate")
    image, _ = dm.val_dataset[2]
    i = nyud_reference_ids()["test"][2]
    rgb = tree.color[i].astype(np.float64).transpose(2, 0, 1) / 255
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (rgb - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(image[:3].numpy(), expected, rtol=0, atol=1e-5)
    assert np.array_equal(image[3:].numpy(), reference_hha(tree, i))  # HHA keeps its mean


def test_label_rotation_by_hand(tmp_path):
    path = tmp_path / "img_1.mat"
    scipy.io.savemat(path, {"segmentation": np.array([[0, 1, 2], [40, 0, 39]], np.uint16)})
    label = read_nyud_label(path)
    assert label.dtype == torch.uint8
    assert label.tolist() == [[255, 0, 1], [39, 255, 38]]
    scipy.io.savemat(path, {"segmentation": np.array([[0.0, 3.0]])})  # MATLAB's doubles
    assert read_nyud_label(path).tolist() == [[255, 2]]


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_bad_label_files_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "img_2.mat"
    scipy.io.savemat(path, {"labels": np.zeros((2, 2), np.uint8)})
    with pytest.raises(DataError) as err:
        read_nyud_label(path)
    assert str(path) in one_line(err) and "key segmentation" in str(err.value)
    scipy.io.savemat(path, {"segmentation": np.array([[0, 41, 300]], np.uint16)})
    with pytest.raises(DataError) as err:
        read_nyud_label(path)
    assert str(path) in one_line(err) and "[41, 300]" in str(err.value)
    path.write_bytes(b"not a MATLAB file")
    with pytest.raises(DataError) as err:
        read_nyud_label(path)
    assert str(path) in one_line(err)


def test_depth_must_be_16_bit_and_hha_8_bit_rgb(tmp_path):
    depth = tmp_path / "depth.png"
    Image.fromarray(np.full((3, 4), 200, np.uint8)).save(depth)
    with pytest.raises(DataError) as err:
        read_depth(depth)
    assert str(depth) in one_line(err) and "8-bit" in str(err.value) and "16-bit" in str(err.value)
    Image.fromarray(np.full((3, 4, 3), 200, np.uint8)).save(depth)
    with pytest.raises(DataError, match="3 channel"):
        read_depth(depth)
    Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000).save(depth)
    assert read_depth(depth).flatten().tolist() == [v * 1000 for v in range(12)]
    hha = tmp_path / "hha.png"
    Image.fromarray(np.full((3, 4), 7, np.uint8)).save(hha)  # greyscale: no HHA
    with pytest.raises(DataError) as err:
        read_hha(hha)
    assert str(hha) in one_line(err) and "1 channel" in str(err.value)
    for path in (depth, hha):
        path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
        with pytest.raises(DataError) as err:
            (read_depth if path is depth else read_hha)(path)
        assert str(path) in one_line(err) and "corrupt" in str(err.value)


@pytest.fixture
def own_tree(tmp_path):
    """A full tree a test may break."""
    return write_nyud_tree(tmp_path, seed=3)


def test_bad_files_in_a_tree_name_the_file(own_tree):
    test_ids = nyud_reference_ids()["test"]
    i, j, k = test_ids[0], test_ids[1], test_ids[2]
    Image.fromarray(own_tree.depth[i].astype(np.uint8)).save(own_tree.path("depth", i))
    Image.fromarray(np.zeros((5, 8, 3), np.uint8)).save(own_tree.path("hha", j))
    own_tree.path("color", k).write_bytes(b"")
    dm = nyud_module(own_tree.root.parent, "color_hha")
    dm.setup("validate")
    with pytest.raises(DataError) as err:
        dm.val_dataset[1]
    assert f"hha {own_tree.path('hha', j)} is 5x8" in one_line(err)
    with pytest.raises(DataError) as err:
        dm.val_dataset[2]
    assert str(own_tree.path("color", k)) in one_line(err) and "empty" in str(err.value)
    depth_dm = nyud_module(own_tree.root.parent, "depth")
    depth_dm.setup("validate")
    with pytest.raises(DataError) as err:
        depth_dm.val_dataset[0]
    assert str(own_tree.path("depth", i)) in one_line(err) and "16-bit" in str(err.value)
    own_tree.path("depth", j).unlink()
    with pytest.raises(DataError) as err:
        nyud_module(own_tree.root.parent, "color_depth").setup("validate")
    assert f"{own_tree.path('depth', j)}: missing depth of ID {j}" in one_line(err)


def test_a_missing_modality_folder_is_named_with_the_hha_command(tmp_path):
    tree = write_nyud_tree(tmp_path, modalities=("color", "depth"))
    nyud_module(tmp_path, "color_depth").setup("fit")  # HHA not needed: no HHA needed
    with pytest.raises(DataError) as err:
        nyud_module(tmp_path, "color_hha").setup("fit")
    message = one_line(err)
    assert str(tree.root / "data" / "hha") in message
    assert "python -m fcn_lightning.hha" in message and "data.input=color_hha" in message
    shutil.rmtree(tree.root / "data" / "depth")
    with pytest.raises(DataError) as err:
        nyud_module(tmp_path, "depth").setup("fit")
    assert f"{tree.root / 'data' / 'depth'} is missing: data.input=depth" in one_line(err)


def test_a_tree_list_that_is_not_the_references_is_refused(own_tree):
    train = own_tree.root / "train.txt"
    ids = train.read_text().split()
    train.write_text("\n".join([*ids[1:], "9999"]) + "\n")
    with pytest.raises(DataError) as err:
        nyud_module(own_tree.root.parent, "color").setup("fit")  # trainval reads train
    message = one_line(err)
    assert str(own_tree.root / "train.txt") in message and "['9999']" in message
    assert f"['{ids[0]}']" in message
    train.unlink()  # without its own lists the tree uses the shipped ones
    (own_tree.root / "test.txt").unlink()
    dm = nyud_module(own_tree.root.parent, "color")
    dm.setup("fit")
    assert dm.train_dataset.ids == nyud_reference_ids()["train"] + nyud_reference_ids()["val"]
