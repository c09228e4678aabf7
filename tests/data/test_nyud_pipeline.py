"""NYUDv2 around the readers: the preset, batches per input, augmentation across modalities,
verify_data, the picture of an input, and where the dataset is looked for."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fcn_lightning.data import sources
from fcn_lightning.data.datamodule import build_datamodule
from fcn_lightning.data.input_display import display_rgb
from fcn_lightning.data.sources import Roots, ensure_sources
from fcn_lightning.errors import ConfigError, DataError
from fcn_lightning.verify_data import verify_data
from tests.data.test_nyud import nyud_module, reference_color, reference_depth, reference_label
from tests.data_fakes import (
    compose_config,
    make_tar,
    nyud_reference_ids,
    nyud_tree,
    write_nyud_tree,
)

CHANNELS = {"color": 3, "hha": 3, "depth": 1, "color_depth": 4, "color_hha": 6}


@pytest.mark.parametrize("input_name", list(CHANNELS))
def test_the_preset_batches_each_input(tmp_path_factory, input_name):
    tree = nyud_tree(tmp_path_factory)
    cfg = compose_config(
        [
            "data=nyud",
            f"paths.data_dir={tree.root.parent}",
            f"data.input={input_name}",
            "data.batch_size=2",
            "data.crop_size=4",
            "data.num_workers=0",
        ]
    )
    assert cfg.data.normalization == "caffe_nyud"
    dm = build_datamodule(cfg.data)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (2, CHANNELS[input_name], 4, 4) and images.dtype == torch.float32
    assert labels.shape == (2, 4, 4) and labels.dtype == torch.int64
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (1, CHANNELS[input_name], 6, 8) and labels.shape == (1, 6, 8)
    assert len(dm.train_dataset) == 795 and len(dm.val_dataset) == 654


def test_the_preset_follows_the_weights(tmp_path):
    cfg = compose_config(["data=nyud", "model.weights=torchvision"], config_name="train")
    assert cfg.data.normalization == "torchvision" and cfg.data.input == "color"
    assert cfg.data.train_split == "nyud_trainval" and cfg.data.val_split == "nyud_test"
    assert compose_config(["data=nyud"], config_name="train").data.normalization == "caffe_nyud"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["data=voc2012", "data.input=hha"], ["data.input='hha'", "PASCAL VOC2012", "['rgb']"]),
        (["data=nyud", "data.input=rgb"], ["data.input='rgb'", "NYUDv2", "'color_hha'"]),
        (["data=nyud", "data.input=rgbd"], ["data.input='rgbd'", "choose one of"]),
    ],
)
def test_an_input_the_dataset_lacks_is_refused_in_one_line(tmp_path, overrides, words):
    cfg = compose_config([*overrides, f"paths.data_dir={tmp_path}"])
    with pytest.raises(ConfigError) as err:
        build_datamodule(cfg.data)
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words)


def test_augmentation_moves_every_modality_and_the_label_together(tmp_path_factory):
    tree = nyud_tree(tmp_path_factory)
    dm = nyud_module(tree.root.parent, "color_depth", hflip=True, translate_px=2, crop_size=[8, 10])
    dm.setup("fit")
    flipped = shifted = 0
    for n in range(8):
        image, label = (t.numpy() for t in dm.train_dataset[n, 100 + n])  # seeded draws
        i = dm.train_dataset.ids[n]
        source = np.concatenate([reference_color(tree, i), reference_depth(tree, i)])
        source_label = reference_label(tree, i)
        where = {tuple(source[:3, y, x]): (y, x) for y in range(6) for x in range(8)}
        assert image.shape == (4, 8, 10) and label.shape == (8, 10)
        padded = np.all(image == 0, axis=0)  # each modality's mean, 0 after normalisation
        assert np.all(label[padded] == 255) and 24 <= 80 - padded.sum() <= 48
        came_from = {}
        for y, x in zip(*np.nonzero(~padded), strict=True):
            sy, sx = where[tuple(image[:3, y, x])]  # the colour says where the pixel came from
            depth = source[3, sy, sx] if np.isfinite(source[3, sy, sx]) else 0.0
            assert image[3, y, x] == depth and label[y, x] == source_label[sy, sx]
            came_from[y, x] = (sy, sx)
        (y0, x0), (sy0, sx0) = min(came_from.items())
        flipped += came_from.get((y0, x0 + 1), (sy0, sx0 + 1)) == (sy0, sx0 - 1)
        shifted += (y0, x0) != (sy0, sx0)
    assert 0 < flipped < 8 and shifted > 0  # the draws did flip and shift


def test_verify_data_counts_every_modality_and_missing_depth(tmp_path_factory, capsys):
    tree = nyud_tree(tmp_path_factory)
    cfg = compose_config(["data=nyud", f"paths.data_dir={tree.root.parent}", "num_workers=0"])
    result = verify_data(cfg)
    assert result.ok, result.problems
    ids = nyud_reference_ids()
    trainval = ids["train"] + ids["val"]
    by_name = {r.name: r for r in result.splits}
    for name, members in (("nyud_trainval", trainval), ("nyud_test", ids["test"])):
        report = by_name[name]
        assert report.count == report.readable == report.expected == len(members)
        assert report.modalities == ("color", "depth", "hha")
        sevens = sum(i.endswith("7") for i in members)  # the tree's one 0 in each of these
        assert report.missing_depth == report.missing_depth_images == sevens
        written = sum(np.bincount(tree.segmentation[i].ravel(), minlength=41) for i in members)
        assert report.histogram[255] == written[0]
        assert report.histogram[:40].tolist() == written[1:].tolist()
    out = capsys.readouterr().out
    assert "nyud_trainval" in out and "795" in out and "654" in out


def test_verify_data_lists_bad_modalities_with_their_files(tmp_path):
    tree = write_nyud_tree(tmp_path, modalities=("color", "depth"), seed=2)
    i = nyud_reference_ids()["test"][3]
    from PIL import Image

    Image.fromarray(tree.depth[i].astype(np.uint8)).save(tree.path("depth", i))
    cfg = compose_config(["data=nyud", f"paths.data_dir={tmp_path}", "num_workers=0"])
    result = verify_data(cfg)  # data.input=color: no HHA needed, the depth is checked
    assert len(result.problems) == 1 and str(tree.path("depth", i)) in result.problems[0]
    assert "16-bit" in result.problems[0]
    j = nyud_reference_ids()["train"][0]
    tree.path("depth", j).unlink()
    result = verify_data(cfg)  # said once, as missing, not again as unreadable
    assert len(result.problems) == 2 and "16-bit" in result.problems[1]
    assert result.problems[0] == f"{tree.path('depth', j)}: missing depth of ID {j}"
    result = verify_data(compose_config([*cfg_overrides(tmp_path), "data.input=hha"]))
    assert all("data/hha is missing" in p for p in result.problems) and result.problems


def cfg_overrides(data_dir):
    return ["data=nyud", f"paths.data_dir={data_dir}", "num_workers=0"]


def test_display_shows_colour_hha_and_grey_depth(tmp_path_factory):
    tree = nyud_tree(tmp_path_factory)
    i = nyud_reference_ids()["test"][0]
    for input_name in ("color", "color_depth", "color_hha"):
        dm = nyud_module(tree.root.parent, input_name)
        images, _ = next(iter(dm.val_dataloader()))
        shown = display_rgb(images, input_name, "caffe_nyud")
        assert shown.dtype == torch.uint8
        assert torch.equal(shown[0], torch.from_numpy(tree.color[i]).permute(2, 0, 1))
    images, _ = next(iter(nyud_module(tree.root.parent, "hha").val_dataloader()))
    shown = display_rgb(images, "hha", "caffe_nyud")
    assert torch.equal(shown[0], torch.from_numpy(tree.hha[i]).permute(2, 0, 1))
    depth = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])  # log depth: near dark, far light
    grey = display_rgb(depth, "depth", "caffe_nyud")
    assert grey.shape == (1, 3, 2, 2) and grey[0, 1].tolist() == [[0, 85], [170, 255]]
    with pytest.raises(ConfigError, match=r"data\.input='color_hha' has 6 channels"):
        display_rgb(torch.zeros(1, 3, 2, 2), "color_hha", "caffe_nyud")


def test_missing_nyud_says_where_to_get_it_and_near_misses(tmp_path):
    message = Roots(tmp_path).problem("nyud")
    assert f"NYUDv2 not found at {tmp_path / 'nyud'}" in message
    assert "http://dl.caffe.berkeleyvision.org/nyud.tar.gz" in message
    assert "no published checksum" in message
    (tmp_path / "NYUDv2" / "segmentation").mkdir(parents=True)
    (tmp_path / "NYUDv2" / "data").mkdir()
    assert f"found {tmp_path / 'NYUDv2'}: rename it to {tmp_path / 'nyud'}" in (
        Roots(tmp_path).problem("nyud")
    )
    inside = tmp_path / "inside"
    (inside / "segmentation").mkdir(parents=True)
    assert "holds NYUDv2's own folders" in Roots(inside).problem("nyud")
    repo = tmp_path / "repo"
    (repo / "data" / "nyud" / "segmentation").mkdir(parents=True)
    assert f"set paths.data_dir={repo / 'data'}" in Roots(repo).problem("nyud")


def test_an_archive_fetched_by_hand_is_extracted_without_network(tmp_path, monkeypatch):
    staging = tmp_path / "staging"
    write_nyud_tree(staging, seed=4)
    data_dir = tmp_path / "data"
    (data_dir / "downloads").mkdir(parents=True)
    archive = make_tar(data_dir / "downloads" / "nyud.tar.gz", staging, ["nyud"])
    source = sources.SOURCES["nyud"]  # the real host must never be contacted from a test
    offline = dataclasses.replace(source.archive, url="http://127.0.0.1:9/nyud.tar.gz")
    monkeypatch.setitem(sources.SOURCES, "nyud", dataclasses.replace(source, archive=offline))
    ensure_sources(["nyud"], Roots(data_dir))
    assert archive.is_file() and Roots(data_dir).find("nyud") == data_dir / "nyud"
    dm = nyud_module(data_dir, "color")
    dm.setup("fit")
    assert len(dm.train_dataset) == 795


def test_data_problems_name_a_missing_modality(tmp_path):
    from fcn_lightning.data.datamodule import data_problems

    write_nyud_tree(tmp_path, modalities=("color",), seed=6)
    cfg = compose_config([*cfg_overrides(tmp_path), "data.input=color_depth"])
    problems, _ = data_problems(cfg.data)
    assert [type(p) for p in problems] == [DataError]
    assert f"{tmp_path / 'nyud' / 'data' / 'depth'} is missing" in str(problems[0])


def test_the_sample_grid_callback_shows_the_colour_of_a_fused_input(tmp_path_factory):
    from types import SimpleNamespace

    from pytorch_lightning.utilities import AttributeDict

    from fcn_lightning.callbacks import SegmentationSamples

    tree = nyud_tree(tmp_path_factory)
    dm = nyud_module(tree.root.parent, "color_depth")
    images, labels = next(iter(dm.val_dataloader()))
    trainer = SimpleNamespace(sanity_checking=False, datamodule=dm)
    module = SimpleNamespace(hparams=AttributeDict(normalization="caffe_nyud"))
    callback = SegmentationSamples(num_samples=1)
    scores = torch.zeros(1, 40, *labels.shape[-2:])
    callback.on_validation_batch_end(trainer, module, scores, (images, labels), 0)
    i = nyud_reference_ids()["test"][0]
    valid = reference_label(tree, i) != 255  # the picture is cut to the labelled extent
    rows, cols = np.nonzero(valid.any(1))[0], np.nonzero(valid.any(0))[0]
    expected = tree.color[i][: rows.max() + 1, : cols.max() + 1]
    assert np.array_equal(callback.rows[0][0], expected)


def test_an_unknown_nyud_split_is_refused_before_any_file_is_read(tmp_path):
    with pytest.raises(ConfigError) as err:
        nyud_module(tmp_path / "nowhere", "color", val_split="nyud_valid")
    assert str(err.value) == (
        "data.val_split: unknown split nyud_valid: NYUDv2's splits are nyud_train, nyud_val, "
        "nyud_test, nyud_trainval"
    )
