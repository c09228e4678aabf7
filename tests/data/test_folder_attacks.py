"""data=folder attacked as a careless user would: upper-case suffixes, an edited
classes.txt under a resumed run, ... Each case is the user's own tree, built here, run
through the real entry points' code; each expects the exact result or one refusal line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

from fcn_lightning.data.folder import folder_problems, folder_split
from fcn_lightning.data.readers import read_label
from fcn_lightning.run.check_config import check_config
from fcn_lightning.train import train
from tests.data.test_folder_dataset import TINY, make_tree, refused_train_line
from tests.train_helpers import CONF, run_module


def folder_data(root: Path, layout: str = "auto") -> dict:
    return {"root": str(root), "layout": layout, "classes": str(root / "classes.txt"),
            "train_split": "train", "val_split": "val"}  # fmt: skip


def upper_case_suffixes(root: Path) -> None:
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".png", ".jpg", ".jpeg")):
        path.rename(path.with_suffix(path.suffix.upper()))


@pytest.mark.parametrize("layout", ["folders", "voc"])
def test_upper_case_suffixes_are_read_as_their_lower_case(tmp_path, layout):
    """`IMG_0001.JPG` / `IMG_0001.PNG` as cameras and Windows tools name them: the check
    passes and every mask reads back as written (it said 'unknown label format')."""
    written = make_tree(tmp_path, layout)
    upper_case_suffixes(tmp_path)
    assert folder_problems(folder_data(tmp_path), ["train", "val"]) == []
    for split, masks in written.items():
        samples = folder_split(tmp_path, split)
        assert [s.id for s in samples] == sorted(masks)
        for sample in samples:
            assert sample.label.suffix == ".PNG" and sample.image.suffix.isupper()
            with Image.open(sample.label) as im:  # an independent read: the pixel values
                values = np.array(im.convert("L") if im.mode == "1" else im).astype(np.uint8)
            if im.mode == "1":
                values = (values > 0).astype(np.uint8)
            assert np.array_equal(read_label(sample.label).numpy(), values)
            assert np.array_equal(values, masks[sample.id])


# -- resume after classes.txt changed -------------------------------------------------------


def train_cfg(root: Path, run: Path, *extra: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["data=folder", f"data.root={root}", *TINY,
                                          "trainer.max_steps=1", *extra])  # fmt: skip
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
    return cfg


EDITS = {
    "a name": (lambda t: t.replace("road", "street"), "class 1 was 'road', now 'street'"),
    "a colour": (lambda t: t.replace("#804080", "#804081"),
                 "was coloured [128, 64, 128], now [128, 64, 129]"),
    "the count": (lambda t: t + "car 1 2 3\r\n", "3 classes then, 4 now"),
}  # fmt: skip


def trained(base: Path) -> tuple[Path, Path]:
    """A 1-step run on a folder under `base`: (the folder, the run directory)."""
    root, run = base / "data", base / "run"
    make_tree(root)
    cfg = train_cfg(root, run)
    check_config(cfg, "train")
    train(cfg)
    return root, run


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_resume_after_classes_txt_changed_is_refused_naming_data_classes(tmp_path, capsys, edit):
    root, run = trained(tmp_path)
    classes = root / "classes.txt"
    change, expect = EDITS[edit]
    classes.write_bytes(change(classes.read_bytes().decode("utf-8")).encode("utf-8"))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    cfg = train_cfg(root, run, "trainer.max_steps=2")
    error = refused_train_line(cfg, capsys)
    assert f"data.classes={classes} changed" in error and expect in error, error
    assert "resume.allow_changes=[data.classes]" in error
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_resume_may_take_a_renamed_class_when_allowed(tmp_path):
    root, run = trained(tmp_path)
    classes = root / "classes.txt"
    classes.write_text(classes.read_text(encoding="utf-8-sig").replace("road", "street"))
    cfg = train_cfg(root, run, "trainer.max_steps=2", "resume.allow_changes=[data.classes]")
    check_config(cfg, "train")
    train(cfg)
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 2
    assert saved["hyper_parameters"]["class_names"] == ["background", "street", "traffic light"]


def test_an_unchanged_classes_txt_resumes(tmp_path):
    root, run = trained(tmp_path)
    train(train_cfg(root, run, "trainer.max_steps=2"))
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 2


def test_eval_on_a_folder_whose_classes_txt_names_other_classes_is_refused(tmp_path):
    """Same count, other names: the masks' values mean other classes than the model's, so
    a table under the checkpoint's names would be a silent wrong score."""
    root, run = trained(tmp_path)
    classes = root / "classes.txt"
    classes.write_text(classes.read_text(encoding="utf-8-sig").replace("road", "river"))
    out = tmp_path / "eval"
    scored = run_module(
        "fcn_lightning.eval", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "data=folder",
        f"data.root={root}", "num_workers=0", f"hydra.run.dir={out}", cwd=tmp_path,
    )  # fmt: skip
    errors = [line for line in scored.stderr.splitlines() if line.startswith("error:")]
    assert scored.returncode == 2 and len(errors) == 1, scored.stderr[-2000:]
    assert errors[0].startswith(f"error: {classes} names the classes [background, river,")
    assert "trained with [background, road, traffic light]" in errors[0]
    assert not (out / "metrics.json").exists()


def short_palette_mask(root: Path) -> Path:
    """A mask saved as users do with a 3-colour palette: Pillow writes it at 2 bits."""
    mask = np.zeros((24, 32), np.uint8)
    mask[:4] = 255
    path = root / "masks" / "train" / "train01.png"
    image = Image.fromarray(mask, mode="P")
    image.putpalette([0, 0, 0, 128, 64, 128, 250, 170, 30])
    image.save(path)
    return path


SHORT = "a 2-bit palette PNG: void 255 saved with a short palette comes back as 3"


def test_a_short_palette_mask_says_void_came_back_as_another_value(tmp_path):
    """Void 255 is stored as 3. 'Add the classes to classes.txt' would be the wrong fix,
    so the check before training and verify_data both say what happened."""
    from fcn_lightning.verify_data import verify_data
    from tests.data_fakes import compose_config

    make_tree(tmp_path)
    path = short_palette_mask(tmp_path)
    assert path.read_bytes()[24] == 2  # IHDR bit depth, read here independently
    with Image.open(path) as im:
        assert int(np.array(im).max()) == 3  # what the file holds
    problems = folder_problems(folder_data(tmp_path), ["train", "val"])
    assert len(problems) == 1
    assert str(problems[0]).startswith(f"{path}: value 3 beyond the 3 classes")
    assert SHORT in str(problems[0])
    result = verify_data(compose_config(["data=folder", f"data.root={tmp_path}", "num_workers=0"]))
    assert len(result.problems) == 1 and SHORT in result.problems[0], result.problems


def test_a_class_name_with_a_pipe_keeps_the_markdown_table_two_columns():
    from fcn_lightning.metrics import SCORE_NAMES, markdown_table

    scores = {**dict.fromkeys(SCORE_NAMES, 0.5), "iu": {"bg": 0.25, "car|truck": 0.75}}
    rows = markdown_table(scores).splitlines()[-2:]
    # Cells as a Markdown renderer splits them: on every "|" not escaped by a backslash.
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]
    assert cells == [["bg", "25.0"], [r"car\|truck", "75.0"]]


def test_file_manager_files_are_skipped_and_other_strays_still_refused(tmp_path):
    written = make_tree(tmp_path)
    for folder in ("images", "masks"):
        for name in (".DS_Store", "._train00.png", "Thumbs.db", "desktop.ini"):
            (tmp_path / folder / "train" / name).write_bytes(b"\x00junk")
    assert folder_problems(folder_data(tmp_path), ["train", "val"]) == []
    assert [s.id for s in folder_split(tmp_path, "train")] == sorted(written["train"])
    stray = tmp_path / "images" / "train" / "Thumbs.db.bak"
    stray.write_bytes(b"x")
    (problem,) = folder_problems(folder_data(tmp_path), ["train", "val"])
    assert str(problem).startswith(f"{stray}: not an image")


def test_a_voc_list_of_file_names_says_ids_have_no_suffix(tmp_path):
    make_tree(tmp_path, "voc")
    listing = tmp_path / "ImageSets" / "Segmentation" / "train.txt"
    listing.write_text("".join(f"{i}.jpg\n" for i in listing.read_text().split()))
    (problem,) = folder_problems(folder_data(tmp_path), ["train", "val"])
    assert str(problem).startswith(f"{listing}: ID 'train00.jpg' has a file suffix (4 such ID")
    assert "'train00'" in str(problem)


def test_a_data_root_that_is_a_file_says_so(tmp_path, capsys):
    make_tree(tmp_path / "data")
    archive = tmp_path / "data.zip"
    archive.write_bytes(b"PK\x03\x04")
    cfg = train_cfg(archive, tmp_path / "run")
    assert refused_train_line(cfg, capsys).startswith(
        f"error: data.root={archive}: is a file, not a folder; point it at your dataset"
    )
    run = tmp_path / "run"  # (its lock file aside: train holds it while it checks)
    assert not run.exists() or not any(p.is_file() for p in run.rglob("*") if ".lock" not in p.name)
