"""The synthetic dataset: files, reuse and recovery, and the properties its design promises.

Design properties are measured here from the written files with numpy/scipy, not by asking
the generator, so a change to the generator that breaks a promise fails a test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from fcn_lightning.data.synthetic import (
    SYNTHETIC_CLASSES,
    ensure_synthetic,
    generate_synthetic,
    main,
)
from fcn_lightning.errors import DataError

VOID = 255
NUM_CLASSES = len(SYNTHETIC_CLASSES)
TINY = {"num_train": 6, "num_val": 6, "image_size": 64, "progress": False}
# Enough images for the statistics below to be stable; these are the first images of the
# default dataset (each image has its own random stream).
MEDIUM = {"num_train": 60, "num_val": 30, "progress": False}


def _ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _label(root: Path, image_id: str) -> np.ndarray:
    return np.array(Image.open(root / "SegmentationClass" / f"{image_id}.png"))


def _image(root: Path, image_id: str) -> np.ndarray:
    return np.array(Image.open(root / "JPEGImages" / f"{image_id}.jpg"))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _mean_iu(hist: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        iu = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    return float(np.nanmean(iu))


def _confusion(labels, predictions) -> np.ndarray:
    hist = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for label, pred in zip(labels, predictions, strict=True):
        keep = label != VOID
        pairs = NUM_CLASSES * label[keep].astype(np.int64) + pred[keep]
        hist += np.bincount(pairs, minlength=NUM_CLASSES**2).reshape(hist.shape)
    return hist


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("tiny") / "voc", **TINY)


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("medium") / "voc", **MEDIUM)


@pytest.fixture(scope="module")
def medium_labels(medium) -> dict[str, list[np.ndarray]]:
    return {split: [_label(medium, i) for i in _ids(medium, split)] for split in ("train", "val")}


# --- layout and formats -----------------------------------------------------------------


def test_voc_layout_and_split_lists(tiny):
    stems = {p.stem for p in (tiny / "JPEGImages").glob("*.jpg")}
    train, val = _ids(tiny, "train"), _ids(tiny, "val")
    assert len(train) == TINY["num_train"] and len(val) == TINY["num_val"]
    assert not set(train) & set(val)
    assert stems == set(train) | set(val)
    assert stems == {p.stem for p in (tiny / "SegmentationClass").glob("*.png")}
    assert _ids(tiny, "trainval") == train + val
    assert (tiny / "classes.txt").read_text().split() == list(SYNTHETIC_CLASSES)
    assert SYNTHETIC_CLASSES[0] == "background"


def test_manifest_records_what_the_tree_depends_on(tiny):
    manifest = json.loads((tiny / "manifest.json").read_text())
    for key, value in TINY.items():
        if key != "progress":
            assert manifest[key] == value
    assert manifest["seed"] == 0
    assert isinstance(manifest["version"], int)


def test_images_are_rgb_jpegs_and_labels_voc_palette_pngs(tiny):
    # First entries of the PASCAL VOC devkit colour map, and its colour for 255.
    voc_colours = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)]
    for image_id in _ids(tiny, "trainval"):
        with Image.open(tiny / "JPEGImages" / f"{image_id}.jpg") as image:
            assert (image.format, image.mode) == ("JPEG", "RGB")
            size = image.size
        with Image.open(tiny / "SegmentationClass" / f"{image_id}.png") as label:
            assert (label.format, label.mode) == ("PNG", "P")
            assert label.size == size
            palette = label.getpalette()
            values = np.unique(np.array(label))
        colours = [tuple(palette[3 * i : 3 * i + 3]) for i in range(5)]
        assert colours == voc_colours
        assert tuple(palette[3 * 255 : 3 * 256]) == (224, 224, 192)
        assert all(v < NUM_CLASSES or v == VOID for v in values)


def test_image_sizes_vary_within_image_size(medium):
    sizes = {_image(medium, i).shape[:2] for i in _ids(medium, "train")}
    assert len(sizes) >= 3
    assert max(max(s) for s in sizes) == 96


# --- determinism --------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path, tiny):
    again = _files(generate_synthetic(tmp_path / "again", **TINY))
    assert again == _files(tiny)
    other = _files(generate_synthetic(tmp_path / "other", seed=1, **TINY))
    images = [k for k in other if k.startswith("JPEGImages/")]
    assert all(other[k] != again[k] for k in images)


def test_more_images_extend_a_split_without_changing_its_first_images(tmp_path, tiny):
    bigger = generate_synthetic(tmp_path / "bigger", **{**TINY, "num_train": 9})
    for image_id in _ids(tiny, "train"):
        for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png")):
            path = f"{sub}/{image_id}.{ext}"
            assert (bigger / path).read_bytes() == (tiny / path).read_bytes()


# --- reuse, mismatch, recovery ------------------------------------------------------------


def _mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


def test_second_call_reuses_the_tree(tmp_path):
    root = ensure_synthetic(tmp_path / "voc", **TINY)
    before = _mtimes(root)
    assert ensure_synthetic(tmp_path / "voc", **TINY) == root
    assert _mtimes(root) == before


def test_empty_directory_is_filled(tmp_path):
    (tmp_path / "voc").mkdir()
    root = ensure_synthetic(tmp_path / "voc", **TINY)
    assert len(_ids(root, "train")) == TINY["num_train"]


def test_other_arguments_are_refused_unless_overwrite(tmp_path):
    root = ensure_synthetic(tmp_path / "voc", **TINY)
    with pytest.raises(DataError, match="seed=0"):
        ensure_synthetic(root, seed=3, **TINY)
    with pytest.raises(DataError, match="num_val"):
        ensure_synthetic(root, **{**TINY, "num_val": 7})
    ensure_synthetic(root, seed=3, overwrite=True, **TINY)
    assert json.loads((root / "manifest.json").read_text())["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voc"]


def test_missing_or_changed_files_are_detected_and_repaired(tmp_path):
    root = ensure_synthetic(tmp_path / "voc", **TINY)
    label = root / "SegmentationClass" / "val_00002.png"
    label.unlink()
    with pytest.raises(DataError, match=r"val_00002\.png"):
        ensure_synthetic(root, **TINY)
    ensure_synthetic(root, overwrite=True, **TINY)
    assert label.is_file()

    image = root / "JPEGImages" / "train_00001.jpg"
    image.write_bytes(image.read_bytes()[:-10])
    with pytest.raises(DataError, match="changed"):
        ensure_synthetic(root, **TINY)


def test_a_directory_the_generator_did_not_write_is_never_touched(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(DataError, match=r"manifest\.json"):
            ensure_synthetic(root, overwrite=overwrite, **TINY)
    assert [p.name for p in root.iterdir()] == ["notes.txt"]


def test_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    import fcn_lightning.data.synthetic as synthetic

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(synthetic, "_write_sample", broken)
    with pytest.raises(DataError, match="disk full"):
        ensure_synthetic(tmp_path / "voc", **TINY)
    assert list(tmp_path.iterdir()) == []


def test_killed_generation_never_leaves_a_tree_that_looks_complete(tmp_path):
    root = tmp_path / "voc"
    cmd = [sys.executable, "-m", "fcn_lightning.data.synthetic", "--root", str(root)]
    cmd += ["--num-train", "5000", "--no-progress"]
    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(tmp_path.glob(".*/JPEGImages/train_00003.jpg")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not root.exists()
    ensure_synthetic(root, **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voc"]


def test_invalid_arguments_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="image_size"):
        ensure_synthetic(tmp_path / "a", image_size=8, progress=False)
    with pytest.raises(DataError, match="num_val"):
        ensure_synthetic(tmp_path / "b", num_val=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_generates_then_reports_mismatch(tmp_path, capsys):
    args = ["--root", str(tmp_path / "voc"), "--num-train", "6", "--num-val", "6"]
    args += ["--image-size", "64", "--no-progress"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "voc")
    assert main([*args, "--seed", "2"]) == 1
    assert "seed" in capsys.readouterr().err


# --- what the design promises -------------------------------------------------------------


def test_every_class_appears_in_every_split(medium_labels):
    for labels in medium_labels.values():
        present = set(np.unique(np.concatenate([lab.ravel() for lab in labels])))
        assert set(range(NUM_CLASSES)) <= present


def test_void_is_a_thin_unbroken_band_between_classes(medium_labels):
    void_pixels = thick_void = touching = 0
    for label in medium_labels["val"]:
        void = label == VOID
        void_pixels += void.sum()
        thick_void += ndimage.binary_erosion(void, np.ones((3, 3))).sum()
        for a, b in ((label[1:], label[:-1]), (label[:, 1:], label[:, :-1])):
            touching += ((a != b) & (a != VOID) & (b != VOID)).sum()
    assert touching == 0  # two classes never meet without void between them
    assert thick_void < 0.01 * void_pixels  # the band is at most 2 px wide
    total = sum(label.size for label in medium_labels["val"])
    assert 0.02 < void_pixels / total < 0.15


def _distance_to_other_label(label: np.ndarray) -> np.ndarray:
    distance = np.zeros(label.shape)
    for cls in range(1, NUM_CLASSES):
        region = label == cls
        distance[region] = ndimage.distance_transform_edt(region)[region]
    return distance[(label != 0) & (label != VOID)]


def test_objects_are_thin_next_to_a_32_pixel_stride(medium_labels):
    distance = np.concatenate([_distance_to_other_label(lab) for lab in medium_labels["val"]])
    assert (distance <= 2).mean() > 0.2
    assert np.median(distance) <= 5  # half of all object pixels are in an 8 px cell's reach


def test_many_objects_are_smaller_than_a_16_pixel_cell(medium_labels):
    areas = []
    for label in medium_labels["val"]:
        for cls in range(1, NUM_CLASSES):
            components, _ = ndimage.label(label == cls, structure=np.ones((3, 3)))
            areas += list(np.bincount(components.ravel())[1:])
    assert len(areas) > 100
    assert np.mean(np.array(areas) < 16 * 16) > 0.2


def test_each_image_is_one_scene_and_both_scenes_are_common(medium_labels):
    """A class is a shape in a scene: the striped and the checkered version of a shape never
    share an image, and each scene holds about half the images."""
    scenes = []
    for label in medium_labels["train"]:
        present = {int(c) for c in np.unique(label)} - {0, VOID}
        in_scene = {(c - 1) // 3 for c in present}  # 1-3 striped, 4-6 checkered
        assert len(in_scene) == 1, f"classes of both scenes in one image: {sorted(present)}"
        scenes += in_scene
    assert 0.4 < np.mean(scenes) < 0.6


def test_the_scene_is_out_of_a_pool3_view_for_most_object_pixels(medium_labels):
    """Most object pixels lie farther from the ground band (at most 14 px tall, along the
    bottom) than pool3's receptive field reaches (44 px: 22 on each side), so their class
    needs the deeper layers' context."""
    far = []
    for label in medium_labels["val"]:
        rows = np.nonzero((label != 0) & (label != VOID))[0]
        far.append((label.shape[0] - 14 - rows) > 22)
    assert np.concatenate(far).mean() > 0.5


def _colour_bins(image: np.ndarray) -> np.ndarray:
    return (image // 16).astype(np.int64) @ np.array([256, 16, 1])


def test_colour_alone_does_not_decide_the_class(medium, medium_labels):
    """A per-pixel colour -> class table fitted on train fails on val: context is needed."""
    votes = np.zeros((16**3, NUM_CLASSES), np.int64)
    for image_id, label in zip(_ids(medium, "train"), medium_labels["train"], strict=True):
        keep = label != VOID
        np.add.at(votes, (_colour_bins(_image(medium, image_id))[keep], label[keep]), 1)
    table = votes.argmax(1)
    images = [_image(medium, i) for i in _ids(medium, "val")]
    hist = _confusion(medium_labels["val"], [table[_colour_bins(im)] for im in images])
    object_accuracy = np.diag(hist)[1:].sum() / hist[1:].sum()
    assert _mean_iu(hist) < 0.45
    assert object_accuracy < 0.5


def _stride_oracle(label: np.ndarray, stride: int) -> np.ndarray:
    """Each stride x stride cell's majority class, expanded back to full resolution."""
    h, w = label.shape
    hp, wp = -(-h // stride) * stride, -(-w // stride) * stride
    padded = np.full((hp, wp), VOID, np.int64)
    padded[:h, :w] = label
    cells = padded.reshape(hp // stride, stride, wp // stride, stride).transpose(0, 2, 1, 3)
    cells = cells.reshape(hp // stride, wp // stride, -1)
    counts = np.stack([(cells == c).sum(-1) for c in range(NUM_CLASSES)], -1)
    majority = counts.argmax(-1)
    return majority.repeat(stride, 0).repeat(stride, 1)[:h, :w]


def test_finer_output_stride_recovers_much_more(medium_labels):
    labels = medium_labels["val"]
    scores = {
        s: _mean_iu(_confusion(labels, [_stride_oracle(lab, s) for lab in labels]))
        for s in (32, 16, 8)
    }
    assert scores[32] < scores[16] < scores[8]
    assert scores[32] < 0.5 and scores[8] > 0.75
