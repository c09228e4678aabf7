"""verify_data: the report on a good tree, every problem on a bad one, exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys

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
        "3 channels": root / "SegmentationClass" / f"{train[5]}.png",
    }
    bad["missing image"].unlink()
    bad["missing label"].unlink()
    bad["corrupt"].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_palette_png(bad["label is"], make_label(rng, 30, 30))
    label = tree.labels["voc2012", train[4]].copy()
    label[2, 2], label[3, 3] = 21, 99
    write_palette_png(bad["label values [21, 99]"], label)
    Image.fromarray(image_from_label(tree.labels["voc2012", train[5]])).save(bad["3 channels"])
    write_list(root / "ImageSets" / "Segmentation" / "train.txt", [*train, train[7]])
    return tree, train, bad


def test_every_problem_is_listed_with_its_file(tmp_path, capsys):
    _, train, bad = broken_tree(tmp_path)
    result = run("voc2012", tmp_path)
    assert not result.ok
    for what, path in bad.items():
        assert any(p.startswith(str(path)) and what in p for p in result.problems), what
    assert any(f"ID {train[7]} is listed more than once" in p for p in result.problems)
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
