"""A user's own dataset (`data=folder data.root=ROOT`): its layout, its splits, its check.

Two layouts, told apart by their folders (or named with `data.layout`):

    folders   ROOT/images/<split>/<name>.jpg|.jpeg|.png, ROOT/masks/<split>/<name>.png
    voc       ROOT/JPEGImages/<id>.jpg, ROOT/SegmentationClass/<id>.png,
              ROOT/ImageSets/Segmentation/<split>.txt (one ID per line)

Both keep their classes in ROOT/classes.txt (grammar: `fcn_lightning.data.class_list`).

Masks are class-index PNGs (255 = void, any depth and mode `label_png` reads). The folder's
own counts are its expected counts; every mismatch is found before training starts
(`folder_problems`), each kind in one line naming a file and how many share it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fcn_lightning.data.class_list import read_class_list
from fcn_lightning.data.splits import Sample, read_id_list
from fcn_lightning.errors import ConfigError, DataError, FCNError

LAYOUTS = ("auto", "folders", "voc")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# -- layout and splits -------------------------------------------------------------------

MARKERS = {"folders": ("images", "masks"), "voc": ("JPEGImages", "SegmentationClass")}


def detect_layout(root: Path, layout: str = "auto") -> str:
    """`folders` or `voc`: the layout `root` has (checked against `layout` unless auto)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"data.layout={layout!r}: choose one of {list(LAYOUTS)}")
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"data.root={root} {what}: point it at the folder of your dataset")
    found = [k for k, dirs in MARKERS.items() if all((root / d).is_dir() for d in dirs)]
    if layout != "auto":
        if layout not in found:
            need = " and ".join(f"{d}/" for d in MARKERS[layout])
            raise DataError(f"data.root={root}: data.layout={layout} needs {need} in it")
        return layout
    if len(found) == 1:
        return found[0]
    if found:
        raise ConfigError(
            f"data.root={root} holds both layouts (images/+masks/ and JPEGImages/+"
            "SegmentationClass/): set data.layout=folders or data.layout=voc"
        )
    there = sorted(p.name + "/" for p in root.iterdir() if p.is_dir())[:6]
    raise DataError(
        f"data.root={root} is neither layout: expected images/<split>/ and masks/<split>/, or "
        f"JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/<split>.txt (found "
        f"{there or 'no folders'}); see docs/own_dataset.md"
    )


def folder_split(root: Path | str, split: str, layout: str = "auto") -> list[Sample]:
    """The image/mask pairs of `split`, every image with its mask; raises DataError."""
    root = Path(root).expanduser()
    kind = detect_layout(root, layout)
    samples = _voc_split(root, split) if kind == "voc" else _folders_split(root, split)
    if not samples:
        raise DataError(f"split {split} of {root} is empty: put its image/mask pairs there")
    return samples


# Files a file manager leaves in every folder it shows (macOS: .DS_Store, ._*; Windows:
# thumbnail caches and folder settings): no user put them there, so they are skipped.
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})


def _system_file(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def _files(folder: Path, suffixes: tuple[str, ...], what: str, split: str) -> dict[str, Path]:
    if not folder.is_dir():
        others = sorted(p.name for p in folder.parent.iterdir() if p.is_dir())
        raise DataError(f"{folder} is missing: split {split} needs it (splits there: {others})")
    by_stem: dict[str, Path] = {}
    entries = sorted(p for p in folder.iterdir() if not _system_file(p.name))
    stray = [p for p in entries if p.is_dir() or p.suffix.lower() not in suffixes]
    if stray:
        raise DataError(
            f"{stray[0]}: not {what} ({'/'.join(suffixes)}); {len(stray)} such entr"
            f"{'y' if len(stray) == 1 else 'ies'} in {folder}: move them out"
        )
    for path in entries:
        if path.stem in by_stem:
            raise DataError(
                f"{path} and {by_stem[path.stem]} share the name {path.stem!r}: rename one"
            )
        by_stem[path.stem] = path
    return by_stem


def _unpaired(have: dict[str, Path], lack: dict[str, Path], what: str, where: Path) -> None:
    alone = sorted(set(have) - set(lack))
    if alone:
        raise DataError(
            f"{have[alone[0]]}: no {what} for it in {where} ({len(alone)} file(s) without "
            f"one): add the {what}s, or move those files out"
        )


def _folders_split(root: Path, split: str) -> list[Sample]:
    image_dir, mask_dir = root / "images" / split, root / "masks" / split
    images = _files(image_dir, IMAGE_SUFFIXES, "an image", split)
    masks = _files(mask_dir, (".png",), "a mask PNG", split)
    _unpaired(images, masks, "mask", mask_dir)
    _unpaired(masks, images, "image", image_dir)
    return [Sample(stem, images[stem], masks[stem]) for stem in sorted(images)]


def _voc_split(root: Path, split: str) -> list[Sample]:
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        there = sorted(p.stem for p in listing.parent.glob("*.txt"))
        raise DataError(f"{listing} is missing: split {split} needs it (splits there: {there})")
    samples, no_image, no_mask = [], [], []
    # One listing of each folder, its suffixes in any case (a camera's .JPG, Windows' .PNG).
    images = _by_stem(root / "JPEGImages", IMAGE_SUFFIXES)
    masks = _by_stem(root / "SegmentationClass", (".png",))
    ids = read_id_list(listing)
    suffixed = [i for i in ids if Path(i).suffix.lower() in IMAGE_SUFFIXES]
    if suffixed and not any(images.get(i) for i in suffixed):
        raise DataError(
            f"{listing}: ID {suffixed[0]!r} has a file suffix ({len(suffixed)} such ID(s)): an "
            f"ID is the name without it ({Path(suffixed[0]).stem!r}); drop the suffixes"
        )
    for i in ids:
        image = images.get(i) or _probe(root / "JPEGImages", i, IMAGE_SUFFIXES)
        mask = masks.get(i) or _probe(root / "SegmentationClass", i, (".png",))
        if image is None:
            no_image.append(root / "JPEGImages" / f"{i}.jpg")
        if mask is None:
            no_mask.append(root / "SegmentationClass" / f"{i}.png")
        if image is not None and mask is not None:
            samples.append(Sample(i, image, mask))
    for missing, what in ((no_mask, "mask"), (no_image, "image")):
        if missing:
            raise DataError(
                f"{missing[0]}: missing {what} of an ID in {listing} ({len(missing)} "
                f"ID(s) without one): add the {what}s, or drop those IDs from the list"
            )
    return samples


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """The files of `folder` with one of `suffixes` (any case) by stem, the first suffix of
    `suffixes` winning where a stem has several (`.jpg` before `.png`, as before)."""
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    rank = {s: k for k, s in enumerate(suffixes)}
    for path in sorted(folder.iterdir(), key=lambda p: (rank.get(p.suffix.lower(), 99), p.name)):
        if path.suffix.lower() in rank and not _system_file(path.name):
            found.setdefault(path.stem, path)
    return found


def _probe(folder: Path, i: str, suffixes: tuple[str, ...]) -> Path | None:
    """An ID with folders in it (`2008/000123`): its file, looked up one by one."""
    return next((p for s in suffixes if (p := folder / f"{i}{s}").is_file()), None)


def absolute_root(root: Any) -> str | None:
    """`data.root` as an absolute path (eval finds it from the checkpoint wherever it is
    run); no disk read, so the data module's construction stays a configuration check."""
    if root is None:
        return None
    if not str(root).strip():
        raise ConfigError("data.root is empty: set it to the folder of your dataset")
    return os.path.abspath(os.path.expanduser(str(root)))


def check_root(data: Mapping[str, Any]) -> None:
    """A data=folder root that is not there, refused before anything else compares the
    config with a run's (its class count is only a placeholder without the folder)."""
    root = data.get("root")
    path = Path(str(root)).expanduser()
    if root is not None and str(root).strip() and not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "no such folder"
        raise DataError(
            f"data.root={root}: {what}; point it at your dataset (ROOT/images/<split>, "
            "ROOT/masks/<split> and ROOT/classes.txt, or a VOC-style tree; docs/own_dataset.md)"
        )


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ConfigError(f"data.layout={layout!r}: choose one of {list(LAYOUTS)}")


# -- the check before training -------------------------------------------------------------


def folder_problems(data: Mapping[str, Any], stages: Sequence[str]) -> list[FCNError]:
    """Every mismatch of the splits `stages` use, each kind once: pairs, then every mask's
    values against the class list and every pair's sizes (the files all read)."""
    from fcn_lightning.data.folder_scan import scan_pairs

    root, layout = Path(str(data["root"])).expanduser(), str(data.get("layout", "auto"))
    classes = Path(str(data["classes"])).expanduser()
    if not classes.is_file():
        return []  # said by the class list's own check (`load_class_names`), naming it
    splits = dict.fromkeys(data.get(f"{s}_split") or data.get("val_split") for s in stages)
    try:
        kind = detect_layout(root, layout)
    except FCNError as err:  # said once, not once per split
        return [err]
    problems: list[FCNError] = []
    samples: dict[str, list[Sample]] = {}
    for split in splits:
        try:
            samples[str(split)] = folder_split(root, str(split), kind)
        except FCNError as err:
            problems.append(err)
    try:
        num_classes = len(read_class_list(classes).names)
    except FCNError:
        return problems  # the class list's own check says why (`load_class_names`)
    if not problems:
        problems += scan_pairs(samples, num_classes, classes)
    return problems
