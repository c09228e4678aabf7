"""The PASCAL VOC evaluation server's segmentation submission:
``python -m fcn_lightning.predict ckpt_path=... format=voc [voc.year=2012] [voc.comp=comp6]``.

The layout is the devkit's (VOCinit.m: ``VOCopts.seg.clsrespath``, devkit_doc section 5.3):
``results/VOC2012/Segmentation/comp6_test_cls/<id>.png`` for every id of
``ImageSets/Segmentation/test.txt``, each an indexed (palette) PNG of the JPEG's size whose
pixel values are the class indices 0 (background) .. 20. comp6 is for methods trained on
data outside VOC (the paper's FCNs use SBD), comp5 for VOC data only. The masks are packed
as ``<out_dir>/voc2012_comp6_test.tar.gz`` with ``results/`` at its root.

Interruptions: every mask is written to a temporary name and renamed, and a stamp
(`STAMP`) records which checkpoint and settings the masks come from; a rerun keeps the
masks that read back whole and predicts the rest. The tarball is written to a temporary
name, read back and checked (`verify_tarball`), and only then renamed into place, so a
half tarball never carries the final name.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import UnidentifiedImageError

from fcn_lightning.data.readers import read_image
from fcn_lightning.errors import ConfigError, DataError
from fcn_lightning.run.console import log
from fcn_lightning.run.progress import track
from fcn_lightning.run.signals import Interrupted, stopped
from fcn_lightning.visualize import palette_image, save_whole
from fcn_lightning.voc_tarball import (
    NUM_CLASSES,
    human_size,
    mask_problem,
    md5_of,
    pack,
    upright_size,
    verify_tarball,
)

# Where each year's test archive unpacks under paths.data_dir (VOC2012test.tar gives
# VOCdevkit/VOC2012 beside the trainval tree); the first holding the list wins.
TREES = {
    "2012": ("VOCdevkit/VOC2012", "TestData/VOCdevkit/VOC2012"),
    "2011": ("VOCdevkit/VOC2011", "TestData/VOCdevkit/VOC2011", "TrainVal/VOCdevkit/VOC2011"),
}
STAMP = ".fcn_submission.json"


class Submission:
    """One year/competition/split: where its list, images, masks and tarball are."""

    def __init__(self, tree: Path, year: str, comp: str, split: str, out_dir: Path):
        self.tree, self.year, self.comp, self.split = tree, year, comp, split
        self.out_dir = out_dir
        self.list_path = tree / "ImageSets" / "Segmentation" / f"{split}.txt"
        self.member_dir = f"results/VOC{year}/Segmentation/{comp}_{split}_cls"
        self.mask_dir = out_dir / self.member_dir
        self.tarball = out_dir / f"voc{year}_{comp}_{split}.tar.gz"
        self.partial_tarball = out_dir / f".{self.tarball.name}.partial"
        self.stamp = self.mask_dir / STAMP

    def jpeg(self, image_id: str) -> Path:
        return self.tree / "JPEGImages" / f"{image_id}.jpg"


def find_tree(data_dir: str | Path, year: str, split: str, root: str | None) -> Path:
    """The VOC<year> folder holding ``ImageSets/Segmentation/<split>.txt``."""
    if root is not None:
        candidates, key = [Path(root).expanduser()], "voc.root"
    else:
        candidates = [Path(data_dir).expanduser() / c for c in TREES[year]]
        key = "paths.data_dir"
    for tree in candidates:
        if (tree / "ImageSets" / "Segmentation" / f"{split}.txt").is_file():
            return tree
    listed = candidates[0] / "ImageSets" / "Segmentation" / f"{split}.txt"
    raise DataError(
        f"{listed}: no such list ({key}={candidates[0] if root else data_dir}); unpack the "
        f"VOC{year} test archive (VOC{year}test.tar, from the evaluation server's site) into "
        f"paths.data_dir, or point voc.root at the VOC{year} folder that holds it"
    )


def read_ids(list_path: Path) -> list[str]:
    """The image ids of a VOC list file: one per line, the first word of each."""
    try:
        text = list_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(
            f"{list_path}: cannot be read ({error}); replace it from the archive"
        ) from None
    ids = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        image_id = line.split()[0]
        # An id names <id>.jpg and the mask <id>.png: a folder in it would read and write
        # outside JPEGImages and the submission's folder.
        if "/" in image_id or "\\" in image_id or image_id.startswith("."):
            raise DataError(
                f"{list_path}: line {number} lists {image_id!r}, not an image id (a JPEG's "
                "name in JPEGImages without .jpg or folders); replace it from the archive"
            )
        ids.append(image_id)
    if not ids:
        raise DataError(f"{list_path}: lists no images; replace it from the archive")
    seen: set[str] = set()
    twice = next((i for i in ids if i in seen or seen.add(i)), None)
    if twice is not None:
        raise DataError(f"{list_path}: lists {twice} twice; replace it from the archive")
    return ids


def check_images(sub: Submission, ids: list[str]) -> None:
    """Every listed JPEG is there and opens as an image (its header: a file cut short
    inside its pixel data is only found when predicted, and then named)."""
    missing = [i for i in ids if not sub.jpeg(i).is_file()]
    if missing:
        raise DataError(
            f"{sub.jpeg(missing[0])}: missing, with {len(missing)} of the {len(ids)} images "
            f"{sub.list_path.name} lists; unpack the whole VOC{sub.year} test archive there"
        )
    unreadable = []
    for image_id in track(ids, description="check images", unit="img", line_every=500):
        try:
            upright_size(sub.jpeg(image_id))
        except (OSError, UnidentifiedImageError, ValueError):
            unreadable.append(image_id)
    if unreadable:
        raise DataError(
            f"{sub.jpeg(unreadable[0])}: not a readable image, with {len(unreadable)} of "
            f"the {len(ids)} images {sub.list_path.name} lists; replace them from the "
            f"VOC{sub.year} test archive"
        )


def check_classes(num_classes: int | None, model: str) -> None:
    """``model``: the override that named it (``ckpt_path=...``, ``model_zoo=...``)."""
    if num_classes is not None and num_classes != NUM_CLASSES:
        raise ConfigError(
            f"{model} predicts {num_classes} classes; the VOC server scores the "
            f"{NUM_CLASSES} VOC classes (background + 20): use a model trained on VOC"
        )


def check_zoo_classes(cfg: Any) -> None:
    """A zoo model's classes are in the registry: checked before it is downloaded."""
    name = cfg.get("model_zoo")
    if name and not cfg.get("ckpt_path"):
        from fcn_lightning.interop.zoo import usable_entry

        entry = usable_entry(str(name), key="model_zoo", task="predict")
        check_classes(entry.num_classes, f"model_zoo={name}")


def stamp_of(ckpt_path: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What the masks depend on: the checkpoint file (as found now) and the settings."""
    path = Path(ckpt_path).expanduser().resolve()
    info = path.stat()
    return {"checkpoint": str(path), "size": info.st_size, "mtime_ns": info.st_mtime_ns,
            **settings}  # fmt: skip


def check_stamp(sub: Submission, stamp: dict[str, Any]) -> None:
    """Refuse to mix masks of another checkpoint or settings into this submission."""
    if not sub.stamp.is_file():
        if sub.mask_dir.is_dir() and any(sub.mask_dir.glob("*.png")):
            raise ConfigError(
                f"out_dir={sub.out_dir}: {sub.mask_dir} holds masks not written by this "
                "command; choose another out_dir"
            )
        if sub.tarball.exists():  # its masks' record is gone: it may be another model's
            raise ConfigError(
                f"out_dir={sub.out_dir}: {sub.tarball.name} is there but not the record of "
                f"what it holds ({sub.stamp}); choose another out_dir, or move it away"
            )
        return
    try:
        earlier = json.loads(sub.stamp.read_text())
    except (OSError, ValueError):
        earlier = None
    if earlier != stamp:
        raise ConfigError(
            f"out_dir={sub.out_dir}: holds a submission from another checkpoint or settings "
            f"({sub.stamp}); choose another out_dir to keep both, or delete {sub.mask_dir}"
        )


def write_masks(
    sub: Submission, ids: list[str], predict: Callable[[torch.Tensor], np.ndarray]
) -> int:
    """Predict every listed image whose mask is not already there whole; returns how
    many were predicted now."""
    sub.mask_dir.mkdir(parents=True, exist_ok=True)
    for leftover in sub.mask_dir.glob(".*.tmp"):  # from an interrupted run
        leftover.unlink()
    todo = []
    for image_id in ids:
        mask = sub.mask_dir / f"{image_id}.png"
        if not mask.is_file() or mask_problem(mask, upright_size(sub.jpeg(image_id))):
            todo.append(image_id)
    if len(todo) < len(ids):
        log.info("%d of %d masks already written: predicting the other %d",
                 len(ids) - len(todo), len(ids), len(todo))  # fmt: skip
    for image_id in track(todo, description=f"VOC{sub.year} {sub.split}", unit="img"):
        label = predict(read_image(sub.jpeg(image_id)))
        save_whole(palette_image(label), sub.mask_dir / f"{image_id}.png", "PNG")
    return len(todo)


def prepare(cfg: Any, out_dir: Path) -> tuple[Submission, list[str]]:
    """Everything checked before a file is written: the list, every JPEG."""
    voc = cfg.voc
    tree = find_tree(cfg.paths.data_dir, str(voc.year), voc.split, voc.get("root"))
    sub = Submission(tree, str(voc.year), voc.comp, voc.split, out_dir)
    ids = read_ids(sub.list_path)
    check_images(sub, ids)
    return sub, ids


def submit(
    sub: Submission, ids: list[str], stamp: dict[str, Any],
    predict: Callable[[torch.Tensor], np.ndarray],
) -> Path:  # fmt: skip
    """Write the masks (resuming), pack and verify the tarball, print its summary.
    A tarball already there from the same checkpoint and settings that verifies is kept
    as it is (repacking would give other bytes, hence another md5, for the same masks)."""
    check_stamp(sub, stamp)
    sub.mask_dir.mkdir(parents=True, exist_ok=True)
    if not sub.stamp.is_file():
        partial = sub.stamp.with_name(STAMP + ".tmp")
        partial.write_text(json.dumps(stamp, indent=2))
        os.replace(partial, sub.stamp)
    try:
        tarball = _masks_and_tarball(sub, ids, predict)
    except (KeyboardInterrupt, Interrupted) as stop:
        sub.partial_tarball.unlink(missing_ok=True)
        done = sum((sub.mask_dir / f"{i}.png").is_file() for i in ids)
        stopped(
            stop,
            f"{done} of {len(ids)} masks are in {sub.mask_dir}, no tarball was written; the "
            f"same command with out_dir={sub.out_dir} predicts the rest and packs it",
        )
    print(
        f"VOC{sub.year} {sub.comp} {sub.split}: {tarball} ({len(ids)} masks, md5 "
        f"{md5_of(tarball)}, {human_size(tarball.stat().st_size)}): upload it to the "
        "evaluation server"
    )
    return tarball


def predict_voc(cfg: Any, typed: Any, device: torch.device, out_dir: Path) -> Path:
    """``format=voc``: checks, then the masks and the tarball (see the module's docstring)."""
    from fcn_lightning.predict import make_out_dir, prepared_model

    sub, ids = prepare(cfg, out_dir)
    check_zoo_classes(cfg)
    given = f"model_zoo={cfg.model_zoo}" if cfg.get("model_zoo") else None
    module, norm, inference = prepared_model(cfg, typed, device)
    check_classes(module.num_classes, given or f"ckpt_path={cfg.ckpt_path}")

    def predict(image: torch.Tensor) -> np.ndarray:
        scores = module(norm(image)[None].to(device))
        return scores.argmax(1)[0].to(torch.uint8).cpu().numpy()

    settings = {"year": sub.year, "comp": sub.comp, "split": sub.split,
                "normalization": norm.name, "inference": inference.summary()}  # fmt: skip
    stamp = stamp_of(cfg.ckpt_path, settings)
    check_stamp(sub, stamp)  # before out_dir is made
    make_out_dir(out_dir)
    try:
        sub.mask_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file named like one of its folders
        raise ConfigError(
            f"out_dir={out_dir}: {sub.mask_dir} cannot be created ({error.strerror}); move "
            "the file in its way, or choose another out_dir"
        ) from None
    return submit(sub, ids, stamp, predict)


def _masks_and_tarball(
    sub: Submission, ids: list[str], predict: Callable[[torch.Tensor], np.ndarray]
) -> Path:
    predicted = write_masks(sub, ids, predict)
    tarball = None
    if predicted == 0 and sub.tarball.is_file():
        try:
            verify_tarball(sub.tarball, sub, ids)
            tarball = sub.tarball
            log.info("%s: already complete and verified; kept as it is", tarball)
        except (DataError, OSError, tarfile.TarError, EOFError):
            tarball = None
    if tarball is None:
        tarball = pack(sub, ids)
    return tarball
