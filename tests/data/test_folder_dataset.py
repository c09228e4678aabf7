"""data=folder: a user's own tree (folders or VOC layout, classes.txt) read value for value,
every mismatch refused in one line before anything is written, and a tiny run through the
real entry points whose eval names the classes and whose predictions wear their colours."""

from __future__ import annotations

import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

from fcn_lightning.data.class_list import read_class_list
from fcn_lightning.data.datamodule import SegmentationDataModule
from fcn_lightning.errors import ConfigError, DataError
from fcn_lightning.run.boundary import user_errors
from fcn_lightning.run.check_config import check_config
from fcn_lightning.train import train
from fcn_lightning.visualize import voc_palette
from tests.train_helpers import CONF, run_module

CLASSES = ["background", "road", "traffic light"]
COLOURS = [(0, 0, 0), (128, 64, 128), (250, 170, 30)]
MASK_MODES = ("P", "L", "I;16", "1")


def mask_array(rng: np.random.Generator, h: int, w: int, mode: str) -> np.ndarray:
    top = 2 if mode == "1" else 3  # a 1-bit mask holds classes 0 and 1
    mask = rng.integers(0, top, (h, w)).astype(np.uint8)
    if mode != "1":
        mask[0, : w // 2] = 255  # void
    return mask


def save_mask(path: Path, mask: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        image = Image.fromarray(mask, mode="P")
        # All 256 entries: with only the classes' 3, Pillow writes 2-bit pixels and void
        # (255) would come back as 3.
        image.putpalette([v for c in COLOURS for v in c] + [0] * 3 * 253)
    elif mode == "L":
        image = Image.fromarray(mask, mode="L")
    elif mode == "I;16":
        image = Image.fromarray(mask.astype(np.uint16))
    else:
        image = Image.fromarray(mask.astype(bool))
    image.save(path)


def make_tree(
    root: Path,
    layout: str = "folders",
    counts: tuple[int, int] = (4, 2),
    colours: bool = True,
    size: tuple[int, int] = (24, 32),
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """A dataset under `root`; returns {split: {name: mask}} as written."""
    rng = np.random.default_rng(seed)
    written: dict[str, dict[str, np.ndarray]] = {}
    h, w = size
    for split, count in zip(("train", "val"), counts, strict=True):
        written[split] = {}
        for i in range(count):
            mode = MASK_MODES[i % len(MASK_MODES)]
            name = f"{split}{i:02d}"
            mask = mask_array(rng, h, w, mode)
            image = (rng.integers(0, 255, (h, w, 3)) // 2 + mask[..., None] % 3 * 40).astype(
                np.uint8
            )
            suffix = (".png", ".jpg", ".jpeg")[i % 3]
            if layout == "folders":
                image_path = root / "images" / split / f"{name}{suffix}"
                mask_path = root / "masks" / split / f"{name}.png"
            else:
                image_path = root / "JPEGImages" / f"{name}.jpg"
                mask_path = root / "SegmentationClass" / f"{name}.png"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(image_path)
            save_mask(mask_path, mask, mode)
            written[split][name] = mask
        if layout == "voc":
            listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
            listing.parent.mkdir(parents=True, exist_ok=True)
            listing.write_text("".join(f"{n}\n" for n in written[split]))
    # Colours both ways: `name R G B` and `name #RRGGBB`.
    spelled = [f"{r} {g} {b}" if k % 2 == 0 else f"#{r:02X}{g:02X}{b:02X}"
               for k, (r, g, b) in enumerate(COLOURS)]  # fmt: skip
    lines = [f"{n} {c}" if colours else n for n, c in zip(CLASSES, spelled, strict=True)]
    # A byte-order mark, CRLF line ends and a blank line, as editors on Windows write them.
    (root / "classes.txt").write_bytes(("\ufeff" + "\r\n\r\n".join(lines) + "\r\n").encode())
    return written


def datamodule(root: Path, **kw) -> SegmentationDataModule:
    return SegmentationDataModule(
        name="folder", root=str(root), train_split="train", val_split="val",
        classes=str(root / "classes.txt"), num_classes=len(CLASSES), normalization="torchvision",
        num_workers=0, **kw,
    )  # fmt: skip


# -- the class list ----------------------------------------------------------------------


def refused_train_line(cfg, capsys) -> str:
    """Train ``cfg`` through the entry point's boundary (the config check first, as
    ``main`` does): it must exit 2 with exactly one ``error:`` line, returned."""
    with pytest.raises(SystemExit) as exit_info, user_errors():
        check_config(cfg, "train")
        train(cfg)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


def test_class_list_grammar(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes(b"\xef\xbb\xbfbg 0 0 0\r\n\r\nroad  #804080\r\ntraffic light 250 170 30\r\n")
    parsed = read_class_list(path)
    assert parsed.names == ["bg", "road", "traffic light"]
    assert parsed.colours == [(0, 0, 0), (128, 64, 128), (250, 170, 30)]
    path.write_text("bg\nroad\n\n")
    assert read_class_list(path).names == ["bg", "road"] and read_class_list(path).colours is None


@pytest.mark.parametrize(
    "text, expect",
    [
        ("bg\nroad 1 2\n", ":2: 'road 1 2' does not parse"),
        ("bg 0 0 0\nroad 300 0 0\n", ":2: colour 300 0 0"),
        ("bg #00000\nroad #000000\n", ":1: '#00000' is no #RRGGBB"),
        ("bg 0 0 0\n\nroad\n", ":3: class 'road' has no colour"),
        ("bg\nroad\nbg\n", ":3: class 'bg' is already on line 1"),
        ("bg\n", "lists 1 class(es)"),
        ("#112233\nroad\n", ":1: '#112233' has no class name"),
    ],
)
def test_class_list_errors_name_file_and_line(tmp_path, text, expect):
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=".*".join(map(_escape, [str(path), expect]))):
        read_class_list(path)


def _escape(text: str) -> str:
    return re.escape(text)


def test_the_config_counts_classes_txt_and_keeps_absolute_paths(tmp_path, monkeypatch):
    make_tree(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["data=folder", "data.root=mine"])
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "classes.txt").write_text("bg\nroad 1 2\n")
        bad = compose("train", overrides=["data=folder", "data.root=bad"])
    assert (cfg.data.num_classes, cfg.model.num_classes) == (3, 3)
    assert cfg.data.classes == str(tmp_path / "mine" / "classes.txt")
    dm = SegmentationDataModule(**{k: v for k, v in cfg.data.items() if k != "_target_"})
    assert dm.hparams.root == str(tmp_path / "mine")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'bad' / 'classes.txt'}:2: ")):
        check_config(bad, "train")


# -- the reader ----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["folders", "voc"])
def test_reader_matches_an_independent_read(tmp_path, layout):
    written = make_tree(tmp_path, layout, counts=(4, 2))
    dm = datamodule(tmp_path)
    dm.setup("fit")
    assert dm.class_names == CLASSES
    assert dm.palette == [list(c) for c in COLOURS]
    for dataset, split in ((dm.train_dataset, "train"), (dm.val_dataset, "val")):
        assert dataset.ids == sorted(written[split])
        for index, sample in enumerate(dataset.samples):
            image, label = dataset.load(index)
            with Image.open(sample.label) as im:
                independent = np.array(im).astype(np.int64)
            assert np.array_equal(label.numpy(), written[split][sample.id])
            assert np.array_equal(label.numpy().astype(np.int64), independent)
            if sample.image.suffix == ".png":  # lossless: the exact pixels
                with Image.open(sample.image) as im:
                    assert np.array_equal(image.permute(1, 2, 0).numpy(), np.array(im))
            assert tuple(image.shape) == (3, *written[split][sample.id].shape)


def test_no_colours_gives_the_voc_map_and_layout_is_detected(tmp_path):
    make_tree(tmp_path / "a", "voc", colours=False)
    dm = datamodule(tmp_path / "a")
    assert dm.palette == voc_palette(3).tolist()
    assert len(dm.samples("val")) == 2
    with pytest.raises(DataError, match=r"data\.layout=folders needs images/ and masks/"):
        datamodule(tmp_path / "a", layout="folders").samples("val")


def test_verify_data_counts_splits_and_pixels_per_class_by_name(tmp_path, capsys):
    from fcn_lightning.verify_data import verify_data
    from tests.data_fakes import compose_config

    written = make_tree(tmp_path, counts=(5, 3))
    result = verify_data(compose_config(["data=folder", f"data.root={tmp_path}", "num_workers=0"]))
    assert result.ok, result.problems
    for report in result.splits:
        masks = written[report.name].values()
        assert (report.count, report.readable) == (len(masks), len(masks))
        expected = sum(np.bincount(m.ravel(), minlength=256) for m in masks)
        assert np.array_equal(report.histogram, expected)
    out = capsys.readouterr().out
    assert all(name in out for name in CLASSES)
    value_beyond(tmp_path)
    result = verify_data(compose_config(["data=folder", f"data.root={tmp_path}", "num_workers=0"]))
    assert len(result.problems) == 1 and "label values [7]" in result.problems[0]


# -- through train: one line, exit 2, nothing written ------------------------------------

TINY = [
    "model.pretrained=false", "model.width=0.0625", "model.geometry=aligned",
    "model.weights=torchvision", "optim=sgd_poly", "loss=mean", "trainer=cpu",
    "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.num_sanity_val_steps=0",
    "trainer.enable_model_summary=false", "logger=csv", "data.num_workers=0",
]  # fmt: skip


def first(root: Path, split: str, folder: str) -> Path:
    return sorted((root / folder / split).iterdir())[0]


def value_beyond(root: Path) -> Path:
    path = first(root, "train", "masks")
    mask = np.array(Image.open(path))  # train00 is a palette PNG: its indices
    mask[3, 3] = 7
    Image.fromarray(mask, mode="L").save(path)
    return path


def wrong_size(root: Path) -> Path:
    path = first(root, "val", "masks")
    Image.fromarray(np.zeros((10, 12), np.uint8), mode="L").save(path)
    return path


def drop(root: Path, folder: str, split: str) -> Path:
    path = first(root, split, folder)
    path.unlink()
    return path


def empty_val(root: Path) -> Path:
    for folder in ("images", "masks"):
        for path in (root / folder / "val").iterdir():
            path.unlink()
    return root


def bad_line(root: Path) -> Path:
    (root / "classes.txt").write_text("bg\nroad\ncar 12\n")
    return root / "classes.txt"


def neither(root: Path) -> Path:
    shutil.rmtree(root / "masks")
    return root


def stray_file(root: Path) -> Path:
    path = root / "images" / "train" / "notes.txt"
    path.write_text("taken in May")
    return path


def same_name(root: Path) -> Path:
    path = first(root, "train", "images")
    shutil.copy(path, path.with_suffix(".jpeg" if path.suffix != ".jpeg" else ".png"))
    return path


def voc_unlisted_mask(root: Path) -> Path:
    path = root / "SegmentationClass" / "val01.png"
    path.unlink()
    return path


def voc_no_list(root: Path) -> Path:
    path = root / "ImageSets" / "Segmentation" / "val.txt"
    path.unlink()
    return path


def both_layouts(root: Path) -> Path:
    for folder in ("JPEGImages", "SegmentationClass"):
        (root / folder).mkdir()
    return root


CASES = {
    "value beyond the classes": (value_beyond, "{path}: value 7 beyond the 3 classes"),
    "stray file": (stray_file, "{path}: not an image (.jpg/.jpeg/.png)"),
    "two images one name": (same_name, "share the name"),
    "both layouts": (both_layouts, "data.root={path} holds both layouts"),
    "voc: listed ID without mask": (voc_unlisted_mask, "{path}: missing mask of an ID"),
    "voc: no list for the split": (voc_no_list, "{path} is missing: split val needs it"),
    "sizes differ": (wrong_size, "{path} is 12x10 (WxH) but its image"),
    "image without mask": (lambda r: drop(r, "masks", "train"), "no mask for it"),
    "mask without image": (lambda r: drop(r, "images", "val"), "no image for it"),
    "empty split": (empty_val, "split val of {path} is empty"),
    "missing classes.txt": (lambda r: (r / "classes.txt").unlink() or r, "no such class list"),
    "class line does not parse": (bad_line, "{path}:3: 'car 12' does not parse"),
    "neither layout": (neither, "data.root={path} is neither layout"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_mismatch_is_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    root = tmp_path / "data"
    make_tree(root, "voc" if case.startswith("voc") else "folders")
    setup, expect = CASES[case]
    path = setup(root)
    if case == "image without mask":  # the image named is the one left alone
        expect = f"{first(root, 'train', 'images')}: {expect}"
    out = tmp_path / "run"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["data=folder", f"data.root={root}", *TINY])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    error = refused_train_line(cfg, capsys)
    assert expect.format(path=path) in error
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*") if ".lock" not in p.name)


# -- the real entry points -----------------------------------------------------------------


def test_train_eval_predict_carry_the_datas_classes_and_colours(tmp_path):
    root, broken = tmp_path / "mydata", tmp_path / "broken"
    make_tree(root, counts=(4, 2))
    make_tree(broken, counts=(4, 2))
    stray = value_beyond(broken)
    run, refused = tmp_path / "run", tmp_path / "refused"

    def train_on(data: Path, run_dir: Path):
        return run_module(
            "fcn_lightning.train", "data=folder", f"data.root={data}", "model=fcn8s", *TINY,
            f"hydra.run.dir={run_dir}", cwd=tmp_path,
        )  # fmt: skip

    with ThreadPoolExecutor(2) as pool:  # the refused start beside the real one, as a user
        done, bad = pool.map(train_on, (root, broken), (run, refused))
    assert done.returncode == 0, done.stderr[-3000:]
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 2 and len(errors) == 1, bad.stderr[-3000:]
    assert f"{stray}: value 7 beyond the 3 classes" in errors[0]
    assert not refused.exists()  # Hydra's run dir of a refused start is removed
    ckpt = run / "checkpoints" / "last.ckpt"
    with ThreadPoolExecutor(2) as pool:  # two processes, each ~10 s of imports
        scored = pool.submit(
            run_module, "fcn_lightning.eval", f"ckpt_path={ckpt}", "num_workers=0",
            f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path,
        )  # fmt: skip
        predicted = pool.submit(
            run_module, "fcn_lightning.predict", f"ckpt_path={ckpt}",
            f"inputs={root / 'images' / 'val'}", f"out_dir={tmp_path / 'pred'}",
            f"hydra.run.dir={tmp_path / 'pred_run'}", cwd=tmp_path,
        )  # fmt: skip
        scored, predicted = scored.result(), predicted.result()
    assert scored.returncode == 0, scored.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(metrics["iu"]) == CLASSES
    table = (tmp_path / "eval" / "metrics.md").read_text()
    assert all(f"| {name} |" in table for name in CLASSES)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    masks = sorted((tmp_path / "pred").glob("*.png"))
    assert [m.stem for m in masks] == ["val00", "val01"]
    with Image.open(masks[0]) as im:
        assert im.mode == "P"
        palette = np.array(im.getpalette()).reshape(-1, 3)
    assert palette[: len(COLOURS)].tolist() == [list(c) for c in COLOURS]
    assert palette[255].tolist() == voc_palette()[255].tolist()  # void keeps VOC's colour


def test_a_resume_whose_folder_is_gone_names_data_root(tmp_path):
    """The resume check compares the config with the run's checkpoint; without the folder
    the config's class count is only a placeholder, so the folder is refused first."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"a checkpoint of a 3-class run")
    gone = tmp_path / "moved_away"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["data=folder", f"data.root={gone}",
                                          "model.pretrained=false"])  # fmt: skip
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
    with pytest.raises(DataError) as caught:
        train(cfg)
    assert str(caught.value).startswith(f"data.root={gone}: no such folder; point it at")
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"a checkpoint of a 3-class run"


def test_a_class_list_that_does_not_parse_is_one_config_problem(tmp_path):
    """model.num_classes is interpolated from data.num_classes: one broken list, one line."""
    (tmp_path / "classes.txt").write_text("bg\nroad 1 2\n")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["data=folder", f"data.root={tmp_path}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(ConfigError) as caught:
        check_config(cfg, "train")
    message = str(caught.value)
    assert not message.startswith("2 config problems"), message
    assert message.startswith("data.num_classes: ") and ":2: 'road 1 2' does not parse" in message
