"""verify_data: the report on a good tree, every problem on a bad one, exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_lightning.verify_data import verify_data
from tests.data_fakes import (
    REPO,
    FakeTree,
    compose_config,
    fake_ids,
    image_from_label,
    make_label,
    paper_tree,
    voc_palette,
    write_jpeg,
    write_list,
    write_palette_png,
)


def run(preset: str, data_dir, *overrides: str):
    cfg = compose_config(
        [f"data={preset}", f"paths.data_dir={data_dir}", "num_workers=0", *overrides]
    )
    return verify_data(cfg)


def histogram(labels) -> np.ndarray:
    return sum(np.bincount(label.ravel(), minlength=256) for label in labels)


def test_clean_paper_tree_reports_counts_and_class_pixels(tmp_path_factory, capsys):
    tree = paper_tree(tmp_path_factory)
    result = run("paper", tree.data_dir, "data.expected_counts.sbd_train=8")
    assert result.ok, result.problems
    by_name = {r.name: r for r in result.splits}
    assert by_name["sbd_train"].stages == ["train"]
    assert by_name["seg11valid"].stages == ["val", "test"]
    assert (by_name["sbd_train"].count, by_name["sbd_train"].readable) == (8, 8)
    assert (by_name["seg11valid"].count, by_name["seg11valid"].readable) == (736, 736)
    expected = histogram(tree.labels["sbd", i] for i in tree.sbd_train)
    assert np.array_equal(by_name["sbd_train"].histogram, expected)
    expected = histogram(tree.labels["voc2011", i] for i in tree.seg11valid)
    assert np.array_equal(by_name["seg11valid"].histogram, expected)
    out = capsys.readouterr().out
    for text in ("sbd_train", "seg11valid", "736", "tvmonitor", "(ignore)"):
        assert text in out


def broken_tree(tmp_path):
    """A VOC2012 tree with one of every problem; returns {what: path}."""
    tree = FakeTree(tmp_path)
    train, val = fake_ids(1, 8), fake_ids(50, 2)
    root = tree.voc({"train": train, "val": val})
    rng = np.random.default_rng(5)
    bad = {
        "missing image": root / "JPEGImages" / f"{train[0]}.jpg",
        "missing label": root / "SegmentationClass" / f"{train[1]}.png",
        "corrupt": root / "JPEGImages" / f"{train[2]}.jpg",
        "label is": root / "SegmentationClass" / f"{train[3]}.png",  # size mismatch
        "label values [21, 99]": root / "SegmentationClass" / f"{train[4]}.png",
        "label PNG is RGB colour": root / "SegmentationClass" / f"{train[5]}.png",
    }
    bad["missing image"].unlink()
    bad["missing label"].unlink()
    bad["corrupt"].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_palette_png(bad["label is"], make_label(rng, 30, 30))
    label = tree.labels["voc2012", train[4]].copy()
    label[2, 2], label[3, 3] = 21, 99
    write_palette_png(bad["label values [21, 99]"], label)
    colour = image_from_label(tree.labels["voc2012", train[5]])
    Image.fromarray(colour).save(bad["label PNG is RGB colour"])
    write_list(root / "ImageSets" / "Segmentation" / "train.txt", [*train, train[7]])
    return tree, train, bad


def test_every_problem_is_listed_with_its_file(tmp_path, capsys):
    _, train, bad = broken_tree(tmp_path)
    result = run("voc2012", tmp_path)
    assert not result.ok
    for what, path in bad.items():
        assert any(p.startswith(str(path)) and what in p for p in result.problems), what
    train_list = tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"
    assert (
        f"split list {train_list}: 1 ID(s) listed more than once: {train[7]} (lines 8, 9)"
        in (result.problems[0])
    )
    assert any("data.expected_counts.voc2012_train" in p for p in result.problems)
    assert len(result.problems) == len(bad) + 3  # + duplicate + two count mismatches
    train_report = next(r for r in result.splits if r.name == "voc2012_train")
    assert train_report.readable == 3  # train[6], train[7] and its duplicate
    err = capsys.readouterr().err
    assert f"{len(result.problems)} problems found" in err


def test_empty_split_and_missing_root_are_problems(tmp_path):
    tree = FakeTree(tmp_path)
    root = tree.voc({"train": fake_ids(1, 2), "val": fake_ids(5, 1)})
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("")
    result = run("voc2012", tmp_path, "data.expected_counts=null")
    assert result.problems == [
        f"split list {root}/ImageSets/Segmentation/val.txt lists no image IDs"
    ]
    result = run("sbd", tmp_path / "elsewhere")  # both splits: one message
    assert len(result.problems) == 1 and "benchmark.tgz" in result.problems[0]
    result = run("voc_aug", tmp_path / "elsewhere")  # every missing archive at once
    assert len(result.problems) == 2
    assert "VOCtrainval_11-May-2012.tar" in result.problems[0]
    assert "benchmark.tgz" in result.problems[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "fcn_lightning.verify_data", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_exit_statuses(tmp_path):
    _, _, bad = broken_tree(tmp_path)
    found = cli("data=voc2012", f"paths.data_dir={tmp_path}", "num_workers=1")
    assert found.returncode == 1, found.stderr
    for path in bad.values():
        assert f"problem: {path}" in found.stderr
    assert "voc2012_train" in found.stdout
    assert not (REPO / "outputs").exists() or not any((REPO / "outputs").glob("**/verify_data.log"))


def test_configuration_errors_exit_2_with_one_line(tmp_path, monkeypatch, capsys):
    from fcn_lightning.verify_data import main

    args = ["verify_data", "data=voc2012", f"paths.data_dir={tmp_path}", "data.sampling=bogus"]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: data.sampling='bogus': choose one of ['replacement', 'shuffle']"
    ]


def tagged(image: Image.Image, path, orientation: int, **save) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, **save)


def format_tree(tmp_path, writers: dict) -> tuple[Path, dict[str, np.ndarray]]:
    """A VOC2012 tree (train: one pair per writer, val: one plain pair); {id: label}."""
    tree = FakeTree(tmp_path)
    ids = fake_ids(1, len(writers))
    root = tree.voc({"train": ids, "val": fake_ids(90, 1)})
    rng = np.random.default_rng(3)
    labels = {}
    for i, write in zip(ids, writers.values(), strict=True):
        image, label = root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png"
        labels[i] = write(rng, image, label)
    return root, labels


def palette(bits: int):
    def write(rng, image, path):
        label = rng.integers(0, 1 << bits, (12, 16), dtype=np.uint8)
        im = Image.fromarray(label, mode="P")
        im.putpalette(list(voc_palette())[: 3 << bits])
        im.save(path, bits=bits)
        write_jpeg(image, image_from_label(label))
        return label

    return write


def grey_2bit(rng, image, path):
    label = rng.integers(0, 4, (10, 14), dtype=np.uint8)
    Image.fromarray(label, mode="L").save(path, bits=2)
    write_jpeg(image, image_from_label(label))
    return label


def grey_16bit(rng, image, path):
    label = make_label(rng, 12, 16)
    Image.fromarray(label.astype(np.uint16)).save(path)
    write_jpeg(image, image_from_label(label))
    return label


def opaque_la(rng, image, path):
    label = make_label(rng, 12, 16)
    Image.fromarray(np.stack([label, np.full_like(label, 255)], -1), mode="LA").save(path)
    write_jpeg(image, image_from_label(label))
    return label


def palette_with_transparency(rng, image, path):
    label = make_label(rng, 16, 12)
    write_palette_png(path, label)
    Image.open(path).save(path, transparency=255)
    write_jpeg(image, image_from_label(label))
    return label


def turned_photo(rng, image, path):
    label = make_label(rng, 12, 16)  # drawn on the photo as shown, upright
    write_palette_png(path, label)
    stored = Image.fromarray(image_from_label(label)).transpose(Image.Transpose.ROTATE_90)
    tagged(stored, image, 6, quality=95)
    return label


GOOD_FORMATS = {
    "palette 1-bit": palette(1),
    "palette 2-bit": palette(2),
    "palette 4-bit": palette(4),
    "greyscale 2-bit": grey_2bit,
    "greyscale 16-bit": grey_16bit,
    "greyscale + opaque alpha": opaque_la,
    "palette + transparency": palette_with_transparency,
    "EXIF-turned photo, upright label": turned_photo,
}


def test_labels_of_every_format_verify_clean_with_their_pixels_counted(tmp_path):
    root, labels = format_tree(tmp_path, GOOD_FORMATS)
    for label_id, label in labels.items():  # the fakes are what Pillow reads
        with Image.open(root / "SegmentationClass" / f"{label_id}.png") as im:
            mode, pillow = im.mode, np.array(im)
        pillow = {"LA": lambda a: a[..., 0], "L": lambda a: a // 85}.get(mode, np.asarray)(pillow)
        assert np.array_equal(pillow, label), mode  # (L: 2-bit samples, shown stretched)
    result = run("voc2012", tmp_path, "data.expected_counts=null")
    assert result.ok, result.problems
    train = next(r for r in result.splits if r.name == "voc2012_train")
    assert train.readable == len(GOOD_FORMATS)
    assert np.array_equal(train.histogram, histogram(labels.values()))


def rgba_label(rng, image, path):
    label = make_label(rng, 12, 16)
    write_jpeg(image, image_from_label(label))
    Image.fromarray(image_from_label(label)).convert("RGBA").save(path)


def label_with_300(rng, image, path):
    label = make_label(rng, 12, 16).astype(np.uint16)
    label[4, 4] = 300
    write_jpeg(image, image_from_label(label.clip(0, 255).astype(np.uint8)))
    Image.fromarray(label).save(path)


def transparent_la(rng, image, path):
    label = make_label(rng, 12, 16)
    alpha = np.full_like(label, 255)
    alpha[:2] = 0
    write_jpeg(image, image_from_label(label))
    Image.fromarray(np.stack([label, alpha], -1), mode="LA").save(path)


def label_on_stored_pixels(rng, image, path):
    label = make_label(rng, 12, 16)
    write_palette_png(path, label)
    tagged(Image.fromarray(image_from_label(label)), image, 8, quality=95)


def jpeg_label(rng, image, path):
    label = make_label(rng, 12, 16)
    write_jpeg(image, image_from_label(label))
    Image.fromarray(label).save(path, "JPEG")


BAD_FORMATS = {
    "label PNG is RGBA colour": rgba_label,
    "16-bit label PNG holds values up to 300": label_with_300,
    "32 transparent pixel(s)": transparent_la,
    "once the image's EXIF orientation 8": label_on_stored_pixels,
    "label file is a JPEG, not a PNG": jpeg_label,
    "plain pair": lambda *args: None,
}


def test_labels_of_refused_formats_are_each_a_problem_with_their_file(tmp_path):
    root, _ = format_tree(tmp_path, BAD_FORMATS)
    ids = fake_ids(1, len(BAD_FORMATS))
    write_list(root / "ImageSets/Segmentation/train.txt", [*ids, ids[2]])
    result = run("voc2012", tmp_path, "data.expected_counts=null")
    assert len(result.problems) == len(BAD_FORMATS)  # 5 files + the repeated ID
    assert result.problems[0].startswith(f"split list {root}/ImageSets/Segmentation/train.txt")
    assert f"{ids[2]} (lines 3, 7)" in result.problems[0]
    for (what, _), label_id, problem in zip(
        list(BAD_FORMATS.items())[:5], ids[:5], result.problems[1:], strict=True
    ):
        assert problem.startswith(f"{root}/SegmentationClass/{label_id}.png: "), problem
        assert what in problem, problem
    train = next(r for r in result.splits if r.name == "voc2012_train")
    assert train.readable == 1  # the plain pair, still checked
